"""The control service's metrics carry what a finished migration's status says, as Prometheus reads them."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from migrator.metrics import MIGRATION_BUCKETS, PHASE_BUCKETS, ControllerMetrics

STATUS = {
    "phase": "Succeeded",
    "reason": "Migrated",
    "startTime": "2026-11-26T10:00:00.000Z",
    "completionTime": "2026-11-26T10:00:03.500Z",
    "downtimeSeconds": "1.250",
    "phases": [
        {"name": "validate", "start": "2026-11-26T10:00:00.000Z", "end": "2026-11-26T10:00:00.100Z"},
        {"name": "checkpoint", "start": "2026-11-26T10:00:00.100Z", "end": "2026-11-26T10:00:00.600Z"},
        {"name": "restore", "start": "2026-11-26T10:00:00.600Z"},  # never ended: not observed
    ],
    "containers": [{"name": "app", "archiveBytes": 1000, "imageBytes": 600}, {"name": "side", "archiveBytes": 24}],
}


def scrape(metrics: ControllerMetrics) -> dict[str, tuple[str, str, list[Sample]]]:
    """Family name -> (type, help, samples), parsed the way a Prometheus server would."""
    return {f.name: (f.type, f.documentation, f.samples) for f in text_string_to_metric_families(metrics.render())}


def value(families: dict[str, tuple[str, str, list[Sample]]], family: str, sample: str, **labels: str) -> float | None:
    found = [s.value for s in families[family][2] if s.name == sample and s.labels == labels]
    assert len(found) <= 1
    return found[0] if found else None


def test_a_finished_migration_is_counted_and_timed() -> None:
    metrics = ControllerMetrics(in_flight=lambda: 2)
    metrics.observe_finished(STATUS)
    families = scrape(metrics)
    assert value(families, "podmigrate_migrations", "podmigrate_migrations_total", outcome="Succeeded", reason="Migrated") == 1
    duration = "podmigrate_migration_duration_seconds"
    assert value(families, duration, f"{duration}_sum", outcome="Succeeded") == 3.5
    assert value(families, duration, f"{duration}_count", outcome="Succeeded") == 1
    assert value(families, duration, f"{duration}_bucket", outcome="Succeeded", le="3.0") == 0
    assert value(families, duration, f"{duration}_bucket", outcome="Succeeded", le="5.0") == 1
    downtime = "podmigrate_migration_downtime_seconds"
    assert value(families, downtime, f"{downtime}_sum") == 1.25
    assert value(families, downtime, f"{downtime}_bucket", le="1.0") == 0
    assert value(families, downtime, f"{downtime}_bucket", le="2.0") == 1
    phase = "podmigrate_migration_phase_duration_seconds"
    assert value(families, phase, f"{phase}_sum", phase="checkpoint") == 0.5
    assert value(families, phase, f"{phase}_sum", phase="validate") == 0.1
    assert value(families, phase, f"{phase}_count", phase="restore") is None
    assert value(families, "podmigrate_checkpoint_archive_bytes", "podmigrate_checkpoint_archive_bytes_total") == 1024
    assert value(families, "podmigrate_checkpoint_image_bytes", "podmigrate_checkpoint_image_bytes_total") == 600
    assert value(families, "podmigrate_migrations_in_flight", "podmigrate_migrations_in_flight") == 2

    metrics.observe_finished({**STATUS, "phase": "Failed", "reason": "CheckpointFailed", "downtimeSeconds": ""})
    families = scrape(metrics)
    assert (
        value(families, "podmigrate_migrations", "podmigrate_migrations_total", outcome="Failed", reason="CheckpointFailed") == 1
    )
    assert value(families, "podmigrate_migrations", "podmigrate_migrations_total", outcome="Succeeded", reason="Migrated") == 1
    assert value(families, downtime, f"{downtime}_count") == 1, "no downtime recorded: none observed"
    assert value(families, "podmigrate_checkpoint_archive_bytes", "podmigrate_checkpoint_archive_bytes_total") == 2048


def test_names_types_help_and_buckets_are_what_dashboards_query() -> None:
    families = scrape(ControllerMetrics(in_flight=lambda: 0))
    expected = {
        "podmigrate_migration_duration_seconds": (
            "histogram",
            "Whole migrations, from creation to Succeeded or Failed, by outcome.",
        ),
        "podmigrate_migration_downtime_seconds": (
            "histogram",
            "Time a migrated pod served nobody: source frozen until the restored pod was Ready.",
        ),
        "podmigrate_migration_phase_duration_seconds": (
            "histogram",
            "Time spent in each phase of a migration (validate, prepare-target, checkpoint, ...).",
        ),
        "podmigrate_checkpoint_archive_bytes": ("counter", "Bytes of checkpoint archives taken."),
        "podmigrate_checkpoint_image_bytes": ("counter", "Bytes of checkpoint images pushed."),
        "podmigrate_migrations": ("counter", "Finished migrations by outcome and reason."),
        "podmigrate_migrations_in_flight": ("gauge", "Migrations being driven now."),
    }
    for name, (kind, help_text) in expected.items():
        assert families[name][:2] == (kind, help_text), name
    # No ``_created`` series: they were never exposed and would double what a scrape stores.
    assert not [s.name for _, _, samples in families.values() for s in samples if s.name.endswith("_created")]

    metrics = ControllerMetrics(in_flight=lambda: 0)
    metrics.observe_finished(STATUS)
    families = scrape(metrics)

    def bounds(family: str, **labels: str) -> list[float]:
        return [
            float(s.labels["le"])
            for s in families[family][2]
            if s.name.endswith("_bucket") and labels.items() <= s.labels.items()
        ]

    assert bounds("podmigrate_migration_duration_seconds", outcome="Succeeded") == [*MIGRATION_BUCKETS, math.inf]
    assert bounds("podmigrate_migration_downtime_seconds") == [*MIGRATION_BUCKETS, math.inf]
    assert bounds("podmigrate_migration_phase_duration_seconds", phase="checkpoint") == [*PHASE_BUCKETS, math.inf]


def test_in_flight_is_read_at_scrape_time_and_instances_do_not_collide() -> None:
    in_flight = [3.0]
    first = ControllerMetrics(in_flight=lambda: in_flight[0])
    second = ControllerMetrics(in_flight=lambda: 7)  # its own registry: no "Duplicated timeseries"
    first.observe_finished(STATUS)
    assert value(scrape(first), "podmigrate_migrations_in_flight", "podmigrate_migrations_in_flight") == 3
    in_flight[0] = 1
    assert value(scrape(first), "podmigrate_migrations_in_flight", "podmigrate_migrations_in_flight") == 1
    assert value(scrape(second), "podmigrate_migrations_in_flight", "podmigrate_migrations_in_flight") == 7
    assert (
        value(scrape(second), "podmigrate_migrations", "podmigrate_migrations_total", outcome="Succeeded", reason="Migrated")
        is None
    )
    assert first.outcomes.value(outcome="Succeeded", reason="Migrated") == 1
    assert second.outcomes.value(outcome="Succeeded", reason="Migrated") == 0


def test_the_process_memory_is_exposed_under_the_names_the_benchmark_reads() -> None:
    families = scrape(ControllerMetrics(in_flight=lambda: 0))
    rss = value(families, "process_resident_memory_bytes", "process_resident_memory_bytes")
    peak = value(families, "process_resident_memory_peak_bytes", "process_resident_memory_peak_bytes")
    assert rss is not None and peak is not None
    assert 0 < rss <= peak, "VmHWM, read after the RSS, is at least the RSS"
    assert families["process_resident_memory_peak_bytes"][:2] == ("gauge", "Peak resident memory size in bytes (VmHWM).")
    assert ControllerMetrics.content_type.startswith("text/plain; version=0.0.4")


def test_finished_checkpoints_and_restores_are_counted_and_timed() -> None:
    metrics = ControllerMetrics(in_flight=lambda: 0)
    checkpoint = {
        "phase": "Available", "reason": "Suspended", "startTime": "2026-11-26T10:00:00.000Z",
        "completionTime": "2026-11-26T10:00:02.000Z", "containers": [{"name": "app", "archiveBytes": 500, "imageBytes": 400}],
    }  # fmt: skip
    metrics.observe_checkpoint(mode="Suspend", status=checkpoint)
    metrics.observe_restore({"phase": "Succeeded", "reason": "Restored", "readySeconds": "1.500"})
    metrics.observe_restore({"phase": "Failed", "reason": "PodExists"})
    families = scrape(metrics)
    counted = "podmigrate_podcheckpoints_total"
    assert value(families, "podmigrate_podcheckpoints", counted, mode="Suspend", outcome="Available", reason="Suspended") == 1
    assert value(families, "podmigrate_podcheckpoint_duration_seconds", "podmigrate_podcheckpoint_duration_seconds_sum",
                 mode="Suspend") == 2.0  # fmt: skip
    assert value(families, "podmigrate_checkpoint_archive_bytes", "podmigrate_checkpoint_archive_bytes_total") == 500
    assert value(families, "podmigrate_podrestores", "podmigrate_podrestores_total", outcome="Failed", reason="PodExists") == 1
    assert value(families, "podmigrate_podrestore_ready_seconds", "podmigrate_podrestore_ready_seconds_sum") == 1.5


def test_api_requests_and_cached_objects_are_exposed_under_the_names_the_benchmark_reads() -> None:
    class Cache:
        def __init__(self, resource: str, size: int) -> None:
            self.resource, self.size = resource, size

        def __len__(self) -> int:
            return self.size

    metrics = ControllerMetrics(in_flight=lambda: 0)
    pods = Cache("pods", 5000)
    metrics.watch_caches([pods, Cache("nodes", 100)])  # type: ignore[list-item]
    metrics.count_request("list", "pods")
    metrics.count_request("list", "pods")
    metrics.count_request("get", "pods")
    families = scrape(metrics)
    total = "podmigrate_kube_requests_total"
    assert value(families, "podmigrate_kube_requests", total, verb="list", resource="pods") == 2
    assert value(families, "podmigrate_kube_requests", total, verb="get", resource="pods") == 1
    assert value(families, "podmigrate_informer_objects", "podmigrate_informer_objects", resource="pods") == 5000
    pods.size = 4999  # read at scrape time
    assert value(scrape(metrics), "podmigrate_informer_objects", "podmigrate_informer_objects", resource="pods") == 4999
    assert value(families, "podmigrate_informer_objects", "podmigrate_informer_objects", resource="nodes") == 100
