"""The report's stage-vs-ceiling, registry ceiling and drain tables, with every kind of missing data."""

from __future__ import annotations

import json

import pytest

from bench import report, stats
from bench.results import CeilingRun, DrainRun, FloorRun, MigrationRun, SizeResult, WarmStartResult, WarmStartRun

MB = 1_000_000


def _migration(**overrides: object) -> MigrationRun:
    run = MigrationRun(
        pod="app-64m-1",
        phase="Succeeded",
        total_s=3.0,
        downtime_s=2.5,
        phases={"checkpoint": 1.0, "restore": 1.2},
        agent={"freeze": 0.001, "checkpoint": 0.4, "pack": 0.05, "push": 0.25},
        image_bytes=90 * MB,
        state_ok=True,
    )
    for key, value in overrides.items():
        setattr(run, key, value)
    return run


def _size(*, migrations: list[MigrationRun], ceilings: list[CeilingRun] | None = None) -> SizeResult:
    return SizeResult(
        size_mib=64,
        floors=[FloorRun(dump_s=0.1, restore_s=0.08, state_ok=True)],
        ceilings=ceilings if ceilings is not None else [CeilingRun(blob_bytes=300 * MB, push_1_s=1.0, push_n_s=0.75, get_s=0.5)],
        migrations=migrations,
    )


def test_stage_numbers_from_agent_metrics_against_the_ceilings() -> None:
    n = report.row_numbers(_size(migrations=[_migration()]))
    assert n["ingest_1_Bps"] == pytest.approx(300 * MB) and n["ingest_n_Bps"] == pytest.approx(400 * MB)
    assert n["ingest_Bps"] == pytest.approx(400 * MB), "the better of 1 and N streams is the upload's ceiling"
    assert n["get_Bps"] == pytest.approx(600 * MB)
    assert n["stage:upload"] == pytest.approx(0.3), "pack + push"
    assert n["upload_Bps"] == pytest.approx(300 * MB)
    assert n["ceiling:upload_s"] == pytest.approx(0.225)  # 90 MB at 400 MB/s
    assert n["ceil:upload"] == pytest.approx(0.75)
    assert n["ceil:dump"] == pytest.approx(0.25)  # criu dump 0.1 s / kubelet checkpoint 0.4 s
    assert n["ceil:restore"] == pytest.approx(0.08 / 1.2)  # criu restore / the restore phase
    assert n["stage:fetch"] is None and n["ceil:fetch"] is None, "no fetch before status.stages"
    assert report.stage_sources(_size(migrations=[_migration()])) == {
        "freeze": "metrics",
        "dump": "metrics",
        "upload": "metrics",
        "restore": "phase",
    }


def test_stage_numbers_prefer_status_stages() -> None:
    run = _migration(
        stages={"dump": 0.2, "upload": 0.3, "fetch": 0.2, "restore": 0.1},
        stage_bytes={"upload": 120 * MB, "fetch": 120 * MB},
        stage_cores={"upload": 1.9, "fetch": 1.5},
        stage_registry_cpu_s={"upload": 0.28},
    )
    n = report.row_numbers(_size(migrations=[run]))
    assert n["cores:upload"] == pytest.approx(1.9) and n["registry_cpu:upload"] == pytest.approx(0.28)
    assert n["cores:dump"] is None, "a stage without samples has no figure"
    assert n["upload_bytes"] == 120 * MB, "the stage's own bytes, not the image's"
    assert n["ceil:upload"] == pytest.approx((120 / 400) / 0.3)
    assert n["ceil:fetch"] == pytest.approx((120 / 600) / 0.2)
    assert n["ceil:restore"] == pytest.approx(0.8)
    assert n["ceil:dump"] == pytest.approx(0.5)
    table = report.stage_ceiling_table([_size(migrations=[run])]).splitlines()
    assert table[0].split()[:4] == ["stage", "vs", "ceiling", "stage"]
    assert table[0].split()[-2:] == ["cores_busy", "registry_cpu_s"]
    restore = next(line for line in table if "raw criu restore" in line).split()
    assert restore[-5:] == ["0.080", "0.80x", "ok", "-", "-"] and "status" in restore
    dump = next(line for line in table if "raw criu dump" in line).split()
    assert dump[-4:] == ["0.50x", "below", "-", "-"]
    upload = next(line for line in table if "registry push" in line).split()
    assert upload[-2:] == ["1.90", "0.280"]
    assert table[1].startswith("64MiB") and table[2].startswith(" "), "the size labels its first row only"


def test_repeats_with_different_sources_say_so() -> None:
    result = _size(migrations=[_migration(), _migration(stages={"upload": 0.5})])
    assert report.stage_sources(result)["upload"] == "metrics+status"
    assert report.row_numbers(result)["stage:upload"] == pytest.approx(0.4), "median of 0.3 and 0.5"


def test_missing_data_renders_as_dashes_never_an_error() -> None:
    bare = MigrationRun(pod="app-64m-1", phase="Failed", reason="CheckpointFailed", error="Failed CheckpointFailed: x")
    result = SizeResult(size_mib=64, migrations=[bare], floors=[FloorRun(error="criu dump failed")])
    result.ceilings.append(CeilingRun(blob_bytes=64 << 20, error="RegistryError: token server: HTTP 401"))
    n = report.row_numbers(result)
    assert all(n[f"ceil:{s}"] is None for s in report.CEILING_STAGES)
    table = report.stage_ceiling_table([result])
    assert table.count("n/a") == 4 and "ok" not in table.split()
    text = report.render([result])
    assert "registry ceiling run 1: RegistryError: token server: HTTP 401" in text
    assert "registry ceiling (raw client)" in text and "stage vs ceiling" in text
    no_ceilings = SizeResult(size_mib=64, migrations=[_migration()])
    text = report.render([no_ceilings])
    assert "registry ceiling (raw client)" not in text, "no ceiling table when none was measured"
    assert "stage vs ceiling" in text
    json.dumps(report.to_json([result, no_ceilings], meta={}))  # serialisable with the holes


def test_registry_ceiling_table() -> None:
    ceilings = [
        CeilingRun(blob_bytes=300 * MB, push_1_s=1.0, push_n_s=0.75, get_s=0.5, push_1_registry_cpu_s=0.97,
                   encrypt_1_s=0.5, encrypt_lanes_s=0.4)
    ]  # fmt: skip
    result = _size(migrations=[_migration()], ceilings=ceilings)
    table = report.ceiling_table([result]).splitlines()
    assert table[0].split() == ["registry", "ceiling", "(raw", "client)", "blob_MiB", "push_1x_s", "push_1x_MB/s",
                                "push_1x_registry_cores", "push_4x_s", "push_4x_MB/s", "get_s", "get_MB/s",
                                "encrypt_1x_MB/s", "encrypt_lanes_MB/s"]  # fmt: skip
    assert table[1].split() == ["64MiB", "286.1", "1.000", "300", "0.97", "0.750", "400", "0.500", "600", "600", "750"]
    assert report.row_numbers(result)["ingest_1_registry_cpu_s"] == pytest.approx(0.97)
    unmeasured = report.ceiling_table([_size(migrations=[_migration()])]).splitlines()
    assert unmeasured[1].split()[4] == "-", "no registry PID: no figure"
    assert unmeasured[1].split()[-2:] == ["-", "-"], "no layer pass timed: no figure"


def _drain(**overrides: object) -> DrainRun:
    run = DrainRun(
        pods=4, concurrency=2, size_mib=64, name="bench-1", phase="Succeeded", wall_s=9.0, migrated=4,
        pod_totals=[3.5, 4.0, 4.5, 5.0], pod_downtimes=[2.0, 3.0, 2.5, 2.2], single_total_s=3.0, state_ok=True,
        machine_cpu_s=6.0, single_cpu_s=2.0, cores=2,
    )  # fmt: skip
    for key, value in overrides.items():
        setattr(run, key, value)
    return run


def test_drain_against_its_goal() -> None:
    n = report.drain_numbers(_drain())
    assert n["goal_s"] == pytest.approx(7.2)  # 1.2 x ceil(4/2) x 3.0
    assert n["goal_ratio"] == pytest.approx(1.25)
    assert n["pod_total_s"] == pytest.approx(4.25) and n["pod_downtime_max_s"] == 3.0
    table = report.drain_table(_drain()).splitlines()
    assert table[1].split() == [
        "drain",
        "4x64MiB",
        "k=2",
        "4",
        "2",
        "4",
        "9.000",
        "7.200",
        "1.25x",
        "3.000",
        "4.250",
        "3.000",
        "6.000",
        "3.000",
        "2.000",
        "OK",
    ]
    assert (n["cpu_s"], n["cpu_bound_s"], n["single_cpu_s"], n["pods_cpu_bound_s"]) == (6.0, 3.0, 2.0, 4.0)
    results = [_size(migrations=[_migration()])]
    text = report.render(results, drain=_drain())
    assert "drain 4x64MiB k=2: wall/goal 1.25x" in text.splitlines()[-1]


def test_drain_without_a_reference_or_a_finish() -> None:
    failed = _drain(
        phase="Blocked", message="pod x cannot move", wall_s=None, single_total_s=None, pod_totals=[], pod_downtimes=[]
    )
    failed.reference = MigrationRun(pod="app-64m-0", phase="Failed", error="Failed: restore")
    n = report.drain_numbers(failed)
    assert n["goal_s"] is None and n["goal_ratio"] is None and n["pod_total_s"] is None and n["pod_downtime_max_s"] is None
    assert report.drain_table(failed).splitlines()[1].split()[6:] == [
        "-",
        "-",
        "n/a",
        "-",
        "-",
        "-",
        "6.000",
        "3.000",
        "2.000",
        "FAILED",
    ]
    assert failed.failures() == [
        "NodeDrain bench-1: Blocked pod x cannot move",
        "reference migration (app-64m-0): Failed: restore",
    ]
    text = report.render([_size(migrations=[_migration()])], drain=failed)
    assert "drain 4x64MiB k=2 NodeDrain bench-1: Blocked pod x cannot move" in text
    assert report.to_json([], meta={}, drain=failed)["drain"]["ok"] is False


def test_summary_names_the_ceilings_at_the_largest_size() -> None:
    summary = report.summary_line([_size(migrations=[_migration()])])
    assert "ceiling/stage at 64MiB: dump 0.25x, upload 0.75x, restore 0.07x" in summary
    assert stats.CEILING_GOAL == 0.8


def _warm(*runs: WarmStartRun) -> WarmStartResult:
    return WarmStartResult(pods=2, size_mib=64, warmup_seconds=10, runs=list(runs))


def _warm_run(**overrides: object) -> WarmStartRun:
    run = WarmStartRun(
        pods=2, first_s=12.0, checkpoint="warm-1", checkpoint_s=1.5, checkpoint_bytes=80 << 20, warm_pods=[2.0, 3.0],
        cold_pods=[12.0, 13.0], restored=2,
    )  # fmt: skip
    for key, value in overrides.items():
        setattr(run, key, value)
    return run


def test_warm_start_against_the_cold_scale_up_of_the_same_run() -> None:
    result = _warm(_warm_run())
    n = report.warmstart_numbers(result)
    assert n["warm_s"] == 2.5 and n["cold_s"] == 12.5 and n["warm_ratio"] == pytest.approx(0.2)
    assert n["warm_max_s"] == 3.0 and n["first_s"] == 12.0 and n["checkpoint_s"] == 1.5
    assert (n["restored"], n["new_pods"]) == (2, 2)
    table = report.warmstart_table(result).splitlines()
    assert table[0].split()[:9] == ["warm", "start", "(Deployment", "1", "->", "1+N)", "cold_s", "warm_s", "warm/cold"]
    assert table[1].split() == ["warm", "start", "2x64MiB", "warmup=10s", "12.500", "2.500", "0.20x", "3.000", "12.000",
                                "1.500", "80.0", "2/2", "OK"]  # fmt: skip
    text = report.render([_size(migrations=[_migration()])], warmstart=result)
    assert "warm start 2x64MiB warmup=10s: warm 2.500s vs cold 12.500s (warm/cold 0.20x)" in text.splitlines()[-1]
    assert "failures:" not in text and "(medians of" not in text
    document = report.to_json([], meta={}, warmstart=result)["warmstart"]
    assert document["ok"] is True and document["numbers"]["warm_ratio"] == pytest.approx(0.2)
    assert document["runs"][0]["warm_pods"] == [2.0, 3.0]
    json.dumps(document)
    assert report.to_json([], meta={})["warmstart"] is None


def test_warm_start_medians_over_repeats_are_of_each_runs_median() -> None:
    result = _warm(_warm_run(), _warm_run(warm_pods=[4.0, 4.0], cold_pods=[10.0, 10.0]), _warm_run(warm_pods=[1.0, 9.0]))
    n = report.warmstart_numbers(result)
    assert n["warm_s"] == 4.0, "median of 2.5, 4.0 and 5.0"
    assert n["cold_s"] == 12.5 and n["warm_max_s"] == 9.0 and (n["restored"], n["new_pods"]) == (6, 6)
    assert "(medians of 3 runs)" in report.render([_size(migrations=[_migration()])], warmstart=result)


def test_warm_pods_not_restored_fail_the_row_with_the_reason() -> None:
    cold = _warm_run(restored=0, not_restored=["warm-1-x (started cold: no node can restore PodCheckpoint warm-1)"])
    result = _warm(cold)
    assert not result.ok and report.warmstart_table(result).splitlines()[1].split()[-2:] == ["0/2", "FAILED"]
    assert result.failures() == ["run 1: not restored: warm-1-x (started cold: no node can restore PodCheckpoint warm-1)"]
    text = report.render([_size(migrations=[_migration()])], warmstart=result)
    assert "warm start 2x64MiB warmup=10s run 1: not restored: warm-1-x (started cold:" in text
    broken = _warm(WarmStartRun(pods=2, first_s=12.0, error="PodCheckpoint warm-1 Failed CheckpointFailed: x"))
    n = report.warmstart_numbers(broken)
    assert n["warm_s"] is None and n["cold_s"] is None and n["warm_ratio"] is None and n["warm_max_s"] is None
    assert report.warmstart_table(broken).splitlines()[1].split()[4:8] == ["-", "-", "n/a", "-"]
    assert broken.failures() == ["run 1: PodCheckpoint warm-1 Failed CheckpointFailed: x"]
    short = _warm(_warm_run(cold_pods=[12.0]))
    assert not short.ok and "1 cold pods of 2 measured" in short.failures()[0]
    assert not _warm().ok, "no run: not OK"


def _containerd(**overrides: object) -> SizeResult:
    """A containerd row: slower dump and restore than the stand-in's, the same floor and ceiling (its size's)."""
    run = _migration(pod="app-64m-1-real", total_s=6.0, downtime_s=5.0, agent={"freeze": 0.001, "checkpoint": 1.0, "push": 0.3},
                     phases={"checkpoint": 1.5, "restore": 2.4})  # fmt: skip
    for key, value in overrides.items():
        setattr(run, key, value)
    row = _size(migrations=[run])
    row.runtime = "containerd"
    return row


def test_a_containerd_row_next_to_the_stand_in_row() -> None:
    standin, real = _size(migrations=[_migration()]), _containerd()
    assert (standin.label, real.label) == ("64MiB", "64MiB containerd")
    table = report.main_table([standin, real]).splitlines()
    assert table[1].split()[:3] == ["64MiB", "3.000", "2.500"]
    assert table[2].split()[:4] == ["64MiB", "containerd", "6.000", "5.000"]
    assert table[2].split()[4:8] == ["0.180", "(0.100+0.080)", "33.3x", "27.8x"], "the same floor as the stand-in row"
    assert table[2].endswith("OK")
    stages = report.stage_ceiling_table([standin, real]).splitlines()
    start = next(i for i, line in enumerate(stages) if line.startswith("64MiB containerd"))
    dump = stages[start].split()
    assert dump[-5:-2] == ["0.100", "0.10x", "below"], "raw criu dump 0.1 s against containerd's 1.0 s checkpoint"
    text = report.render([standin], real=[real])
    assert "containerd rows: the same app and PodMigration between the real nodes real-1 -> real-2" in text
    registry = text[text.index("registry ceiling (raw client)") :].split(report.LEGEND_REGISTRY)[0].splitlines()
    assert [line.split()[0] for line in registry[1:]] == ["64MiB"], "the registry's ceilings once per size"
    for title in ("phase (s)", "checkpoint (source agent metrics)", "floor and client view"):
        block = text[text.index(title) :].split("\n\n")[0]
        assert "\n64MiB containerd " in block, title
    summary = text.splitlines()[-1]
    assert "downtime/floor 13.9x at 64MiB; at 64MiB: downtime 2.50s vs floor 0.18s" in summary
    assert "downtime/floor 27.8x at 64MiB containerd; at 64MiB containerd: downtime 5.00s vs floor 0.18s" in summary
    assert "ceiling/stage at 64MiB containerd: dump 0.10x" in summary and summary.endswith("state kept in 2/2 migrations")
    assert "containerd" not in report.render([standin]), "no containerd row: the report as before"


def test_a_containerd_row_alone_at_its_size_and_failing() -> None:
    standin = _size(migrations=[_migration()])
    real = _containerd(phase="Failed", reason="RestoreFailed", error="Failed RestoreFailed: criu", state_ok=False)
    real.size_mib = 1024
    text = report.render([standin], real=[real])
    registry = text[text.index("registry ceiling (raw client)") :].split(report.LEGEND_REGISTRY)[0].splitlines()
    assert [line.split()[0] for line in registry[1:]] == ["64MiB", "1024MiB"], "its own ceilings, with no stand-in row"
    assert "  1024MiB containerd migration run 1 (app-64m-1-real): Failed RestoreFailed: criu" in text
    assert report.main_table([standin, real]).splitlines()[2].endswith("FAILED")
    document = report.to_json([standin], meta={}, real=[real])
    assert [(s["label"], s["runtime"], s["ok"]) for s in document["sizes"]] == [
        ("64MiB", "standin", True),
        ("1024MiB containerd", "containerd", False),
    ]
    assert document["sizes"][1]["median"]["total_s"] == 6.0 and document["sizes"][1]["floors"][0]["floor_s"] == 0.18
    json.dumps(document)
    assert [s["runtime"] for s in report.to_json([standin], meta={})["sizes"]] == ["standin"]
