"""The timeline's model: phases, total, downtime and bytes as built from a PodMigration's status; tick labels."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from migrator import timeline
from migrator.timeline import DowntimeKind
from tests.migrator.timeline.samples import NOW, RESTORE_ERROR, SAMPLES, build, migration, ts


@pytest.mark.parametrize("name", SAMPLES)
def test_phase_durations_add_up_to_the_total(name: str) -> None:
    tl = build(name)
    assert tl.bars and tl.total > 0
    assert sum(b.duration for b in tl.bars) == pytest.approx(tl.total, rel=0.05)
    for before, after in zip(tl.bars, tl.bars[1:], strict=False):
        assert after.start == pytest.approx(before.end, abs=0.002), "phases are back to back"


def test_a_succeeded_migration() -> None:
    tl = build("succeeded")
    assert [b.name for b in tl.bars] == [
        "validate", "prepare-target", "checkpoint", "remove-source", "create-target", "restore", "cleanup",
    ]  # fmt: skip
    assert (tl.pod, tl.source, tl.target, tl.phase) == ("web", "node-1", "node-2", "Succeeded")
    assert tl.finished and not tl.failed
    assert tl.total == pytest.approx(3.855, abs=0.002)
    assert tl.bars[2].start == pytest.approx(1.23) and tl.bars[2].duration == pytest.approx(1.342)
    assert tl.downtime is not None and tl.downtime.kind == DowntimeKind.MEASURED
    assert tl.downtime.start == pytest.approx(tl.bars[2].start) and tl.downtime.end == pytest.approx(tl.bars[5].end)
    assert tl.downtime.duration == pytest.approx(float(SAMPLES["succeeded"]()["status"]["downtimeSeconds"]), abs=0.001)
    assert (tl.archive_bytes, tl.image_bytes) == (49 * 1024**2, 49 * 1024**2 + 4096)
    assert not any(b.error or b.running for b in tl.bars)


def test_a_failed_migration_keeps_its_errors_and_its_frozen_time() -> None:
    tl = build("failed")
    errors = {b.name: b.error for b in tl.bars if b.error}
    assert errors == {"restore": RESTORE_ERROR, "rollback-restore-on-source": "restore on the source node failed"}
    assert (tl.phase, tl.reason, tl.failed) == ("Failed", "RestoreFailed", True)
    # No readyAt: the pod was frozen from the checkpoint until the rollback ended.
    assert tl.downtime is not None and tl.downtime.kind == DowntimeKind.UNTIL_ROLLBACK
    assert tl.downtime.end == pytest.approx(tl.total)
    assert build("refused").downtime is None


def test_a_running_migration_is_measured_up_to_now() -> None:
    tl = build("running")
    assert not tl.finished and tl.total == pytest.approx(3.9)
    assert tl.bars[-1].running and tl.bars[-1].duration == pytest.approx(3.9 - 1.14)
    assert tl.downtime is not None and tl.downtime.kind == DowntimeKind.ONGOING and tl.downtime.end == pytest.approx(3.9)
    assert tl.archive_bytes is None


def test_a_pending_migration_has_no_bars() -> None:
    obj = migration("new-1", "web", {})
    tl = timeline.build(obj, now=NOW)
    assert (tl.bars, tl.total, tl.downtime, tl.phase) == ((), 0.0, None, "Pending")
    assert "no phases recorded yet" in timeline.render_text(tl, unicode=False)
    ET.fromstring(timeline.render_svg(tl))


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(0, "0s"), (0.2, "200ms"), (1, "1s"), (1.5, "1.5s"), (30, "30s"), (120, "2m"), (90, "1m30s"), (3600, "1h")],
)
def test_tick_labels(seconds: float, label: str) -> None:
    assert timeline.tick_label(seconds) == label


def test_stages_are_kept_apart_from_the_bars_in_time_order_under_their_phases() -> None:
    tl = build("staged")
    assert tl.bars == build("succeeded").bars and tl.total == build("succeeded").total, "stages change no phase"
    assert [(s.phase, s.name, s.container) for s in tl.stages] == [
        ("checkpoint", "freeze", None), ("checkpoint", "dump", "web"), ("checkpoint", "dump", "sidecar"),
        ("checkpoint", "upload", "web"), ("checkpoint", "upload", "sidecar"),
        ("restore", "fetch", "sidecar"), ("restore", "fetch", "web"), ("restore", "restore", "sidecar"),
        ("restore", "ready", "sidecar"), ("restore", "restore", "web"), ("restore", "ready", "web"),
    ]  # fmt: skip
    upload = tl.stages[3]
    assert (upload.start, upload.duration, upload.bytes) == (pytest.approx(1.8), pytest.approx(0.5), 47 * 1024**2 + 4096)
    assert (upload.node, upload.source) == ("node-1", "agent") and tl.stages[5].node == "node-2"
    assert tl.stage_containers == ("web", "sidecar")
    names = [(type(row).__name__, row.name) for row in tl.rows]
    checkpoint, restore = names.index(("Bar", "checkpoint")), names.index(("Bar", "restore"))
    assert names[checkpoint + 1 : checkpoint + 6] == [("Stage", n) for n in ("freeze", "dump", "dump", "upload", "upload")]
    assert names[checkpoint + 6] == ("Bar", "remove-source")
    assert names[restore + 7] == ("Bar", "cleanup") and len(tl.rows) == len(tl.bars) + len(tl.stages)


def test_a_migration_without_stages_draws_only_its_phases() -> None:
    for name in ("succeeded", "failed", "running", "refused"):
        tl = build(name)
        assert tl.stages == () and tl.rows == tl.bars
    obj = SAMPLES["succeeded"]()
    obj["status"]["stages"] = []
    assert timeline.build(obj, now=NOW) == build("succeeded")


def test_stages_from_the_api_are_cleaned_and_bad_records_left_out() -> None:
    obj = SAMPLES["staged"]()
    records = obj["status"]["stages"]
    records[1]["container"] = "web\n\x1b[31mred"
    records[3]["bytes"] = "a lot"
    records[4]["source"] = "someone"  # unknown: its phase from its name
    records.append({"name": "fetch", "start": records[0]["start"], "source": "nobody"})  # no end
    records.append("not a record")
    tl = timeline.build(obj, now=NOW)
    assert len(tl.stages) == 11
    dump = next(s for s in tl.stages if s.name == "dump" and s.container and s.container.startswith("web"))
    assert dump.container == "web [31mred"
    upload = next(s for s in tl.stages if s.name == "upload" and s.container == "web")
    assert upload.bytes is None
    assert next(s for s in tl.stages if s.source == "someone").phase == "checkpoint"


def test_a_stage_past_the_end_widens_the_axis() -> None:
    obj = SAMPLES["staged"]()
    obj["status"]["stages"][-1]["end"] = ts(4.5)  # past completionTime (3.855): a node's clock ahead
    tl = timeline.build(obj, now=NOW)
    assert tl.span == pytest.approx(max(s.end for s in tl.stages)) and tl.span > tl.total
