"""The PodRestore reconciler: create a pod from a PodCheckpoint, on a node that fits, and see it Ready.

    Validate (the checkpoint is Available; the name is free; a clone is safe; a node fits)
    -> PrepareTarget (the checkpoint's base images pulled on that node: a runtime restores only on
       top of a base image in its local storage)
    -> Create (the pod from the checkpointed pod's recorded spec, bound to the node, its containers
       running the checkpoint images: the runtime restores their processes)
    -> WaitReady -> Succeeded

Under the checkpointed pod's own name it is that pod again (a suspended pod resumed keeps its
name, labels and spec); under another name it is a clone. Which restores are refused, and why:

* the name is taken: a pod of that name exists (the checkpointed pod running on, or anyone's);
* the pod was owned by a controller: a StatefulSet pod's identity is unique (a second copy would
  break it), and a ReplicaSet would adopt a restored copy and delete a pod to keep its count.
  Such workloads restore their checkpoints through the warm-start annotation instead
  (``migrator.warmstart``), where the controller itself creates the pods;
* the checkpoint failed, or is being deleted (its images are going).

Nothing is lost: the checkpoint stays, whatever the restore does. A failed restore deletes the pod
it created, so a resume can simply be tried again (on another node).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from kubernetes_asyncio import client

from kubeclient.informing import PodsAndNodes
from kubeclient.reading import plain
from kubeclient.resources import Gone
from migrator import api, slots, tracing
from migrator.api import CheckpointPhase, RestorePhase
from migrator.controllers.podcheckpoint.reconciler import hold_place_again
from migrator.controllers.podmigration import pods
from migrator.controllers.podmigration.migration import Context, Settings
from migrator.metrics import ControllerMetrics
from migrator.reconciling import Record, Recorder, Wait, set_condition
from migrator.units import iso, now
from migrator.units import status_time as parse_time

log = logging.getLogger(__name__)

POLL: Final = 0.5
DEFAULT_TIMEOUT_SECONDS: Final = 300


class Step(StrEnum):
    VALIDATE = "Validate"
    PREPARE_TARGET = "PrepareTarget"
    CREATE = "Create"
    WAIT_READY = "WaitReady"
    CLEAN_UP = "CleanUp"  # failed: the pod it created (if any) deleted; the checkpoint is untouched
    DONE = "Done"


PHASE_OF_STEP: Final = {
    Step.VALIDATE: RestorePhase.PENDING,
    Step.PREPARE_TARGET: RestorePhase.PENDING,
    Step.CREATE: RestorePhase.RESTORING,
    Step.WAIT_READY: RestorePhase.RESTORING,
}  # CleanUp keeps the phase it failed in: Failed is shown only with its reason, once the clean-up is done


class Restore(Record):
    """A PodRestore and the status being built for it."""

    @property
    def namespace(self) -> str:
        return str(self.meta["namespace"])

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.obj.get("spec") or {}

    @property
    def step(self) -> Step:
        return Step(self.status.get("step") or Step.VALIDATE)

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "")

    @property
    def checkpoint_name(self) -> str:
        return str(self.spec["checkpointName"])

    def expired(self) -> bool:
        timeout = int(self.spec.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)
        return (now() - parse_time(self.status["startTime"])).total_seconds() >= timeout


def _enter(r: Restore, step: Step, *, error: str | None = None) -> None:
    phases = r.status.setdefault("phases", [])
    if phases and not phases[-1].get("end"):
        phases[-1]["end"] = iso(now())
        if error:
            phases[-1]["error"] = error
        tracing.emit_span(
            name=f"restore.{phases[-1]['name']}", trace_id=r.status["traceID"], span_id=phases[-1]["spanID"],
            parent_span_id=r.status["rootSpanID"], start=parse_time(phases[-1]["start"]), end=parse_time(phases[-1]["end"]),
            attributes=_attributes(r), error=error,
        )  # fmt: skip
    r.status["step"] = step.value
    if step != Step.DONE:
        if step in PHASE_OF_STEP:
            r.status["phase"] = PHASE_OF_STEP[step].value
        phases.append({"name": step.value.lower(), "spanID": tracing.new_span_id(), "start": iso(now())})


def _attributes(r: Restore) -> dict[str, Any]:
    attrs: dict[str, Any] = {"k8s.namespace.name": r.namespace, "podmigrate.restore": r.name,
                             "podmigrate.checkpoint": r.checkpoint_name}  # fmt: skip
    if r.status.get("podName"):
        attrs["k8s.pod.name"] = r.status["podName"]
    if r.status.get("targetNode"):
        attrs["k8s.node.name"] = r.status["targetNode"]
    return attrs


def _fail(r: Restore, reason: str, message: str) -> None:
    r.status["failure"] = {"reason": reason, "message": message}
    _enter(r, Step.CLEAN_UP, error=message)


def _conclude(r: Restore, *, phase: RestorePhase, reason: str, message: str, metrics: ControllerMetrics | None) -> None:
    end = now()
    _enter(r, Step.DONE)
    r.status.update(phase=phase.value, reason=reason, message=message, completionTime=iso(end))
    r.status.pop("failure", None)
    failed = phase == RestorePhase.FAILED
    set_condition(r.status, kind="Succeeded", value=not failed, reason=reason, message=message)
    tracing.emit_span(
        name="podrestore", trace_id=r.status["traceID"], span_id=r.status["rootSpanID"], parent_span_id=None,
        start=parse_time(r.status["startTime"]), end=end,
        attributes={**_attributes(r), "podmigrate.outcome": phase.value, "podmigrate.reason": reason},
        error=message if failed else None,
    )  # fmt: skip
    tracing.flush()
    if metrics is not None:
        metrics.observe_restore(r.status)
    r.note(reason, message, warning=failed)


def prepull_name(r: Restore) -> str:
    return f"{str(r.status.get('podName') or r.name)[:40]}-prepull-{r.uid[:8]}"


async def _read_checkpoint(ctx: Context, r: Restore) -> dict[str, Any] | None:
    return await api.PODCHECKPOINTS.get(ctx.custom, name=r.checkpoint_name, namespace=r.namespace)


async def _restoring_already(ctx: Context, r: Restore, *, pod: str) -> str | None:
    listing = await ctx.custom.list_namespaced_custom_object(
        api.PODRESTORES.group, api.PODRESTORES.version, r.namespace, api.PODRESTORES.plural
    )
    for other in listing.get("items") or []:
        status = other.get("status") or {}
        busy = status.get("step") != Step.DONE
        if other["metadata"]["uid"] != r.uid and status.get("podName") == pod and busy:
            return str(other["metadata"]["name"])
    return None


async def validate(ctx: Context, r: Restore) -> None:
    checkpoint = await _read_checkpoint(ctx, r)
    if checkpoint is None:
        return _fail(r, "CheckpointNotFound", f'PodCheckpoint "{r.namespace}/{r.checkpoint_name}" not found')
    if checkpoint["metadata"].get("deletionTimestamp"):
        return _fail(r, "CheckpointDeleted", f"PodCheckpoint {r.checkpoint_name} is being deleted (its images are going)")
    status = checkpoint.get("status") or {}
    if status.get("phase") == CheckpointPhase.FAILED:
        return _fail(r, "CheckpointFailed", f"PodCheckpoint {r.checkpoint_name} failed: {status.get('message', '')}")
    if status.get("phase") != CheckpointPhase.AVAILABLE:
        raise Wait(1.0)  # still being taken: the restore follows it (within its own timeout)
    original = status["originalPod"]
    source_pod = str(original["metadata"]["name"])
    if status.get("suspended") and status.get("owner") and not status.get("heldPod") and status.get(slots.STATUS_KEY):
        raise Wait(1.0)  # its place is being held again (an earlier resume failed): resume the next place-holder
    held = status.get("heldPod") if status.get("suspended") else None
    name = str(r.spec.get("podName") or (held or {}).get("name") or source_pod)
    if held and name != held["name"]:
        return _fail(
            r, "OwnedByController",
            f"pod {source_pod} was suspended with {status['owner']['kind']} {status['owner']['name']}'s pod {held['name']} "
            "holding its place: it resumes as that pod (leave podName empty), and cannot be cloned",
        )  # fmt: skip
    if held:
        pod = await pods.read_pod(ctx, r.namespace, held["name"])
        gates = {g.get("name") for g in ((pod or {}).get("spec") or {}).get("schedulingGates") or []}
        if pod is None or pod["metadata"]["uid"] != held["uid"] or pod["metadata"].get("deletionTimestamp"):
            return _fail(r, "HeldPodGone", f"pod {held['name']}, which held suspended pod {source_pod}'s place, is gone")
        if api.SCHEDULING_GATE_SUSPENDED not in gates:
            return _fail(r, "AlreadyResumed", f"pod {held['name']} is not held any more (it was resumed)")
    elif owner := status.get("owner"):
        if owner["kind"] == "StatefulSet":
            why = f"pod {source_pod} is StatefulSet {owner['name']}'s: its identity is unique, so it cannot be restored beside it"
        else:
            why = (
                f"pod {source_pod} was owned by {owner['kind']} {owner['name']}, which would adopt the restored pod and "
                f"delete one to keep its replica count: annotate the workload with {api.ANNOTATION_WARM_START}="
                f"{r.checkpoint_name} to have its new pods restored from it"
            )
        return _fail(r, "OwnedByController", why)
    existing = None if held else await pods.read_pod(ctx, r.namespace, name)
    if existing is not None and (existing["metadata"].get("annotations") or {}).get(api.ANNOTATION_RESTORE_UID) != r.uid:
        hint = "; give podName to restore a clone under another name" if name == source_pod else ""
        return _fail(r, "PodExists", f"pod {name} exists in {r.namespace}{hint}")
    if other := await _restoring_already(ctx, r, pod=name):
        return _fail(r, "Busy", f"PodRestore {other} is restoring pod {name} already")
    pod_spec = {"metadata": original["metadata"], "spec": {**original["spec"], "nodeName": ""}}
    runtime = str(status.get("runtime") or "") or None
    try:
        target = await pods.choose_node(
            ctx, pod=pod_spec, name=name, wanted=str(r.spec.get("targetNode") or ""), exclude="", runtime=runtime
        )
    except pods.Unplaceable as exc:
        return _fail(r, exc.reason, exc.message)
    r.status.update(
        podName=name, targetNode=target, sourcePod=source_pod, clone=not held and name != source_pod,
        **({"heldPod": dict(held)} if held else {}),
        checkpoint={"name": r.checkpoint_name, "uid": checkpoint["metadata"]["uid"]},
    )  # fmt: skip
    _enter(r, Step.PREPARE_TARGET)


async def prepare_target(ctx: Context, r: Restore) -> None:
    checkpoint = await _read_checkpoint(ctx, r)
    if checkpoint is None or checkpoint["metadata"]["uid"] != r.status["checkpoint"]["uid"]:
        return _fail(r, "CheckpointNotFound", f"PodCheckpoint {r.checkpoint_name} is gone")
    status = checkpoint["status"]
    failed = await pods.pull_on_node(
        ctx, namespace=r.namespace, name=prepull_name(r), node=r.status["targetNode"],
        images=list(status.get("baseImages") or []),
        pull_secrets=list(status["originalPod"]["spec"].get("imagePullSecrets") or []), labels={api.LABEL_PREPULL: r.uid},
    )  # fmt: skip
    if failed:
        return _fail(r, "BaseImageUnavailable", f"cannot pull the base image on {r.status['targetNode']}: {failed}")
    _enter(r, Step.CREATE)


JSON_PATCH: Final = "application/json-patch+json"


def _same_pod(held: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A JSON patch's precondition: still the held pod (not another of the same name)."""
    return [{"op": "test", "path": "/metadata/uid", "value": held["uid"]}]


async def release(ctx: Context, r: Restore) -> None:
    """A held pod (a workload's replacement of a suspended pod): bound to the target, then its gate lifted.

    While gated, a pod's node selector may still be added to (Kubernetes' mutable scheduling
    directives); once the gate is gone the scheduler binds it there and the kubelet restores the
    checkpoint images it already names.
    """
    held = r.status["heldPod"]
    pod = await pods.read_pod(ctx, r.namespace, held["name"])
    if pod is None or pod["metadata"]["uid"] != held["uid"]:
        return _fail(r, "HeldPodGone", f"pod {held['name']}, which held the suspended pod's place, is gone")
    spec = pod["spec"]
    node = await pods.read_node(ctx, r.status["targetNode"])
    hostname = ((node or {}).get("metadata", {}).get("labels") or {}).get("kubernetes.io/hostname") or r.status["targetNode"]
    gates = [g for g in spec.get("schedulingGates") or [] if g.get("name") != api.SCHEDULING_GATE_SUSPENDED]
    gated = len(gates) != len(spec.get("schedulingGates") or [])
    if gated and (spec.get("nodeSelector") or {}).get("kubernetes.io/hostname") != hostname:
        selector = {**(spec.get("nodeSelector") or {}), "kubernetes.io/hostname": hostname}
        await ctx.core.patch_namespaced_pod(
            held["name"], r.namespace, [*_same_pod(held), {"op": "add", "path": "/spec/nodeSelector", "value": selector}],
            _content_type=JSON_PATCH,
        )  # fmt: skip
    if gated:
        await ctx.core.patch_namespaced_pod(
            held["name"], r.namespace, [*_same_pod(held), {"op": "replace", "path": "/spec/schedulingGates", "value": gates}],
            _content_type=JSON_PATCH,
        )  # fmt: skip
    r.status["pod"] = {"name": held["name"], "uid": held["uid"]}
    r.note(
        "Released", f"pod {held['name']} released onto {r.status['targetNode']}: it restores PodCheckpoint {r.checkpoint_name}"
    )
    _enter(r, Step.WAIT_READY)


async def create(ctx: Context, r: Restore) -> None:
    if r.status.get("heldPod"):
        return await release(ctx, r)
    checkpoint = await _read_checkpoint(ctx, r)
    if checkpoint is None or checkpoint["metadata"]["uid"] != r.status["checkpoint"]["uid"]:
        return _fail(r, "CheckpointNotFound", f"PodCheckpoint {r.checkpoint_name} is gone")
    status = checkpoint["status"]
    name = r.status["podName"]
    body = pods.restore_body(
        status["originalPod"], name=name, node=r.status["targetNode"],
        images={c["name"]: c["image"] for c in status.get("containers") or []}, source_node=status["sourceNode"],
        restored_from=f"{r.namespace}/{r.status['sourcePod']}",
        annotations={
            api.ANNOTATION_CHECKPOINT: f"{r.namespace}/{r.checkpoint_name}",
            api.ANNOTATION_CHECKPOINT_UID: r.status["checkpoint"]["uid"],
            api.ANNOTATION_RESTORE: f"{r.namespace}/{r.name}",
            api.ANNOTATION_RESTORE_UID: r.uid,
        },
        pull_secret=str(status.get("pullSecret") or ""),
    )  # fmt: skip
    try:
        pod = plain(await ctx.core.create_namespaced_pod(r.namespace, body))
    except client.ApiException as exc:
        if exc.status != 409:
            if exc.status in (400, 403, 422):
                return _fail(r, "PodRefused", f"the API server refused pod {name}: {exc.reason}: {exc.body}")
            raise
        existing = await pods.read_pod(ctx, r.namespace, name)
        if existing is None or (existing["metadata"].get("annotations") or {}).get(api.ANNOTATION_RESTORE_UID) != r.uid:
            return _fail(r, "PodExists", f"pod {name} was created by someone else meanwhile")
        pod = existing
    r.status["pod"] = {"name": name, "uid": pod["metadata"]["uid"]}
    r.note("Created", f"pod {name} created on {r.status['targetNode']} from PodCheckpoint {r.checkpoint_name}")
    _enter(r, Step.WAIT_READY)


async def wait_ready(ctx: Context, r: Restore) -> None:
    pod = await pods.read_pod(ctx, r.namespace, r.status["pod"]["name"])
    if pod is None or pod["metadata"]["uid"] != r.status["pod"]["uid"]:
        return _fail(r, "PodLost", f"the restored pod {r.status['pod']['name']} was deleted")
    if pods.is_ready(pod):
        ready = now()
        seconds = (ready - parse_time(r.status["startTime"])).total_seconds()
        r.status.update(readyAt=iso(ready), readySeconds=f"{seconds:.3f}")
        await _mark_resumed(ctx, r)
        kind = "cloned as" if r.status.get("clone") else "restored as"
        return _conclude(
            r, metrics=ctx.metrics, phase=RestorePhase.SUCCEEDED, reason="Restored",
            message=f"PodCheckpoint {r.checkpoint_name} {kind} pod {r.status['podName']}, Ready on {r.status['targetNode']} "
            f"after {seconds:.2f}s",
        )  # fmt: skip
    if failure := pods.container_failure(pod):
        return _fail(r, "RestoreFailed", f"restore on {r.status['targetNode']} failed: {failure}")
    raise Wait(0.2)


async def _mark_resumed(ctx: Context, r: Restore) -> None:
    """A suspended pod is back under its own name: its checkpoint no longer is the only copy."""
    if r.status.get("clone"):
        return
    with contextlib.suppress(Gone):  # deleted meanwhile: nothing to mark, and not this restore's own end
        await api.PODCHECKPOINTS.patch_status(
            ctx.custom, name=r.checkpoint_name, namespace=r.namespace,
            status={"suspended": False, "heldPod": None,
                    "resumedBy": {"restore": r.name, "pod": r.status["pod"]["uid"], "at": r.status["readyAt"]}},
        )  # fmt: skip


async def clean_up(ctx: Context, r: Restore) -> None:
    await pods.delete_pod(ctx, r.namespace, prepull_name(r))
    created = r.status.get("pod")
    if created and r.status.get("heldPod"):
        # A released place-holder that did not come up: its workload controller replaces it once it is deleted, so
        # the place is held again first (by the PodCheckpoint, as at the suspend) and a later resume can try again.
        checkpoint = await _read_checkpoint(ctx, r)
        if checkpoint is not None and checkpoint["metadata"]["uid"] == r.status["checkpoint"]["uid"]:
            await hold_place_again(core=ctx.core, custom=ctx.custom, checkpoint=checkpoint)
    if created:
        await pods.delete_pod(ctx, r.namespace, created["name"], uid=created["uid"], grace=pods.CONFIRMED_GRACE)
    failure = r.status.get("failure") or {"reason": "Failed", "message": "restore failed"}
    removed = f"; pod {created['name']} deleted" if created else ""
    _conclude(r, metrics=ctx.metrics, phase=RestorePhase.FAILED, reason=failure["reason"],
              message=f"{failure['message']}{removed}; PodCheckpoint {r.checkpoint_name} is unchanged")  # fmt: skip


STEPS: Final = {
    Step.VALIDATE: validate, Step.PREPARE_TARGET: prepare_target, Step.CREATE: create, Step.WAIT_READY: wait_ready,
    Step.CLEAN_UP: clean_up,
}  # fmt: skip


class PodRestoreReconciler:
    def __init__(
        self,
        *,
        core: client.CoreV1Api,
        custom: client.CustomObjectsApi,
        settings: Settings,
        agents: Any,
        metrics: ControllerMetrics | None = None,
        pods_and_nodes: PodsAndNodes | None = None,
    ) -> None:
        self.recorder = Recorder(core=core, custom=custom, resource=api.PODRESTORES)
        self.ctx = Context(core=core, custom=custom, agents=agents, settings=settings, recorder=self.recorder, metrics=metrics,
            pods_and_nodes=pods_and_nodes,
        )  # fmt: skip

    async def reconcile(self, obj: Mapping[str, Any]) -> float | None:
        r = Restore(obj)
        try:
            return await self._reconcile(r)
        except Gone:
            return None

    async def _reconcile(self, r: Restore) -> float | None:
        if r.step == Step.DONE:
            if r.deleting:
                await self.recorder.release(r, api.RESTORE_FINALIZER)
            return None
        if not r.deleting:
            await self.recorder.hold(r, api.RESTORE_FINALIZER)
        if "traceID" not in r.status:
            r.status.update(traceID=tracing.new_trace_id(), rootSpanID=tracing.new_span_id(), startTime=iso(now()), phases=[])
            _enter(r, Step.VALIDATE)
            r.note("Started", f"restoring PodCheckpoint {r.checkpoint_name}")
            await self.recorder.save(r)
        while r.step != Step.DONE:
            before = r.snapshot()
            if r.step != Step.CLEAN_UP and not r.status.get("failure"):
                if r.deleting:
                    _fail(r, "Cancelled", "the PodRestore was deleted before the pod was Ready")
                elif r.expired():
                    timeout = int(r.spec.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)
                    _fail(r, "Timeout", f"the restored pod was not Ready within {timeout}s (timeoutSeconds) in step {r.step}")
            step = r.step
            delay = await self.recorder.attempt(r, lambda step=step: STEPS[step](self.ctx, r), before=before)
            if delay is not None:
                return delay
        if r.deleting:
            await self.recorder.release(r, api.RESTORE_FINALIZER)
        return None
