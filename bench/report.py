"""Turn measured runs into the printed report and the JSON document (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from bench.results import DrainRun, MigrationRun, ScaleResult, ScaleSample, SizeResult, WarmStartResult
from bench.stats import (
    AGENT_PHASES,
    CEILING_GOAL,
    PHASES,
    STAGES,
    ceiling_ratio,
    ceiling_seconds,
    drain_cpu_bound_seconds,
    drain_goal_seconds,
    fmt_cores,
    fmt_mib,
    fmt_percent,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    median,
    phase_order,
    ratio,
    resolve_stages,
    spread,
    throughput,
)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: Collection[int] = (0,)) -> str:
    """A plain-text table: the ``left`` columns (text; the first by default) left-aligned, the others right-aligned,
    two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).ljust(w) if i in left else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
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
    numbers.update(stage_numbers(result))
    return numbers


def _stage_bytes(run: MigrationRun, stage: str) -> float | None:
    """A stage's bytes from status.stages, else the checkpoint image's (what is uploaded and fetched)."""
    if stage in run.stage_bytes:
        return float(run.stage_bytes[stage])
    return float(run.image_bytes) if run.image_bytes is not None else None


def stage_numbers(result: SizeResult) -> dict[str, float | None]:
    """Stage medians (``status.stages``, else the older sources), the registry's ceilings, and each stage against
    its ceiling as ceiling_s / stage_s. Anything not measured is None, never an error."""
    ms, fs, cs = result.migrations, result.floors, result.ceilings
    resolved = [resolve_stages(stages=m.stages, agent=m.agent, phases=m.phases) for m in ms]
    out: dict[str, float | None] = {}
    for name in dict.fromkeys([*STAGES, *(n for r in resolved for n in r)]):
        out[f"stage:{name}"] = median(r[name][0] if name in r else None for r in resolved)
    out["upload_bytes"] = median(_stage_bytes(m, "upload") for m in ms)
    out["fetch_bytes"] = median(_stage_bytes(m, "fetch") for m in ms)
    out["upload_Bps"] = throughput(out["upload_bytes"], out["stage:upload"])
    out["fetch_Bps"] = throughput(out["fetch_bytes"], out["stage:fetch"])
    out["ingest_1_Bps"] = median(throughput(c.blob_bytes, c.push_1_s) for c in cs)
    out["ingest_n_Bps"] = median(throughput(c.blob_bytes, c.push_n_s) for c in cs)
    out["get_Bps"] = median(throughput(c.blob_bytes, c.get_s) for c in cs)
    known = [v for v in (out["ingest_1_Bps"], out["ingest_n_Bps"]) if v is not None]
    out["ingest_Bps"] = max(known) if known else None  # the upload's ceiling: the better of 1 and N streams
    out["ceiling:dump_s"] = median(f.dump_s for f in fs)
    out["ceiling:upload_s"] = ceiling_seconds(nbytes=out["upload_bytes"], bytes_per_s=out["ingest_Bps"])
    out["ceiling:fetch_s"] = ceiling_seconds(nbytes=out["fetch_bytes"], bytes_per_s=out["get_Bps"])
    out["ceiling:restore_s"] = median(f.restore_s for f in fs)
    for stage in CEILING_STAGES:
        out[f"ceil:{stage}"] = ceiling_ratio(ceiling_s=out[f"ceiling:{stage}_s"], stage_s=out[f"stage:{stage}"])
    # Where the CPU went in each stage (bench.cpu): the machine's busy cores, and the registry's CPU seconds.
    for name in dict.fromkeys([*STAGES, *(n for m in ms for n in m.stage_cores)]):
        out[f"cores:{name}"] = median(m.stage_cores.get(name) for m in ms)
        out[f"registry_cpu:{name}"] = median(m.stage_registry_cpu_s.get(name) for m in ms)
    out["encrypt_1_Bps"] = median(throughput(c.blob_bytes, c.encrypt_1_s) for c in cs)
    out["encrypt_lanes_Bps"] = median(throughput(c.blob_bytes, c.encrypt_lanes_s) for c in cs)
    out["ingest_1_registry_cpu_s"] = median(c.push_1_registry_cpu_s for c in cs)
    # The registry's cores while it took one stream alone: ~1.0 = one core saturated by its own work (hashing).
    out["ingest_1_registry_cores"] = median(ratio(c.push_1_registry_cpu_s, c.push_1_s) for c in cs)
    return out


def stage_sources(result: SizeResult) -> dict[str, str]:
    """Where each stage's time came from (``status``, ``metrics``, ``phase``); ``a+b`` if the repeats differed."""
    found: dict[str, list[str]] = {}
    for m in result.migrations:
        for name, (_, source) in resolve_stages(stages=m.stages, agent=m.agent, phases=m.phases).items():
            if source not in found.setdefault(name, []):
                found[name].append(source)
    return {name: "+".join(sources) for name, sources in found.items()}


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
    "upload_s",
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
                r.label,
                fmt_seconds(n["total_s"]),
                fmt_seconds(n["downtime_s"]),
                floor,
                fmt_ratio(n["total_ratio"]),
                fmt_ratio(n["downtime_ratio"]),
                fmt_mib(n["archive_bytes"]),
                fmt_seconds(n["stage:dump"]),
                fmt_seconds(n["stage:upload"]),
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
        rows.append([r.label, *(fmt_seconds(v) for v in values), fmt_seconds(sum(known) if known else None)])
        rows.append(["  share", *(fmt_percent(v, n["total_s"]) for v in values), fmt_percent(sum(known), n["total_s"])])
    return render_table(headers, rows)


def checkpoint_table(results: Sequence[SizeResult]) -> str:
    """Inside the checkpoint phase, as the source node's agent metrics timed it (``-``: a phase it no longer reports),
    and the bytes."""
    headers = ["checkpoint (source agent metrics)", "freeze_s", "kubelet_ckpt_s", "pack_s", "push_s", "agent_total_s",
               "archive_MiB", "image_MiB", "push_MB/s"]  # fmt: skip
    rows = []
    for r in results:
        n = row_numbers(r)
        throughput = ratio(n["image_bytes"], n["agent:push"])
        rows.append(
            [
                r.label,
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
                r.label,
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
        lines.append(f"  {r.label} over {len(r.migrations)} runs: " + ", ".join(parts))
    return lines


def _downtime_parts(results: Sequence[SizeResult]) -> list[str]:
    """How far above the floor the rows are, at their smallest and largest size, and where the time goes."""
    measured = [(r, row_numbers(r)) for r in results]
    with_ratio = [(r, n) for r, n in measured if n["downtime_ratio"] is not None]
    parts: list[str] = []
    if not with_ratio:
        return parts
    (small, ns), (large, nl) = with_ratio[0], with_ratio[-1]
    if small is large:
        parts.append(f"downtime/floor {fmt_ratio(ns['downtime_ratio'])} at {small.label}")
    else:
        parts.append(
            f"downtime/floor {fmt_ratio(ns['downtime_ratio'])} at {small.label} -> "
            f"{fmt_ratio(nl['downtime_ratio'])} at {large.label}"
        )
    frozen = in_downtime([large]) or set(ordered_phases([large]))
    phases = {p: v for p in ordered_phases([large]) if p in frozen and (v := nl.get(f"phase:{p}")) is not None}
    text = f"at {large.label}: downtime {nl['downtime_s']:.2f}s vs floor {nl['floor_s']:.2f}s"
    if phases:
        biggest = max(phases, key=lambda p: phases[p])
        share = fmt_percent(phases[biggest], nl["downtime_s"])
        text += f", largest part of the downtime: {biggest} {phases[biggest]:.2f}s ({share})"
    parts.append(text)
    ceilings = [f"{stage} {fmt_ratio(v)}" for stage in CEILING_STAGES if (v := nl.get(f"ceil:{stage}")) is not None]
    if ceilings:
        parts.append(f"ceiling/stage at {large.label}: " + ", ".join(ceilings))
    return parts


def summary_line(
    results: Sequence[SizeResult],
    *,
    drain: DrainRun | None = None,
    warmstart: WarmStartResult | None = None,
    scale: ScaleResult | None = None,
    real: Sequence[SizeResult] = (),
) -> str:
    """One line: how far above the floor the pipeline is, at the smallest and largest size, and where the time goes;
    the same for the containerd rows (``real``), then the other rows."""
    rows = [*results, *real]
    runs = sum(len(r.migrations) for r in rows)
    kept = sum(1 for r in rows for m in r.migrations if m.ok)
    parts = _downtime_parts(results) + _downtime_parts(real)
    if drain is not None:
        goal = drain_numbers(drain)["goal_ratio"]
        parts.append(f"{drain.label}: wall/goal {fmt_ratio(goal)}")
    if warmstart is not None:
        n = warmstart_numbers(warmstart)
        parts.append(
            f"{warmstart.label}: warm {fmt_seconds(n['warm_s'])}s vs cold {fmt_seconds(n['cold_s'])}s "
            f"(warm/cold {fmt_ratio(n['warm_ratio'])})"
        )
    if scale is not None:
        n = scale_numbers(scale)
        parts.append(f"{scale.label}: large/small per migrated pod: API requests {fmt_ratio(n['requests_ratio'])}, "
                     f"CPU {fmt_ratio(n['cpu_ratio'])}")  # fmt: skip
    parts.append(f"state kept in {kept}/{runs} migrations")
    return "summary: " + "; ".join(parts)


LEGEND_MAIN = (
    "total = PodMigration startTime->completionTime; downtime = status.downtimeSeconds (source frozen -> target Ready);\n"
    "floor = raw `criu dump` + `criu restore` of the same app as a plain process (no Kubernetes, registry or images);\n"
    "checkpoint_s = the kubelet checkpoint call (CRIU dump + archive); upload_s = the checkpoint image into the registry\n"
    "(status.stages 'dump'/'upload' when the control service writes them, else the source agent's metrics: checkpoint,\n"
    "pack+push); restore_s = the `restore` phase (target pod created -> Ready); agent_peak_MiB = the source agent's VmHWM\n"
    "after that size."
)
LEGEND_REAL = (
    "containerd rows: the same app and PodMigration between the real nodes real-1 -> real-2 (upstream kubelet +\n"
    "containerd 2.3 + runc; restored through CRI CreateContainer from the checkpoint image), against the same size's\n"
    "floor and registry ceilings of this run (raw CRIU and the registry do not depend on the runtime). containerd copies\n"
    "the checkpoint on the node's disk several times (bench/README.md): in checkpoint_s (its dump) and restore_s. Their\n"
    "fetch, restore and ready stages come from the real kubelet's Events, whole seconds narrowed down (0.1-0.5 s off)."
)
LEGEND_PHASES = "* = the phase ran during the downtime (frozenAt .. readyAt); share = of total_s."

CEILING_STAGES = ("dump", "upload", "fetch", "restore")
STAGE_LABELS = {
    "dump": ("dump (kubelet checkpoint)", "raw criu dump (floor)"),
    "upload": ("upload (agent -> registry)", "registry push, best of 1/{streams} streams"),
    "fetch": ("fetch (target pull)", "registry blob GET"),
    "restore": ("restore", "raw criu restore (floor)"),
}


LEGEND_REGISTRY = (
    "push_1x_registry_cores = the registry process's CPU seconds during the one-stream push / its time (1.00 = one\n"
    "core busy all along: a blob is one stream, which the registry receives, hashes and writes on about one core).\n"
    "encrypt_1x / encrypt_lanes = the same bytes hashed and encrypted as the agent does it (ocicrypt's AES-CTR +\n"
    "HMAC, the plaintext's and the blob's sha256), by one thread / with the hashes in lanes of their own, no registry."
)


def ceiling_table(results: Sequence[SizeResult]) -> str:
    """The registry with a raw client: a blob of the size's MiB in one stream, in N parallel streams, read back; and
    the agent's side of an upload alone (hash and encrypt, 1 thread and lanes)."""
    streams = next((c.streams for r in results for c in r.ceilings), 4)
    headers = ["registry ceiling (raw client)", "blob_MiB", "push_1x_s", "push_1x_MB/s", "push_1x_registry_cores",
               f"push_{streams}x_s", f"push_{streams}x_MB/s", "get_s", "get_MB/s", "encrypt_1x_MB/s",
               "encrypt_lanes_MB/s"]  # fmt: skip
    rows = []
    for r in results:
        cs = r.ceilings
        n = row_numbers(r)
        rows.append([
            size_label(r.size_mib), fmt_mib(median(float(c.blob_bytes) for c in cs)),
            fmt_seconds(median(c.push_1_s for c in cs)), fmt_rate(n["ingest_1_Bps"]), fmt_cores(n["ingest_1_registry_cores"]),
            fmt_seconds(median(c.push_n_s for c in cs)), fmt_rate(n["ingest_n_Bps"]),
            fmt_seconds(median(c.get_s for c in cs)), fmt_rate(n["get_Bps"]), fmt_rate(n["encrypt_1_Bps"]),
            fmt_rate(n["encrypt_lanes_Bps"]),
        ])  # fmt: skip
    return render_table(headers, rows)


def goal_cell(value: float | None, *, goal: float = CEILING_GOAL) -> str:
    if value is None:
        return "-"
    return "ok" if round(value, 2) >= goal else "below"  # judged as printed: 0.7999... shows as 0.80x and is ok


def stage_ceiling_table(results: Sequence[SizeResult]) -> str:
    """Each stage against its own ceiling from the same run: ceiling_s / stage_s (1.0 = at the ceiling)."""
    headers = ["stage vs ceiling", "stage", "source", "stage_s", "stage_MB/s", "ceiling", "ceiling_s", "ceiling/stage",
               f">={CEILING_GOAL:g}", "cores_busy", "registry_cpu_s"]  # fmt: skip
    streams = next((c.streams for r in results for c in r.ceilings), 4)
    rows = []
    for r in results:
        n, sources = row_numbers(r), stage_sources(r)
        for i, stage in enumerate(CEILING_STAGES):
            label, ceiling = STAGE_LABELS[stage][0], STAGE_LABELS[stage][1].format(streams=streams)
            rate = n.get(f"{stage}_Bps") if stage in ("upload", "fetch") else None
            value = n[f"ceil:{stage}"]
            rows.append([
                r.label if i == 0 else "", label, sources.get(stage, "-"), fmt_seconds(n[f"stage:{stage}"]),
                fmt_rate(rate), ceiling, fmt_seconds(n[f"ceiling:{stage}_s"]), fmt_ratio(value), goal_cell(value),
                fmt_cores(n.get(f"cores:{stage}")), fmt_seconds(n.get(f"registry_cpu:{stage}")),
            ])  # fmt: skip
    return render_table(headers, rows, left=(0, 1, 2, 5))


LEGEND_CEILINGS = (
    "ceiling/stage = ceiling_s / stage_s: 1.00x = the stage runs at its ceiling, the issue's goal is >= 0.8.\n"
    "Ceilings, measured in this run: dump and restore = the floor's raw criu dump and criu restore of the same app;\n"
    "upload = the stage's bytes at the registry's best push rate (a raw client, fresh random bytes, the better of 1\n"
    "stream and N parallel streams of 1/N each); fetch = the stage's bytes at the raw blob GET rate.\n"
    "source: status = status.stages; metrics = the source agent's metrics (upload = pack + push); phase = the restore\n"
    "phase (target pod created -> Ready, with the image pull), which is all there is before status.stages.\n"
    "cores_busy = how many of the machine's cores were busy on average during the stage (/proc/stat, sampled every\n"
    "50 ms): at the machine's core count the stage is bound by the CPU, not by waiting; registry_cpu_s = the\n"
    "registry process's CPU seconds in the stage (bench.cpu)."
)


def drain_numbers(drain: DrainRun) -> dict[str, float | None]:
    goal = drain_goal_seconds(pods=drain.pods, concurrency=drain.concurrency, single_total_s=drain.single_total_s)
    return {
        "wall_s": drain.wall_s,
        "observed_s": drain.observed_s,
        "goal_s": goal,
        "goal_ratio": ratio(drain.wall_s, goal),
        "single_total_s": drain.single_total_s,
        "pod_total_s": median(drain.pod_totals),
        "pod_downtime_max_s": max(drain.pod_downtimes, default=None),
        "migrated": float(drain.migrated),
        # What the machine's CPUs allow: the drain's own CPU seconds over every core, and N single pods' the same way.
        "cpu_s": drain.machine_cpu_s,
        "cpu_bound_s": drain_cpu_bound_seconds(cpu_s=drain.machine_cpu_s, cores=drain.cores),
        "single_cpu_s": drain.single_cpu_s,
        "pods_cpu_bound_s": drain_cpu_bound_seconds(
            cpu_s=None if drain.single_cpu_s is None else drain.single_cpu_s * drain.pods, cores=drain.cores
        ),
    }


def drain_table(drain: DrainRun) -> str:
    """The drain's wall time against the issue's goal: 1.2 x ceil(N/K) x one pod's total in this run."""
    n = drain_numbers(drain)
    headers = ["drain (NodeDrain node-1 -> node-2)", "pods", "concurrency", "migrated", "wall_s", "goal_s", "wall/goal",
               "single_total_s", "pod_total_s", "pod_downtime_max_s", "cpu_s", "cpu_bound_s", "single_cpu_s",
               "state"]  # fmt: skip
    row = [
        drain.label, str(drain.pods), str(drain.concurrency), str(drain.migrated), fmt_seconds(n["wall_s"]),
        fmt_seconds(n["goal_s"]), fmt_ratio(n["goal_ratio"]), fmt_seconds(n["single_total_s"]), fmt_seconds(n["pod_total_s"]),
        fmt_seconds(n["pod_downtime_max_s"]), fmt_seconds(n["cpu_s"]), fmt_seconds(n["cpu_bound_s"]),
        fmt_seconds(n["single_cpu_s"]), "OK" if drain.ok else "FAILED",
    ]  # fmt: skip
    return render_table(headers, [row])


LEGEND_DRAIN = (
    "wall_s = NodeDrain status.startTime -> completionTime; goal_s = 1.2 x ceil(pods/concurrency) x single_total_s, the\n"
    "total of one pod of the same size migrated alone earlier in this run; wall/goal <= 1.00x meets the goal;\n"
    "pod_total_s = median of the drain's PodMigrations' totals; state = every pod Ready on node-2 with its boot_id;\n"
    "cpu_s = CPU seconds the whole machine was busy during the drain (/proc/stat: the cluster, its nodes, agents, registry\n"
    "and the control service share it); cpu_bound_s = cpu_s / the machine's CPUs, the shortest the drain could take here\n"
    "however it is scheduled; single_cpu_s = the same for the single pod (its N times over the CPUs is the bound for N pods)."
)


def warmstart_numbers(result: WarmStartResult) -> dict[str, float | None]:
    """The warm start row's medians over the repeats: each repeat's median new pod, warm and cold, then their median."""
    runs = result.runs
    numbers: dict[str, float | None] = {
        "first_s": median(r.first_s for r in runs),
        "checkpoint_s": median(r.checkpoint_s for r in runs),
        "checkpoint_bytes": median(float(r.checkpoint_bytes) if r.checkpoint_bytes is not None else None for r in runs),
        "cold_s": median(median(r.cold_pods) for r in runs),
        "warm_s": median(median(r.warm_pods) for r in runs),
        "warm_max_s": max((s for r in runs for s in r.warm_pods), default=None),
        "restored": float(sum(r.restored for r in runs)),
        "new_pods": float(sum(r.pods for r in runs)),
    }
    numbers["warm_ratio"] = ratio(numbers["warm_s"], numbers["cold_s"])
    return numbers


def warmstart_table(result: WarmStartResult) -> str:
    """New pods of a Deployment restored from a PodCheckpoint against new pods of the same template started cold."""
    n = warmstart_numbers(result)
    headers = ["warm start (Deployment 1 -> 1+N)", "cold_s", "warm_s", "warm/cold", "warm_max_s", "first_s", "checkpoint_s",
               "checkpoint_MiB", "restored", "state"]  # fmt: skip
    restored = f"{n['restored']:.0f}/{n['new_pods']:.0f}"
    row = [
        result.label, fmt_seconds(n["cold_s"]), fmt_seconds(n["warm_s"]), fmt_ratio(n["warm_ratio"]),
        fmt_seconds(n["warm_max_s"]), fmt_seconds(n["first_s"]), fmt_seconds(n["checkpoint_s"]), fmt_mib(n["checkpoint_bytes"]),
        restored, "OK" if result.ok else "FAILED",
    ]  # fmt: skip
    return render_table(headers, [row])


LEGEND_WARMSTART = (
    "A Deployment of the app, scaled from 1 to 1+N: warm_s = median new pod's time to serve when restored from a\n"
    "PodCheckpoint (mode Running) of its first pod (annotation podmigrate.io/warm-start-from); cold_s = the same for a\n"
    "Deployment of the same template without the annotation, scaled up after it in this run; warm/cold < 1.00x = the\n"
    "warm start is faster; first_s = the first (cold) pod of the annotated Deployment; checkpoint_s = PodCheckpoint\n"
    "startTime -> completionTime; restored = new pods with the checkpoint's annotation and the checkpointed process's\n"
    "boot_id. warm_s and cold_s: the scale request -> the new pod's first GET /healthz 200, polled every 50 ms."
)


def pod_and_node_lists(by: Mapping[str, float]) -> float:
    """How many of the requests were lists of pods or of nodes (``list pods``, ``list nodes``): what a cache saves."""
    return sum(n for key, n in by.items() if key.lower() in ("list pods", "list nodes"))


SCALE_KEYS = ("nodes", "pods", "migrated", "requests", "requests_per_pod", "lists", "lists_per_pod", "cpu_s", "cpu_per_pod_s",
              "rss_before_bytes", "rss_after_bytes", "rss_delta_bytes", "rss_peak_bytes", "cache_pods", "cache_nodes",
              "window_s", "idle_requests_per_s", "idle_cpu_per_s", "wall_s")  # fmt: skip


def scale_sample_numbers(sample: ScaleSample | None) -> dict[str, float | None]:
    """One drain of the scale row: its figures, and per migrated pod (None when unknown or nothing migrated)."""
    if sample is None:
        return dict.fromkeys(SCALE_KEYS)
    migrated = float(sample.drain.migrated) if sample.drain is not None else 0.0
    lists = pod_and_node_lists(sample.requests_by) if sample.requests is not None else None
    before, after = sample.rss_before_bytes, sample.rss_after_bytes
    return {
        "nodes": None if sample.nodes is None else float(sample.nodes),
        "pods": None if sample.pods is None else float(sample.pods),
        "migrated": migrated,
        "requests": sample.requests,
        "requests_per_pod": ratio(sample.requests, migrated),
        "lists": lists,
        "lists_per_pod": ratio(lists, migrated),
        "cpu_s": sample.cpu_s,
        "cpu_per_pod_s": ratio(sample.cpu_s, migrated),
        "rss_before_bytes": None if before is None else float(before),
        "rss_after_bytes": None if after is None else float(after),
        "rss_delta_bytes": None if before is None or after is None else float(after - before),
        "rss_peak_bytes": None if sample.rss_peak_bytes is None else float(sample.rss_peak_bytes),
        "cache_pods": sample.cache_pods,
        "cache_nodes": sample.cache_nodes,
        "window_s": sample.window_s,
        "idle_requests_per_s": ratio(sample.idle_requests, sample.idle_s),
        "idle_cpu_per_s": ratio(sample.idle_cpu_s, sample.idle_s),
        "wall_s": sample.drain.wall_s if sample.drain is not None else None,
    }


def scale_numbers(result: ScaleResult) -> dict[str, float | None]:
    """Both drains' figures (``small:...``, ``large:...``), large/small per migrated pod, and what the growth cost."""
    small, large = scale_sample_numbers(result.small), scale_sample_numbers(result.large)
    out: dict[str, float | None] = {f"small:{k}": v for k, v in small.items()}
    out.update({f"large:{k}": v for k, v in large.items()})
    out["requests_ratio"] = ratio(large["requests_per_pod"], small["requests_per_pod"])
    out["lists_ratio"] = ratio(large["lists_per_pod"], small["lists_per_pod"])
    out["cpu_ratio"] = ratio(large["cpu_per_pod_s"], small["cpu_per_pod_s"])
    out["rss_delta_ratio"] = ratio(large["rss_delta_bytes"], small["rss_delta_bytes"])
    grown, base = result.rss_grown_bytes, small["rss_after_bytes"]
    growth = float(grown) - base if grown is not None and base is not None else None
    out.update({
        "added_nodes": float(result.added_nodes), "added_pods": float(result.added_pods), "nodes_s": result.nodes_s,
        "pods_s": result.pods_s, "pods_per_s": result.pods_per_s, "cache_wait_s": result.cache_wait_s,
        "cache_pods_grown": result.cache_pods_grown, "rss_grown_bytes": None if grown is None else float(grown),
        "rss_growth_bytes": growth, "rss_per_added_pod_bytes": ratio(growth, float(result.added_pods)),
    })  # fmt: skip
    return out


def _na(value: float | None, spec: str) -> str:
    """A figure from the control service's metrics: ``n/a`` when it does not export it."""
    return "n/a" if value is None else format(value, spec)


def _mib_na(value_bytes: float | None) -> str:
    return "n/a" if value_bytes is None else fmt_mib(value_bytes)


def scale_table(result: ScaleResult) -> str:
    """The same drain in the cluster as brought up and grown: what each cost the control service per migrated pod."""
    headers = ["scale (NodeDrain node-1 -> node-2)", "nodes", "pods", "migrated", "API_requests/pod", "pod+node_lists/pod",
               "CPU_s/pod", "RSS_MiB", "RSS_delta_MiB", "cache_pods", "state"]  # fmt: skip
    rows = []
    for size, sample in (("small", result.small), ("large", result.large)):
        n = scale_sample_numbers(sample)
        if sample is None:
            rows.append([size, *["-"] * 9, "not run"])
            continue
        rows.append([
            size, _na(n["nodes"], ".0f"), _na(n["pods"], ".0f"), f"{n['migrated']:.0f}", _na(n["requests_per_pod"], ".1f"),
            _na(n["lists_per_pod"], ".2f"), _na(n["cpu_per_pod_s"], ".3f"), _mib_na(n["rss_after_bytes"]),
            _mib_na(n["rss_delta_bytes"]), _na(n["cache_pods"], ".0f"), "OK" if sample.ok else "FAILED",
        ])  # fmt: skip
    return render_table(headers, rows)


def _by_verb(sample: ScaleSample | None, *, top: int = 8) -> str:
    if sample is None or sample.requests is None:
        return "n/a"
    if not sample.requests_by:
        return "none"
    shown = [f"{key} {n:.0f}" for key, n in list(sample.requests_by.items())[:top]]
    rest = len(sample.requests_by) - top
    return ", ".join(shown) + (f", ... ({rest} more)" if rest > 0 else "")


def scale_lines(result: ScaleResult) -> list[str]:
    """Under the table: large/small, what growing cost, the idle windows and which requests the drains sent."""
    n = scale_numbers(result)
    lines = [
        f"large/small per migrated pod: API requests {fmt_ratio(n['requests_ratio'])}, pod+node lists "
        f"{fmt_ratio(n['lists_ratio'])}, CPU {fmt_ratio(n['cpu_ratio'])}; RSS delta {fmt_ratio(n['rss_delta_ratio'])}"
    ]
    if result.added_nodes or result.added_pods:
        rate = n["pods_per_s"]
        text = (
            f"growth: {result.added_nodes} registration-only nodes in {_na(result.nodes_s, '.1f')}s, "
            + (f"their namespaces in {result.namespaces_s:.1f}s, " if result.namespaces_s is not None else "")
            + f"{result.added_pods} pods in {_na(result.pods_s, '.1f')}s"
            + (f" ({rate:.0f} pods/s)" if rate else "")
        )
        if result.cache_wait_s is not None:
            held = _na(result.cache_pods_grown, ".0f")
            text += f"; the control service's pod cache held {held} {result.cache_wait_s:.1f}s later"
        elif result.added_pods:
            text += f"; its pod cache: {_na(result.cache_pods_grown, '.0f')} (not seen reaching {result.added_pods})"
        if n["rss_growth_bytes"] is not None:
            per = n["rss_per_added_pod_bytes"]
            text += f"; its RSS {fmt_mib(n['small:rss_after_bytes'])} -> {fmt_mib(n['rss_grown_bytes'])} MiB"
            text += f" ({per / 1024:.1f} KiB per added pod)" if per is not None else ""
        lines.append(text)
    idle = [
        f"{size} {_na(n[f'{size}:idle_requests_per_s'], '.2f')} requests/s, {_na(n[f'{size}:idle_cpu_per_s'], '.3f')} CPU s/s"
        for size, sample in (("small", result.small), ("large", result.large))
        if sample is not None and sample.idle_s
    ]
    if idle:
        lines.append("idle, before each drain: " + "; ".join(idle))
    for size, sample in (("small", result.small), ("large", result.large)):
        if sample is not None:
            lines.append(f"{size} drain's requests by verb and resource: {_by_verb(sample)}")
            if sample.metrics_error:
                lines.append(f"  ({size}: {sample.metrics_error})")
    if result.cleanup_error:
        lines.append(f"clean-up left behind: {result.cleanup_error}")
    return lines


LEGEND_SCALE = (
    "small = the cluster as brought up; large = grown to that many nodes (registration-only: Node objects kept Ready by a\n"
    "Lease the bench renews, tainted so nothing is placed there) and that many more Pods bound to them that never run;\n"
    "nodes and pods = the cluster's Node and Pod objects right before the drain (the agent DaemonSet's included).\n"
    "Each drain is the drain row's; around it (pods started, drained, cleaned up) the leading control service's /metrics:\n"
    "API_requests/pod = podmigrate_kube_requests_total (all series) / migrated; pod+node_lists/pod = its list pods and list\n"
    "nodes series; CPU_s/pod = process_cpu_seconds_total / migrated; RSS_MiB = process_resident_memory_bytes after,\n"
    'RSS_delta_MiB = after - before; cache_pods = podmigrate_informer_objects{resource="pods"}. n/a = not exported.\n'
    "The issue's goal: large/small about 1.00x per migrated pod."
)


LEGEND_FLOOR = (
    "frozen_s, memwrite_s = CRIU's own dump stats (--display-stats): the app frozen, writing its pages to the image files;\n"
    "criu_answer_s = criu restore start -> the restored process's first GET /healthz 200;\n"
    "client_gap_s = a client polling /healthz every 20 ms: the source's last answer -> the target's first answer;\n"
    "ready_lag_s = the target's first answer -> status.readyAt; cold_start_s = the app pod created -> Ready on the source\n"
    "node. The client learns the target's IP from the API (looked up every 0.1 s between polls of the source), so\n"
    "client_gap_s may come out a little long and ready_lag_s short, even negative, when the IP is posted late."
)


def emptydir_numbers(result: SizeResult, results: Sequence[SizeResult]) -> dict[str, float | None]:
    """An emptyDir row's medians, and its extra downtime against the same size without the file in this run."""
    base = next(
        (b for b in results if b.size_mib == result.size_mib and not b.emptydir_mib and b.runtime == result.runtime), None
    )
    ms = result.migrations
    downtime, total = median(m.downtime_s for m in ms), median(m.total_s for m in ms)
    moved = median(float(m.volume_bytes) if m.volume_bytes else None for m in ms)
    base_downtime = median(m.downtime_s for m in base.migrations) if base else None
    extra = downtime - base_downtime if downtime is not None and base_downtime is not None else None
    per_gib = extra / (moved / (1 << 30)) if extra is not None and moved else None
    return {"downtime_s": downtime, "total_s": total, "moved_bytes": moved, "without_s": base_downtime, "extra_s": extra,
            "s_per_GiB": per_gib}  # fmt: skip


def emptydir_table(results: Sequence[SizeResult], emptydir: Sequence[SizeResult]) -> str:
    """Pods holding a file in an emptyDir against the same pod without it, measured in the same run:
    what moving the files costs, per GiB of emptyDir data."""
    rows = []
    for r in emptydir:
        n = emptydir_numbers(r, results)
        rows.append([
            r.label, fmt_mib(n["moved_bytes"]), fmt_seconds(n["downtime_s"]), fmt_seconds(n["without_s"]),
            fmt_seconds(n["extra_s"]), fmt_seconds(n["s_per_GiB"]), fmt_seconds(n["total_s"]), state_cell(r),
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
    drain: DrainRun | None = None,
    warmstart: WarmStartResult | None = None,
    scale: ScaleResult | None = None,
    real: Sequence[SizeResult] = (),
) -> str:
    """The whole report; ``real``: the containerd rows, shown after the stand-in rows in every per-size table."""
    rows = [*results, *real]
    repeats = max((len(r.migrations) for r in rows), default=0)
    blocks = [*header, ""]
    if repeats > 1:
        blocks.append(f"(medians of {repeats} runs per size)")
    blocks += [main_table(rows), LEGEND_MAIN] + ([LEGEND_REAL] if real else [])
    blocks += ["", phase_table(rows), LEGEND_PHASES, "", checkpoint_table(rows), ""]
    blocks += [floor_table(rows), LEGEND_FLOOR]
    # The registry's ceilings once per size: a containerd row's are its stand-in row's, unless it had none.
    sizes = {r.size_mib for r in results}
    registry = [*results, *(r for r in real if r.size_mib not in sizes)]
    if any(r.ceilings for r in registry):
        blocks += ["", ceiling_table(registry), LEGEND_REGISTRY]
    blocks += ["", stage_ceiling_table(rows), LEGEND_CEILINGS]
    if emptydir:
        blocks += ["", emptydir_table(results, emptydir), LEGEND_EMPTYDIR]
    if warmstart is not None:
        blocks += [""] + ([f"(medians of {len(warmstart.runs)} runs)"] if len(warmstart.runs) > 1 else [])
        blocks += [warmstart_table(warmstart), LEGEND_WARMSTART]
    if drain is not None:
        blocks += ["", drain_table(drain), LEGEND_DRAIN]
    if scale is not None:
        blocks += ["", scale_table(scale), *scale_lines(scale), LEGEND_SCALE]
    spreads = spread_lines(rows)
    if spreads:
        blocks += ["", "spread:", *spreads]
    failures = [f"  {r.label} {line}" for r in [*results, *emptydir, *real] for line in r.failures()]
    failures += [f"  {drain.label} {line}" for line in (drain.failures() if drain is not None else [])]
    failures += [f"  {warmstart.label} {line}" for line in (warmstart.failures() if warmstart is not None else [])]
    failures += [f"  {scale.label} {line}" for line in (scale.failures() if scale is not None else [])]
    if failures:
        blocks += ["", "failures:", *failures]
    blocks += ["", *footer, summary_line(results, drain=drain, warmstart=warmstart, scale=scale, real=real)]
    return "\n".join(blocks)


def warmstart_json(result: WarmStartResult) -> dict[str, Any]:
    """The warm start row as measured (every repeat's pod times) with its medians and failures."""
    return {**asdict(result), "label": result.label, "ok": result.ok, "numbers": warmstart_numbers(result),
            "failures": result.failures()}  # fmt: skip


def scale_json(result: ScaleResult) -> dict[str, Any]:
    """The scale row as measured (both drains, every request series that moved) with its figures and failures."""
    return {**asdict(result), "label": result.label, "ok": result.ok, "numbers": scale_numbers(result),
            "failures": result.failures()}  # fmt: skip


def to_json(
    results: Sequence[SizeResult],
    *,
    meta: Mapping[str, Any],
    emptydir: Sequence[SizeResult] = (),
    drain: DrainRun | None = None,
    warmstart: WarmStartResult | None = None,
    scale: ScaleResult | None = None,
    real: Sequence[SizeResult] = (),
) -> dict[str, Any]:
    """Every run as measured, plus the medians the table shows; ``sizes`` lists the containerd rows (``real``) after
    the stand-in rows, each with its ``runtime`` and ``label`` (its floors and ceilings are its size's)."""
    return {
        "meta": dict(meta),
        "scale": None if scale is None else scale_json(scale),
        "drain": None if drain is None else {**asdict(drain), "ok": drain.ok, "numbers": drain_numbers(drain)},
        "warmstart": None if warmstart is None else warmstart_json(warmstart),
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
                "runtime": r.runtime,
                "label": r.label,
                "ok": r.ok,
                "median": row_numbers(r),
                "floors": [{**asdict(f), "floor_s": f.floor_s, "ok": f.ok} for f in r.floors],
                "ceilings": [{**asdict(c), "ok": c.ok} for c in r.ceilings],
                "stage_sources": stage_sources(r),
                "migrations": [{**asdict(m), "ok": m.ok} for m in r.migrations],
                "failures": r.failures(),
            }
            for r in [*results, *real]
        ],
    }
