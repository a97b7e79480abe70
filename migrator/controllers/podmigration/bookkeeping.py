"""What a migration records about itself: phases, spans, failures and the end.

Every step transition goes through ``enter``: it closes the current phase (its span is
emitted then, with the ids status already holds, so a restarted control service emits the
same trace), records the next step and phase, and queues the Event that tells of it. Failures
choose their rollback here, once: before the source was removed the source is thawed
(``fail_before_removal``); after, the checkpoint is restored on the source or the pod is
recreated (``fail_after_removal``). ``finish`` writes the end: phase, reason, condition,
downtime, the root span, metrics and the final Event.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Final

from migrator import api, pullsecrets, tracing
from migrator.api import OnFailure, Phase, Step
from migrator.controllers.podmigration.migration import Context, Migration
from migrator.reconciling import set_condition
from migrator.units import iso, now
from migrator.units import status_time as parse_time

log = logging.getLogger(__name__)

SPAN_NAMES: Final = {
    Step.VALIDATE: "validate",
    Step.CHECKPOINT: "checkpoint",
    Step.PREPARE_TARGET: "prepare-target",
    Step.REMOVE_SOURCE: "remove-source",
    Step.CREATE_TARGET: "create-target",
    Step.AWAIT_REPLACEMENT: "await-replacement",
    Step.WAIT_READY: "restore",
    Step.CLEANUP: "cleanup",
    Step.THAW_SOURCE: "rollback-thaw-source",
    Step.RESTORE_SOURCE: "rollback-restore-on-source",
    Step.RECREATE: "rollback-recreate",
}


def start(m: Migration) -> None:
    """The first pass: the trace ids (joining a starter's trace if annotated) and the first step."""
    parent = tracing.parse_traceparent((m.meta.get("annotations") or {}).get(api.ANNOTATION_TRACEPARENT))
    m.status.update(
        traceID=parent[0] if parent else tracing.new_trace_id(),
        rootSpanID=tracing.new_span_id(),
        startTime=iso(now()),
        phases=[],
        conditions=[],
    )
    if parent:
        m.status["parentSpanID"] = parent[1]
    enter(m, Step.VALIDATE)


def attributes(m: Migration) -> dict[str, Any]:
    attrs: dict[str, Any] = {"k8s.namespace.name": m.namespace, "k8s.pod.name": m.pod_name, "podmigrate.migration": m.name}
    containers = m.status.get("containers") or []
    if containers:
        attrs["podmigrate.checkpoint.images"] = [c["image"] for c in containers]
        attrs["podmigrate.checkpoint.archive_bytes"] = sum(int(c.get("archiveBytes") or 0) for c in containers)
        attrs["podmigrate.checkpoint.image_bytes"] = sum(int(c.get("imageBytes") or 0) for c in containers)
    if m.status.get("downtimeSeconds"):
        attrs["podmigrate.downtime_seconds"] = float(m.status["downtimeSeconds"])
    for key, attr in (("sourceNode", "podmigrate.source_node"), ("targetNode", "podmigrate.target_node")):
        if m.status.get(key):
            attrs[attr] = m.status[key]
    return attrs


def close_phase(m: Migration, *, error: str | None = None) -> None:
    phases = m.status.get("phases") or []
    if not phases or phases[-1].get("end"):
        return
    record = phases[-1]
    record["end"] = iso(now())
    if error:
        record["error"] = error
    tracing.emit_span(
        name=f"migration.{record['name']}",
        trace_id=m.status["traceID"],
        span_id=record["spanID"],
        parent_span_id=m.status["rootSpanID"],
        start=parse_time(record["start"]),
        end=parse_time(record["end"]),
        attributes=attributes(m),
        error=error,
    )


def enter(m: Migration, step: Step, *, error: str | None = None) -> None:
    """Go to ``step``: close the current phase, open the next, queue the Event that tells of it."""
    close_phase(m, error=error)
    m.status["step"] = step.value
    if step == Step.DONE:
        return
    m.status["phase"] = api.PHASE_OF_STEP[step].value
    m.status.setdefault("phases", []).append({"name": SPAN_NAMES[step], "spanID": tracing.new_span_id(), "start": iso(now())})
    m.note(step.value, f"{api.PHASE_OF_STEP[step].value}: step {step.value} ({SPAN_NAMES[step]})")


def fail_validation(m: Migration, reason: str, message: str) -> None:
    """Nothing was touched yet: fail straight away (no thaw needed, but ThawSource is harmless)."""
    m.status["failure"] = {"reason": reason, "message": message}
    enter(m, Step.THAW_SOURCE, error=message)
    m.status["nothingTouched"] = True


def fail_before_removal(m: Migration, reason: str, message: str) -> None:
    """The source still exists (perhaps frozen): thaw it and let it run on."""
    m.status["failure"] = {"reason": reason, "message": message}
    enter(m, Step.THAW_SOURCE, error=message)


def fail_after_removal(m: Migration, reason: str, message: str) -> None:
    """The source is gone: restore the checkpoint on its node, or (no checkpoint, or asked so) recreate it."""
    m.status["failure"] = {"reason": reason, "message": message}
    on_failure = OnFailure(m.spec.get("onFailure") or OnFailure.RESTORE_SOURCE)
    restore = on_failure == OnFailure.RESTORE_SOURCE and m.status.get("containers")
    enter(m, Step.RESTORE_SOURCE if restore else Step.RECREATE, error=message)


DEFAULT_TIMEOUT_SECONDS: Final = 300  # the CRD's default for spec.timeoutSeconds


def timeout_seconds(m: Migration) -> int:
    return int(m.spec.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)


def deadline(m: Migration) -> datetime:
    """When the whole migration must be done (``timeoutSeconds`` from its start)."""
    return parse_time(m.status["startTime"]) + timedelta(seconds=timeout_seconds(m))


def downtime_seconds(m: Migration) -> float | None:
    """Frozen until the restored pod was Ready: what the pod's users felt."""
    if not (m.status.get("frozenAt") and m.status.get("readyAt")):
        return None
    return (parse_time(m.status["readyAt"]) - parse_time(m.status["frozenAt"])).total_seconds()


async def finish(ctx: Context, m: Migration, *, phase: Phase, reason: str, message: str) -> None:
    end = now()
    failed = phase == Phase.FAILED
    close_phase(m)
    m.status.update(phase=phase.value, step=Step.DONE.value, reason=reason, message=message, completionTime=iso(end))
    m.status.pop("failure", None)
    set_condition(m.status, kind="Succeeded", value=not failed, reason=reason, message=message)
    downtime = downtime_seconds(m)
    if downtime is not None:
        m.status["downtimeSeconds"] = f"{downtime:.3f}"
        tracing.emit_span(
            name="migration.downtime",
            trace_id=m.status["traceID"],
            span_id=tracing.new_span_id(),
            parent_span_id=m.status["rootSpanID"],
            start=parse_time(m.status["frozenAt"]),
            end=parse_time(m.status["readyAt"]),
            attributes=attributes(m),
        )
    tracing.emit_span(
        name="migration",
        trace_id=m.status["traceID"],
        span_id=m.status["rootSpanID"],
        parent_span_id=m.status.get("parentSpanID"),
        start=parse_time(m.status["startTime"]),
        end=end,
        attributes={**attributes(m), "podmigrate.outcome": phase.value, "podmigrate.reason": reason},
        error=message if failed else None,
    )
    tracing.flush()
    if ctx.metrics is not None:
        ctx.metrics.observe_finished(m.status)
    log.info("%s/%s %s: %s: %s", m.namespace, m.name, phase.value, reason, message)
    await ctx.recorder.event(m, reason, message, warning=failed)
    await pullsecrets.release(ctx, m)  # the namespace's copy of the checkpoint pull Secret, once no migration there needs it
