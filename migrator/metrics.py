"""The control service's Prometheus metrics (prometheus_client, through ``telemetry.metrics``).

Names follow Prometheus conventions (``_seconds``, ``_bytes``, ``_total``): how long migrations
take and how long pods are down, where the time goes per phase, how many bytes were
checkpointed, how migrations end (by outcome and reason), and how many are in flight. Values are
taken from the PodMigration's status when it finishes, so they match what ``kubectl migrate
describe`` shows. The process's own metrics (``process_*``) come with ``telemetry.metrics.Metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import prometheus_client

from kubeclient.informing import Informer
from telemetry.metrics import Counter, Histogram, Metrics

MIGRATION_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def _seconds(start: str, end: str) -> float:
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
    return max(0.0, (parse(end) - parse(start)).total_seconds())


class ControllerMetrics(Metrics):
    def __init__(self, *, in_flight: Callable[[], float]) -> None:
        super().__init__()
        registry = self.registry
        self.duration = Histogram(
            name="podmigrate_migration_duration_seconds",
            help_text="Whole migrations, from creation to Succeeded or Failed, by outcome.",
            labels=("outcome",),
            buckets=MIGRATION_BUCKETS,
            registry=registry,
        )
        self.downtime = Histogram(
            name="podmigrate_migration_downtime_seconds",
            help_text="Time a migrated pod served nobody: source frozen until the restored pod was Ready.",
            buckets=MIGRATION_BUCKETS,
            registry=registry,
        )
        self.phase = Histogram(
            name="podmigrate_migration_phase_duration_seconds",
            help_text="Time spent in each phase of a migration (validate, prepare-target, checkpoint, ...).",
            labels=("phase",),
            buckets=PHASE_BUCKETS,
            registry=registry,
        )
        self.checkpointed = Counter(
            name="podmigrate_checkpoint_archive_bytes_total", help_text="Bytes of checkpoint archives taken.", registry=registry
        )
        self.pushed = Counter(
            name="podmigrate_checkpoint_image_bytes_total", help_text="Bytes of checkpoint images pushed.", registry=registry
        )
        self.outcomes = Counter(
            name="podmigrate_migrations_total",
            help_text="Finished migrations by outcome and reason.",
            labels=("outcome", "reason"),
            registry=registry,
        )
        self.kept_checkpoints = Counter(
            name="podmigrate_podcheckpoints_total",
            help_text="Finished PodCheckpoints by mode, outcome (Available, Failed) and reason (Checkpointed, Suspended, ...).",
            labels=("mode", "outcome", "reason"),
            registry=registry,
        )
        self.checkpoint_duration = Histogram(
            name="podmigrate_podcheckpoint_duration_seconds",
            help_text="PodCheckpoints from creation to Available or Failed, by mode.",
            labels=("mode",),
            buckets=MIGRATION_BUCKETS,
            registry=registry,
        )
        self.restores = Counter(
            name="podmigrate_podrestores_total",
            help_text="Finished PodRestores by outcome and reason.",
            labels=("outcome", "reason"),
            registry=registry,
        )
        self.restore_ready = Histogram(
            name="podmigrate_podrestore_ready_seconds",
            help_text="PodRestores from creation until the restored pod was Ready.",
            buckets=MIGRATION_BUCKETS,
            registry=registry,
        )
        self.in_flight = prometheus_client.Gauge(
            "podmigrate_migrations_in_flight", "Migrations being driven now.", registry=registry
        )
        self.in_flight.set_function(in_flight)  # read at scrape time
        self.kube_requests = Counter(
            name="podmigrate_kube_requests_total",
            help_text="Requests this replica sent to the API server, by verb (get, list, watch, create, patch, ...) and "
            "resource (pods, nodes, pods/status, podmigrations, ...): what the control service costs the API server.",
            labels=("verb", "resource"),
            registry=registry,
        )
        self.cached = prometheus_client.Gauge(
            "podmigrate_informer_objects", "Objects held in this replica's informer caches, by resource.",
            labelnames=("resource",), registry=registry,
        )  # fmt: skip

    def count_request(self, verb: str, resource: str) -> None:
        self.kube_requests.inc(verb=verb, resource=resource)

    def watch_caches(self, caches: Iterable[Informer]) -> None:
        """Report each cache's size at scrape time."""
        for cache in caches:
            self.cached.labels(resource=cache.resource).set_function(cache.__len__)

    def observe_finished(self, status: Mapping[str, Any]) -> None:
        outcome = str(status.get("phase", ""))
        self.outcomes.inc(outcome=outcome, reason=str(status.get("reason", "")))
        if status.get("startTime") and status.get("completionTime"):
            self.duration.observe(_seconds(status["startTime"], status["completionTime"]), outcome=outcome)
        if status.get("downtimeSeconds"):
            self.downtime.observe(float(status["downtimeSeconds"]))
        for record in status.get("phases") or []:
            if record.get("end"):
                self.phase.observe(_seconds(record["start"], record["end"]), phase=str(record["name"]))
        for container in status.get("containers") or []:
            self.checkpointed.inc(float(container.get("archiveBytes") or 0))
            self.pushed.inc(float(container.get("imageBytes") or 0))

    def observe_checkpoint(self, *, mode: str, status: Mapping[str, Any]) -> None:
        """A PodCheckpoint finished: its outcome, its duration, the bytes it took (as a migration's are counted)."""
        outcome = str(status.get("phase", ""))
        self.kept_checkpoints.inc(mode=mode, outcome=outcome, reason=str(status.get("reason", "")))
        if status.get("startTime") and status.get("completionTime"):
            self.checkpoint_duration.observe(_seconds(status["startTime"], status["completionTime"]), mode=mode)
        for container in status.get("containers") or []:
            self.checkpointed.inc(float(container.get("archiveBytes") or 0))
            self.pushed.inc(float(container.get("imageBytes") or 0))

    def observe_restore(self, status: Mapping[str, Any]) -> None:
        self.restores.inc(outcome=str(status.get("phase", "")), reason=str(status.get("reason", "")))
        if status.get("readySeconds"):
            self.restore_ready.observe(float(status["readySeconds"]))
