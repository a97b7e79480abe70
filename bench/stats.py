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


def fmt_seconds(value: float | None) -> str:
    """Seconds with millisecond resolution (the PodMigration status's own), ``-`` when unknown."""
    return "-" if value is None else f"{value:.3f}"


def fmt_mib(value_bytes: float | None) -> str:
    """Bytes as MiB with one decimal, ``-`` when unknown."""
    return "-" if value_bytes is None else f"{value_bytes / MIB:.1f}"


def fmt_percent(part: float | None, whole: float | None) -> str:
    share = ratio(part, whole)
    return "-" if share is None else f"{100 * share:.0f}%"


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
