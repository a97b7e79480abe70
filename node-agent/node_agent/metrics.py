"""The agent's Prometheus metrics (primitives in ``telemetry.metrics``).

What an operator needs to see from a node agent: how many checkpoints succeeded or failed
where, how long each phase took (freeze, kubelet checkpoint, pack, push, whole request), how
many bytes went to the registry, and the agent's own memory: its peak RSS (``VmHWM``) shows
whether a large archive was ever held in memory instead of streamed.
"""

from __future__ import annotations

from telemetry.metrics import Counter, Histogram, process_memory_lines


class AgentMetrics:
    def __init__(self) -> None:
        self.checkpoints = Counter(
            name="podmigrate_agent_checkpoints_total",
            help_text="Checkpoint requests by outcome (success, rejected, freeze_failed, checkpoint_failed, push_failed).",
        )
        self.duration = Histogram(
            name="podmigrate_agent_checkpoint_duration_seconds",
            help_text="Checkpoint time by phase: freeze, checkpoint (kubelet, per container), pack, push, total (request).",
        )
        self.pushed_bytes = Counter(name="podmigrate_agent_pushed_bytes_total", help_text="Bytes uploaded to registries.")
        self.archive_bytes = Counter(
            name="podmigrate_agent_archive_bytes_total", help_text="Bytes of checkpoint archives produced by the kubelet."
        )
        self.thaws = Counter(name="podmigrate_agent_thaws_total", help_text="Containers thawed, by reason (request, rollback).")
        self.image_deletes = Counter(name="podmigrate_agent_image_deletes_total", help_text="Image deletions by outcome.")

    def render(self) -> str:
        lines: list[str] = []
        for metric in (self.checkpoints, self.duration, self.pushed_bytes, self.archive_bytes, self.thaws, self.image_deletes):
            lines += metric.render()
        lines += process_memory_lines()
        return "\n".join(lines) + "\n"
