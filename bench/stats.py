"""Pure numbers for the benchmark: no cluster, no processes, no clock (unit-tested in ``tests/bench``)."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

MIB = 1 << 20

# The PodMigration phase names (``migrator.controllers.podmigration.SPAN_NAMES``). The report orders its
# columns as the controller actually ran them (``phase_order``); this order is only the fallback.
PHASES = ("validate", "prepare-target", "checkpoint", "remove-source", "create-target", "restore", "cleanup")
# What the source node's agent times inside the checkpoint phase (``podmigrate_agent_checkpoint_duration_seconds``).
AGENT_PHASES = ("freeze", "checkpoint", "pack", "push", "total")
AGENT_DURATION = "podmigrate_agent_checkpoint_duration_seconds"
AGENT_PEAK_RSS = "process_resident_memory_peak_bytes"
# The stages a PodMigration's ``status.stages`` may list (one record per stage and container, in the order they
# run): ``{name, container, node, start, end, bytes}`` with RFC 3339 ms timestamps. Older control services do not
# write it; the bench then falls back on the agent's metrics and the phases (``resolve_stages``).
STAGES = ("freeze", "dump", "upload", "volumes", "fetch", "restore", "ready")
SOURCE_STATUS = "status"  # status.stages
SOURCE_METRICS = "metrics"  # the source agent's podmigrate_agent_checkpoint_duration_seconds
SOURCE_PHASE = "phase"  # status.phases (the restore phase: target pod created -> Ready)
# The goals: a stage at >= 0.8 of its own ceiling (ceiling_s / stage_s), and a drain of N pods K at a time
# within 1.2 x ceil(N/K) x one pod's migration.
CEILING_GOAL = 0.8
DRAIN_SLACK = 1.2


# --- statistics -------------------------------------------------------------------------------


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are known (None is "not measured"); None when none is."""
    known = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(known) if known else None


def spread(values: Iterable[float | None]) -> tuple[float, float] | None:
    """(min, max) of the known values, or None."""
    known = [v for v in values if v is not None and not math.isnan(v)]
    return (min(known), max(known)) if known else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is unknown or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


# --- formatting -------------------------------------------------------------------------------


def fmt_ratio(value: float | None) -> str:
    """``3.47x`` below 10, ``12.3x`` below 100, ``250x`` above; ``n/a`` when unknown."""
    if value is None:
        return "n/a"
    if value < 10:
        return f"{value:.2f}x"
    if value < 100:
        return f"{value:.1f}x"
    return f"{value:.0f}x"


def fmt_cores(value: float | None) -> str:
    """Cores kept busy on average (1.00 = one core all the time), or "-"."""
    return "-" if value is None else f"{value:.2f}"


def fmt_seconds(value: float | None) -> str:
    """Seconds with millisecond resolution (the PodMigration status's own), ``-`` when unknown."""
    return "-" if value is None else f"{value:.3f}"


def fmt_mib(value_bytes: float | None) -> str:
    """Bytes as MiB with one decimal, ``-`` when unknown."""
    return "-" if value_bytes is None else f"{value_bytes / MIB:.1f}"


def fmt_percent(part: float | None, whole: float | None) -> str:
    share = ratio(part, whole)
    return "-" if share is None else f"{100 * share:.0f}%"


def fmt_rate(bytes_per_s: float | None) -> str:
    """Throughput in MB/s (10^6, as the registry numbers in docs/facts.md), ``-`` when unknown."""
    return "-" if bytes_per_s is None else f"{bytes_per_s / 1e6:.0f}"


# --- a PodMigration's status ------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """The controller's timestamps: RFC 3339 with milliseconds and a ``Z``."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (parse_time(end) - parse_time(start)).total_seconds()


def phase_durations(phases: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds per phase name, in the order they ran; a phase entered twice (a resumed step) counts twice."""
    out: dict[str, float] = {}
    for record in phases:
        took = seconds_between(record.get("start"), record.get("end"))
        if took is not None:
            out[record["name"]] = out.get(record["name"], 0.0) + took
    return out


def downtime_phases(status: Mapping[str, Any]) -> list[str]:
    """Names of the phases that ran during the downtime window (``frozenAt`` .. ``readyAt``)."""
    frozen, ready = status.get("frozenAt"), status.get("readyAt")
    if not frozen or not ready:
        return []
    start, end = parse_time(frozen), parse_time(ready)
    out: list[str] = []
    for record in status.get("phases") or []:
        if not record.get("start") or not record.get("end"):
            continue
        # Overlap, not containment: the restore phase closes a millisecond after readyAt is stamped.
        if parse_time(record["start"]) < end and parse_time(record["end"]) > start and record["name"] not in out:
            out.append(record["name"])
    return out


def phase_order(runs: Iterable[Sequence[str]]) -> list[str]:
    """Phase names in the order they ran: the longest run's order, then names only other runs had."""
    runs = [list(r) for r in runs]
    order = max(runs, key=len, default=[])
    for names in runs:
        order += [n for n in names if n not in order]
    if not order:
        return list(PHASES)
    return order


def total_seconds(status: Mapping[str, Any]) -> float | None:
    """startTime -> completionTime: the whole migration as the control service recorded it."""
    return seconds_between(status.get("startTime"), status.get("completionTime"))


def downtime_seconds(status: Mapping[str, Any]) -> float | None:
    """``downtimeSeconds``: the source frozen until the target Ready (a string in the status)."""
    value = status.get("downtimeSeconds")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def container_bytes(status: Mapping[str, Any], key: str) -> int | None:
    """Sum of ``containers[].<key>`` (archiveBytes, imageBytes); None when no container reports it."""
    values = [c[key] for c in status.get("containers") or [] if isinstance(c.get(key), int)]
    return sum(values) if values else None


# --- stages: status.stages, or the agent's metrics and the phases ------------------------------


def _instant(value: Any) -> float | None:
    """A stage's start or end as epoch seconds: RFC 3339 text (the status) or a number (the agent's own records)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return parse_time(value).timestamp()
        except ValueError:
            return None
    return None


def stage_windows(records: Any) -> tuple[dict[str, tuple[float, float]], dict[str, int]]:
    """Each stage's (start, end) in epoch seconds and its bytes, from ``status.stages``; a record it cannot read is
    skipped, never an error.

    Records of one name (one per container) make one window, the earliest start to the latest end, because the
    agent may handle containers in parallel; their bytes add up. Names keep ``STAGES`` order, unknown names follow.
    """
    if not isinstance(records, Sequence) or isinstance(records, str | bytes):
        return {}, {}
    spans: dict[str, tuple[float, float]] = {}
    nbytes: dict[str, int] = {}
    for record in records:
        if not isinstance(record, Mapping):
            continue
        name, start, end = record.get("name"), _instant(record.get("start")), _instant(record.get("end"))
        if not isinstance(name, str) or not name or start is None or end is None or end < start:
            continue
        first, last = spans.get(name, (start, end))
        spans[name] = (min(first, start), max(last, end))
        size = record.get("bytes")
        if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            nbytes[name] = nbytes.get(name, 0) + size
    order = [n for n in STAGES if n in spans] + [n for n in spans if n not in STAGES]
    return {n: spans[n] for n in order}, nbytes


def resolve_stages(
    *, stages: Mapping[str, float], agent: Mapping[str, float], phases: Mapping[str, float]
) -> dict[str, tuple[float, str]]:
    """Seconds and source per stage: ``status.stages`` where it has the stage, else the older sources.

    Fallbacks: freeze and dump (the kubelet checkpoint) from the agent's metrics; upload = push + pack from the
    metrics, because the streamed agent does in one pass what pack (a hashing pass) and push did in two, so a run
    before and after that change compare the same work (a missing or zero ``pack`` adds nothing); restore from the
    ``restore`` phase (target pod created -> Ready, which includes the image pull). fetch, volumes and ready have
    no older source.
    """
    out: dict[str, tuple[float, str]] = {}
    for name in dict.fromkeys([*STAGES, *stages]):
        if (value := stages.get(name)) is not None:
            out[name] = (value, SOURCE_STATUS)
            continue
        fallback: float | None = None
        source = SOURCE_METRICS
        if name == "freeze":
            fallback = agent.get("freeze")
        elif name == "dump":
            fallback = agent.get("checkpoint")
        elif name == "upload" and (push := agent.get("push")) is not None:
            fallback = push + (agent.get("pack") or 0.0)
        elif name == "restore":
            fallback, source = phases.get("restore"), SOURCE_PHASE
        if fallback is not None:
            out[name] = (fallback, source)
    return out


# --- ceilings and goals -----------------------------------------------------------------------


def throughput(nbytes: float | None, seconds: float | None) -> float | None:
    """Bytes per second, or None."""
    return ratio(nbytes, seconds)


def ceiling_ratio(*, ceiling_s: float | None, stage_s: float | None) -> float | None:
    """ceiling_s / stage_s: 1.0 = the stage runs at its ceiling, 0.5 = it takes twice as long (the goal is >= 0.8)."""
    return ratio(ceiling_s, stage_s)


def ceiling_seconds(*, nbytes: float | None, bytes_per_s: float | None) -> float | None:
    """How long ``nbytes`` take at a ceiling's throughput: a throughput ceiling as a time for the stage's own bytes."""
    return ratio(nbytes, bytes_per_s)


def drain_cpu_bound_seconds(*, cpu_s: float | None, cores: int | None) -> float | None:
    """The shortest a drain could take on this machine: the CPU seconds it used, spread over every core."""
    return None if cpu_s is None or not cores else cpu_s / cores


def drain_goal_seconds(*, pods: int, concurrency: int, single_total_s: float | None, slack: float = DRAIN_SLACK) -> float | None:
    """slack x ceil(pods / concurrency) x one pod's migration: the drain's goal, or None when it cannot be computed."""
    if single_total_s is None or pods < 1 or concurrency < 1:
        return None
    return slack * math.ceil(pods / concurrency) * single_total_s


# --- CRIU --display-stats -------------------------------------------------------------------

_CRIU_TIME = re.compile(r"^(?P<name>[A-Za-z][A-Za-z ]*?) time: (?P<us>\d+) us$")


def criu_stat_times(output: str) -> dict[str, float]:
    """``criu dump|restore --display-stats`` lines ``Memory write time: 257157 us`` -> {"memory write": 0.257157}."""
    out: dict[str, float] = {}
    for line in output.splitlines():
        match = _CRIU_TIME.match(line.strip())
        if match:
            out[match["name"].lower()] = int(match["us"]) / 1e6
    return out


# --- Prometheus text --------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_prometheus(text: str) -> Samples:
    """Samples of the text exposition format (prometheus_client's parser): (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def sample_sum(samples: Samples, name: str, **labels: str) -> float | None:
    """The sum of every series of ``name`` whose labels include ``labels`` (any others summed over); None if none has."""
    wanted = set(labels.items())
    values = [value for (n, have), value in samples.items() if n == name and wanted <= have]
    return sum(values) if values else None


def counter_deltas(before: Samples, after: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Per label set, how much the counter ``name`` grew between two scrapes; only the series that moved.

    A series absent before counts from 0 (a labelled counter appears on its first increment)."""
    out: dict[frozenset[tuple[str, str]], float] = {}
    for (n, labels), value in after.items():
        if n == name and (grew := value - before.get((n, labels), 0.0)) > 0:
            out[labels] = grew
    return out


def agent_phase_seconds(before: Samples, after: Samples) -> dict[str, float]:
    """Seconds the agent spent per checkpoint phase between two scrapes (histogram ``_sum`` deltas).

    Only phases observed in between are reported: a phase whose count did not move is absent.
    """
    out: dict[str, float] = {}
    for phase in AGENT_PHASES:
        count_after = sample(after, f"{AGENT_DURATION}_count", phase=phase)
        if count_after is None or count_after <= (sample(before, f"{AGENT_DURATION}_count", phase=phase) or 0):
            continue
        total_after = sample(after, f"{AGENT_DURATION}_sum", phase=phase) or 0.0
        out[phase] = total_after - (sample(before, f"{AGENT_DURATION}_sum", phase=phase) or 0.0)
    return out
