"""The PodCheckpoint reconciler: checkpoint a pod into the registry, leave it running or suspend it.

Level-triggered and idempotent like the PodMigration reconciler (whose agents, artifacts and
pull-Secret code it shares): every pass reads the object, does one step, and records the outcome
in ``status`` before the next. The steps:

    Validate -> Checkpoint (the agent checkpoints the pod through its kubelet and pushes one image
                per container; mode Running leaves the pod running, paused only while CRIU dumps it;
                mode Suspend freezes it first, and it stays frozen)
             -> Suspend (mode Suspend: the frozen pod is killed and deleted; it lives on only in
                the checkpoint, until a PodRestore resumes it)
             -> Available

Nothing is lost: until the pod is killed, any failure (or the deadline, or a deletion) thaws it
and it runs on where it was (``Thaw``); the kill is recorded (``sourceKilled``) before it is sent,
so a restarted control service never thaws or re-freezes a pod that may be dead.

How a suspended pod is kept from being replaced cold: a bare pod is simply gone until resumed. A
ReplicaSet's or StatefulSet's pod is replaced by its controller at once; that replacement passes
the restore webhook, which makes it *hold the pod's place*: the checkpoint's images, and a
scheduling gate (``podmigrate.io/suspended``), so it stays unscheduled and runs nothing. The
controller counts it as its replica (no cold copy is made); a PodRestore later picks its node and
lifts the gate, and it restores the checkpoint there (``suspend``). Pods of other owners (a Job, a
DaemonSet) cannot be suspended.

A PodCheckpoint holds its images until it is deleted: its finalizer deletes them from the registry
first (retried while the registry or the agents do not answer, as a migration's are).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from kubernetes_asyncio import client

from agentapi import contract
from agentapi.client import AgentClient, AgentError
from kubeclient.informing import PodsAndNodes
from kubeclient.resources import Conflict, Gone
from migrator import api, claims, movability, placement, pullsecrets, slots
from migrator.api import CheckpointMode, CheckpointPhase
from migrator.controllers.podcheckpoint.record import (
    Checkpoint,
    Step,
    conclude,
    enter,
    fail,
    is_checkpoint_of,
    start,
    unfinished,
)
from migrator.controllers.podmigration import artifacts, pods, stages
from migrator.controllers.podmigration.migration import Context, Settings
from migrator.metrics import ControllerMetrics
from migrator.reconciling import Recorder, Wait
from migrator.units import format_bytes, iso, now
from migrator.units import status_time as parse_time
from telemetry import logcontext

log = logging.getLogger(__name__)

# A controller's replacement that did not pass the webhook (it started cold) is given this long to turn out
# to be the held one after all before the suspend is reported as not done.
HOLD_GRACE = timedelta(seconds=20)


def checkpoint_request(ctx: Context, c: Checkpoint) -> contract.CheckpointRequest:
    """The checkpoint's one request: the same every time (its id and tag name it for a retry or an undo)."""
    suspend = c.mode == CheckpointMode.SUSPEND
    return contract.CheckpointRequest(
        namespace=c.namespace,
        pod=c.pod_name,
        image_repository=contract.checkpoint_repository(
            root=ctx.settings.checkpoint_repository, namespace=c.namespace, pod=c.pod_name
        ),
        tag=f"ck-{c.uid[:8]}",
        freeze=suspend,
        timeout_seconds=ctx.settings.checkpoint_timeout_seconds,
        request_id=f"ck-{c.uid}",
        freeze_lease_seconds=ctx.settings.freeze_lease_seconds if suspend else None,
    )


async def _checkpointing_already(ctx: Context, c: Checkpoint) -> str | None:
    """An older unfinished PodCheckpoint or PodMigration of the same pod: one at a time."""
    mine = (c.meta.get("creationTimestamp") or "", c.name)
    for resource in (api.PODCHECKPOINTS, api.PODMIGRATIONS):
        listing = await ctx.custom.list_namespaced_custom_object(resource.group, resource.version, c.namespace, resource.plural)
        for other in listing.get("items") or []:
            meta = other["metadata"]
            if meta["uid"] == c.uid or not is_checkpoint_of(other, pod=c.pod_name):
                continue
            busy = unfinished(other) if resource is api.PODCHECKPOINTS else api.unfinished_migrations_of([other], pod=c.pod_name)
            if busy and (resource is api.PODMIGRATIONS or (meta.get("creationTimestamp") or "", meta["name"]) < mine):
                return f"{resource.kind} {meta['name']}"
    return None


async def validate(ctx: Context, c: Checkpoint) -> None:
    pod = await pods.read_pod(ctx, c.namespace, c.pod_name)
    if pod is None:
        return fail(c, "PodNotFound", f'pod "{c.namespace}/{c.pod_name}" not found')
    meta, spec = pod["metadata"], pod["spec"]
    if meta.get("deletionTimestamp") or not spec.get("nodeName") or not pods.is_running(pod):
        return fail(c, "PodNotRunning", f"pod {c.pod_name} is not running (only a running pod can be checkpointed)")
    if other := await _checkpointing_already(ctx, c):
        return fail(c, "Busy", f"pod {c.pod_name} is being checkpointed or moved by {other}; one at a time")
    refusal = movability.first_refusal(pod, claims=await claims.read_for_pod(ctx.core, pod))
    if refusal:
        return fail(c, refusal.reason, f"pod {c.pod_name} {refusal.message}")
    if dirs := sorted(movability.empty_dir_media(pod)):
        return fail(
            c, "EmptyDirNotCarried",
            f"pod {c.pod_name} has emptyDir volume(s) {', '.join(dirs)}, whose files a PodCheckpoint does not carry "
            "(a PodMigration does): restoring it would give its processes empty directories",
        )  # fmt: skip
    controller = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if controller:
        c.status["owner"] = {"kind": controller["kind"], "name": controller["name"], "uid": controller["uid"]}
        if c.mode == CheckpointMode.SUSPEND and controller["kind"] not in api.OWNERS_RESTORED_BY_WEBHOOK:
            return fail(
                c, "OwnedByController",
                f"pod {c.pod_name} is owned by {controller['kind']} {controller['name']}, which would replace it at once "
                "(cold) and run it beside its resumed checkpoint; only a bare pod, a ReplicaSet's or a StatefulSet's "
                "can be suspended",
            )  # fmt: skip
    node = await pods.read_node(ctx, spec["nodeName"])
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    c.status.update(
        # What a restore pulls on its node first (by the IDs the kubelet ran, as a migration's PrepareTarget does).
        baseImages=sorted({s["imageID"].removeprefix("docker-pullable://") for s in statuses if s.get("imageID")}),
        sourceNode=spec["nodeName"],
        podUID=meta["uid"],
        runtime=placement.runtime_of(node) if node else "",
        originalPod={
            "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if meta.get(k)},
            "spec": spec,
        },
    )
    enter(c, Step.CHECKPOINT)


async def checkpoint(ctx: Context, c: Checkpoint) -> None:
    node = await pods.read_node(ctx, c.status["sourceNode"])
    if node is None:
        return fail(c, "NodeNotFound", f"node {c.status['sourceNode']} disappeared")
    request = checkpoint_request(ctx, c)
    try:
        response = await artifacts.take_checkpoint(ctx, c, node=node, request=request, seconds=c.remaining_seconds())
    except artifacts.CheckpointNotTaken as exc:
        if exc.reason == "Timeout":
            return fail(c, "Timeout", f"the checkpoint was not in the registry within {c.deadline_seconds}s (timeoutSeconds)")
        return fail(c, exc.reason, exc.message)
    c.status["frozen"] = response.frozen
    c.status["containers"] = artifacts.container_records(response)
    total = sum(x.image_bytes for x in response.containers)
    c.status.update(totalBytes=total, size=format_bytes(total), checkpointTime=iso(now()))
    versions = sorted({v for x in response.containers if (v := getattr(x, "criu_version", ""))})
    if versions:
        c.status["criuVersion"] = ", ".join(versions)
    inspection = {x.name: x.inspection for x in response.containers if getattr(x, "inspection", None)}
    if inspection:
        c.status["inspection"] = inspection  # what CRIU's images say (process tree, memory, files): `kubectl migrate inspect`
    stages.record(c.status, source=stages.SOURCE_AGENT, records=stages.from_agent(response.stages, node=c.status["sourceNode"]))
    # Restores of this checkpoint name the registry's pull Secret: it stays in this namespace while checkpoints do.
    await pullsecrets.ensure(ctx, c)
    what = f"{len(response.containers)} container(s) checkpointed on {c.status['sourceNode']} ({c.status['size']})"
    if c.mode == CheckpointMode.SUSPEND:
        c.note("Checkpointed", f"{what}; the pod is frozen and is removed next")
        enter(c, Step.SUSPEND)
        return
    conclude(c, metrics=ctx.metrics, phase=CheckpointPhase.AVAILABLE, reason="Checkpointed", message=f"{what}; the pod runs on")


async def suspend(ctx: Context, c: Checkpoint) -> None:
    """Kill the frozen pod and delete it: from here on it lives only in the checkpoint (never thawed again).

    A ReplicaSet's or StatefulSet's pod is replaced by its controller as soon as it is deleted. So
    before the kill a *hold slot* is opened (``migrator.slots``, in this PodCheckpoint's status): the
    webhook makes that replacement hold the pod's place, gated and with the checkpoint's images
    (``webhook.hold_patch``). The controller counts it and makes no cold copy; it cannot run until a
    PodRestore picks its node and lifts the gate, and then it restores the checkpoint (a StatefulSet's
    under the same name: its identity is kept).
    """
    if c.status.get("owner") and not c.status.get("sourceRemoved"):
        await _open_hold(custom=ctx.custom, recorder=ctx.recorder, c=c)
    pod = await pods.read_pod(ctx, c.namespace, c.pod_name)
    if c.status.get("sourceRemoved") or pod is None or pod["metadata"]["uid"] != c.status["podUID"]:
        c.status.update(frozen=False, sourceRemoved=True)
        if c.status.get("owner"):
            return await _await_held(ctx, c)
        c.status["suspended"] = True
        return conclude(
            c, metrics=ctx.metrics, phase=CheckpointPhase.AVAILABLE, reason="Suspended",
            message=f"pod {c.pod_name} suspended: checkpointed on {c.status['sourceNode']} ({c.status['size']}) and removed; "
            f"resume it with a PodRestore of {c.name}",
        )  # fmt: skip
    if not pod["metadata"].get("deletionTimestamp"):
        if not c.status.get("sourceKilled"):
            fresh = await api.PODCHECKPOINTS.get(ctx.custom, name=c.name, namespace=c.namespace)
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return fail(c, "Cancelled", "the PodCheckpoint was deleted before the pod was suspended")
            c.status["sourceKilled"] = True  # before the kill: never thawed from here on
            await ctx.recorder.save(c)
        grace = pods.CONFIRMED_GRACE
        node = await pods.read_node(ctx, c.status["sourceNode"])
        if node is not None:
            try:
                await ctx.agents.kill(node=node, namespace=c.namespace, pod=c.pod_name, traceparent=c.traceparent())
                grace = 0
            except AgentError as exc:
                if exc.status == 409 and ("lapsed" in str(exc) or str(exc).startswith("not killed")):
                    # It was thawed (its freeze lease lapsed) or could not be killed: it runs on, as if not suspended.
                    c.status["sourceKilled"] = False
                    return fail(c, "NotSuspended", f"the pod on {c.status['sourceNode']}: {exc}")
                log.warning("agent could not kill the frozen pod (%s); deleting it with a grace period", exc)
        await pods.delete_pod(ctx, c.namespace, c.pod_name, uid=c.status["podUID"], grace=grace)
    raise Wait(0.2)


async def _open_hold(*, custom: client.CustomObjectsApi, recorder: Recorder, c: Checkpoint) -> None:
    """The slot the owner's replacement claims to hold the pod's place (saved, and labelled, before the kill)."""
    owner = c.status["owner"]
    slot = slots.Slot(
        migration=f"{c.namespace}/{c.name}", migration_uid=c.uid, namespace=c.namespace, owner_uid=owner["uid"],
        pod_name=c.pod_name if owner["kind"] == "StatefulSet" else None, node="", images=c.images(),
        source_node=c.status["sourceNode"],
        original_images={x["name"]: x["image"] for x in c.status["originalPod"]["spec"]["containers"]},
        source_pod=c.pod_name, pull_secret=str(c.status.get(pullsecrets.STATUS_KEY) or ""),
    )  # fmt: skip
    if slots.open_slot(c.status, slot):
        await recorder.save(c)
    if (c.meta.get("labels") or {}).get(slots.LABEL_SLOT_OWNER) != owner["uid"]:
        await _label(custom, c, owner["uid"])


async def _label(custom: client.CustomObjectsApi, c: Checkpoint, owner_uid: str | None) -> None:
    written = await slots.label_owner(custom, api.PODCHECKPOINTS, name=c.name, namespace=c.namespace, owner_uid=owner_uid)
    if written is not None:
        c.meta = written["metadata"]
        c.resource_version = written["metadata"]["resourceVersion"]


async def hold_place_again(*, core: client.CoreV1Api, custom: client.CustomObjectsApi, checkpoint: Mapping[str, Any]) -> None:
    """Before a released place-holder is deleted (its resume failed): the workload's next pod holds the place again.

    Opens a new hold slot on the PodCheckpoint (saved and labelled before the caller deletes the pod)
    and forgets the old place-holder; the PodCheckpoint's reconciler then finds the new one
    (``_find_held_again``), so the suspended pod can be resumed again later.
    """
    recorder = Recorder(core=core, custom=custom, resource=api.PODCHECKPOINTS)
    c = Checkpoint(checkpoint)
    c.status.pop("heldPod", None)
    c.status.pop(slots.STATUS_KEY, None)
    c.status["heldAgainSince"] = iso(now())
    await _open_hold(custom=custom, recorder=recorder, c=c)
    await recorder.save(c)


async def _find_held_again(ctx: Context, c: Checkpoint) -> None:
    """A suspended pod whose place-holder was replaced: record the new one (or, after a while, say none came)."""
    owner = c.status["owner"]
    for pod in await pods.owned_pods(ctx, c):
        meta = pod["metadata"]
        if (meta.get("annotations") or {}).get(api.ANNOTATION_CHECKPOINT_UID) == c.uid and not meta.get("deletionTimestamp"):
            c.status.pop(slots.STATUS_KEY, None)
            c.status.pop("heldAgainSince", None)
            await _label(ctx.custom, c, None)
            c.status["heldPod"] = {"name": meta["name"], "uid": meta["uid"]}
            c.note("PlaceHeld", f"{owner['kind']} {owner['name']}'s pod {meta['name']} holds suspended pod {c.pod_name}'s place")
            return
    if slots.reopen_if_lost(c.status):
        c.note("SlotReopened", "the place-holding slot was claimed but no pod came of it; offered again", warning=True)
    since = c.status.get("heldAgainSince")
    if since and now() - parse_time(since) > 3 * HOLD_GRACE:
        c.status.pop(slots.STATUS_KEY, None)
        c.status.pop("heldAgainSince", None)
        await _label(ctx.custom, c, None)
        c.note(
            "PlaceLost", f"{owner['kind']} {owner['name']} made no pod to hold suspended pod {c.pod_name}'s place", warning=True
        )
        return
    raise Wait(0.5)


async def _await_held(ctx: Context, c: Checkpoint) -> None:
    """The owner's replacement must appear holding the pod's place (or, without the webhook, start cold)."""
    held, cold = None, []
    for pod in await pods.owned_pods(ctx, c):
        meta = pod["metadata"]
        if meta["uid"] == c.status["podUID"] or meta.get("deletionTimestamp"):
            continue
        if (meta.get("annotations") or {}).get(api.ANNOTATION_CHECKPOINT_UID) == c.uid:
            held = pod
        else:
            cold.append(pod)
    owner = c.status["owner"]
    if held is not None:
        c.status.pop(slots.STATUS_KEY, None)
        await _label(ctx.custom, c, None)
        c.status.update(suspended=True, heldPod={"name": held["metadata"]["name"], "uid": held["metadata"]["uid"]})
        return conclude(
            c, metrics=ctx.metrics, phase=CheckpointPhase.AVAILABLE, reason="Suspended",
            message=f"pod {c.pod_name} suspended: checkpointed on {c.status['sourceNode']} ({c.status['size']}) and removed; "
            f"{owner['kind']} {owner['name']}'s replacement {held['metadata']['name']} holds its place, unscheduled "
            f"(scheduling gate {api.SCHEDULING_GATE_SUSPENDED}), until a PodRestore of {c.name} resumes it",
        )  # fmt: skip
    if slots.reopen_if_lost(c.status):
        c.note("SlotReopened", "the place-holding slot was claimed but no pod came of it; offered again", warning=True)
    removed_at = parse_time(c.status["phases"][-1]["start"])
    if not cold and now() - removed_at > 3 * HOLD_GRACE:
        # No replacement at all (the workload was scaled down or deleted meanwhile): the checkpoint is all there is.
        c.status.pop(slots.STATUS_KEY, None)
        await _label(ctx.custom, c, None)
        c.status["suspended"] = True
        return conclude(
            c, metrics=ctx.metrics, phase=CheckpointPhase.AVAILABLE, reason="Suspended",
            message=f"pod {c.pod_name} suspended: checkpointed on {c.status['sourceNode']} ({c.status['size']}) and removed; "
            f"{owner['kind']} {owner['name']} made no replacement to hold its place",
        )  # fmt: skip
    if cold and now() - removed_at > HOLD_GRACE:
        c.status.pop(slots.STATUS_KEY, None)
        await _label(ctx.custom, c, None)
        name = cold[-1]["metadata"]["name"]
        return conclude(
            c, metrics=ctx.metrics, phase=CheckpointPhase.AVAILABLE, reason="ReplacedCold",
            message=f"{owner['kind']} {owner['name']} replaced pod {c.pod_name} with {name}, which started cold (is the "
            "podmigrate webhook registered and reachable?); the checkpoint is kept, but the pod was not suspended",
        )  # fmt: skip
    raise Wait(0.3)


async def thaw(ctx: Context, c: Checkpoint) -> None:
    """Failed before the pod was removed: it runs on where it was; what was pushed is deleted."""
    failure = c.status.get("failure") or {"reason": "Failed", "message": "checkpoint failed"}
    await artifacts.abort_abandoned(ctx, c)
    if c.mode == CheckpointMode.SUSPEND and c.status.get("sourceNode"):
        node = await pods.read_node(ctx, c.status["sourceNode"])
        if node is not None:
            try:
                await ctx.agents.thaw(node=node, namespace=c.namespace, pod=c.pod_name, traceparent=c.traceparent())
            except AgentError as exc:
                c.status["thawError"] = str(exc)
                raise Wait(2.0) from None  # the pod must not stay frozen: keep trying
    c.status["frozen"] = False
    if c.status.pop(slots.STATUS_KEY, None) is not None or (c.meta.get("labels") or {}).get(slots.LABEL_SLOT_OWNER):
        await _label(ctx.custom, c, None)  # the suspend did not happen: no pod of the workload may take the place
    await artifacts.release(ctx, c)
    ran_on = f"; pod {c.pod_name} runs on" if c.status.get("podUID") else ""
    conclude(
        c, metrics=ctx.metrics, phase=CheckpointPhase.FAILED, reason=failure["reason"], message=f"{failure['message']}{ran_on}"
    )


STEPS = {Step.VALIDATE: validate, Step.CHECKPOINT: checkpoint, Step.SUSPEND: suspend, Step.THAW: thaw}


class PodCheckpointReconciler:
    def __init__(
        self,
        *,
        core: client.CoreV1Api,
        custom: client.CustomObjectsApi,
        agents: AgentClient,
        settings: Settings,
        metrics: ControllerMetrics | None = None,
        pods_and_nodes: PodsAndNodes | None = None,
    ) -> None:
        self.recorder = Recorder(core=core, custom=custom, resource=api.PODCHECKPOINTS)
        self.ctx = Context(core=core, custom=custom, agents=agents, settings=settings, recorder=self.recorder, metrics=metrics,
            pods_and_nodes=pods_and_nodes,
        )  # fmt: skip

    async def reconcile(self, obj: Mapping[str, Any]) -> float | None:
        """Drive one PodCheckpoint as far as it can go now; seconds until the next look, or None when done."""
        c = Checkpoint(obj)
        try:
            return await self._reconcile(c)
        except Gone:
            return None
        except pods.NamespaceTerminating:
            return await self._delete_images(c)

    async def _reconcile(self, c: Checkpoint) -> float | None:
        if c.step == Step.DONE:
            if c.deleting or artifacts.pending(c):
                return await self._delete_images(c)
            return await self._keep_place_held(c)
        if not c.deleting:
            await self.recorder.hold(c, api.CHECKPOINT_FINALIZER)
        logcontext.migration.set(f"{c.namespace}/{c.name}")
        if "traceID" not in c.status:
            start(c)
            logcontext.trace_id.set(c.status["traceID"])
            c.note("Started", f"checkpointing pod {c.pod_name} ({c.mode.value})")
            await self.recorder.save(c)
        logcontext.trace_id.set(str(c.status.get("traceID", "")))
        while c.step != Step.DONE:
            before = c.snapshot()
            if c.step in (Step.VALIDATE, Step.CHECKPOINT) and not c.status.get("failure"):
                if c.deleting:
                    self._abandon_in_flight(c)
                    fail(c, "Cancelled", "the PodCheckpoint was deleted before it was done")
                elif c.expired():
                    self._abandon_in_flight(c)
                    fail(c, "Timeout", f"the checkpoint was not done within {c.deadline_seconds}s (timeoutSeconds)")
            step = c.step
            delay = await self.recorder.attempt(c, lambda step=step: STEPS[step](self.ctx, c), before=before)
            if delay is not None:
                return delay
        return await self._delete_images(c) if c.deleting or artifacts.pending(c) else None

    async def _keep_place_held(self, c: Checkpoint) -> float | None:
        """A suspended workload pod's place-holder was deleted by a failed resume: find the next one."""
        if not (c.status.get("suspended") and c.status.get("owner") and c.status.get(slots.STATUS_KEY)):
            return None
        return await self.recorder.attempt(c, lambda: _find_held_again(self.ctx, c))

    def _abandon_in_flight(self, c: Checkpoint) -> None:
        if c.step == Step.CHECKPOINT:
            artifacts.abandon_checkpoint(c, request=checkpoint_request(self.ctx, c))

    async def _delete_images(self, c: Checkpoint) -> float | None:
        """A deleted PodCheckpoint: its images are deleted from the registry, then its finalizer released."""
        if c.deleting and not c.status.get("imagesQueued"):
            if c.status.get("suspended"):
                await self.recorder.event(
                    c, "SuspendedPodDeleted",
                    f"pod {c.pod_name} was suspended in this checkpoint and never resumed: it is gone with it", warning=True,
                )  # fmt: skip
            await artifacts.release(self.ctx, c)
            with contextlib.suppress(Gone, Conflict):
                await self.recorder.save(c)
        if (delay := await artifacts.retry_pending(self.ctx, c)) is not None:
            return delay
        if c.deleting:
            await pullsecrets.release(self.ctx, c)
            await self.recorder.release(c, api.CHECKPOINT_FINALIZER)
        return None
