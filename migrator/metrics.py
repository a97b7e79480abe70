"""The control service's Prometheus metrics (primitives in ``telemetry.metrics``).

Names follow Prometheus conventions (``_seconds``, ``_bytes``, ``_total``): how long migrations
take and how long pods are down, where the time goes per phase, how many bytes were
checkpointed, how migrations end (by outcome and reason), and how many are in flight. Values are
taken from the PodMigration's status when it finishes, so they match what ``kubectl migrate
describe`` shows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from telemetry.metrics import Counter, Gauge, Histogram, process_memory_lines

MIGRATION_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def _seconds(start: str, end: str) -> float:
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
    return max(0.0, (parse(end) - parse(start)).total_seconds())


class ControllerMetrics:
    def __init__(self, *, in_flight: Callable[[], float]) -> None:
        self.duration = Histogram(
            name="podmigrate_migration_duration_seconds",
            help_text="Whole migrations, from creation to Succeeded or Failed, by outcome.",
            buckets=MIGRATION_BUCKETS,
        )
        self.downtime = Histogram(
            name="podmigrate_migration_downtime_seconds",
            help_text="Time a migrated pod served nobody: source frozen until the restored pod was Ready.",
            buckets=MIGRATION_BUCKETS,
        )
        self.phase = Histogram(
            name="podmigrate_migration_phase_duration_seconds",
            help_text="Time spent in each phase of a migration (validate, prepare-target, checkpoint, ...).",
            buckets=PHASE_BUCKETS,
        )
        self.checkpointed = Counter(
            name="podmigrate_checkpoint_archive_bytes_total", help_text="Bytes of checkpoint archives taken."
        )
        self.pushed = Counter(name="podmigrate_checkpoint_image_bytes_total", help_text="Bytes of checkpoint images pushed.")
        self.outcomes = Counter(name="podmigrate_migrations_total", help_text="Finished migrations by outcome and reason.")
        self.in_flight = Gauge(name="podmigrate_migrations_in_flight", help_text="Migrations being driven now.", read=in_flight)

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

    def render(self) -> str:
        lines: list[str] = []
        for metric in (self.duration, self.downtime, self.phase, self.checkpointed, self.pushed, self.outcomes, self.in_flight):
            lines += metric.render()
        lines += process_memory_lines()
        return "\n".join(lines) + "\n"
