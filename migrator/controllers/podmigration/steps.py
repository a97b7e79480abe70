"""The forward steps of a migration, in the order they run.

    Validate -> PrepareTarget (base images pulled on the target: a runtime restores a checkpoint
                only on top of a base image in its local storage; done before the freeze, so it
                is not downtime)
             -> Checkpoint (the agent freezes the source, the kubelet checkpoints, the image is pushed;
                the agent's timings of these become ``status.stages``)
             -> RemoveSource (the frozen source is killed and deleted; only then ``sourceRemoved``)
             -> CreateTarget (bare pods: same name, bound to the target, images = checkpoint images)
                or AwaitReplacement (controller-owned pods: the controller's replacement, made the
                restore by the webhook)
             -> WaitReady (once Ready: the target's stages, fetch, restore, ready, from its kubelet's
                Events) -> Cleanup -> Succeeded

Each step reads the world, does its one piece of work, and records the outcome (``enter`` the
next step, or a failure that picks the rollback) in ``m.status``; the reconciler saves it. A
step that must wait for the world raises ``Wait``. Each is safe to run twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from kubernetes_asyncio import client

from agentapi import contract
from agentapi.client import AgentError
from kubeclient.reading import plain
from migrator import api, claims, movability, placement, pullsecrets, slots, tracing
from migrator.api import Phase, Step
from migrator.controllers.podmigration import artifacts, bookkeeping, pods, restorestages, stages
from migrator.controllers.podmigration.bookkeeping import (
    SPAN_NAMES,
    attributes,
    downtime_seconds,
    enter,
    fail_after_removal,
    fail_before_removal,
    fail_validation,
    finish,
)
from migrator.controllers.podmigration.migration import Context, Migration, prepull_name
from migrator.reconciling import Wait
from migrator.units import iso, now
from migrator.units import status_time as parse_time

log = logging.getLogger(__name__)

POLL = 0.5  # how often a step that waits for the world looks again (a watch event looks sooner)
# A controller's replacement that did not pass the webhook (it started cold) is given this long
# to turn out to be ours after all before the migration reports the state lost.
COLD_REPLACEMENT_GRACE = timedelta(seconds=20)


async def _moving_already(ctx: Context, m: Migration) -> str | None:
    """An older unfinished PodMigration of the same pod, or an unfinished PodCheckpoint of it: one at a time."""
    listing = await ctx.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, m.namespace, api.PLURAL)
    mine = (m.meta.get("creationTimestamp") or "", m.name)
    for other in api.unfinished_migrations_of(listing.get("items") or [], pod=m.pod_name):
        meta = other["metadata"]
        if meta["uid"] != m.uid and (meta.get("creationTimestamp") or "", meta["name"]) < mine:
            return f"PodMigration {meta['name']}"
    # A PodCheckpoint in flight freezes (or removes) the same pod: one at a time, whichever came first.
    resource = api.PODCHECKPOINTS
    kept = await ctx.custom.list_namespaced_custom_object(resource.group, resource.version, m.namespace, resource.plural)
    for other in kept.get("items") or []:
        if (other.get("spec") or {}).get("podName") == m.pod_name and (other.get("status") or {}).get("step") != "Done":
            return f"PodCheckpoint {other['metadata']['name']}"
    return None


async def validate(ctx: Context, m: Migration) -> None:
    pod = await pods.read_pod(ctx, m.namespace, m.pod_name)
    if pod is None:
        return fail_validation(m, "PodNotFound", f'pod "{m.namespace}/{m.pod_name}" not found')
    other = await _moving_already(ctx, m)
    if other:
        return fail_validation(
            m, "AlreadyMigrating", f"pod {m.pod_name} is already being moved or checkpointed by {other}; one at a time"
        )
    facts = await claims.read_for_pod(ctx.core, pod)
    refusal = movability.first_refusal(pod, claims=facts)
    if refusal:
        return fail_validation(m, refusal.reason, f"pod {m.pod_name} {refusal.message}")
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    source = spec["nodeName"]
    source_node = await pods.read_node(ctx, source)
    runtime = placement.runtime_of(source_node) if source_node else None
    wanted = m.spec.get("targetNode")
    if wanted == source:
        return fail_validation(m, "SameNode", f"pod {m.pod_name} already runs on {wanted}")
    try:
        target = await pods.choose_node(
            ctx, pod=pod, name=m.pod_name, wanted=wanted, exclude=source, runtime=runtime, claims=facts
        )
    except pods.Unplaceable as exc:
        return fail_validation(m, exc.reason, exc.message)
    images = [s["imageID"].removeprefix("docker-pullable://") for s in status.get("containerStatuses") or [] if s.get("imageID")]
    controller = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if controller:
        m.status["owner"] = {"kind": controller["kind"], "name": controller["name"], "uid": controller["uid"]}
    leave_files = bool(m.spec.get("deleteEmptyDirData"))
    if dropped := movability.dropped_data(pod, delete_emptydir_data=leave_files):
        m.status["droppedData"] = dropped  # said in the outcome: never "with its state" when some was left behind
    elif media := movability.empty_dir_media(pod):
        m.status["emptyDirs"] = [{"name": name, "medium": medium} for name, medium in sorted(media.items())]
    m.status.update(
        sourceNode=source,
        targetNode=target,
        podUID=meta["uid"],
        baseImages=sorted(set(images)),
        originalPod={
            "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if meta.get(k)},
            "spec": spec,
        },
    )
    enter(m, Step.PREPARE_TARGET)


async def prepare_target(ctx: Context, m: Migration) -> None:
    name = prepull_name(m)
    # With the source pod's pull Secrets: a private base image needs them, and the runtime's restore would pull
    # a missing base image on its own without any (containerd's CRImportCheckpoint: docs/facts.md).
    source = await pods.read_pod(ctx, m.namespace, m.pod_name)
    pull_secrets = ((source or {}).get("spec") or {}).get("imagePullSecrets") or []
    failed = await pods.pull_on_node(
        ctx, namespace=m.namespace, name=name, node=m.status["targetNode"], images=list(m.status.get("baseImages") or []),
        pull_secrets=pull_secrets, labels={api.LABEL_PREPULL: m.uid},
    )  # fmt: skip
    if failed:
        return fail_before_removal(m, "BaseImageUnavailable", f"cannot pull the base image on {m.status['targetNode']}: {failed}")
    await pullsecrets.ensure(ctx, m)  # the restored pod's pull Secret for the checkpoint registry, in its namespace
    enter(m, Step.CHECKPOINT)
    m.status["frozenAt"] = m.status["phases"][-1]["start"]


def checkpoint_request(ctx: Context, m: Migration) -> contract.CheckpointRequest:
    """The migration's one checkpoint request: the same every time (its id and tags name it for a retry or an undo)."""
    return contract.CheckpointRequest(
        namespace=m.namespace,
        pod=m.pod_name,
        image_repository=contract.checkpoint_repository(
            root=ctx.settings.checkpoint_repository, namespace=m.namespace, pod=m.pod_name
        ),
        tag=f"pm-{m.uid[:8]}",
        freeze=True,
        timeout_seconds=ctx.settings.checkpoint_timeout_seconds,
        volumes=tuple(contract.EmptyDirVolume(name=v["name"], medium=v["medium"]) for v in m.status.get("emptyDirs") or []),
        request_id=f"pm-{m.uid}",  # a retried call (or a restarted controller's) joins this checkpoint, never a second one
        freeze_lease_seconds=ctx.settings.freeze_lease_seconds,
    )


async def checkpoint(ctx: Context, m: Migration) -> None:
    node = await pods.read_node(ctx, m.status["sourceNode"])
    if node is None:
        return fail_before_removal(m, "NodeNotFound", f"source node {m.status['sourceNode']} disappeared")
    request = checkpoint_request(ctx, m)
    remaining = (bookkeeping.deadline(m) - now()).total_seconds()
    try:
        response = await artifacts.take_checkpoint(ctx, m, node=node, request=request, seconds=remaining)
    except artifacts.CheckpointNotTaken as exc:
        if exc.reason == "Timeout":
            timeout = bookkeeping.timeout_seconds(m)
            return fail_before_removal(
                m, "Timeout", f"the migration did not finish within {timeout}s (timeoutSeconds) while in step Checkpoint"
            )
        return fail_before_removal(m, exc.reason, exc.message)
    if response.volume_data is not None:
        data = response.volume_data
        m.status["volumeData"] = {"image": data.image, "digest": data.digest, "volumes": list(data.volumes),
                                  "dataBytes": data.data_bytes, "stagedOn": []}  # fmt: skip
    m.status["frozen"] = response.frozen
    if response.frozen and ctx.freezes is not None:
        ctx.freezes.keep(ctx, m)  # from now on until the kill: a long staging below must not let the freeze lapse
    m.status["containers"] = artifacts.container_records(response)
    # Where the checkpoint's time went, as the agent timed it (none from an agent that does not say).
    stages.record(m.status, source=stages.SOURCE_AGENT, records=stages.from_agent(response.stages, node=m.status["sourceNode"]))
    m.note("Checkpointed", f"{len(response.containers)} container(s) checkpointed on {m.status['sourceNode']}, source frozen")
    if m.status.get("volumeData"):
        # The target must hold the files before its restore can start: staged now, while the
        # source is still whole, so a failure here still just thaws it.
        try:
            await artifacts.stage_volume_data(ctx, m, node_name=m.status["targetNode"])
        except AgentError as exc:
            return fail_before_removal(
                m, "VolumeDataFailed", f"staging the emptyDir files on {m.status['targetNode']} failed: {exc}"
            )
    enter(m, Step.REMOVE_SOURCE)


async def remove_source(ctx: Context, m: Migration) -> None:
    if m.status.get("owner"):
        await pods.open_slot(ctx, m, node=m.status["targetNode"])
    pod = await pods.read_pod(ctx, m.namespace, m.pod_name)
    if pod is None or pod["metadata"]["uid"] != m.status["podUID"]:
        m.status["sourceRemoved"] = True
        m.status["frozen"] = False
        enter(m, Step.AWAIT_REPLACEMENT if m.status.get("owner") else Step.CREATE_TARGET)
        return
    if not pod["metadata"].get("deletionTimestamp"):
        if not m.status.get("sourceKilled"):
            # The point of no return: look at the PodMigration itself once more, a cancellation
            # that arrived while the checkpoint ran must still be able to thaw the source.
            fresh = await api.PODMIGRATIONS.get(ctx.custom, name=m.name, namespace=m.namespace)
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return fail_before_removal(m, "Cancelled", "the PodMigration was deleted (cancelled)")
            # Recorded before the kill: from here on the only ways forward are a restore (on the
            # target or the source) or a recreate, never a thaw of a source that may be dead.
            m.status["sourceKilled"] = True
            await ctx.recorder.save(m)
        # The source is frozen. Its agent kills it without letting it thaw first, so the pod object
        # can go at once; if the agent cannot, a short grace does the same through the kubelet
        # (SIGTERM stays pending while frozen, then SIGKILL).
        grace = 1
        node = await pods.read_node(ctx, m.status["sourceNode"])
        if node is not None:
            try:
                await ctx.agents.kill(node=node, namespace=m.namespace, pod=m.pod_name, traceparent=m.traceparent())
                grace = 0
            except AgentError as exc:
                if exc.status == 409 and "lapsed" in str(exc):
                    # Its freeze lapsed and its agent thawed it: it has run since the checkpoint, so it stays.
                    m.status["sourceKilled"] = False
                    return fail_before_removal(m, "FreezeLapsed", f"the source on {m.status['sourceNode']}: {exc}")
                if exc.status == 409 and str(exc).startswith("not killed"):
                    # The agent could not see the frozen processes (node_agent/freezer.py KillRefused) and signalled
                    # none: the source is frozen and whole. Deleting it now could let it run on after its checkpoint
                    # (or leave it behind): it is thawed and stays, and the reason says what to fix.
                    m.status["sourceKilled"] = False
                    return fail_before_removal(m, "SourceNotKilled", f"the source on {m.status['sourceNode']}: {exc}")
                log.warning("agent could not kill the frozen source (%s); deleting with a grace period", exc)
            if ctx.freezes is not None:
                ctx.freezes.forget(m)
        await pods.delete_pod(ctx, m.namespace, m.pod_name, uid=m.status["podUID"], grace=grace)
    raise Wait(0.1)


async def create_target(ctx: Context, m: Migration) -> None:
    pod = await pods.create_pod(ctx, m, pods.replacement(m, node=m.status["targetNode"], from_checkpoint=True))
    m.status["newPod"] = {"name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"], "node": m.status["targetNode"]}
    enter(m, Step.WAIT_READY)


async def await_replacement(ctx: Context, m: Migration) -> None:
    """The controller's replacement, made a restore by the webhook, must appear."""
    await pods.open_slot(ctx, m, node=m.status["targetNode"])
    ours, others = await pods.find_restored(ctx, m, exclude={m.status["podUID"]})
    if ours is not None:
        await pods.close_slot(ctx, m)
        meta = ours["metadata"]
        m.status["newPod"] = {"name": meta["name"], "uid": meta["uid"], "node": m.status["targetNode"]}
        enter(m, Step.WAIT_READY)
        return
    if slots.reopen_if_lost(m.status):
        m.note("SlotReopened", "the restore slot was claimed but no pod came of it; offered again", warning=True)
    # From when removing the source began, not from this phase's start: the workload's controller
    # replaces the pod as soon as it is deleted, which can be more than a second before this phase
    # is entered; a replacement made in between was never counted as cold, and the migration then
    # awaited a restore that could not come, forever (a flaky end-to-end test showed it).
    removals = [p for p in m.status["phases"] if p["name"] == SPAN_NAMES[Step.REMOVE_SOURCE]]
    removed_at = parse_time((removals or m.status["phases"])[-1]["start"])
    cold = [p for p in others if parse_time(p["metadata"]["creationTimestamp"]) >= removed_at - timedelta(seconds=1)]
    if cold and now() - removed_at > COLD_REPLACEMENT_GRACE:
        await pods.close_slot(ctx, m)
        await artifacts.release(ctx, m)  # the replacement started cold: nobody will ever restore this checkpoint
        name = cold[-1]["metadata"]["name"]
        owner = m.status["owner"]
        return await finish(
            ctx, m, phase=Phase.FAILED, reason="ReplacementNotRestored",
            message=f"{owner['kind']} {owner['name']} replaced the pod with {name}, which started without the checkpoint "
            "(is the podmigrate webhook registered and reachable?); in-memory state lost",
        )  # fmt: skip
    raise Wait(POLL)


async def wait_ready(ctx: Context, m: Migration) -> None:
    pod = await pods.read_pod(ctx, m.namespace, m.status["newPod"]["name"])
    if pod is None or pod["metadata"]["uid"] != m.status["newPod"]["uid"]:
        return fail_after_removal(m, "TargetPodLost", f"the restored pod on {m.status['targetNode']} was deleted")
    if pods.is_ready(pod):
        if missing := await artifacts.volume_data_missing(ctx, m, pod=pod):
            return fail_after_removal(m, "VolumeDataNotRestored", missing)
        m.status["readyAt"] = iso(now())
        _record_restore_stages(m, pod, events=await _pod_events(ctx, m, pod))
        _target_spans(m)
        m.note("Restored", f"pod {pod['metadata']['name']} restored and Ready on {m.status['targetNode']}")
        enter(m, Step.CLEANUP)
        return
    failure = pods.container_failure(pod)
    if failure:
        return fail_after_removal(m, "RestoreFailed", f"restore on {m.status['targetNode']} failed: {failure}")
    raise Wait(0.1)  # the pod is down: look often


async def _pod_events(ctx: Context, m: Migration, pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The restored pod's Events (its kubelet's Pulled, Started), read once: none if they cannot be read."""
    try:
        listing = await ctx.core.list_namespaced_event(m.namespace, field_selector=f"involvedObject.uid={pod['metadata']['uid']}")
    except client.ApiException as exc:
        log.warning("%s/%s: the Events of pod %s not read (%s): no restore stages", m.namespace, m.name, m.pod_name, exc.reason)
        return []
    return [plain(event) for event in listing.items]


def _record_restore_stages(m: Migration, pod: Mapping[str, Any], *, events: list[dict[str, Any]]) -> None:
    """``status.stages`` on the target (fetch, restore, ready), with what the control service itself knows of the pod.

    It began creating the pod (a bare pod) when create-target began, and the restore slot a
    controller's replacement needs opened when remove-source began; it first saw the pod when the
    restore phase began.
    """
    phases = m.status["phases"]
    begun = [p for p in phases if p["name"] in (SPAN_NAMES[Step.REMOVE_SOURCE], SPAN_NAMES[Step.CREATE_TARGET])]
    records = restorestages.derive(
        pod=pod,
        events=events,
        ready_at=parse_time(m.status["readyAt"]),
        created_after=parse_time(begun[-1]["start"]) if begun else None,
        seen_at=parse_time(phases[-1]["start"]),
        image_bytes={c["name"]: int(c["imageBytes"]) for c in m.status.get("containers") or [] if c.get("imageBytes")},
    )
    stages.record(m.status, source=stages.SOURCE_KUBELET, records=records)


def _target_spans(m: Migration) -> None:
    """Where the restore phase's time went on the target, as trace spans: image pull, restore, readiness.

    From the restore stages just recorded (the latest container's end of each), held inside the
    restore phase: a pod created before the phase began (a controller's replacement) starts its
    pull span with the phase.
    """
    record = m.status["phases"][-1]
    start, ready = parse_time(record["start"]), parse_time(m.status["readyAt"])
    mine = [s for s in m.status.get("stages") or [] if s.get("source") == stages.SOURCE_KUBELET]

    def last_end(name: str) -> datetime:
        return max((parse_time(s["end"]) for s in mine if s["name"] == name), default=start)

    pulled = min(max(last_end(stages.STAGE_FETCH), start), ready)
    restored = min(max(last_end(stages.STAGE_RESTORE), pulled), ready)
    for name, begin, end in (("target.image-pull", start, pulled), ("target.restore", pulled, restored),
                             ("target.readiness", restored, ready)):  # fmt: skip
        tracing.emit_span(
            name=name, trace_id=m.status["traceID"], span_id=tracing.new_span_id(), parent_span_id=record["spanID"],
            start=begin, end=end, attributes={**attributes(m), "k8s.node.name": m.status["newPod"]["node"]},
        )  # fmt: skip


async def cleanup(ctx: Context, m: Migration) -> None:
    await pods.delete_pod(ctx, m.namespace, prepull_name(m))
    await artifacts.release(ctx, m)
    downtime = downtime_seconds(m)
    suffix = f"; downtime {downtime:.2f}s" if downtime is not None else ""
    if m.status.get("droppedData"):
        carried = f"with its memory; {m.status['droppedData']}"
    elif data := m.status.get("volumeData"):
        carried = f"with its state and its emptyDir files ({', '.join(data['volumes'])}, {data['dataBytes']} bytes)"
    else:
        carried = "with its state"
    await finish(
        ctx, m, phase=Phase.SUCCEEDED, reason="Migrated",
        message=f"pod {m.pod_name} moved from {m.status['sourceNode']} to {m.status['targetNode']} {carried}{suffix}",
    )  # fmt: skip
