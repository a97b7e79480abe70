"""``bench/history.jsonl``: every bench run's medians, appended, so that a regression shows as a change between runs.

Why keep a history at all: one run's table says where the time goes today, but not whether a change made it worse.
Runs on this 2-core machine vary by about ±20%, so a slowdown is only visible next to the runs before it, with the
commit, the machine and the arguments each was measured with.

Why JSON Lines and not TSV: a record is nested (the machine, the arguments) and its set of numbers changes with the
code: the agent's ``pack`` disappears when it streams, ``status.stages`` adds ``fetch`` and ``ready``, a new
ceiling adds a column. Each JSON line carries its own keys, so old lines stay readable and a missing number is just
absent, where a TSV's fixed header would have to be rewritten for every old row. One line per record also makes
appends cheap and diffs small; it is read with the standard library only.

One record per row per run: a size (on the stand-in nodes, or on the real containerd nodes: ``64MiB containerd``), an
emptyDir row, the warm start, the drain, the scale row. The run is identified by its start ``date``. ``medians``
holds every known median the report computes for that row
(``bench.report.row_numbers``, ``emptydir_numbers``, ``drain_numbers``, ``warmstart_numbers``, ``scale_numbers``),
rounded; unknown numbers are left out.

This module is pure except ``machine``, ``commit``, ``append`` and ``read`` (files, git, /proc): the records,
the tables and the Markdown snippet for README.md are computed from plain data and unit-tested.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from bench import report
from bench.results import RUNTIME_STANDIN, DrainRun, ScaleResult, SizeResult, WarmStartResult
from bench.stats import fmt_mib, fmt_ratio, fmt_seconds, ratio

SCHEMA: Final = 1
REPO: Final = Path(__file__).resolve().parent.parent
DEFAULT_PATH: Final = REPO / "bench" / "history.jsonl"
README_START: Final = "<!-- bench-history:start"
README_END: Final = "<!-- bench-history:end -->"
WORSE_BY: Final = 0.10  # a change larger than this, in the bad direction, is flagged with "!"

KIND_SIZE: Final = "size"
KIND_EMPTYDIR: Final = "emptydir"
KIND_DRAIN: Final = "drain"
KIND_WARMSTART: Final = "warmstart"
KIND_SCALE: Final = "scale"


# --- where and what it ran on -------------------------------------------------------------------


def cpu_model(cpuinfo: str) -> str:
    """The CPU's name from ``/proc/cpuinfo`` text (x86 ``model name``; ARM ``Hardware``/``Processor``)."""
    for key in ("model name", "hardware", "processor", "cpu model", "cpu"):
        for line in cpuinfo.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip().lower() == key and value.strip() and not value.strip().isdigit():
                return value.strip()
    return "unknown"


def machine() -> dict[str, Any]:
    """CPU model, cores and memory of this machine."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        cpuinfo = ""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": cpu_model(cpuinfo) if cpuinfo else platform.processor() or "unknown", "cores": os.cpu_count(),
            "memory_gib": round(memory / (1 << 30), 1)}  # fmt: skip


def commit(*, repo: Path = REPO, history: Path = DEFAULT_PATH) -> str:
    """``git rev-parse --short HEAD``, plus ``-dirty`` when tracked files differ from it (as ``git describe --dirty``).

    The history file itself does not count: otherwise every run after the first would be "dirty" until it is
    committed. Untracked files do not count either. ``unknown`` outside a git checkout.
    """
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True, timeout=10).stdout.strip()  # fmt: skip
        exclude = [f":(exclude){history.resolve().relative_to(repo)}"] if history.resolve().is_relative_to(repo) else []
        changes = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--", ".", *exclude],
                                 capture_output=True, text=True, check=True, timeout=30).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if changes else head


# --- records ------------------------------------------------------------------------------------


def _rounded(numbers: Mapping[str, float | None]) -> dict[str, float]:
    """The known numbers, rounded to 4 decimals (seconds to 0.1 ms; byte counts stay whole)."""
    out: dict[str, float] = {}
    for key, value in numbers.items():
        if value is None:
            continue
        out[key] = int(value) if key.endswith("bytes") or key.endswith("_Bps") else round(float(value), 4)
    return out


def records(
    *,
    run: Mapping[str, Any],
    results: Sequence[SizeResult],
    emptydir: Sequence[SizeResult] = (),
    drain: DrainRun | None = None,
    warmstart: WarmStartResult | None = None,
    scale: ScaleResult | None = None,
    real: Sequence[SizeResult] = (),
) -> list[dict[str, Any]]:
    """One record per row of this run: ``run`` holds what they share (date, commit, machine, kernel, args, argv, load).

    A containerd row (``real``) is a size record too, after the stand-in ones, with its ``runtime``; its row name
    (``64MiB containerd``) keeps its history apart from the stand-in row of the same size."""
    common = {"schema": SCHEMA, **run}
    out = []
    for r in [*results, *real]:
        out.append({**common, "row": r.label, "kind": KIND_SIZE, "size_mib": r.size_mib, "runtime": r.runtime, "ok": r.ok,
                    "runs": len(r.migrations), "medians": _rounded(report.row_numbers(r)),
                    "sources": report.stage_sources(r)})  # fmt: skip
    for r in emptydir:
        out.append({**common, "row": r.label, "kind": KIND_EMPTYDIR, "size_mib": r.size_mib, "emptydir_mib": r.emptydir_mib,
                    "ok": r.ok, "runs": len(r.migrations), "medians": _rounded(report.emptydir_numbers(r, results))})  # fmt: skip
    if drain is not None:
        out.append({**common, "row": drain.label, "kind": KIND_DRAIN, "size_mib": drain.size_mib, "pods": drain.pods,
                    "concurrency": drain.concurrency, "ok": drain.ok, "runs": 1,
                    "medians": _rounded(report.drain_numbers(drain))})  # fmt: skip
    if warmstart is not None:
        out.append({**common, "row": warmstart.label, "kind": KIND_WARMSTART, "size_mib": warmstart.size_mib,
                    "pods": warmstart.pods, "warmup_seconds": warmstart.warmup_seconds, "ok": warmstart.ok,
                    "runs": len(warmstart.runs), "medians": _rounded(report.warmstart_numbers(warmstart))})  # fmt: skip
    if scale is not None:
        out.append({**common, "row": scale.label, "kind": KIND_SCALE, "size_mib": scale.size_mib, "nodes": scale.nodes,
                    "pods": scale.pods, "drain_pods": scale.drain_pods, "concurrency": scale.concurrency, "ok": scale.ok,
                    "runs": 1, "medians": _rounded(report.scale_numbers(scale))})  # fmt: skip
    return out


def append(path: Path, new: Sequence[Mapping[str, Any]]) -> None:
    """Append records, one JSON object per line (the file and its directory are created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        for record in new:
            out.write(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")


def parse(text: str) -> list[dict[str, Any]]:
    """The records in JSON Lines text; blank lines, broken lines and non-objects are skipped (a torn last line)."""
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("row"), str) and isinstance(record.get("medians"), dict):
            out.append(record)
    return out


def read(path: Path) -> list[dict[str, Any]]:
    return parse(path.read_text(encoding="utf-8")) if path.exists() else []


def runs(history: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Records grouped by run (their ``date``), in the file's order."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for record in history:
        grouped.setdefault(str(record.get("date", "")), []).append(record)
    return list(grouped.values())


# --- tables -------------------------------------------------------------------------------------

# (header, key in medians, format, higher is better)
Column = tuple[str, str, str, bool]
SIZE_COLUMNS: Final[Sequence[Column]] = (
    ("total_s", "total_s", "s", False),
    ("downtime_s", "downtime_s", "s", False),
    ("floor_s", "floor_s", "s", False),
    ("down/floor", "downtime_ratio", "x", False),
    ("client_gap_s", "client_gap_s", "s", False),
    ("ready_lag_s", "ready_lag_s", "s", False),
    ("dump_s", "stage:dump", "s", False),
    ("upload_s", "stage:upload", "s", False),
    ("restore_s", "restore_s", "s", False),  # the restore phase: the same span in every run
    ("dump/ceil", "ceil:dump", "x", True),
    ("upload/ceil", "ceil:upload", "x", True),
    ("restore/ceil", "ceil:restore", "x", True),
    ("peak_MiB", "agent_peak_bytes", "mib", False),
)
EMPTYDIR_COLUMNS: Final[Sequence[Column]] = (
    ("total_s", "total_s", "s", False),
    ("downtime_s", "downtime_s", "s", False),
    ("without_s", "without_s", "s", False),
    ("extra_s", "extra_s", "s", False),
    ("s_per_GiB", "s_per_GiB", "s", False),
)
DRAIN_COLUMNS: Final[Sequence[Column]] = (
    ("wall_s", "wall_s", "s", False),
    ("goal_s", "goal_s", "s", False),
    ("wall/goal", "goal_ratio", "x", False),
    ("single_total_s", "single_total_s", "s", False),
    ("pod_total_s", "pod_total_s", "s", False),
    ("cpu_bound_s", "cpu_bound_s", "s", False),
)
WARMSTART_COLUMNS: Final[Sequence[Column]] = (
    ("cold_s", "cold_s", "s", False),
    ("warm_s", "warm_s", "s", False),
    ("warm/cold", "warm_ratio", "x", False),
    ("warm_max_s", "warm_max_s", "s", False),
    ("first_s", "first_s", "s", False),
    ("checkpoint_s", "checkpoint_s", "s", False),
)
SCALE_COLUMNS: Final[Sequence[Column]] = (
    ("req/pod_small", "small:requests_per_pod", "n", False),
    ("req/pod_large", "large:requests_per_pod", "n", False),
    ("req_large/small", "requests_ratio", "x", False),
    ("cpu/pod_small", "small:cpu_per_pod_s", "s", False),
    ("cpu/pod_large", "large:cpu_per_pod_s", "s", False),
    ("cpu_large/small", "cpu_ratio", "x", False),
    ("rss_MiB_large", "large:rss_after_bytes", "mib", False),
    ("pods/s", "pods_per_s", "n", True),
)
COLUMNS: Final[Mapping[str, Sequence[Column]]] = {
    KIND_SIZE: SIZE_COLUMNS,
    KIND_EMPTYDIR: EMPTYDIR_COLUMNS,
    KIND_DRAIN: DRAIN_COLUMNS,
    KIND_WARMSTART: WARMSTART_COLUMNS,
    KIND_SCALE: SCALE_COLUMNS,
}


def fmt_value(value: Any, kind: str) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    if kind == "x":
        return fmt_ratio(float(value))
    if kind == "mib":
        return fmt_mib(float(value))
    if kind == "n":
        return f"{float(value):.1f}"
    return fmt_seconds(float(value))


def change_cell(latest: Any, previous: Any, *, higher_is_better: bool) -> str:
    """latest / previous as ``1.23x``; ``!`` when it moved more than ``WORSE_BY`` the wrong way; ``-`` if unknown."""
    if not isinstance(latest, int | float) or not isinstance(previous, int | float):
        return "-"
    change = ratio(float(latest), float(previous))
    if change is None:
        return "-"
    worse = change < 1 / (1 + WORSE_BY) if higher_is_better else change > 1 + WORSE_BY
    return fmt_ratio(change) + ("!" if worse else "")


def _when(record: Mapping[str, Any]) -> str:
    return str(record.get("date", "?")).replace("T", " ")[:16]


def machine_label(record: Mapping[str, Any]) -> str:
    m = record.get("machine") or {}
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB, Linux {record.get('kernel', '?')}"


def source_changes(previous: Mapping[str, str], latest: Mapping[str, str]) -> str:
    """``restore phase -> status, ...`` for the stages whose source changed between two runs, or ``""``."""
    return ", ".join(
        f"{name} {previous[name]} -> {latest[name]}" for name in latest if name in previous and previous[name] != latest[name]
    )


def row_table(entries: Sequence[Mapping[str, Any]]) -> str:
    """One row's recorded runs (oldest first) and, with two or more, latest / previous per column."""
    columns = COLUMNS.get(str(entries[-1].get("kind")), SIZE_COLUMNS)
    headers = ["date (UTC)", "commit", *(c[0] for c in columns), "state"]
    rows = [
        [_when(e), str(e.get("commit", "?")), *(fmt_value(e["medians"].get(c[1]), c[2]) for c in columns),
         "OK" if e.get("ok") else "FAILED"]
        for e in entries
    ]  # fmt: skip
    lines = []
    if len(entries) >= 2:
        previous, latest = entries[-2]["medians"], entries[-1]["medians"]
        rows.append(["latest/previous", "", *(change_cell(latest.get(c[1]), previous.get(c[1]), higher_is_better=c[3])
                                              for c in columns), ""])  # fmt: skip
        if machine_label(entries[-2]) != machine_label(entries[-1]) or entries[-2].get("args") != entries[-1].get("args"):
            lines.append("  (latest and previous ran on different machines or with different arguments)")
        moved = source_changes(entries[-2].get("sources") or {}, entries[-1].get("sources") or {})
        if moved:
            lines.append(f"  (stage times from other sources than before: {moved}; those columns measure other spans)")
    return "\n".join([report.render_table(headers, rows), *lines])


def tables(history: Sequence[Mapping[str, Any]], *, last: int = 5) -> str:
    """Per row (size, emptyDir row, drain, warm start, scale): its last ``last`` runs, then latest/previous ("!": worse
    by > 10%)."""
    if not history:
        return "no recorded runs"
    by_row: dict[str, list[Mapping[str, Any]]] = {}
    for record in history:
        by_row.setdefault(record["row"], []).append(record)
    latest_rows = [r["row"] for r in runs(history)[-1]]
    order = [*latest_rows, *(row for row in by_row if row not in latest_rows)]
    blocks = []
    for row in order:
        entries = by_row[row]
        shown = entries[-last:] if last > 0 else entries
        blocks.append(f"{row}: {len(shown)} of {len(entries)} recorded run(s)\n{row_table(shown)}")
    blocks.append(
        f"latest/previous = the latest run's median / the one before it; '!' = worse by more than {WORSE_BY:.0%}.\n"
        "Runs on one machine vary (by about ±20% on the project's 2-core VM): look for a change that persists over runs."
    )
    return "\n\n".join(blocks)


# --- README.md ----------------------------------------------------------------------------------

MARKDOWN_COLUMNS: Final[Sequence[tuple[str, str, str]]] = (
    ("total_s", "total_s", "s"),
    ("downtime_s", "downtime_s", "s"),
    ("floor_s", "floor_s", "s"),
    ("downtime/floor", "downtime_ratio", "x"),
    ("client_gap_s", "client_gap_s", "s"),
    ("dump vs ceiling", "ceil:dump", "x"),
    ("upload vs ceiling", "ceil:upload", "x"),
    ("restore vs ceiling", "ceil:restore", "x"),
    ("agent_peak_MiB", "agent_peak_bytes", "mib"),
)


def markdown(history: Sequence[Mapping[str, Any]]) -> str:
    """The latest run as README.md quotes it: where it ran, a table of its sizes, its drain, warm start and scale rows;
    say it is one run."""
    if not history:
        return "No `make bench` run recorded yet (`bench/history.jsonl` is empty)."
    run = runs(history)[-1]
    first = run[0]
    argv = " ".join(["python -m bench", *(first.get("argv") or [])])
    load = first.get("load") or ["?", "?"]
    lines = [
        f"One `make bench` run, on one machine: commit `{first.get('commit', '?')}`, {_when(first)} UTC, "
        f"{machine_label(first)}; arguments `{argv}`; load average {load[0]} at start, {load[-1]} at end. "
        "These are not a specification: another run on the same machine differs (by about ±20% here), another "
        "machine more. Every recorded run, and the change from the previous one: `.venv/bin/python -m bench history`.",
        "",
    ]
    sizes = [r for r in run if r.get("kind") == KIND_SIZE]
    if sizes:
        headers = ["size", *(c[0] for c in MARKDOWN_COLUMNS), "state"]
        lines += ["| " + " | ".join(headers) + " |", "|" + "---|" + "---:|" * len(MARKDOWN_COLUMNS) + "---|"]
        for r in sizes:
            cells = [
                r["row"],
                *(fmt_value(r["medians"].get(c[1]), c[2]) for c in MARKDOWN_COLUMNS),
                "OK" if r.get("ok") else "FAILED",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "*vs ceiling* = the stage's ceiling in the same run / the stage's time (1.00x = at the ceiling; "
                  "goal >= 0.8): raw `criu dump`, the registry's push rate with a raw client, raw `criu restore`."]  # fmt: skip
        if any(r.get("runtime", RUNTIME_STANDIN) != RUNTIME_STANDIN for r in sizes):
            lines += ["", "*containerd* rows: the same migration between the local cluster's real nodes (upstream kubelet, "
                      "containerd 2.3, runc), against the same size's floor and ceilings; containerd's checkpoint and "
                      "restore copy the checkpoint on the node's disk several times (bench/README.md)."]  # fmt: skip
    for r in run:
        if r.get("kind") == KIND_DRAIN:
            m = r["medians"]
            wall, goal, single = (fmt_value(m.get(k), "s") for k in ("wall_s", "goal_s", "single_total_s"))
            lines += ["", f"{r['row']}: wall {wall} s against the goal {goal} s (1.2 x ceil(N/K) x the single-pod "
                      f"total {single} s): wall/goal {fmt_value(m.get('goal_ratio'), 'x')}."]  # fmt: skip
            if m.get("cpu_bound_s") is not None:
                lines[-1] += (f" The machine's CPUs alone allow no less than {fmt_value(m.get('cpu_bound_s'), 's')} s "
                              f"(the drain's {fmt_value(m.get('cpu_s'), 's')} CPU seconds over its cores).")  # fmt: skip
        if r.get("kind") == KIND_WARMSTART:
            m = r["medians"]
            warm, cold = fmt_value(m.get("warm_s"), "s"), fmt_value(m.get("cold_s"), "s")
            lines += ["", f"{r['row']}: a Deployment's new pod serving {warm} s after the scale-up when restored from a "
                      f"PodCheckpoint, {cold} s when started cold: warm/cold {fmt_value(m.get('warm_ratio'), 'x')}."]  # fmt: skip
        if r.get("kind") == KIND_SCALE:
            m = r["medians"]
            small, large = (fmt_value(m.get(f"{s}:requests_per_pod"), "n") for s in ("small", "large"))
            cpu_small, cpu_large = (fmt_value(m.get(f"{s}:cpu_per_pod_s"), "s") for s in ("small", "large"))
            lines += ["", f"{r['row']}: the control service sent {small} API requests and used {cpu_small} CPU s per migrated "
                      f"pod in the cluster as brought up, {large} and {cpu_large} s with {r.get('nodes', '?')} nodes and "
                      f"{r.get('pods', '?')} more pods: large/small {fmt_value(m.get('requests_ratio'), 'x')} (requests), "
                      f"{fmt_value(m.get('cpu_ratio'), 'x')} (CPU)."]  # fmt: skip
    return "\n".join(lines)


def replace_block(text: str, snippet: str, *, source: str = "bench/history.jsonl") -> str:
    """``text`` with what lies between the README markers replaced by ``snippet``; ValueError without the markers."""
    start = text.find(README_START)
    end = text.find(README_END, start + 1) if start >= 0 else -1
    if start < 0 or end < 0:
        raise ValueError(f"no {README_START} ... {README_END} block")
    opening = f"{README_START} (generated by `python -m bench history --readme README.md` from {source}) -->"
    return text[:start] + opening + "\n" + snippet.rstrip("\n") + "\n" + text[end:]
