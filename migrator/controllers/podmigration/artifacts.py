"""What a migration leaves in the registry and on nodes: checkpoint images, volume data, staged copies.

The checkpoint images hold process memory and the volume-data artifact the pod's files: both
are deleted when the migration ends, whatever its outcome, unless ``retainCheckpoint`` says to
keep them. Copies of the volume data staged on nodes (the target, and the source for a restore
there) are removed in any case: once a restore has moved them into the new pod they are empty,
and a staging nobody will restore must not wait for the next pod of the same name.

Nothing is left behind on any path (docs/faults.md, "Cleanup"): success, every rollback, a
replacement that started cold, a cancel, a namespace being deleted. A deletion that fails (the
registry down) stays in status (``pendingDeletes``, condition ``CheckpointDeleted``) and is
retried until it succeeds, by this control service or a restarted one; the terminal phase is
written at once (where the pod runs is true whatever the registry does) and the PodMigration's
finalizer waits instead. A checkpoint whose answer was never recorded (the call given up at the
deadline, no answer, a control service killed during it) is ``abandonedCheckpoint``: its agent
is told to undo it by request id, and only then is what its tags name deleted by tag.

Staging happens before the pod that needs it exists: the node's CRIU hook moves the files in
at the restore's ``pre-restore`` stage and marks the staging with the new pod's UID, which
``volume_data_missing`` checks before a restore is called done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Final

from agentapi import contract
from agentapi.client import AgentError, AgentUnreachable
from migrator.controllers.podmigration.migration import Context, PodRecord
from migrator.controllers.podmigration.pods import read_node
from migrator.reconciling import set_condition

log = logging.getLogger(__name__)


async def stage_volume_data(ctx: Context, m: PodRecord, *, node_name: str) -> None:
    """Have ``node_name``'s agent fetch the pod's emptyDir files for the restore there (idempotent)."""
    data = m.status["volumeData"]
    node = await read_node(ctx, node_name)
    if node is None:
        raise AgentError(f"node {node_name} not found", status=404)
    request = contract.StageRequest(namespace=m.namespace, pod=m.pod_name, image=data["image"])
    await ctx.agents.stage_volumes(node=node, request=request, traceparent=m.traceparent())
    if node_name not in data.setdefault("stagedOn", []):
        data["stagedOn"].append(node_name)


async def volume_data_missing(ctx: Context, m: PodRecord, *, pod: Mapping[str, Any]) -> str | None:
    """Why the restored ``pod`` does not hold the emptyDir files it should, or None when it does (or had none)."""
    if not m.status.get("volumeData"):
        return None
    node_name = pod["spec"].get("nodeName") or ""
    node = await read_node(ctx, node_name)
    uid = pod["metadata"]["uid"]
    try:
        restored = await ctx.agents.restored_volumes(node=node, namespace=m.namespace, pod=m.pod_name) if node else []
    except AgentError as exc:
        return f"cannot tell whether the emptyDir files reached the restored pod on {node_name}: {exc}"
    if uid in restored:
        return None
    return (
        f"pod {pod['metadata']['name']} was restored on {node_name} without its emptyDir files: the node's CRIU "
        "configuration does not run podmigrate's hook (criu_hook.sh) at pre-restore"
    )


class CheckpointNotTaken(Exception):
    """The agent's checkpoint failed (``CheckpointFailed``) or did not answer in time (``Timeout``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def take_checkpoint(
    ctx: Context, r: PodRecord, *, node: Mapping[str, Any], request: contract.CheckpointRequest, seconds: float
) -> contract.CheckpointResponse:
    """Have the source node's agent take ``request``, within ``seconds`` (the caller's own deadline holds while the
    agent works too: its timeouts may be longer); ``CheckpointNotTaken`` if it did not.

    A call without an answer, or given up at the deadline, may have pushed all the same: it is recorded as
    abandoned (``abandon_checkpoint``), and at the deadline the agent is told to undo it first. A checkpoint the
    agent answered as failed was undone by the agent.
    """
    try:
        async with asyncio.timeout(max(seconds, 1.0)):
            return await ctx.agents.checkpoint(node=node, request=request, traceparent=r.traceparent())
    except AgentError as exc:
        if isinstance(exc, AgentUnreachable):
            abandon_checkpoint(r, request=request)
        stage = f" ({exc.stage})" if exc.stage else ""
        raise CheckpointNotTaken("CheckpointFailed", f"checkpoint on {r.status['sourceNode']} failed{stage}: {exc}") from None
    except TimeoutError:
        with contextlib.suppress(AgentError):  # undone by the agent (or its images deleted)
            await ctx.agents.abort_checkpoint(node=node, request_id=request.request_id or "", traceparent=r.traceparent())
        abandon_checkpoint(r, request=request)  # what the abort could not reach is deleted by tag
        raise CheckpointNotTaken("Timeout", "the deadline passed while the agent checkpointed") from None


def container_records(response: contract.CheckpointResponse) -> list[dict[str, Any]]:
    """``status.containers``: each container's checkpoint image, as the agent answered."""
    return [
        {"name": c.name, "image": c.image, "digest": c.digest, "baseImage": c.base_image,
         "archiveBytes": c.archive_bytes, "imageBytes": c.image_bytes}
        for c in response.containers
    ]  # fmt: skip


# While images of a finished migration are still to be deleted (the registry or every agent down),
# the control service looks again this often; the PodMigration's finalizer waits for them.
RETRY_DELETES_S: Final = 15.0
CONDITION: Final = "CheckpointDeleted"


def abandon_checkpoint(m: PodRecord, *, request: contract.CheckpointRequest) -> None:
    """Record a checkpoint whose answer this migration will never use (given up on, or its outcome unknown).

    Its images may exist all the same: the agent goes on with a checkpoint whose caller went away
    (so that a retry finds it), an agent that died mid-push left a manifest behind, a timed-out
    call may have finished. Nobody knows their digests, so the agent is told to undo the request
    (``DELETE /v1/checkpoint``: in flight, cancelled; finished, its images deleted) and whatever
    its tags still name is deleted by tag. Saved in status, so a restarted control service does it.
    """
    if m.status.get("containers") or m.status.get("abandonedCheckpoint"):
        return
    containers = [c["name"] for c in ((m.status.get("originalPod") or {}).get("spec") or {}).get("containers") or []]
    tags = {request.tag_for(name, multiple=len(containers) > 1) for name in containers} or {request.tag}
    if request.volumes:
        tags.add(request.volume_tag)
    m.status["abandonedCheckpoint"] = {
        "requestId": request.request_id or "",
        "node": m.status.get("sourceNode", ""),
        "images": [f"{request.image_repository}:{tag}" for tag in sorted(tags)],
    }


async def abort_abandoned(ctx: Context, m: PodRecord) -> str | None:
    """Have the agent undo an abandoned checkpoint, then queue its tags for deletion; why not, if it could not."""
    abandoned = m.status.get("abandonedCheckpoint")
    if not abandoned:
        return None
    node = await read_node(ctx, abandoned["node"]) if abandoned.get("node") else None
    if node is not None and abandoned.get("requestId"):
        try:
            await ctx.agents.abort_checkpoint(node=node, request_id=abandoned["requestId"], traceparent=m.traceparent())
        except AgentError as exc:
            return f"the agent on {abandoned['node']} could not be told to undo the checkpoint: {exc}"
    # Only now: a checkpoint still in flight would have pushed again after a deletion by tag.
    _queue(m, [("image of the abandoned checkpoint", image) for image in abandoned.get("images") or []])
    m.status.pop("abandonedCheckpoint", None)
    return None


def _queue(m: PodRecord, images: list[tuple[str, str]]) -> None:
    pending = m.status.setdefault("pendingDeletes", [])
    known = {entry["image"] for entry in pending}
    pending.extend({"what": what, "image": image} for what, image in images if image not in known)


def pending(m: PodRecord) -> bool:
    """Whether something the migration left behind is still to be deleted (the finalizer waits for it)."""
    staged = (m.status.get("volumeData") or {}).get("stagedOn")
    return bool(m.status.get("pendingDeletes") or m.status.get("abandonedCheckpoint") or staged)


async def _agent_node(ctx: Context, m: PodRecord) -> dict[str, Any] | None:
    """A node whose agent can reach the registry: the source's, else the target's, else any node's."""
    for name in (m.status.get("sourceNode"), m.status.get("targetNode")):
        if name and (node := await read_node(ctx, name)) is not None:
            return node
    for node in await ctx.cluster.nodes():
        if any(a.get("type") == "InternalIP" for a in (node.get("status") or {}).get("addresses") or []):
            return node
    return None


async def _unstage(ctx: Context, m: PodRecord) -> list[str]:
    """Remove every staged copy of the pod's files (what fails stays in ``stagedOn``); the errors."""
    errors = []
    data = m.status.get("volumeData") or {}
    for node_name in list(data.get("stagedOn") or []):
        node = await read_node(ctx, node_name)
        try:
            if node:
                await ctx.agents.unstage_volumes(node=node, namespace=m.namespace, pod=m.pod_name, traceparent=m.traceparent())
            data["stagedOn"].remove(node_name)
        except AgentError as exc:
            errors.append(f"emptyDir files staged on {node_name} not removed: {exc}")
    return errors


def _settle(m: PodRecord, errors: list[str]) -> bool:
    """The condition ``CheckpointDeleted`` from what is left; True when nothing is."""
    if not pending(m):
        retained = bool(m.spec.get("retainCheckpoint") and m.status.get("containers"))
        reason, message = ("Retained", "kept in the registry (retainCheckpoint)") if retained else ("Deleted", "nothing left")
        set_condition(m.status, kind=CONDITION, value=not retained, reason=reason, message=message)
        return True
    left = len(m.status.get("pendingDeletes") or []) + len((m.status.get("abandonedCheckpoint") or {}).get("images") or [])
    if errors:
        reason, message = "DeletePending", f"{left} image(s) still to delete, retried every {RETRY_DELETES_S:.0f}s: {errors[-1]}"
    else:
        reason, message = "Deleting", f"{left} image(s) to delete"
    set_condition(m.status, kind=CONDITION, value=False, reason=reason, message=message)
    return False


async def release(ctx: Context, m: PodRecord) -> None:
    """The migration ends: staged copies removed, an abandoned checkpoint undone, its images queued for deletion.

    The registry is not called here: the images are deleted (``delete_pending``) once the end is
    saved, so that a registry that stalls never holds back the outcome (where the pod runs).
    Idempotent: what is left is in status (``pendingDeletes``, ``abandonedCheckpoint``,
    ``volumeData.stagedOn``), with the condition ``CheckpointDeleted``.
    """
    await _unstage(ctx, m)  # (what fails is retried with the images)
    await abort_abandoned(ctx, m)
    if not m.spec.get("retainCheckpoint") and not m.status.get("imagesQueued"):
        data = m.status.get("volumeData") or {}
        images = [(f"checkpoint image of {c['name']}", c["image"]) for c in m.status.get("containers") or []]
        if data.get("image"):
            images.append(("emptyDir data", data["image"]))
        _queue(m, images)
        m.status["imagesQueued"] = True  # once: a later pass must not queue (and delete) them again
    _settle(m, [])


async def delete_pending(ctx: Context, m: PodRecord, *, announce: bool) -> bool:
    """Delete what ``release`` left to delete (a finished migration, or a restarted control service); True when done.

    Stops at the first image the registry refuses (the next ones would wait for it as long);
    ``announce``: the failure becomes an Event (the first time; later attempts only log).
    """
    errors = await _unstage(ctx, m)
    if problem := await abort_abandoned(ctx, m):
        errors.append(problem)
    queue = m.status.get("pendingDeletes") or []
    node = await _agent_node(ctx, m) if queue else None
    for entry in list(queue):
        if node is None:
            errors.append(f"{entry['what']} {entry['image']} not deleted: no node's agent to ask")
            break
        try:
            await ctx.agents.delete_image(node=node, image=entry["image"], traceparent=m.traceparent())
        except AgentError as exc:
            errors.append(f"{entry['what']} {entry['image']} not deleted: {exc}")
            break
        queue.remove(entry)
    if not queue:
        m.status.pop("pendingDeletes", None)
    if _settle(m, errors):
        return True
    for error in errors:
        if announce:
            await ctx.recorder.event(m, "CleanupFailed", f"{error}; retried until it succeeds", warning=True)
        else:
            log.warning("%s/%s: %s", m.namespace, m.name, error)
    return False


async def retry_pending(ctx: Context, r: PodRecord) -> float | None:
    """Delete what is still pending and save the outcome; seconds until the next attempt, or None when nothing is left.

    The first failure is told in an Event, later ones only logged (``delete_pending``'s ``announce``):
    a registry down for an hour must not leave 240 Events behind.
    """
    if not pending(r):
        return None
    condition = next((c for c in r.status.get("conditions") or [] if c["type"] == CONDITION), {})
    announce = condition.get("reason") != "DeletePending"

    async def delete() -> None:
        await delete_pending(ctx, r, announce=announce)

    await ctx.recorder.attempt(r, delete)
    return RETRY_DELETES_S if pending(r) else None
