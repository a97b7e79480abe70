"""``python -m bench [--sizes 64,256,1024] [--real-sizes SIZES] [--repeat N] [--json PATH]``: see ``bench/README.md``.

Brings up its own local cluster (instance 5: API :6448, registry :5315, nodes 127.0.6.x; with two real nodes,
upstream kubelet + containerd, unless ``--real-sizes 0``) in a temporary directory, installs podmigrate, measures
the floor of every size, the registry's ceilings, then the migration of every size between the stand-in nodes,
the same between the real nodes (the containerd rows), a Deployment scaled up warm from a PodCheckpoint
against one scaled up cold, a NodeDrain of a few small pods, and that drain again after growing the cluster to
many registration-only nodes and pods (the scale row), and always tears everything down.
Progress goes to stderr, the report to stdout, and the medians are appended to
``bench/history.jsonl`` (unless ``--no-history``). Exit status 1 when a migration, a floor, a
ceiling, the warm start, a drain or the scale row's growth failed (or teardown left something behind); speed is never judged.

``python -m bench history [--last N] [--markdown | --readme README.md]`` prints the recorded runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import ceiling, drain, floor, history, migration, report, scale, stats, warmstart
from bench.results import RUNTIME_CONTAINERD, RUNTIME_STANDIN, DrainRun, ScaleResult, SizeResult, WarmStartResult
from localcluster import cluster as lc
from localcluster import podmigrate, registryauth

DEFAULT_SIZES = (64, 256, 1024)
INSTANCE = 5
SCALE_MIN_NODES = 3
REAL_NODES = 2  # real-1 -> real-2, when --real-sizes asks for containerd rows
FLOOR_IMAGES_TMPFS = "/dev/shm"  # a tmpfs on every Linux with glibc; the floor's CRIU images go there


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def parse_sizes(text: str, *, option: str = "--sizes") -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{option} wants MiB as integers separated by commas, got {text!r}") from None
    if not sizes or any(s < 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"{option} wants non-negative MiB, got {text!r}")
    return sizes


def parse_real_sizes(text: str) -> list[int]:
    """``--real-sizes``: like ``--sizes``, but empty or 0 means no real nodes at all (a 0 among others is dropped)."""
    if not text.strip():
        return []
    return [size for size in parse_sizes(text, option="--real-sizes") if size]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES), help="ballast sizes, MiB (64,256,1024)")
    parser.add_argument(
        "--real-sizes", type=parse_real_sizes, default=None, metavar="SIZES",
        help="ballast sizes moved between two real nodes (kubelet + containerd), MiB (those of --sizes; 0: no real nodes)",
    )  # fmt: skip
    parser.add_argument(
        "--emptydir-mib", type=parse_sizes, default=[256], metavar="SIZES",
        help="also move the smallest-size app holding a file of this much random data in an emptyDir, MiB (256; 0: none)",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs per size; the tables show medians (1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every run and the medians as JSON to PATH")
    parser.add_argument("--instance", type=int, default=INSTANCE, help="local cluster instance, so it collides with no other (5)")
    parser.add_argument("--logs", type=Path, metavar="DIR", help="copy the cluster's logs (nodes, agents, controller) to DIR")
    parser.add_argument("--warmup-seconds", type=float, default=1.0, help="the app's WARMUP_SECONDS (1)")
    parser.add_argument("--drain-pods", type=int, default=4, metavar="N", help="pods in the drain row (4; 0: no drain row)")
    parser.add_argument("--drain-concurrency", type=int, default=2, metavar="K", help="the NodeDrain's maxConcurrent (2)")
    parser.add_argument("--drain-mib", type=int, default=64, metavar="MIB", help="each drained pod's BALLAST_MB (64)")
    parser.add_argument("--warmstart-pods", type=int, default=2, metavar="N",
                        help="new pods in the warm start row's scale-ups, 1 -> 1+N (2; 0: no warm start row)")  # fmt: skip
    parser.add_argument("--warmstart-warmup", type=float, default=10.0, metavar="SECONDS",
                        help="the warm start row's WARMUP_SECONDS, what a cold pod pays (10)")  # fmt: skip
    parser.add_argument("--scale-nodes", type=int, default=100, metavar="N",
                        help="the scale row's nodes, registration-only ones added (100; 0: no scale row)")  # fmt: skip
    parser.add_argument("--scale-pods", type=int, default=5000, metavar="N",
                        help="registration-only pods the scale row adds, spread over those nodes (5000)")  # fmt: skip
    parser.add_argument("--history", type=Path, default=history.DEFAULT_PATH, metavar="PATH",
                        help="append this run's medians to PATH (bench/history.jsonl)")  # fmt: skip
    parser.add_argument("--no-history", action="store_true", help="do not append this run to the history")
    args = parser.parse_args(argv)
    if args.real_sizes is None:  # the same as --sizes; a 0 MiB stand-in row has no containerd twin
        args.real_sizes = [size for size in args.sizes if size]
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.drain_pods < 0 or args.drain_mib < 0:
        parser.error("--drain-pods and --drain-mib must not be negative")
    if not 0 <= args.warmstart_pods <= 10:
        parser.error("--warmstart-pods must be 0..10")
    if args.warmstart_warmup < 0:
        parser.error("--warmstart-warmup must not be negative")
    least = SCALE_MIN_NODES + (REAL_NODES if args.real_sizes else 0)  # the cluster's own nodes and one more
    if args.scale_nodes != 0 and args.scale_nodes < least:
        parser.error(f"--scale-nodes must be 0 or at least {least} (the cluster's {least - 1} nodes and one more)")
    if args.scale_pods < 0:
        parser.error("--scale-pods must not be negative")
    if not 1 <= args.drain_concurrency <= 20:
        parser.error("--drain-concurrency must be 1..20 (the NodeDrain's maxConcurrent)")
    return args


def parse_history_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench history", description="the recorded bench runs, per row")
    parser.add_argument("--file", type=Path, default=history.DEFAULT_PATH, help="the history file (bench/history.jsonl)")
    parser.add_argument("--last", type=int, default=5, metavar="N", help="runs shown per row (5; 0: all)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true", help="print the latest run as README.md quotes it")
    out.add_argument("--readme", type=Path, metavar="PATH", help="rewrite the bench-history block of PATH with --markdown's text")
    args = parser.parse_args(argv)
    if args.last < 0:
        parser.error("--last must not be negative")
    return args


def history_main(argv: list[str]) -> int:
    args = parse_history_args(argv)
    recorded = history.read(args.file)
    if args.readme:
        if not recorded:
            print(f"bench: no recorded run in {args.file}: {args.readme} left as it is", file=sys.stderr)
            return 1
        try:
            file = args.file.resolve()
            source = str(file.relative_to(history.REPO)) if file.is_relative_to(history.REPO) else str(file)
            text = history.replace_block(args.readme.read_text(), history.markdown(recorded), source=source)
        except (OSError, ValueError) as exc:
            print(f"bench: {args.readme}: {exc}", file=sys.stderr)
            return 1
        args.readme.write_text(text)
        print(f"bench: {args.readme}: benchmark block rewritten from the run of {recorded[-1].get('date')}", file=sys.stderr)
        return 0
    print(history.markdown(recorded) if args.markdown else history.tables(recorded, last=args.last))
    return 0


def _criu_version(criu: Path) -> str:
    out = subprocess.run([str(criu), "--version"], capture_output=True, text=True, check=False).stdout
    return out.split("Version:")[1].split()[0] if "Version:" in out else "?"


def _meta(args: argparse.Namespace, criu: Path) -> dict[str, Any]:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "memory_gib": round(mem / (1 << 30), 1),
        "kernel": platform.release(),
        "criu": _criu_version(criu),
        "sizes_mib": args.sizes,
        "real_sizes_mib": args.real_sizes,
        "repeat": args.repeat,
        "instance": args.instance,
        "warmup_seconds": args.warmup_seconds,
        "loadavg_start": round(os.getloadavg()[0], 2),
    }


def _header(meta: dict[str, Any], cluster: lc.Cluster | None) -> list[str]:
    lines = [
        f"podmigrate bench {meta['started']}: live migration vs the raw CRIU floor, measured in the same run",
        f"machine: {meta['cpus']} CPUs, {meta['memory_gib']} GiB RAM, Linux {meta['kernel']}, CRIU {meta['criu']}; "
        f"load average {meta['loadavg_start']} at start, {meta.get('loadavg_end', '?')} at end",
    ]
    if cluster is not None:
        nodes = " -> ".join(f"{n.name} ({n.address})" for n in cluster.nodes[:2])
        lines.append(f"cluster: instance {meta['instance']}, API {cluster.server}, registry {cluster.registry}; {nodes}")
        reals = [n for n in cluster.nodes if n.kind == "real"][:REAL_NODES]
        if reals:
            pair = " -> ".join(f"{n.name} ({n.address})" for n in reals)
            versions = meta.get("real_versions") or "versions unknown"
            taint = f"{lc.REAL_NODE_TAINT}=true:NoSchedule"
            lines.append(f"real nodes: {pair}, {versions}, runc; tainted {taint} (only the containerd rows' pods tolerate it)")
    sizes = ",".join(map(str, meta["sizes_mib"]))
    real_sizes = ",".join(map(str, meta.get("real_sizes_mib") or []))
    real = f"; containerd rows BALLAST_MB in {{{real_sizes}}}" if real_sizes else ""
    lines.append(
        f"app: warmup server, WARMUP_SECONDS={meta['warmup_seconds']:g}, BALLAST_MB in {{{sizes}}} "
        f"of random (incompressible) bytes{real}; {meta['repeat']} run(s) per size"
    )
    return lines


def real_pair(cluster: lc.Cluster) -> tuple[str, str]:
    """The containerd rows' source and target: the cluster's first two real nodes (real-1 -> real-2)."""
    names = [n.name for n in cluster.nodes if n.kind == "real"]
    if len(names) < REAL_NODES:
        raise lc.ClusterError(f"the containerd rows need {REAL_NODES} real nodes, the cluster has {names or 'none'}")
    return names[0], names[1]


def real_versions(api: migration.Api, names: Sequence[str]) -> str:
    """``kubelet v1.36.3, containerd://2.3.7`` as the real nodes report them (each distinct value once)."""
    kubelets, runtimes = [], []
    for name in names:
        info = ((api.get(f"/api/v1/nodes/{name}") or {}).get("status") or {}).get("nodeInfo") or {}
        kubelets.append(str(info.get("kubeletVersion", "?")))
        runtimes.append(str(info.get("containerRuntimeVersion", "?")))
    return f"kubelet {'/'.join(dict.fromkeys(kubelets))}, {'/'.join(dict.fromkeys(runtimes))}"


def baseline_rows(results: Sequence[SizeResult], real: Sequence[SizeResult]) -> list[SizeResult]:
    """The rows whose floors and ceilings are measured: every stand-in row, and the first containerd row of a size
    no stand-in row has (``share_baselines`` gives the others theirs)."""
    sizes = {r.size_mib for r in results}
    extra: dict[int, SizeResult] = {}
    for r in real:
        if r.size_mib not in sizes:
            extra.setdefault(r.size_mib, r)
    return [*results, *extra.values()]


def share_baselines(measured: Sequence[SizeResult], real: Sequence[SizeResult]) -> None:
    """A containerd row not measured itself takes the floors and ceilings of the first measured row of its size:
    raw CRIU and the registry do not depend on the node's runtime."""
    for r in real:
        owner = next((m for m in measured if m.size_mib == r.size_mib), None)
        if owner is not None and owner is not r:
            r.floors, r.ceilings = list(owner.floors), list(owner.ceilings)


def _sync() -> None:
    t0 = time.monotonic()
    os.sync()
    if time.monotonic() - t0 > 1:
        _log(f"sync (dirty page cache written back before measuring) took {time.monotonic() - t0:.1f}s")


def _between_runs(cluster: lc.Cluster) -> None:
    """Before a run that pushes: the registry's deleted images reclaimed, then the page cache written back.

    A migration deletes its images' manifests, and the ceilings theirs, but the registry keeps the blobs until a
    garbage collection (docs/registry.md): without one, three runs at 4 GiB leave tens of GB on the disk, and the
    nodes' kubelets then report DiskPressure and evict pods. Nothing pushes between runs, as the collection needs.
    """
    freed = cluster.collect_registry_garbage()
    if freed >= 1 << 30:
        _log(f"registry garbage collection freed {freed / (1 << 30):.1f} GiB")
    _sync()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _history_run(args: argparse.Namespace, argv: list[str], meta: dict[str, Any]) -> dict[str, Any]:
    """What every history record of this run shares: when, which commit, on what, with which arguments."""
    return {
        "date": meta["started"],
        "commit": meta["commit"],
        "machine": history.machine(),
        "kernel": meta["kernel"],
        "criu": meta["criu"],
        "args": {
            "sizes": args.sizes, "repeat": args.repeat, "emptydir_mib": args.emptydir_mib, "warmup_seconds": args.warmup_seconds,
            "drain_pods": args.drain_pods, "drain_concurrency": args.drain_concurrency, "drain_mib": args.drain_mib,
            "warmstart_pods": args.warmstart_pods, "warmstart_warmup": args.warmstart_warmup, "instance": args.instance,
            "scale_nodes": args.scale_nodes, "scale_pods": args.scale_pods, "real_sizes": args.real_sizes,
        },
        "argv": argv,
        "load": [meta["loadavg_start"], meta.get("loadavg_end")],
    }  # fmt: skip


def _drain_reference(results: list[SizeResult], size_mib: int) -> tuple[float | None, float | None]:
    """The median single-pod total and machine CPU of the drain's pod size, if a stand-in --sizes row measured it."""
    row = next((r for r in results if r.size_mib == size_mib and r.migrations and r.runtime == RUNTIME_STANDIN), None)
    if row is None:
        return None, None
    return stats.median(m.total_s for m in row.migrations), stats.median(m.machine_cpu_s for m in row.migrations)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["history"]:
        return history_main(argv[1:])
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    criu = lc.tool("criu")
    meta = _meta(args, criu)
    meta["commit"] = history.commit(history=args.history)
    base = Path(tempfile.mkdtemp(prefix="podmigrate-bench-"))
    # The floor's CRIU images on a tmpfs, like the nodes' checkpoints directories (bench/README.md).
    in_memory = Path(tempfile.mkdtemp(prefix="podmigrate-bench-", dir=FLOOR_IMAGES_TMPFS))
    state = base / "cluster"
    results: list[SizeResult] = []
    emptydir: list[SizeResult] = []
    real: list[SizeResult] = []
    drained: DrainRun | None = None
    warm: WarmStartResult | None = None
    scaled: ScaleResult | None = None
    cluster: lc.Cluster | None = None
    installation: podmigrate.PodInstallation | None = None
    teardown_error: str | None = None
    started = time.monotonic()
    timings: dict[str, float] = {}
    try:
        _log(f"bringing up local cluster instance {args.instance} in {state}")
        t0 = time.monotonic()
        cluster = lc.up(state_dir=state, nodes=2, instance=args.instance, real_nodes=REAL_NODES if args.real_sizes else 0)
        cluster.taint_real_nodes()  # before anything is scheduled: podmigrate's own pods, then every row's
        installation = podmigrate.install_pods(cluster)  # make image + kubectl apply -k: the user's install
        timings["up_s"] = time.monotonic() - t0
        _log(f"cluster and podmigrate up in {timings['up_s']:.1f}s")
        api = migration.Api(cluster, workdir=base)
        migration.ensure_namespace(api)
        results += [SizeResult(size_mib=size) for size in args.sizes]
        real_source, real_target = real_pair(cluster) if args.real_sizes else ("", "")
        if args.real_sizes:
            meta["real_versions"] = real_versions(api, (real_source, real_target))
            _log(f"real nodes {real_source} -> {real_target}: {meta['real_versions']}")
        real += [SizeResult(size_mib=size, runtime=RUNTIME_CONTAINERD) for size in args.real_sizes]
        measured = baseline_rows(results, real)
        # Every floor first, on a machine no migration has touched yet: after a 1 GiB migration, page-cache writes
        # to the disk the nodes and the floor share stay ~3x slower for tens of seconds (see bench/README.md), and
        # the floor is meant to be the best case. A sync before each measurement starts each with nothing dirty.
        for result in measured:
            for i in range(1, args.repeat + 1):
                _sync()
                f = floor.measure(
                    size_mib=result.size_mib, workdir=base, criu=criu, warmup_seconds=args.warmup_seconds, images_dir=in_memory
                )
                result.floors.append(f)
                _log(
                    f"{result.size_mib}MiB floor run {i}: dump {stats.fmt_seconds(f.dump_s)}s + "
                    f"restore {stats.fmt_seconds(f.restore_s)}s" + ("" if f.ok else f" FAILED: {f.error}")
                )
        # The registry's ceilings after the floors (their writes would slow the floor, see above) and before the
        # migrations: a ceiling is the best case too, and every migration then runs on a disk that has been written.
        credentials = cluster.registry_credentials(registryauth.PUSH_USER).for_registry(cluster.registry)
        for result in (r for r in measured if r.size_mib):  # 0 MiB: no blob to time
            for i in range(1, args.repeat + 1):
                _between_runs(cluster)
                c = ceiling.measure(
                    registry=cluster.registry, credentials=credentials, size_mib=result.size_mib, workdir=base,
                    registry_pid=cluster.registry_pid(),
                )  # fmt: skip
                result.ceilings.append(c)
                _log(
                    f"{result.size_mib}MiB registry ceiling run {i}: push 1 stream {stats.fmt_seconds(c.push_1_s)}s, "
                    f"{c.streams} streams {stats.fmt_seconds(c.push_n_s)}s, get {stats.fmt_seconds(c.get_s)}s"
                    + ("" if c.ok else f" FAILED: {c.error}")
                )
        share_baselines(measured, real)
        for result in results:
            for i in range(1, args.repeat + 1):
                _between_runs(cluster)
                m = migration.measure(
                    api=api, cluster=cluster, size_mib=result.size_mib, run_index=i, warmup_seconds=args.warmup_seconds
                )
                result.migrations.append(m)
                _log(
                    f"{result.size_mib}MiB migration run {i}: {m.phase or 'unfinished'} total {stats.fmt_seconds(m.total_s)}s "
                    f"downtime {stats.fmt_seconds(m.downtime_s)}s" + ("" if m.ok else f" FAILED: {m.error}")
                )
        # The same (smallest) app again with a file in an emptyDir: what moving the files costs, per GiB.
        emptydir += [SizeResult(size_mib=min(args.sizes), emptydir_mib=e) for e in args.emptydir_mib if e]
        for result in emptydir:
            for i in range(1, args.repeat + 1):
                _between_runs(cluster)
                m = migration.measure(
                    api=api, cluster=cluster, size_mib=result.size_mib, run_index=i, warmup_seconds=args.warmup_seconds,
                    emptydir_mib=result.emptydir_mib,
                )  # fmt: skip
                result.migrations.append(m)
                _log(
                    f"{result.label} migration run {i}: {m.phase or 'unfinished'} downtime {stats.fmt_seconds(m.downtime_s)}s "
                    f"({stats.fmt_mib(m.volume_bytes)} of emptyDir files)" + ("" if m.ok else f" FAILED: {m.error}")
                )
        # The same migrations between the real nodes (upstream kubelet + containerd): what users' nodes pay.
        t0 = time.monotonic()
        for result in real:
            for i in range(1, args.repeat + 1):
                _between_runs(cluster)
                m = migration.measure(
                    api=api, cluster=cluster, size_mib=result.size_mib, run_index=i, warmup_seconds=args.warmup_seconds,
                    source=real_source, target=real_target,
                )  # fmt: skip
                result.migrations.append(m)
                _log(
                    f"{result.label} migration run {i}: {m.phase or 'unfinished'} total {stats.fmt_seconds(m.total_s)}s "
                    f"downtime {stats.fmt_seconds(m.downtime_s)}s" + ("" if m.ok else f" FAILED: {m.error}")
                )
        if real:
            timings["real_rows_s"] = time.monotonic() - t0
        # A Deployment scaled up warm from a PodCheckpoint of its first pod, then one of the same template scaled up cold.
        if args.warmstart_pods:
            warm = WarmStartResult(pods=args.warmstart_pods, size_mib=min(args.sizes), warmup_seconds=args.warmstart_warmup)
            t0 = time.monotonic()
            for i in range(1, args.repeat + 1):
                _between_runs(cluster)
                w = warmstart.measure(api=api, cluster=cluster, pods=warm.pods, size_mib=warm.size_mib,
                                      warmup_seconds=warm.warmup_seconds, run_index=i)  # fmt: skip
                warm.runs.append(w)
                alone = WarmStartResult(pods=warm.pods, size_mib=warm.size_mib, warmup_seconds=warm.warmup_seconds, runs=[w])
                n = report.warmstart_numbers(alone)
                _log(
                    f"{warm.label} run {i}: warm {stats.fmt_seconds(n['warm_s'])}s, cold {stats.fmt_seconds(n['cold_s'])}s, "
                    f"{w.restored}/{w.pods} restored" + ("" if w.ok else f" FAILED: {'; '.join(alone.failures())}")
                )
            timings["warmstart_row_s"] = time.monotonic() - t0
        # Last, as it cordons node-1 while it runs: N small pods drained K at a time, against one pod's total.
        if args.drain_pods:
            reference = None
            single, single_cpu = _drain_reference(results, args.drain_mib)
            if single is None:  # no --sizes row of that size: move one such pod alone first, as the goal's unit
                _between_runs(cluster)
                reference = migration.measure(api=api, cluster=cluster, size_mib=args.drain_mib, run_index=0,
                                              warmup_seconds=args.warmup_seconds)  # fmt: skip
                single, single_cpu = reference.total_s, reference.machine_cpu_s
                _log(f"{args.drain_mib}MiB single migration for the drain's goal: total {stats.fmt_seconds(single)}s")
            _between_runs(cluster)
            t0 = time.monotonic()
            drained = drain.measure(api=api, cluster=cluster, pods=args.drain_pods, concurrency=args.drain_concurrency,
                                    size_mib=args.drain_mib, warmup_seconds=args.warmup_seconds)  # fmt: skip
            timings["drain_row_s"] = time.monotonic() - t0  # pods started, drained, cleaned up: what the row costs
            drained.single_total_s, drained.single_cpu_s, drained.reference = single, single_cpu, reference
            _log(
                f"{drained.label}: {drained.phase or 'unfinished'} wall {stats.fmt_seconds(drained.wall_s)}s"
                + ("" if drained.ok else f" FAILED: {'; '.join(drained.failures())}")
            )
        # The very last, as it grows the cluster (and cordons node-1 twice): the same drain small and large.
        if args.scale_nodes and args.drain_pods:
            _between_runs(cluster)
            t0 = time.monotonic()
            scaled = scale.measure(api=api, cluster=cluster, installation=installation, nodes=args.scale_nodes,
                                   pods=args.scale_pods, drain_pods=args.drain_pods, concurrency=args.drain_concurrency,
                                   size_mib=args.drain_mib, warmup_seconds=args.warmup_seconds)  # fmt: skip
            timings["scale_row_s"] = time.monotonic() - t0
            _log(f"{scaled.label}: " + ("OK" if scaled.ok else f"FAILED: {'; '.join(scaled.failures())}"))
        elif args.scale_nodes:
            _log("no scale row: it drains --drain-pods pods, and --drain-pods is 0")
    except KeyboardInterrupt:
        _log("interrupted: tearing down")
        teardown_error = "interrupted"
    finally:
        t0 = time.monotonic()
        if args.logs and (state / "logs").exists():
            shutil.copytree(state / "logs", args.logs, dirs_exist_ok=True)
            if installation is not None and cluster is not None:  # the pods' logs, as kubectl logs shows them
                (args.logs / "podmigrate-controller.log").write_text(installation.logs(component="controller"))
                for node in cluster.nodes:
                    log = installation.logs(component="agent", node=node.name)
                    (args.logs / f"podmigrate-agent-{node.name}.log").write_text(log)
            _log(f"cluster logs copied to {args.logs}")
        if installation is not None:
            try:
                installation.stop()
            except Exception as exc:  # report it, but still take the cluster down
                teardown_error = f"stopping podmigrate: {exc}"
        try:
            lc.down(state_dir=state)
        except Exception as exc:
            teardown_error = f"cluster down: {exc}"
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(in_memory, ignore_errors=True)
        timings["down_s"] = time.monotonic() - t0
        _log(f"torn down in {timings['down_s']:.1f}s")
    meta["loadavg_end"] = round(os.getloadavg()[0], 2)
    meta["wall_s"] = round(time.monotonic() - started, 1)
    meta.update({k: round(v, 1) for k, v in timings.items()})
    rows_cost = f", containerd rows {meta['real_rows_s']}s" if "real_rows_s" in meta else ""
    rows_cost += f", warm start row {meta['warmstart_row_s']}s" if "warmstart_row_s" in meta else ""
    rows_cost += f", drain row {meta['drain_row_s']}s" if "drain_row_s" in meta else ""
    rows_cost += f", scale row {meta['scale_row_s']}s" if "scale_row_s" in meta else ""
    footer = [
        f"bench took {meta['wall_s']}s (cluster up + install {meta.get('up_s', '?')}s{rows_cost}, "
        f"teardown {meta.get('down_s', '?')}s)"
    ]
    if results:
        text = report.render(results, header=_header(meta, cluster), footer=footer, emptydir=emptydir, drain=drained,
                             warmstart=warm, scale=scaled, real=real)  # fmt: skip
        print(text, flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = report.to_json(results, meta=meta, emptydir=emptydir, drain=drained, warmstart=warm, scale=scaled,
                                  real=real)  # fmt: skip
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        _log(f"wrote {args.json}")
    recorded = [r for r in results if r.migrations]
    if args.no_history or teardown_error == "interrupted" or not recorded:
        _log("history: nothing appended" + (" (--no-history)" if args.no_history else " (no complete run)"))
    else:  # a failed row is recorded too, marked FAILED: a run that breaks is history as well
        history.append(args.history, history.records(run=_history_run(args, argv, meta), results=recorded,
                                                     emptydir=emptydir, drain=drained, warmstart=warm,
                                                     scale=scaled, real=[r for r in real if r.migrations]))  # fmt: skip
        _log(f"history: appended this run to {args.history} (python -m bench history)")
    if teardown_error:
        _log(f"ERROR: {teardown_error}")
        return 1
    rows_ok = (drained is None or drained.ok) and (warm is None or warm.ok) and (scaled is None or scaled.ok)
    return 0 if results and all(r.ok for r in [*results, *emptydir, *real]) and rows_ok else 1


if __name__ == "__main__":
    sys.exit(main())
