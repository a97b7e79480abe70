"""One PodCheckpoint as a reconcile pass sees it, with the phases and spans it records about itself.

A PodCheckpoint is a ``PodRecord`` like a PodMigration: one pod, the checkpoint images it made
(``status.containers``), a trace. So the code that deletes those images when they are no longer
wanted (``podmigration.artifacts``) and that hands restored pods the registry's pull Secret
(``migrator.pullsecrets``) serves both. Its own small state machine is recorded the same way: each
step in ``status.step`` before it runs, each phase a span of the checkpoint's trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from kubernetes_asyncio import client

from migrator import tracing
from migrator.api import CheckpointMode, CheckpointPhase
from migrator.controllers.podmigration.migration import PodRecord
from migrator.metrics import ControllerMetrics
from migrator.reconciling import set_condition
from migrator.units import iso, now
from migrator.units import status_time as parse_time


class Step(StrEnum):
    VALIDATE = "Validate"
    CHECKPOINT = "Checkpoint"  # the agent checkpoints (and, to suspend, freezes) the pod and pushes the images
    SUSPEND = "Suspend"  # the frozen pod killed and deleted: it lives on only in the checkpoint
    THAW = "Thaw"  # failed before the pod was removed: it runs on, and what was pushed is deleted
    DONE = "Done"


PHASE_OF_STEP: Final = {
    Step.VALIDATE: CheckpointPhase.PENDING,
    Step.CHECKPOINT: CheckpointPhase.CHECKPOINTING,
    Step.SUSPEND: CheckpointPhase.SUSPENDING,
}  # Thaw keeps the phase it failed in: Failed is shown only with its reason, once the pod runs on
DEFAULT_TIMEOUT_SECONDS: Final = 300  # the CRD's default for spec.timeoutSeconds


class Checkpoint(PodRecord):
    """A PodCheckpoint and the status being built for it."""

    @property
    def step(self) -> Step:
        return Step(self.status.get("step") or Step.VALIDATE)

    @property
    def mode(self) -> CheckpointMode:
        return CheckpointMode(self.spec.get("mode") or CheckpointMode.RUNNING)

    @property
    def deadline_seconds(self) -> int:
        return int(self.spec.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)

    def expired(self) -> bool:
        started = self.status.get("startTime")
        return bool(started) and (now() - parse_time(started)).total_seconds() >= self.deadline_seconds

    def remaining_seconds(self) -> float:
        return self.deadline_seconds - (now() - parse_time(self.status["startTime"])).total_seconds()

    def also_involved(self) -> list[tuple[str, client.V1ObjectReference, str]]:
        """Every Event is also told on the pod checkpointed, tagged with our name."""
        pod_uid = self.status.get("podUID")
        if not pod_uid:
            return []
        on_pod = client.V1ObjectReference(api_version="v1", kind="Pod", name=self.pod_name, namespace=self.namespace, uid=pod_uid)
        return [(self.namespace, on_pod, f"[{self.name}] ")]


def attributes(c: Checkpoint) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "k8s.namespace.name": c.namespace, "k8s.pod.name": c.pod_name, "podmigrate.checkpoint": c.name,
        "podmigrate.checkpoint.mode": c.mode.value,
    }  # fmt: skip
    if c.status.get("sourceNode"):
        attrs["k8s.node.name"] = c.status["sourceNode"]
    if images := [x["image"] for x in c.status.get("containers") or []]:
        attrs["podmigrate.checkpoint.images"] = images
        attrs["podmigrate.checkpoint.image_bytes"] = int(c.status.get("totalBytes") or 0)
    return attrs


def start(c: Checkpoint) -> None:
    c.status.update(traceID=tracing.new_trace_id(), rootSpanID=tracing.new_span_id(), startTime=iso(now()), phases=[])
    enter(c, Step.VALIDATE)


def close_phase(c: Checkpoint, *, error: str | None = None) -> None:
    phases = c.status.get("phases") or []
    if not phases or phases[-1].get("end"):
        return
    record = phases[-1]
    record["end"] = iso(now())
    if error:
        record["error"] = error
    tracing.emit_span(
        name=f"checkpoint.{record['name']}", trace_id=c.status["traceID"], span_id=record["spanID"],
        parent_span_id=c.status["rootSpanID"], start=parse_time(record["start"]), end=parse_time(record["end"]),
        attributes=attributes(c), error=error,
    )  # fmt: skip


def enter(c: Checkpoint, step: Step, *, error: str | None = None) -> None:
    """Go to ``step``: close the current phase, open the next (a span each)."""
    close_phase(c, error=error)
    c.status["step"] = step.value
    if step == Step.DONE:
        return
    if step in PHASE_OF_STEP:
        c.status["phase"] = PHASE_OF_STEP[step].value
    c.status.setdefault("phases", []).append({"name": step.value.lower(), "spanID": tracing.new_span_id(), "start": iso(now())})


def fail(c: Checkpoint, reason: str, message: str) -> None:
    """The pod was not removed: it runs on (thawed if it was frozen); what was pushed is deleted."""
    c.status["failure"] = {"reason": reason, "message": message}
    enter(c, Step.THAW, error=message)


def conclude(
    c: Checkpoint, *, phase: CheckpointPhase, reason: str, message: str, metrics: ControllerMetrics | None = None
) -> None:
    """The end: phase, reason, condition ``Available``, the root span, and the Event that tells of it."""
    end = now()
    close_phase(c)
    c.status.update(phase=phase.value, step=Step.DONE.value, reason=reason, message=message, completionTime=iso(end))
    c.status.pop("failure", None)
    failed = phase == CheckpointPhase.FAILED
    set_condition(c.status, kind="Available", value=not failed, reason=reason, message=message)
    tracing.emit_span(
        name="podcheckpoint", trace_id=c.status["traceID"], span_id=c.status["rootSpanID"], parent_span_id=None,
        start=parse_time(c.status["startTime"]), end=end,
        attributes={**attributes(c), "podmigrate.outcome": phase.value, "podmigrate.reason": reason},
        error=message if failed else None,
    )  # fmt: skip
    tracing.flush()
    if metrics is not None:
        metrics.observe_checkpoint(mode=c.mode.value, status=c.status)
    c.note(reason, message, warning=failed)


def is_checkpoint_of(checkpoint: Mapping[str, Any], *, pod: str) -> bool:
    return (checkpoint.get("spec") or {}).get("podName") == pod


def finished(checkpoint: Mapping[str, Any]) -> bool:
    """Done, by its step (not its phase: a failed one is Failed while its pod is still being thawed)."""
    return (checkpoint.get("status") or {}).get("step") == Step.DONE


def unfinished(checkpoint: Mapping[str, Any]) -> bool:
    return not finished(checkpoint)
