"""The timeline's model: phases, total, downtime and bytes as built from a PodMigration's status; tick labels."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from migrator import timeline
from migrator.timeline import DowntimeKind
from tests.migrator.timeline.samples import NOW, RESTORE_ERROR, SAMPLES, build, migration


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
