"""The benchmark's pure parts: statistics, ratios, status arithmetic, Prometheus parsing, rendering."""

from __future__ import annotations

import pytest

from bench import report, stats
from bench.results import FloorRun, MigrationRun, SizeResult


def test_median_ignores_unknown_values() -> None:
    assert stats.median([3.0, None, 1.0, 2.0]) == 2.0
    assert stats.median([1.0, 2.0]) == 1.5
    assert stats.median([None, None]) is None
    assert stats.median([]) is None
    assert stats.spread([2.0, None, 5.0, 1.0]) == (1.0, 5.0)
    assert stats.spread([None]) is None


def test_ratio_is_none_when_it_cannot_be_computed() -> None:
    assert stats.ratio(3.0, 1.5) == 2.0
    assert stats.ratio(None, 1.0) is None
    assert stats.ratio(1.0, None) is None
    assert stats.ratio(1.0, 0.0) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "n/a"), (1.0, "1.00x"), (9.994, "9.99x"), (24.04, "24.0x"), (99.94, "99.9x"), (123.4, "123x"), (0.5, "0.50x")],
)
def test_ratio_formatting(value: float | None, text: str) -> None:
    assert stats.fmt_ratio(value) == text


def test_seconds_bytes_and_percent_formatting() -> None:
    assert stats.fmt_seconds(None) == "-"
    assert stats.fmt_seconds(1.23456) == "1.235"
    assert stats.fmt_mib(None) == "-"
    assert stats.fmt_mib(3 * stats.MIB / 2) == "1.5"
    assert stats.fmt_percent(1.0, 4.0) == "25%"
    assert stats.fmt_percent(1.0, None) == "-"


STATUS = {
    "startTime": "2026-11-26T18:00:00.000Z",
    "completionTime": "2026-11-26T18:00:05.250Z",
    "downtimeSeconds": "4.125",
    "phases": [
        {"name": "validate", "start": "2026-11-26T18:00:00.000Z", "end": "2026-11-26T18:00:00.030Z"},
        {"name": "checkpoint", "start": "2026-11-26T18:00:00.030Z", "end": "2026-11-26T18:00:01.000Z"},
        {"name": "checkpoint", "start": "2026-11-26T18:00:02.000Z", "end": "2026-11-26T18:00:02.500Z"},
        {"name": "restore", "start": "2026-11-26T18:00:03.000Z"},  # still open: not counted
    ],
    "containers": [{"name": "a", "archiveBytes": 100, "imageBytes": 110}, {"name": "b", "archiveBytes": 50}],
}


def test_durations_from_a_podmigration_status() -> None:
    assert stats.total_seconds(STATUS) == pytest.approx(5.25)
    assert stats.downtime_seconds(STATUS) == pytest.approx(4.125)
    assert stats.downtime_seconds({"downtimeSeconds": "x"}) is None
    assert stats.total_seconds({"startTime": STATUS["startTime"]}) is None
    durations = stats.phase_durations(STATUS["phases"])
    assert list(durations) == ["validate", "checkpoint"]
    assert durations["validate"] == pytest.approx(0.03)
    assert durations["checkpoint"] == pytest.approx(1.47), "a phase run twice (resumed) counts both times"
    assert stats.container_bytes(STATUS, "archiveBytes") == 150
    assert stats.container_bytes(STATUS, "imageBytes") == 110
    assert stats.container_bytes({}, "imageBytes") is None


def test_downtime_phases_and_phase_order() -> None:
    status = {
        "frozenAt": "2026-11-26T18:00:01.000Z",
        "readyAt": "2026-11-26T18:00:04.000Z",
        "phases": [
            {"name": "validate", "start": "2026-11-26T18:00:00.000Z", "end": "2026-11-26T18:00:00.500Z"},
            {"name": "prepare-target", "start": "2026-11-26T18:00:00.500Z", "end": "2026-11-26T18:00:01.000Z"},
            {"name": "checkpoint", "start": "2026-11-26T18:00:01.000Z", "end": "2026-11-26T18:00:02.000Z"},
            # readyAt is stamped just before the restore phase is closed.
            {"name": "restore", "start": "2026-11-26T18:00:02.000Z", "end": "2026-11-26T18:00:04.001Z"},
            {"name": "cleanup", "start": "2026-11-26T18:00:04.001Z", "end": "2026-11-26T18:00:04.100Z"},
        ],
    }
    assert stats.downtime_phases(status) == ["checkpoint", "restore"]
    assert stats.downtime_phases({"phases": status["phases"]}) == []
    assert stats.phase_order([["a", "c"], ["a", "b", "c"], ["a", "x"]]) == ["a", "b", "c", "x"]
    assert stats.phase_order([]) == list(stats.PHASES)


METRICS_BEFORE = """\
# HELP podmigrate_agent_checkpoint_duration_seconds Checkpoint time by phase.
# TYPE podmigrate_agent_checkpoint_duration_seconds histogram
podmigrate_agent_checkpoint_duration_seconds_bucket{phase="push",le="0.5"} 1
podmigrate_agent_checkpoint_duration_seconds_sum{phase="push"} 0.25
podmigrate_agent_checkpoint_duration_seconds_count{phase="push"} 1
podmigrate_agent_checkpoint_duration_seconds_sum{phase="freeze"} 0.001
podmigrate_agent_checkpoint_duration_seconds_count{phase="freeze"} 1
process_resident_memory_peak_bytes 1048576
"""
METRICS_AFTER = """\
podmigrate_agent_checkpoint_duration_seconds_sum{phase="push"} 1.5
podmigrate_agent_checkpoint_duration_seconds_count{phase="push"} 2
podmigrate_agent_checkpoint_duration_seconds_sum{phase="checkpoint"} 0.75
podmigrate_agent_checkpoint_duration_seconds_count{phase="checkpoint"} 1
podmigrate_agent_checkpoint_duration_seconds_sum{phase="freeze"} 0.001
podmigrate_agent_checkpoint_duration_seconds_count{phase="freeze"} 1
some_metric{a="x\\"y",b="2"} 7 1700000000
process_resident_memory_peak_bytes 9.437184e+07
"""


def test_criu_display_stats() -> None:
    output = "Displaying dump stats:\nFreezing time: 104 us\nFrozen time: 494601 us\nMemory write time: 257157 us\n"
    output += "Memory pages scanned: 265172 (0x40bd4)\n"
    assert stats.criu_stat_times(output) == {"freezing": 0.000104, "frozen": 0.494601, "memory write": 0.257157}
    assert stats.criu_stat_times("") == {}


def test_prometheus_text_and_agent_phase_deltas() -> None:
    after = stats.parse_prometheus(METRICS_AFTER)
    assert stats.sample(after, stats.AGENT_PEAK_RSS) == 94371840
    assert stats.sample(after, "some_metric", a='x"y', b="2") == 7
    assert stats.sample(after, "missing") is None
    deltas = stats.agent_phase_seconds(stats.parse_prometheus(METRICS_BEFORE), after)
    assert deltas == {"checkpoint": pytest.approx(0.75), "push": pytest.approx(1.25)}, "freeze did not run in between"
    with pytest.raises(ValueError):  # prometheus_client's parser: a broken exposition is an error, not skipped
        stats.parse_prometheus(METRICS_AFTER + "not a sample line\n")


def test_render_table_aligns_columns() -> None:
    text = report.render_table(["size", "total_s"], [["64MiB", "1.000"], ["1024MiB", "12.500"]])
    assert text.splitlines() == ["size     total_s", "64MiB      1.000", "1024MiB   12.500"]


def _result(size: int, *, total: float, downtime: float, dump: float, restore: float, ok: bool = True) -> SizeResult:
    migration = MigrationRun(
        pod=f"app-{size}m-1",
        phase="Succeeded" if ok else "Failed",
        reason="Migrated" if ok else "RestoreFailed",
        total_s=total,
        downtime_s=downtime,
        phases={"validate": 0.01, "checkpoint": total / 2, "restore": total / 4},
        downtime_phases=["checkpoint", "restore"],
        agent={"checkpoint": 0.3, "push": 0.2},
        archive_bytes=size * stats.MIB,
        agent_peak_bytes=80 * stats.MIB,
        state_ok=ok,
    )
    return SizeResult(size_mib=size, floors=[FloorRun(dump_s=dump, restore_s=restore, state_ok=True)], migrations=[migration])


def test_main_table_ratios_and_summary() -> None:
    results = [
        _result(64, total=5.0, downtime=4.0, dump=0.1, restore=0.1),
        _result(1024, total=20.0, downtime=12.5, dump=1.0, restore=1.0, ok=False),
    ]
    table = report.main_table(results).splitlines()
    assert table[0].split()[:5] == ["size", "total_s", "downtime_s", "floor_s(dump+restore)", "total/floor"]
    assert table[1].split() == [
        "64MiB", "5.000", "4.000", "0.200", "(0.100+0.100)", "25.0x", "20.0x", "64.0", "0.300", "0.200", "1.250", "80.0", "OK",
    ]  # fmt: skip
    assert table[2].split()[5:7] == ["10.0x", "6.25x"] and table[2].endswith("FAILED")
    summary = report.summary_line(results)
    assert "downtime/floor 20.0x at 64MiB -> 6.25x at 1024MiB" in summary
    assert "at 1024MiB: downtime 12.50s vs floor 2.00s, largest part of the downtime: checkpoint 10.00s (80%)" in summary
    phases = report.phase_table(results).splitlines()
    assert phases[0].split() == ["phase", "(s)", "validate", "checkpoint*", "restore*", "sum"]
    assert summary.endswith("state kept in 1/2 migrations")
    text = report.render(results)
    assert "failures:" in text and "migration run 1 (app-1024m-1): Failed RestoreFailed" in text


def test_medians_over_repeats_and_json() -> None:
    result = _result(64, total=5.0, downtime=4.0, dump=0.1, restore=0.1)
    result.migrations += [MigrationRun(total_s=7.0, downtime_s=2.0, phase="Succeeded", state_ok=True), MigrationRun(total_s=6.0)]
    result.floors += [FloorRun(dump_s=0.3, restore_s=0.3, state_ok=True)]
    numbers = report.row_numbers(result)
    assert numbers["total_s"] == 6.0 and numbers["downtime_s"] == 3.0
    assert numbers["floor_s"] == pytest.approx(0.4)
    assert numbers["downtime_ratio"] == pytest.approx(7.5)
    assert not result.ok, "a run that never finished fails the size"
    assert report.spread_lines([result]) == ["  64MiB over 3 runs: total 5.000..7.000, downtime 2.000..4.000, floor 0.200..0.600"]
    document = report.to_json([result], meta={"repeat": 3})
    (size,) = document["sizes"]
    assert size["size_mib"] == 64 and size["ok"] is False and len(size["migrations"]) == 3
    assert size["floors"][0]["floor_s"] == pytest.approx(0.2)
    assert size["median"]["total_ratio"] == pytest.approx(15.0)


def test_sizes_argument() -> None:
    from bench.__main__ import parse_args, parse_sizes

    assert parse_sizes("64,256, 1024") == [64, 256, 1024]
    with pytest.raises(Exception, match="integers"):
        parse_sizes("64,big")
    args = parse_args(["--sizes", "64", "--repeat", "2"])
    assert args.sizes == [64] and args.repeat == 2 and args.instance == 5 and args.json is None
    assert parse_args([]).sizes == [64, 256, 1024]


def test_emptydir_rows_cost_per_gib_against_the_same_pod_without_the_file() -> None:
    results = [_result(64, total=3.0, downtime=1.0, dump=0.1, restore=0.1)]
    moved = MigrationRun(
        pod="app-64m-1-ed512m", phase="Succeeded", total_s=5.0, downtime_s=3.0, volume_bytes=512 * stats.MIB, state_ok=True
    )
    emptydir = [SizeResult(size_mib=64, emptydir_mib=512, migrations=[moved])]
    table = report.emptydir_table(results, emptydir).splitlines()
    assert table[0].split() == ["pod", "moved", "downtime_s", "without_s", "extra_s", "s_per_GiB", "total_s", "state"]
    assert table[1].split() == ["64MiB+512MiB", "emptyDir", "512.0", "3.000", "1.000", "2.000", "4.000", "5.000", "OK"]
    text = report.render(results, emptydir=emptydir)
    assert "s_per_GiB" in text and "failures:" not in text
    assert report.to_json(results, meta={}, emptydir=emptydir)["emptydir"][0]["migrations"][0]["volume_bytes"] == 512 * stats.MIB


def test_stage_windows_from_status_stages_tolerate_anything_odd() -> None:
    stages = [
        {"name": "freeze", "start": "2026-11-30T14:00:00.000Z", "end": "2026-11-30T14:00:00.002Z"},
        {"name": "dump", "container": "a", "start": "2026-11-30T14:00:00.002Z", "end": "2026-11-30T14:00:00.502Z"},
        {
            "name": "upload",
            "container": "a",
            "start": "2026-11-30T14:00:00.502Z",
            "end": "2026-11-30T14:00:01.502Z",
            "bytes": 300,
        },
        # a second container's upload overlapping the first: one span, bytes added
        {
            "name": "upload",
            "container": "b",
            "start": "2026-11-30T14:00:01.000Z",
            "end": "2026-11-30T14:00:02.002Z",
            "bytes": 100,
        },
        {"name": "fetch", "start": 1764511203.0, "end": 1764511203.25, "bytes": True},  # epoch seconds; bool is no size
        {"name": "restore", "start": "2026-11-30T14:00:04.000Z"},  # still open
        {"name": "ready", "start": "garbage", "end": "2026-11-30T14:00:05.000Z"},
        {"name": "", "start": 1.0, "end": 2.0},
        {"name": "volumes", "start": 5.0, "end": 4.0},  # ends before it starts
        "not a record",
        {"name": "custom", "start": 1.0, "end": 1.5},
    ]
    windows, nbytes = stats.stage_windows(stages)
    seconds = {name: end - start for name, (start, end) in windows.items()}
    assert list(seconds) == ["freeze", "dump", "upload", "fetch", "custom"]
    assert windows["fetch"] == (1764511203.0, 1764511203.25)
    assert seconds["dump"] == pytest.approx(0.5)
    assert seconds["upload"] == pytest.approx(1.5)
    assert seconds["fetch"] == pytest.approx(0.25)
    assert nbytes == {"upload": 400}
    assert stats.stage_windows(None) == ({}, {})
    assert stats.stage_windows("stages") == ({}, {})
    assert stats.stage_windows({"name": "dump"}) == ({}, {})


def test_resolve_stages_prefers_status_and_falls_back_per_stage() -> None:
    agent = {"freeze": 0.001, "checkpoint": 0.3, "pack": 0.1, "push": 0.2, "total": 0.7}
    phases = {"checkpoint": 0.8, "restore": 1.5}
    old = stats.resolve_stages(stages={}, agent=agent, phases=phases)
    assert old == {
        "freeze": (0.001, "metrics"),
        "dump": (0.3, "metrics"),
        "upload": (pytest.approx(0.3), "metrics"),  # pack + push: the work the streamed pass does at once
        "restore": (1.5, "phase"),
    }
    # The streamed agent: no pack label at all, or a zero one.
    assert stats.resolve_stages(stages={}, agent={"push": 0.25}, phases={})["upload"] == (0.25, "metrics")
    assert stats.resolve_stages(stages={}, agent={"push": 0.25, "pack": 0.0}, phases={})["upload"] == (0.25, "metrics")
    assert stats.resolve_stages(stages={}, agent={"pack": 0.1}, phases={}) == {}, "pack alone is no upload"
    new = stats.resolve_stages(stages={"dump": 0.4, "upload": 0.5, "fetch": 0.2, "restore": 0.3}, agent=agent, phases=phases)
    assert new["dump"] == (0.4, "status") and new["upload"] == (0.5, "status") and new["restore"] == (0.3, "status")
    assert new["freeze"] == (0.001, "metrics"), "a stage the status lacks still comes from the metrics"
    assert stats.resolve_stages(stages={}, agent={}, phases={}) == {}


def test_ceiling_ratio_math_and_drain_goal() -> None:
    assert stats.ceiling_ratio(ceiling_s=0.8, stage_s=1.0) == pytest.approx(0.8)
    assert stats.ceiling_ratio(ceiling_s=None, stage_s=1.0) is None
    assert stats.ceiling_ratio(ceiling_s=1.0, stage_s=0.0) is None
    # 300 MB at 300 MB/s take 1 s: an upload of 300 MB in 1.25 s runs at 0.8 of the registry's ceiling.
    ceiling_s = stats.ceiling_seconds(nbytes=300e6, bytes_per_s=stats.throughput(600e6, 2.0))
    assert ceiling_s == pytest.approx(1.0)
    assert stats.ceiling_ratio(ceiling_s=ceiling_s, stage_s=1.25) == pytest.approx(stats.CEILING_GOAL)
    assert stats.ceiling_seconds(nbytes=None, bytes_per_s=1.0) is None
    assert stats.throughput(1.0, None) is None
    assert stats.drain_goal_seconds(pods=4, concurrency=2, single_total_s=3.0) == pytest.approx(7.2)
    assert stats.drain_goal_seconds(pods=5, concurrency=2, single_total_s=3.0) == pytest.approx(10.8), "ceil(5/2) = 3"
    assert stats.drain_goal_seconds(pods=4, concurrency=2, single_total_s=None) is None
    assert stats.drain_goal_seconds(pods=0, concurrency=2, single_total_s=3.0) is None
    assert stats.fmt_rate(None) == "-" and stats.fmt_rate(312.4e6) == "312"


def test_a_drains_cpu_bound_is_its_cpu_seconds_over_the_cores() -> None:
    assert stats.drain_cpu_bound_seconds(cpu_s=6.0, cores=2) == 3.0
    assert stats.drain_cpu_bound_seconds(cpu_s=None, cores=2) is None
