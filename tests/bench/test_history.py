"""bench/history.py: records appended and read back, the per-row tables, the README snippet, commit and CPU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import history
from bench.results import CeilingRun, DrainRun, FloorRun, MigrationRun, SizeResult, WarmStartResult, WarmStartRun

MACHINE = {"cpu": "AMD EPYC", "cores": 2, "memory_gib": 23.5}


def _run(date: str, *, commit: str = "abc1234", machine: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "date": date,
        "commit": commit,
        "machine": machine or MACHINE,
        "kernel": "6.18.44",
        "criu": "4.2.1",
        "args": {"sizes": [64], "repeat": 1},
        "argv": ["--sizes", "64"],
        "load": [0.5, 1.25],
    }


def _size(downtime: float, *, ok: bool = True) -> SizeResult:
    migration = MigrationRun(
        pod="app-64m-1", phase="Succeeded" if ok else "Failed", total_s=downtime + 0.6, downtime_s=downtime,
        client_gap_s=downtime - 0.1, ready_lag_s=0.05, phases={"restore": 0.6},
        agent={"checkpoint": 0.3, "push": 0.2}, image_bytes=80 << 20, agent_peak_bytes=90 << 20, state_ok=ok,
    )  # fmt: skip
    return SizeResult(
        size_mib=64,
        floors=[FloorRun(dump_s=0.08, restore_s=0.07, state_ok=True)],
        ceilings=[CeilingRun(blob_bytes=64 << 20, push_1_s=0.2, push_n_s=0.15, get_s=0.1)],
        migrations=[migration],
    )


def _drain(wall: float) -> DrainRun:
    return DrainRun(pods=4, concurrency=2, size_mib=64, phase="Succeeded", wall_s=wall, single_total_s=3.0, state_ok=True)


def test_records_append_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "history.jsonl"
    first = history.records(run=_run("2026-11-30T14:00:00+00:00"), results=[_size(2.5)], drain=_drain(8.0))
    assert [r["row"] for r in first] == ["64MiB", "drain 4x64MiB k=2"]
    size = first[0]
    assert size["schema"] == history.SCHEMA and size["kind"] == "size" and size["ok"] is True and size["runs"] == 1
    assert size["commit"] == "abc1234" and size["machine"] == MACHINE and size["kernel"] == "6.18.44"
    medians = size["medians"]
    assert medians["downtime_s"] == 2.5 and medians["total_s"] == 3.1 and medians["floor_s"] == 0.15
    assert medians["downtime_ratio"] == pytest.approx(16.6667) and medians["client_gap_s"] == 2.4
    assert medians["stage:dump"] == 0.3 and medians["stage:restore"] == 0.6 and medians["agent_peak_bytes"] == 90 << 20
    assert isinstance(medians["ingest_1_Bps"], int) and "stage:fetch" not in medians, "unknown numbers are left out"
    assert size["sources"] == {"dump": "metrics", "upload": "metrics", "restore": "phase"}
    assert first[1]["medians"]["goal_ratio"] == pytest.approx(8.0 / 7.2, abs=1e-4)
    history.append(path, first)
    history.append(path, history.records(run=_run("2026-11-30T15:00:00+00:00", commit="def5678-dirty"), results=[_size(3.0)]))
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["schema"] == 1 for line in lines)
    back = history.read(path)
    assert [r["commit"] for r in back] == ["abc1234", "abc1234", "def5678-dirty"]
    assert [len(run) for run in history.runs(back)] == [2, 1]
    assert history.read(tmp_path / "missing.jsonl") == []


def test_parse_skips_what_it_cannot_read() -> None:
    good = json.dumps({"row": "64MiB", "medians": {"total_s": 1.0}, "date": "d"})
    text = "\n".join([good, "", "{broken", "[1, 2]", json.dumps({"row": "64MiB"}), '{"row": "64MiB", "medians": {"to'])
    assert history.parse(text) == [json.loads(good)]


def _history(*downtimes: float, machines: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, downtime in enumerate(downtimes):
        run = _run(f"2026-11-{20 + i}T14:00:00+00:00", commit=f"c{i}", machine=(machines or [MACHINE] * len(downtimes))[i])
        out += history.records(run=run, results=[_size(downtime)], drain=_drain(8.0 + i))
    return out


def test_tables_show_each_row_with_latest_over_previous() -> None:
    text = history.tables(_history(2.0, 2.5, 3.0), last=2)
    blocks = text.split("\n\n")
    assert blocks[0].startswith("64MiB: 2 of 3 recorded run(s)")
    table = blocks[0].splitlines()
    assert table[1].split()[:5] == ["date", "(UTC)", "commit", "total_s", "downtime_s"]
    assert table[2].split()[:3] == ["2026-11-21", "14:00", "c1"] and table[3].split()[2] == "c2"
    change = table[4].split()
    assert change[0] == "latest/previous"
    assert change[1:3] == ["1.16x!", "1.20x!"], "total 3.1 -> 3.6 and downtime 2.5 -> 3.0: worse by > 10%"
    assert change[3] == "1.00x", "the floor did not move"
    assert blocks[1].startswith("drain 4x64MiB k=2: 2 of 3")
    assert blocks[1].splitlines()[-1].split()[1:4] == ["1.11x!", "1.00x", "1.11x!"]
    assert "worse by more than 10%" in blocks[-1]
    assert "different machines" not in text
    assert history.tables([]) == "no recorded runs"
    everything = history.tables(_history(2.0, 2.5, 3.0), last=0)
    assert everything.startswith("64MiB: 3 of 3 recorded run(s)")


def test_a_better_ceiling_ratio_is_no_regression_and_machines_are_compared() -> None:
    assert history.change_cell(0.9, 0.7, higher_is_better=True) == "1.29x"
    assert history.change_cell(0.5, 0.7, higher_is_better=True) == "0.71x!"
    assert history.change_cell(1.05, 1.0, higher_is_better=False) == "1.05x"
    assert history.change_cell(None, 1.0, higher_is_better=False) == "-"
    assert history.change_cell(1.0, 0.0, higher_is_better=False) == "-"
    other = {"cpu": "Intel Xeon", "cores": 8, "memory_gib": 64.0}
    text = history.tables(_history(2.0, 2.5, machines=[MACHINE, other]))
    assert "(latest and previous ran on different machines or with different arguments)" in text


def test_a_single_run_has_no_change_row_and_failures_show() -> None:
    records = history.records(run=_run("2026-11-30T14:00:00+00:00"), results=[_size(2.0, ok=False)])
    table = history.tables(records).split("\n\n")[0].splitlines()
    assert len(table) == 3 and table[2].split()[-1] == "FAILED"


def test_markdown_quotes_the_latest_run_and_says_it_is_one_run() -> None:
    text = history.markdown(_history(2.0, 2.5))
    assert "One `make bench` run, on one machine: commit `c1`, 2026-11-21 14:00 UTC" in text
    assert "AMD EPYC, 2 cores, 23.5 GiB, Linux 6.18.44" in text and "arguments `python -m bench --sizes 64`" in text
    assert "not a specification" in text
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert rows[0].startswith("| size | total_s | downtime_s |") and rows[1].startswith("|---|---:|")
    assert rows[2].startswith("| 64MiB | 3.100 | 2.500 | 0.150 |") and rows[2].endswith("| OK |")
    assert len(rows) == 3, "only the latest run"
    assert "drain 4x64MiB k=2: wall 9.000 s against the goal 7.200 s" in text and "wall/goal 1.25x" in text
    assert "No `make bench` run recorded yet" in history.markdown([])


def test_replace_block_rewrites_only_between_the_markers() -> None:
    readme = f"# x\n\nbefore\n{history.README_START} old -->\nold table\n{history.README_END}\nafter\n"
    out = history.replace_block(readme, "new table\n")
    assert out.startswith("# x\n\nbefore\n<!-- bench-history:start (generated by")
    assert "new table\n<!-- bench-history:end -->\nafter\n" in out and "old table" not in out
    assert history.replace_block(out, "newer").count("bench-history:start") == 1
    with pytest.raises(ValueError, match="bench-history"):
        history.replace_block("no markers", "x")


def test_cpu_model() -> None:
    assert history.cpu_model("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n") == "AMD EPYC"
    assert history.cpu_model("processor\t: 0\nBogoMIPS\t: 50.00\nHardware\t: BCM2835\n") == "BCM2835"
    assert history.cpu_model("") == "unknown"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_commit_is_dirty_for_tracked_changes_but_not_for_the_history_file(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    (repo / "bench" / "history.jsonl").write_text("")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    path = repo / "bench" / "history.jsonl"
    clean = history.commit(repo=repo, history=path)
    assert len(clean) >= 7 and not clean.endswith("-dirty")
    path.write_text('{"row": "64MiB"}\n')
    (repo / "untracked.txt").write_text("?")
    assert history.commit(repo=repo, history=path) == clean, "the history file and untracked files do not count"
    (repo / "code.py").write_text("x = 2\n")
    assert history.commit(repo=repo, history=path) == f"{clean}-dirty"
    assert history.commit(repo=tmp_path / "nothing", history=path) == "unknown"


def test_a_change_of_stage_source_is_pointed_out() -> None:
    assert history.source_changes({"restore": "phase", "dump": "metrics"}, {"restore": "status", "dump": "metrics"}) == (
        "restore phase -> status"
    )
    assert history.source_changes({}, {"restore": "status"}) == ""
    records = _history(2.0, 2.5)
    records[2]["sources"] = {**records[2]["sources"], "restore": "status"}  # the second run's 64MiB row
    assert "(stage times from other sources than before: restore phase -> status;" in history.tables(records)


def _warm(warm: float, *, ok: bool = True) -> WarmStartResult:
    run = WarmStartRun(pods=2, first_s=12.0, checkpoint_s=1.5, warm_pods=[warm, warm + 1], cold_pods=[12.0, 12.0],
                       restored=2 if ok else 0)  # fmt: skip
    return WarmStartResult(pods=2, size_mib=64, warmup_seconds=10, runs=[run])


def test_the_warm_start_row_is_recorded_and_shown_like_the_drain() -> None:
    out: list[dict[str, Any]] = []
    for i, warm in enumerate((2.0, 3.0)):
        out += history.records(run=_run(f"2026-11-{20 + i}T14:00:00+00:00", commit=f"c{i}"), results=[_size(2.0)],
                               drain=_drain(8.0), warmstart=_warm(warm, ok=i == 0))  # fmt: skip
    record = out[2]
    assert record["row"] == "warm start 2x64MiB warmup=10s" and record["kind"] == history.KIND_WARMSTART
    assert (record["pods"], record["size_mib"], record["warmup_seconds"], record["runs"]) == (2, 64, 10, 1)
    assert record["medians"]["warm_s"] == 2.5 and record["medians"]["cold_s"] == 12.0
    assert record["medians"]["warm_ratio"] == pytest.approx(0.2083, abs=1e-4) and record["medians"]["checkpoint_s"] == 1.5
    assert "checkpoint_bytes" not in record["medians"], "unmeasured: left out"
    back = history.parse("\n".join(json.dumps(r) for r in out))
    assert len(back) == 6, "read back like every other record"
    block = next(b for b in history.tables(back).split("\n\n") if b.startswith("warm start"))
    lines = block.splitlines()
    assert lines[0] == "warm start 2x64MiB warmup=10s: 2 of 2 recorded run(s)"
    assert lines[1].split()[3:9] == ["cold_s", "warm_s", "warm/cold", "warm_max_s", "first_s", "checkpoint_s"]
    assert lines[2].split()[3:6] == ["12.000", "2.500", "0.21x"] and lines[2].split()[-1] == "OK"
    assert lines[3].split()[-1] == "FAILED"
    assert lines[4].split()[1:4] == ["1.00x", "1.40x!", "1.40x!"], "warm 2.5 -> 3.5 s: worse"
    text = history.markdown(back)
    assert (
        "warm start 2x64MiB warmup=10s: a Deployment's new pod serving 3.500 s after the scale-up when restored from a "
        "PodCheckpoint, 12.000 s when started cold: warm/cold 0.29x." in text
    )


def test_records_without_a_warm_start_row_read_as_before() -> None:
    records = history.records(run=_run("2026-11-30T14:00:00+00:00"), results=[_size(2.0)])
    assert [r["kind"] for r in records] == ["size"]
    assert "warm start" not in history.tables(records) and "warm start" not in history.markdown(records)


def _containerd(downtime: float) -> SizeResult:
    row = _size(downtime)
    row.runtime = "containerd"
    row.migrations[0].pod = "app-64m-1-real"
    return row


def test_containerd_rows_are_recorded_apart_from_the_stand_in_rows(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    for i, (standin, real) in enumerate(((2.0, 6.0), (2.1, 9.0))):
        history.append(path, history.records(run=_run(f"2026-11-{20 + i}T14:00:00+00:00", commit=f"c{i}"),
                                             results=[_size(standin)], real=[_containerd(real)]))  # fmt: skip
    back = history.read(path)
    assert [(r["row"], r["kind"], r["runtime"]) for r in back[:2]] == [
        ("64MiB", "size", "standin"),
        ("64MiB containerd", "size", "containerd"),
    ]
    assert back[1]["medians"]["downtime_s"] == 6.0 and back[1]["medians"]["floor_s"] == 0.15
    assert back[1]["size_mib"] == 64 and back[1]["ok"] is True
    blocks = history.tables(back).split("\n\n")
    assert blocks[0].startswith("64MiB: 2 of 2 recorded run(s)") and blocks[1].startswith("64MiB containerd: 2 of 2")
    assert blocks[0].splitlines()[-1].split()[2] == "1.05x", "the stand-in row against its own previous run"
    assert blocks[1].splitlines()[-1].split()[2] == "1.50x!", "the containerd row against its own: 6.0 -> 9.0 s"
    text = history.markdown(back)
    rows = [line for line in text.splitlines() if line.startswith("| 64MiB")]
    assert [row.split(" | ")[0] for row in rows] == ["| 64MiB", "| 64MiB containerd"], "one more row per real size"
    assert rows[1].startswith("| 64MiB containerd | 9.600 | 9.000 | 0.150 |")
    assert "*containerd* rows: the same migration between the local cluster's real nodes" in text
    assert "containerd" not in history.markdown(history.records(run=_run("2026-11-30T14:00:00+00:00"), results=[_size(2.0)]))
