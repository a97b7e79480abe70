"""The control service's metrics carry what a finished migration's status says."""

from __future__ import annotations

from migrator.metrics import ControllerMetrics

STATUS = {
    "phase": "Succeeded",
    "reason": "Migrated",
    "startTime": "2026-11-26T10:00:00.000Z",
    "completionTime": "2026-11-26T10:00:03.500Z",
    "downtimeSeconds": "1.250",
    "phases": [
        {"name": "validate", "start": "2026-11-26T10:00:00.000Z", "end": "2026-11-26T10:00:00.100Z"},
        {"name": "checkpoint", "start": "2026-11-26T10:00:00.100Z", "end": "2026-11-26T10:00:00.600Z"},
    ],
    "containers": [{"name": "app", "archiveBytes": 1000, "imageBytes": 1000}],
}


def test_a_finished_migration_is_counted_and_timed() -> None:
    metrics = ControllerMetrics(in_flight=lambda: 2)
    metrics.observe_finished(STATUS)
    text = metrics.render()
    assert 'podmigrate_migrations_total{outcome="Succeeded",reason="Migrated"} 1' in text
    assert 'podmigrate_migration_duration_seconds_sum{outcome="Succeeded"} 3.5' in text
    assert "podmigrate_migration_downtime_seconds_sum 1.25" in text
    assert 'podmigrate_migration_phase_duration_seconds_sum{phase="checkpoint"} 0.5' in text
    assert "podmigrate_checkpoint_archive_bytes_total 1000" in text
    assert "podmigrate_migrations_in_flight 2" in text
    assert "# TYPE podmigrate_migration_downtime_seconds histogram" in text
