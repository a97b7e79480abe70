"""Turn measured runs into the printed report and the JSON document (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from bench.results import SizeResult
from bench.stats import (
    AGENT_PHASES,
    PHASES,
    fmt_mib,
    fmt_percent,
    fmt_ratio,
    fmt_seconds,
    median,
    phase_order,
    ratio,
    spread,
)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned, two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def size_label(size_mib: int) -> str:
    return f"{size_mib}MiB"


def row_numbers(result: SizeResult) -> dict[str, float | None]:
    """Medians over the repeats of everything the main table shows."""
    ms, fs = result.migrations, result.floors
    peak = [float(m.agent_peak_bytes) if m.agent_peak_bytes is not None else None for m in ms]
    numbers: dict[str, float | None] = {
        "total_s": median(m.total_s for m in ms),
        "downtime_s": median(m.downtime_s for m in ms),
        "floor_s": median(f.floor_s for f in fs),
        "dump_s": median(f.dump_s for f in fs),
        "restore_floor_s": median(f.restore_s for f in fs),
        "answer_s": median(f.answer_s for f in fs),
        "criu_frozen_s": median(f.dump_stats.get("frozen") for f in fs),
        "criu_memwrite_s": median(f.dump_stats.get("memory write") for f in fs),
        "floor_images_bytes": median(float(f.images_bytes) if f.images_bytes is not None else None for f in fs),
        "archive_bytes": median(float(m.archive_bytes) if m.archive_bytes is not None else None for m in ms),
        "image_bytes": median(float(m.image_bytes) if m.image_bytes is not None else None for m in ms),
        "checkpoint_s": median(m.agent.get("checkpoint") for m in ms),
        "push_s": median(m.agent.get("push") for m in ms),
        "restore_s": median(m.phases.get("restore") for m in ms),
        "agent_peak_bytes": max((p for p in peak if p is not None), default=None),
        "cold_start_s": median(m.cold_start_s for m in ms),
        "client_gap_s": median(m.client_gap_s for m in ms),
        "ready_lag_s": median(m.ready_lag_s for m in ms),
    }
    numbers["total_ratio"] = ratio(numbers["total_s"], numbers["floor_s"])
    numbers["downtime_ratio"] = ratio(numbers["downtime_s"], numbers["floor_s"])
    for phase in dict.fromkeys([*PHASES, *(p for m in ms for p in m.phases)]):
        numbers[f"phase:{phase}"] = median(m.phases.get(phase) for m in ms)
    for phase in AGENT_PHASES:
        numbers[f"agent:{phase}"] = median(m.agent.get(phase) for m in ms)
    return numbers


def state_cell(result: SizeResult) -> str:
    if result.ok:
        return "OK"
    return "FAILED"


MAIN_HEADERS = (
    "size",
    "total_s",
    "downtime_s",
    "floor_s(dump+restore)",
    "total/floor",
    "downtime/floor",
    "archive_MiB",
    "checkpoint_s",
    "push_s",
    "restore_s",
    "agent_peak_MiB",
    "state",
)


def main_table(results: Sequence[SizeResult]) -> str:
    rows = []
    for r in results:
        n = row_numbers(r)
        floor = fmt_seconds(n["floor_s"])
        if n["dump_s"] is not None and n["restore_floor_s"] is not None:
            floor = f"{n['floor_s']:.3f} ({n['dump_s']:.3f}+{n['restore_floor_s']:.3f})"
        rows.append(
            [
                size_label(r.size_mib),
                fmt_seconds(n["total_s"]),
                fmt_seconds(n["downtime_s"]),
                floor,
                fmt_ratio(n["total_ratio"]),
                fmt_ratio(n["downtime_ratio"]),
                fmt_mib(n["archive_bytes"]),
                fmt_seconds(n["checkpoint_s"]),
                fmt_seconds(n["push_s"]),
                fmt_seconds(n["restore_s"]),
                fmt_mib(n["agent_peak_bytes"]),
                state_cell(r),
            ]
        )
    return render_table(MAIN_HEADERS, rows)


def ordered_phases(results: Sequence[SizeResult]) -> list[str]:
    return phase_order(list(m.phases) for r in results for m in r.migrations)


def in_downtime(results: Sequence[SizeResult]) -> set[str]:
    return {p for r in results for m in r.migrations for p in m.downtime_phases}


def phase_table(results: Sequence[SizeResult]) -> str:
    """Seconds per PodMigration phase in the order they ran (``*``: inside the downtime), and each one's share of the total."""
    phases = ordered_phases(results)
    frozen = in_downtime(results)
    headers = ["phase (s)", *(f"{p}*" if p in frozen else p for p in phases), "sum"]
    rows = []
    for r in results:
        n = row_numbers(r)
        values = [n.get(f"phase:{p}") for p in phases]
        known = [v for v in values if v is not None]
        rows.append([size_label(r.size_mib), *(fmt_seconds(v) for v in values), fmt_seconds(sum(known) if known else None)])
        rows.append(["  share", *(fmt_percent(v, n["total_s"]) for v in values), fmt_percent(sum(known), n["total_s"])])
    return render_table(headers, rows)


def checkpoint_table(results: Sequence[SizeResult]) -> str:
    """Inside the checkpoint phase, as node-1's agent timed it, and the bytes it moved."""
    headers = ["checkpoint (node-1 agent)", "freeze_s", "kubelet_ckpt_s", "pack_s", "push_s", "agent_total_s",
               "archive_MiB", "image_MiB", "push_MB/s"]  # fmt: skip
    rows = []
    for r in results:
        n = row_numbers(r)
        throughput = ratio(n["image_bytes"], n["agent:push"])
        rows.append(
            [
                size_label(r.size_mib),
                fmt_seconds(n["agent:freeze"]),
                fmt_seconds(n["agent:checkpoint"]),
                fmt_seconds(n["agent:pack"]),
                fmt_seconds(n["agent:push"]),
                fmt_seconds(n["agent:total"]),
                fmt_mib(n["archive_bytes"]),
                fmt_mib(n["image_bytes"]),
                "-" if throughput is None else f"{throughput / 1e6:.0f}",
            ]
        )
    return render_table(headers, rows)


def floor_table(results: Sequence[SizeResult]) -> str:
    """The floor's parts, and what a client of the app saw during the move."""
    headers = ["floor and client view", "criu_dump_s", "frozen_s", "memwrite_s", "criu_restore_s", "criu_answer_s",
               "criu_img_MiB", "client_gap_s", "ready_lag_s", "cold_start_s"]  # fmt: skip
    rows = []
    for r in results:
        n = row_numbers(r)
        rows.append(
            [
                size_label(r.size_mib),
                fmt_seconds(n["dump_s"]),
                fmt_seconds(n["criu_frozen_s"]),
                fmt_seconds(n["criu_memwrite_s"]),
                fmt_seconds(n["restore_floor_s"]),
                fmt_seconds(n["answer_s"]),
                fmt_mib(n["floor_images_bytes"]),
                fmt_seconds(n["client_gap_s"]),
                fmt_seconds(n["ready_lag_s"]),
                fmt_seconds(n["cold_start_s"]),
            ]
        )
    return render_table(headers, rows)


def spread_lines(results: Sequence[SizeResult]) -> list[str]:
    """With several repeats: min..max of total, downtime and floor, so the median is not read as exact."""
    lines = []
    for r in results:
        if len(r.migrations) < 2 and len(r.floors) < 2:
            continue
        parts = []
        for label, values in (
            ("total", [m.total_s for m in r.migrations]),
            ("downtime", [m.downtime_s for m in r.migrations]),
            ("floor", [f.floor_s for f in r.floors]),
        ):
            bounds = spread(values)
            if bounds:
                parts.append(f"{label} {bounds[0]:.3f}..{bounds[1]:.3f}")
        lines.append(f"  {size_label(r.size_mib)} over {len(r.migrations)} runs: " + ", ".join(parts))
    return lines


def summary_line(results: Sequence[SizeResult]) -> str:
    """One line: how far above the floor the pipeline is, at the smallest and largest size, and where the time goes."""
    measured = [(r, row_numbers(r)) for r in results]
    with_ratio = [(r, n) for r, n in measured if n["downtime_ratio"] is not None]
    runs = sum(len(r.migrations) for r in results)
    kept = sum(1 for r in results for m in r.migrations if m.ok)
    parts = []
    if with_ratio:
        (small, ns), (large, nl) = with_ratio[0], with_ratio[-1]
        if small is large:
            parts.append(f"downtime/floor {fmt_ratio(ns['downtime_ratio'])} at {size_label(small.size_mib)}")
        else:
            parts.append(
                f"downtime/floor {fmt_ratio(ns['downtime_ratio'])} at {size_label(small.size_mib)} -> "
                f"{fmt_ratio(nl['downtime_ratio'])} at {size_label(large.size_mib)}"
            )
        frozen = in_downtime([large]) or set(ordered_phases([large]))
        phases = {p: v for p in ordered_phases([large]) if p in frozen and (v := nl.get(f"phase:{p}")) is not None}
        text = f"at {size_label(large.size_mib)}: downtime {nl['downtime_s']:.2f}s vs floor {nl['floor_s']:.2f}s"
        if phases:
            biggest = max(phases, key=lambda p: phases[p])
            share = fmt_percent(phases[biggest], nl["downtime_s"])
            text += f", largest part of the downtime: {biggest} {phases[biggest]:.2f}s ({share})"
        parts.append(text)
    parts.append(f"state kept in {kept}/{runs} migrations")
    return "summary: " + "; ".join(parts)


LEGEND_MAIN = (
    "total = PodMigration startTime->completionTime; downtime = status.downtimeSeconds (source frozen -> target Ready);\n"
    "floor = raw `criu dump` + `criu restore` of the same app as a plain process (no Kubernetes, registry or images);\n"
    "checkpoint_s = the kubelet checkpoint call as node-1's agent timed it (CRIU dump + archive); push_s = registry push;\n"
    "restore_s = the `restore` phase (target pod created -> Ready); agent_peak_MiB = node-1 agent VmHWM after that size."
)
LEGEND_PHASES = "* = the phase ran during the downtime (frozenAt .. readyAt); share = of total_s."
LEGEND_FLOOR = (
    "frozen_s, memwrite_s = CRIU's own dump stats (--display-stats): the app frozen, writing its pages to the image files;\n"
    "criu_answer_s = criu restore start -> the restored process's first GET /healthz 200;\n"
    "client_gap_s = a client polling /healthz every 20 ms: the source's last answer -> the target's first answer;\n"
    "ready_lag_s = the target's first answer -> status.readyAt; cold_start_s = the app pod created -> Ready on node-1."
)


def emptydir_table(results: Sequence[SizeResult], emptydir: Sequence[SizeResult]) -> str:
    """Pods holding a file in an emptyDir against the same pod without it, measured in the same run:
    what moving the files costs, per GiB of emptyDir data."""
    rows = []
    for r in emptydir:
        base = next((b for b in results if b.size_mib == r.size_mib and not b.emptydir_mib), None)
        ms = r.migrations
        downtime, total = median(m.downtime_s for m in ms), median(m.total_s for m in ms)
        moved = median(float(m.volume_bytes) if m.volume_bytes else None for m in ms)
        base_downtime = median(m.downtime_s for m in base.migrations) if base else None
        extra = downtime - base_downtime if downtime is not None and base_downtime is not None else None
        per_gib = extra / (moved / (1 << 30)) if extra is not None and moved else None
        rows.append([
            r.label, fmt_mib(moved), fmt_seconds(downtime), fmt_seconds(base_downtime), fmt_seconds(extra),
            fmt_seconds(per_gib), fmt_seconds(total), state_cell(r),
        ])  # fmt: skip
    headers = ("pod", "moved", "downtime_s", "without_s", "extra_s", "s_per_GiB", "total_s", "state")
    return render_table(headers, rows)


LEGEND_EMPTYDIR = (
    "moved = status.volumeData.dataBytes (the emptyDir's tar); without_s = the same pod without the emptyDir file, in this\n"
    "run; extra_s = downtime - without_s; s_per_GiB = extra_s per GiB moved; state also checks the file's sha256, read\n"
    "through the descriptor the restored process holds and through its path."
)


def render(
    results: Sequence[SizeResult],
    *,
    header: Sequence[str] = (),
    footer: Sequence[str] = (),
    emptydir: Sequence[SizeResult] = (),
) -> str:
    repeats = max((len(r.migrations) for r in results), default=0)
    blocks = [*header, ""]
    if repeats > 1:
        blocks.append(f"(medians of {repeats} runs per size)")
    blocks += [main_table(results), LEGEND_MAIN, "", phase_table(results), LEGEND_PHASES, "", checkpoint_table(results), ""]
    blocks += [floor_table(results), LEGEND_FLOOR]
    if emptydir:
        blocks += ["", emptydir_table(results, emptydir), LEGEND_EMPTYDIR]
    spreads = spread_lines(results)
    if spreads:
        blocks += ["", "spread:", *spreads]
    failures = [f"  {r.label} {line}" for r in [*results, *emptydir] for line in r.failures()]
    if failures:
        blocks += ["", "failures:", *failures]
    blocks += ["", *footer, summary_line(results)]
    return "\n".join(blocks)


def to_json(results: Sequence[SizeResult], *, meta: Mapping[str, Any], emptydir: Sequence[SizeResult] = ()) -> dict[str, Any]:
    """Every run as measured, plus the medians the table shows."""
    return {
        "meta": dict(meta),
        "emptydir": [
            {
                "size_mib": r.size_mib,
                "emptydir_mib": r.emptydir_mib,
                "ok": r.ok,
                "migrations": [{**asdict(m), "ok": m.ok} for m in r.migrations],
                "failures": r.failures(),
            }
            for r in emptydir
        ],
        "sizes": [
            {
                "size_mib": r.size_mib,
                "ok": r.ok,
                "median": row_numbers(r),
                "floors": [{**asdict(f), "floor_s": f.floor_s, "ok": f.ok} for f in r.floors],
                "migrations": [{**asdict(m), "ok": m.ok} for m in r.migrations],
                "failures": r.failures(),
            }
            for r in results
        ],
    }
