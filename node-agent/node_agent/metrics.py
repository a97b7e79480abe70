"""The agent's Prometheus metrics (prometheus_client, through ``telemetry.metrics``).

What an operator needs to see from a node agent: how many checkpoints succeeded or failed
where, how long each phase took (freeze, kubelet checkpoint, pack, push, whole request), how
many bytes went to the registry, and the agent's own memory: its peak RSS
(``process_resident_memory_peak_bytes``, ``VmHWM``, with the other ``process_*`` metrics from
``telemetry.metrics.Metrics``) shows whether a large archive was ever held in memory instead of
streamed.
"""

from __future__ import annotations

from telemetry.metrics import Counter, Histogram, Metrics


class AgentMetrics(Metrics):
    def __init__(self) -> None:
        super().__init__()
        registry = self.registry
        self.checkpoints = Counter(
            name="podmigrate_agent_checkpoints_total",
            help_text="Checkpoint requests by outcome (success, rejected, freeze_failed, checkpoint_failed, push_failed).",
            labels=("outcome",),
            registry=registry,
        )
        self.duration = Histogram(
            name="podmigrate_agent_checkpoint_duration_seconds",
            help_text="Checkpoint time by phase: freeze, checkpoint (kubelet, per container), pack, push, total (request).",
            labels=("phase",),
            registry=registry,
        )
        self.pushed_bytes = Counter(
            name="podmigrate_agent_pushed_bytes_total", help_text="Bytes uploaded to registries.", registry=registry
        )
        self.archive_bytes = Counter(
            name="podmigrate_agent_archive_bytes_total",
            help_text="Bytes of checkpoint archives produced by the kubelet.",
            registry=registry,
        )
        self.thaws = Counter(
            name="podmigrate_agent_thaws_total",
            help_text="Containers thawed, by reason (request, rollback).",
            labels=("reason",),
            registry=registry,
        )
        self.archives_swept = Counter(
            name="podmigrate_agent_archives_swept_total",
            help_text="Leftover checkpoint archives (and their side files) deleted by a sweep, by when (start, periodic).",
            labels=("when",),
            registry=registry,
        )
        self.superseded_images = Counter(
            name="podmigrate_agent_superseded_images_total",
            help_text="Images a checkpoint replaced under its tag (a retried checkpoint) and deleted, by outcome.",
            labels=("outcome",),
            registry=registry,
        )
        self.image_deletes = Counter(
            name="podmigrate_agent_image_deletes_total",
            help_text="Image deletions by outcome.",
            labels=("outcome",),
            registry=registry,
        )
