"""``python -m bench [--sizes 64,256,1024] [--repeat N] [--json PATH]``: see ``bench/README.md``.

Brings up its own local cluster (instance 5: API :6448, registry :5315, nodes 127.0.6.x) in a
temporary directory, installs podmigrate, measures the floor of every size, then the migration
of every size, and always tears everything down. Progress goes to stderr, the report to stdout.
Exit status 1 when a migration or a floor run failed (or teardown left something behind); speed
is never judged.
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
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import floor, migration, report, stats
from bench.results import SizeResult
from localcluster import cluster as lc
from localcluster import podmigrate

DEFAULT_SIZES = (64, 256, 1024)
INSTANCE = 5


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes wants MiB as integers separated by commas, got {text!r}") from None
    if not sizes or any(s < 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"--sizes wants non-negative MiB, got {text!r}")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES), help="ballast sizes, MiB (64,256,1024)")
    parser.add_argument(
        "--emptydir-mib", type=parse_sizes, default=[256], metavar="SIZES",
        help="also move the smallest-size app holding a file of this much random data in an emptyDir, MiB (256; 0: none)",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs per size; the tables show medians (1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every run and the medians as JSON to PATH")
    parser.add_argument("--instance", type=int, default=INSTANCE, help="local cluster instance, so it collides with no other (5)")
    parser.add_argument("--logs", type=Path, metavar="DIR", help="copy the cluster's logs (nodes, agents, controller) to DIR")
    parser.add_argument("--warmup-seconds", type=float, default=1.0, help="the app's WARMUP_SECONDS (1)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


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
    sizes = ",".join(map(str, meta["sizes_mib"]))
    lines.append(
        f"app: warmup server, WARMUP_SECONDS={meta['warmup_seconds']:g}, BALLAST_MB in {{{sizes}}} "
        f"of random (incompressible) bytes; {meta['repeat']} run(s) per size"
    )
    return lines


def _sync() -> None:
    t0 = time.monotonic()
    os.sync()
    if time.monotonic() - t0 > 1:
        _log(f"sync (dirty page cache written back before measuring) took {time.monotonic() - t0:.1f}s")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    criu = lc.tool("criu")
    meta = _meta(args, criu)
    base = Path(tempfile.mkdtemp(prefix="podmigrate-bench-"))
    state = base / "cluster"
    results: list[SizeResult] = []
    emptydir: list[SizeResult] = []
    cluster: lc.Cluster | None = None
    installation: podmigrate.PodInstallation | None = None
    teardown_error: str | None = None
    started = time.monotonic()
    timings: dict[str, float] = {}
    try:
        _log(f"bringing up local cluster instance {args.instance} in {state}")
        t0 = time.monotonic()
        cluster = lc.up(state_dir=state, nodes=2, instance=args.instance)
        installation = podmigrate.install_pods(cluster)  # make image + kubectl apply -k: the user's install
        timings["up_s"] = time.monotonic() - t0
        _log(f"cluster and podmigrate up in {timings['up_s']:.1f}s")
        api = migration.Api(cluster, workdir=base)
        migration.ensure_namespace(api)
        results += [SizeResult(size_mib=size) for size in args.sizes]
        # Every floor first, on a machine no migration has touched yet: after a 1 GiB migration, page-cache writes
        # to the disk the nodes and the floor share stay ~3x slower for tens of seconds (see bench/README.md), and
        # the floor is meant to be the best case. A sync before each measurement starts each with nothing dirty.
        for result in results:
            for i in range(1, args.repeat + 1):
                _sync()
                f = floor.measure(size_mib=result.size_mib, workdir=base, criu=criu, warmup_seconds=args.warmup_seconds)
                result.floors.append(f)
                _log(
                    f"{result.size_mib}MiB floor run {i}: dump {stats.fmt_seconds(f.dump_s)}s + "
                    f"restore {stats.fmt_seconds(f.restore_s)}s" + ("" if f.ok else f" FAILED: {f.error}")
                )
        for result in results:
            for i in range(1, args.repeat + 1):
                _sync()
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
                _sync()
                m = migration.measure(
                    api=api, cluster=cluster, size_mib=result.size_mib, run_index=i, warmup_seconds=args.warmup_seconds,
                    emptydir_mib=result.emptydir_mib,
                )  # fmt: skip
                result.migrations.append(m)
                _log(
                    f"{result.label} migration run {i}: {m.phase or 'unfinished'} downtime {stats.fmt_seconds(m.downtime_s)}s "
                    f"({stats.fmt_mib(m.volume_bytes)} of emptyDir files)" + ("" if m.ok else f" FAILED: {m.error}")
                )
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
        timings["down_s"] = time.monotonic() - t0
        _log(f"torn down in {timings['down_s']:.1f}s")
    meta["loadavg_end"] = round(os.getloadavg()[0], 2)
    meta["wall_s"] = round(time.monotonic() - started, 1)
    meta.update({k: round(v, 1) for k, v in timings.items()})
    footer = [
        f"bench took {meta['wall_s']}s (cluster up + install {meta.get('up_s', '?')}s, teardown {meta.get('down_s', '?')}s)"
    ]
    if results:
        print(report.render(results, header=_header(meta, cluster), footer=footer, emptydir=emptydir), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(results, meta=meta, emptydir=emptydir), indent=2) + "\n")
        _log(f"wrote {args.json}")
    if teardown_error:
        _log(f"ERROR: {teardown_error}")
        return 1
    return 0 if results and all(r.ok for r in [*results, *emptydir]) else 1


if __name__ == "__main__":
    sys.exit(main())
