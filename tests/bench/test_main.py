"""bench/__main__.py without a cluster: the new options, and ``python -m bench history``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench import history
from bench.__main__ import (
    _drain_reference,
    _header,
    _history_run,
    baseline_rows,
    main,
    parse_args,
    parse_real_sizes,
    real_pair,
    share_baselines,
)
from bench.results import CeilingRun, FloorRun, MigrationRun, SizeResult
from localcluster import cluster as lc
from tests.bench.test_history import _history


def test_history_and_drain_options() -> None:
    args = parse_args([])
    assert args.history == history.DEFAULT_PATH and args.no_history is False
    assert (args.drain_pods, args.drain_concurrency, args.drain_mib) == (4, 2, 64)
    args = parse_args(["--no-history", "--drain-pods", "0", "--history", "/tmp/h.jsonl"])
    assert args.no_history and args.drain_pods == 0 and args.history == Path("/tmp/h.jsonl")
    for bad in (["--drain-concurrency", "0"], ["--drain-concurrency", "21"], ["--drain-pods", "-1"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_warm_start_options() -> None:
    args = parse_args([])
    assert (args.warmstart_pods, args.warmstart_warmup) == (2, 10.0), "on by default: 1 -> 3 replicas, 10 s of warm-up"
    args = parse_args(["--warmstart-pods", "0"])
    assert args.warmstart_pods == 0, "0 leaves the row out"
    args = parse_args(["--warmstart-pods", "4", "--warmstart-warmup", "2.5"])
    assert (args.warmstart_pods, args.warmstart_warmup) == (4, 2.5)
    for bad in (["--warmstart-pods", "-1"], ["--warmstart-pods", "11"], ["--warmstart-warmup", "-1"], ["--warmstart-pods", "x"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_the_history_records_the_warm_start_arguments() -> None:
    args = parse_args(["--warmstart-pods", "3", "--warmstart-warmup", "5"])
    meta = {"started": "2026-11-30T14:00:00+00:00", "commit": "abc", "kernel": "6.18", "criu": "4.2.1", "loadavg_start": 0.5}
    run = _history_run(args, ["--warmstart-pods", "3", "--warmstart-warmup", "5"], meta)
    assert run["args"]["warmstart_pods"] == 3 and run["args"]["warmstart_warmup"] == 5.0


def test_drain_reference_is_the_same_size_row() -> None:
    rows = [
        SizeResult(size_mib=64, runtime="containerd", migrations=[MigrationRun(total_s=30.0, machine_cpu_s=30.0)]),
        SizeResult(size_mib=64, migrations=[MigrationRun(total_s=3.0, machine_cpu_s=2.0), MigrationRun(total_s=5.0),
                                            MigrationRun(total_s=None, machine_cpu_s=4.0)]),
        SizeResult(size_mib=256, migrations=[MigrationRun(total_s=9.0)]),
    ]  # fmt: skip
    assert _drain_reference(rows, 64) == (4.0, 3.0), "the stand-in row: the drain runs on stand-in nodes"
    assert _drain_reference(rows, 128) == (None, None)


def test_history_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "history.jsonl"
    assert main(["history", "--file", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "no recorded runs"
    history.append(path, _history(2.0, 2.5, 3.0))
    assert main(["history", "--file", str(path), "--last", "2"]) == 0
    out = capsys.readouterr().out
    assert "64MiB: 2 of 3 recorded run(s)" in out and "latest/previous" in out
    assert main(["history", "--file", str(path), "--markdown"]) == 0
    assert capsys.readouterr().out.startswith("One `make bench` run, on one machine: commit `c2`")

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{history.README_START} -->\nold\n{history.README_END}\nrest\n")
    assert main(["history", "--file", str(path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{history.README_END}\nrest\n")
    assert "commit `c2`" in text and "old" not in text
    readme.write_text("no markers\n")
    assert main(["history", "--file", str(path), "--readme", str(readme)]) == 1
    assert readme.read_text() == "no markers\n"
    assert main(["history", "--file", str(tmp_path / "none.jsonl"), "--readme", str(readme)]) == 1


def test_real_sizes_option() -> None:
    assert parse_args([]).real_sizes == [64, 256, 1024], "by default the containerd rows are the sizes of --sizes"
    assert parse_args(["--sizes", "64,256"]).real_sizes == [64, 256]
    assert parse_args(["--sizes", "0,64"]).real_sizes == [64], "a 0 MiB stand-in row has no containerd twin"
    assert parse_args(["--sizes", "64", "--real-sizes", "64,1024"]).real_sizes == [64, 1024]
    assert parse_args(["--real-sizes", "0"]).real_sizes == [], "0: no real nodes at all"
    assert parse_args(["--real-sizes", ""]).real_sizes == [], "empty: no real nodes at all"
    assert parse_args(["--real-sizes", "0,256"]).real_sizes == [256]
    assert parse_real_sizes(" 64, 1024 ") == [64, 1024]
    with pytest.raises(Exception, match="--real-sizes wants MiB as integers"):
        parse_real_sizes("64,big")
    for bad in (["--real-sizes", "x"], ["--real-sizes", "-64"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_the_scale_row_grows_past_the_real_nodes_too() -> None:
    """With real nodes the cluster has 4 nodes of its own: --scale-nodes must add at least one more."""
    with pytest.raises(SystemExit):
        parse_args(["--scale-nodes", "4"])
    assert parse_args(["--scale-nodes", "5"]).scale_nodes == 5
    assert parse_args(["--scale-nodes", "3", "--real-sizes", "0"]).scale_nodes == 3, "2 stand-ins and one more"


def test_the_history_records_the_real_sizes() -> None:
    args = parse_args(["--sizes", "64", "--real-sizes", "64,1024"])
    meta = {"started": "2026-11-30T14:00:00+00:00", "commit": "abc", "kernel": "6.18", "criu": "4.2.1", "loadavg_start": 0.5}
    assert _history_run(args, [], meta)["args"]["real_sizes"] == [64, 1024]
    assert _history_run(parse_args(["--real-sizes", "0"]), [], meta)["args"]["real_sizes"] == []


def test_containerd_rows_share_the_floors_and_ceilings_of_their_size() -> None:
    results = [SizeResult(size_mib=64), SizeResult(size_mib=256)]
    real = [SizeResult(size_mib=64, runtime="containerd"), SizeResult(size_mib=1024, runtime="containerd")]
    measured = baseline_rows(results, real)
    assert measured == [results[0], results[1], real[1]], "a containerd size no stand-in row has is measured itself"
    for r in measured:
        r.floors.append(FloorRun(dump_s=r.size_mib / 1000, restore_s=0.1, state_ok=True))
        r.ceilings.append(CeilingRun(blob_bytes=r.size_mib << 20, push_1_s=1.0))
    share_baselines(measured, real)
    assert real[0].floors == results[0].floors and real[0].ceilings == results[0].ceilings
    assert real[0].floors is not results[0].floors, "a copy of the list: the rows stay apart"
    assert len(real[1].floors) == 1 and real[1].floors[0].dump_s == 1.024, "its own, not shared twice"
    assert baseline_rows(results, []) == results, "without containerd rows: exactly the stand-in rows, as before"
    twice = [SizeResult(size_mib=512, runtime="containerd"), SizeResult(size_mib=512, runtime="containerd")]
    assert baseline_rows([], twice) == [twice[0]], "one measurement per size"


class _ControlPlane:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def kubectl(self, *args: str) -> None:
        self.calls.append(args)


def _cluster(*, real: bool = True) -> Any:
    nodes = [lc.NodeInfo(name=f"node-{i}", index=i, address=f"127.0.5.{i}", state_dir="/x") for i in (1, 2)]
    if real:
        nodes += [lc.NodeInfo(name=f"real-{i}", index=i, address=f"127.0.5.{100 + i}", state_dir="/x", kind="real")
                  for i in (1, 2)]  # fmt: skip
    control = _ControlPlane()
    return SimpleNamespace(nodes=nodes, server="https://127.0.0.1:6447", registry="127.0.0.1:5314",
                           controlplane=lambda: control, control=control)  # fmt: skip


def test_the_real_nodes_are_tainted_and_paired() -> None:
    cluster = _cluster()
    lc.Cluster.taint_real_nodes(cluster)  # type: ignore[arg-type]
    assert cluster.control.calls == [
        ("taint", "node", "real-1", "podmigrate.io/real-node=true:NoSchedule", "--overwrite"),
        ("taint", "node", "real-2", "podmigrate.io/real-node=true:NoSchedule", "--overwrite"),
    ], "the real nodes only, as tests/conftest.py does"
    assert real_pair(cluster) == ("real-1", "real-2")
    standin = _cluster(real=False)
    lc.Cluster.taint_real_nodes(standin)  # type: ignore[arg-type]
    assert standin.control.calls == []
    with pytest.raises(lc.ClusterError, match="2 real nodes"):
        real_pair(standin)


def test_the_header_names_the_real_nodes() -> None:
    meta = {"started": "2026-11-30T14:00:00+00:00", "cpus": 2, "memory_gib": 23.5, "kernel": "6.18", "criu": "4.2.1",
            "loadavg_start": 0.5, "instance": 4, "sizes_mib": [64], "real_sizes_mib": [64, 1024], "warmup_seconds": 1.0,
            "repeat": 1, "real_versions": "kubelet v1.36.3, containerd://2.3.7"}  # fmt: skip
    lines = _header(meta, _cluster())
    assert "node-1 (127.0.5.1) -> node-2 (127.0.5.2)" in lines[2]
    assert lines[3].startswith("real nodes: real-1 (127.0.5.101) -> real-2 (127.0.5.102), kubelet v1.36.3, containerd://2.3.7")
    assert "BALLAST_MB in {64} of random (incompressible) bytes; containerd rows BALLAST_MB in {64,1024};" in lines[4]
    plain = _header({**meta, "real_sizes_mib": []}, _cluster(real=False))
    assert len(plain) == 4 and not any("real nodes" in line or "containerd" in line for line in plain)


def test_between_runs_collects_the_registrys_garbage_once_then_syncs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import __main__ as bench_main

    calls: list[str] = []

    class Cluster:
        def collect_registry_garbage(self) -> int:
            calls.append("gc")
            return 3 << 30

    monkeypatch.setattr(bench_main.os, "sync", lambda: calls.append("sync"))
    bench_main._between_runs(Cluster())  # type: ignore[arg-type]
    assert calls == ["gc", "sync"]
    assert "registry garbage collection freed 3.0 GiB" in capsys.readouterr().err
