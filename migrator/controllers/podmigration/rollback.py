"""The failure paths: bring the pod back where it was, never leave it gone.

    failed before the source was removed -> ThawSource: the source never stopped existing; it is
                                            thawed and runs on (its images are deleted)
    failed after                         -> RestoreSource: the checkpoint restored on the source node
                                            (state kept), and if that fails too
                                         -> Recreate: the pod started again from its original spec
                                            (state lost, but never zero copies)

A bare pod is recreated by us (``_replace_and_wait``); a controller-owned pod is replaced by its
controller once our failed pod is deleted, and the webhook makes that replacement a restore on
the source node when one is wanted (``_owned_rollback``). Every path ends in ``Failed`` with
the reason and where the pod runs now.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from agentapi.client import AgentError
from migrator.api import Phase, Step
from migrator.controllers.podmigration import artifacts, pods
from migrator.controllers.podmigration.bookkeeping import enter, finish
from migrator.controllers.podmigration.migration import Context, Migration, is_restored_pod_of, prepull_name
from migrator.reconciling import Wait
from migrator.units import now
from migrator.units import status_time as parse_time

POLL = 0.5
# How long a pod restored on its source may run without turning Ready before the rollback takes it as is.
ROLLBACK_READY_GRACE = timedelta(seconds=30)


async def thaw_source(ctx: Context, m: Migration) -> None:
    failure = m.status.get("failure") or {"reason": "Failed", "message": "migration failed"}
    if not m.status.pop("nothingTouched", False) and m.status.get("sourceNode"):
        await pods.delete_pod(ctx, m.namespace, prepull_name(m))
        # A checkpoint still in flight holds the pod on its agent (a thaw would wait for it): undone first.
        # If its agent cannot be reached now, the thaw cannot either; ``release`` below tries again.
        await artifacts.abort_abandoned(ctx, m)
        node = await pods.read_node(ctx, m.status["sourceNode"])
        if node is not None:
            try:
                await ctx.agents.thaw(node=node, namespace=m.namespace, pod=m.pod_name, traceparent=m.traceparent())
            except AgentError as exc:
                m.status["thawError"] = str(exc)
                raise Wait(2.0) from None  # the source must not stay frozen: keep trying
        m.status["frozen"] = False
        await artifacts.release(ctx, m)
        message = f"{failure['message']}; the source pod was left running on {m.status['sourceNode']}"
    else:
        message = failure["message"]
    await finish(ctx, m, phase=Phase.FAILED, reason=failure["reason"], message=message)


async def _replace_and_wait(
    ctx: Context, m: Migration, *, node: str | None, from_checkpoint: bool, need_ready: bool
) -> bool | None:
    """Make a bare pod exist again; True when up, False when it failed, None to wait."""
    record = m.status.get("rollbackPod")
    pod = await pods.read_pod(ctx, m.namespace, m.pod_name)
    if record is None:
        if pod is not None and is_restored_pod_of(m, pod):
            if not pod["metadata"].get("deletionTimestamp"):
                await pods.delete_pod(ctx, m.namespace, m.pod_name, uid=pod["metadata"]["uid"], grace=pods.CONFIRMED_GRACE)
            await pods.note_unconfirmed(ctx, m, pod)
            raise Wait(0.3)  # our failed pod must be gone first
        if pod is not None:
            raise Wait(1.0)  # a pod we did not create holds the name
        m.status.pop("waitingFor", None)
        created = await pods.create_pod(ctx, m, pods.replacement(m, node=node, from_checkpoint=from_checkpoint))
        m.status["rollbackPod"] = {"uid": created["metadata"]["uid"], "node": node or ""}
        raise Wait(POLL)
    if pod is None or pod["metadata"]["uid"] != record["uid"]:
        return False
    if pods.is_ready(pod) if need_ready else pods.is_running(pod):
        return True
    if pods.container_failure(pod):
        return False
    return True if _running_long_enough(m, pod) else None


def _running_long_enough(m: Migration, pod: Mapping[str, Any]) -> bool:
    """A rollback's restored pod that runs but has not turned Ready within ``ROLLBACK_READY_GRACE`` counts as
    restored: it holds the state, and replacing it cold would lose what the rollback exists to keep. The
    outcome says it was not Ready (``notReady``)."""
    started = (pod.get("status") or {}).get("startTime") or pod["metadata"].get("creationTimestamp")
    if not pods.is_running(pod) or not started or now() - parse_time(started) < ROLLBACK_READY_GRACE:
        return False
    m.status["notReady"] = True
    return True


async def _owned_rollback(ctx: Context, m: Migration, *, restore: bool) -> bool | None:
    """Delete our failed pod and let the controller replace it, as a restore on the source node
    (``restore``) or cold. True when up, False when failed, None to wait."""
    record = m.status.setdefault("rollbackPod", {"failed": m.status.get("newPod", {}).get("uid", "")})
    if restore:
        await pods.open_slot(ctx, m, node=m.status["sourceNode"])
    else:
        await pods.close_slot(ctx, m)
    failed_uid = record["failed"]
    for pod in await pods.owned_pods(ctx, m):
        meta = pod["metadata"]
        if meta["uid"] == failed_uid and not meta.get("deletionTimestamp"):
            await pods.delete_pod(ctx, m.namespace, meta["name"], uid=failed_uid, grace=pods.CONFIRMED_GRACE)
            raise Wait(0.3)
    ours, others = await pods.find_restored(ctx, m, exclude={failed_uid, m.status["podUID"]})
    candidate = ours if restore else (others[-1] if others else ours)
    if candidate is None:
        return None
    if restore:
        await pods.close_slot(ctx, m)
    record["uid"] = candidate["metadata"]["uid"]
    m.status["newPod"] = {
        "name": candidate["metadata"]["name"],
        "uid": record["uid"],
        "node": candidate["spec"].get("nodeName", ""),
    }
    if pods.is_ready(candidate) if restore else pods.is_running(candidate):
        return True
    if pods.container_failure(candidate):
        return False
    return True if restore and _running_long_enough(m, candidate) else None


def _not_ready(m: Migration) -> str:
    return f" but not Ready after {ROLLBACK_READY_GRACE.seconds}s" if m.status.get("notReady") else ""


async def _stage_on_source(ctx: Context, m: Migration) -> str | None:
    """The pod's emptyDir files staged for a restore on the source node; why not, if they cannot be."""
    data = m.status.get("volumeData")
    if not data or m.status["sourceNode"] in (data.get("stagedOn") or []):
        return None
    try:
        await artifacts.stage_volume_data(ctx, m, node_name=m.status["sourceNode"])
    except AgentError as exc:
        return f"staging the emptyDir files on {m.status['sourceNode']} failed: {exc}"
    return None


async def _files_note(ctx: Context, m: Migration, pod_name: str) -> str:
    pod = await pods.read_pod(ctx, m.namespace, pod_name)
    missing = await artifacts.volume_data_missing(ctx, m, pod=pod) if pod else None
    return f" ({missing})" if missing else ""


async def restore_source(ctx: Context, m: Migration) -> None:
    failure = m.status["failure"]
    source = m.status["sourceNode"]
    if problem := await _stage_on_source(ctx, m):
        m.status["failure"]["message"] += f"; restoring on {source} impossible ({problem})"
        enter(m, Step.RECREATE, error=problem)
        return
    if m.status.get("owner"):
        outcome = await _owned_rollback(ctx, m, restore=True)
        if outcome is None:
            await pods.check_namespace(ctx, m)
            raise Wait(POLL)
        if outcome:
            note = await _files_note(ctx, m, m.status["newPod"]["name"])
            await artifacts.release(ctx, m)
            message = f"{failure['message']}; the pod was restored on its source node {source} (state kept){note}{_not_ready(m)}"
            return await finish(ctx, m, phase=Phase.FAILED, reason=failure["reason"], message=message)
        m.status["rollbackPod"] = {"failed": m.status["newPod"]["uid"]}
    else:
        outcome = await _replace_and_wait(ctx, m, node=source, from_checkpoint=True, need_ready=True)
        if outcome is None:
            raise Wait(POLL)
        if outcome:
            m.status["newPod"] = {"name": m.pod_name, "uid": m.status["rollbackPod"]["uid"], "node": source}
            note = await _files_note(ctx, m, m.pod_name)
            await artifacts.release(ctx, m)
            message = (
                f"{failure['message']}; the pod was restored on its source node {source} from the checkpoint (state kept){note}"
                f"{_not_ready(m)}"
            )
            return await finish(ctx, m, phase=Phase.FAILED, reason=failure["reason"], message=message)
        m.status.pop("rollbackPod", None)
    m.status["failure"]["message"] += f"; restoring on {source} failed too"
    enter(m, Step.RECREATE, error="restore on the source node failed")


async def recreate(ctx: Context, m: Migration) -> None:
    failure = m.status["failure"]
    if m.status.get("owner"):
        if await _owned_rollback(ctx, m, restore=False) is None:
            await pods.check_namespace(ctx, m)
            raise Wait(POLL)
        await artifacts.release(ctx, m)
        owner = m.status["owner"]
        message = (
            f"{failure['message']}; {owner['kind']} {owner['name']} replaced the pod from its template (in-memory state lost)"
        )
        return await finish(ctx, m, phase=Phase.FAILED, reason=failure["reason"], message=message)
    outcome = await _replace_and_wait(ctx, m, node=None, from_checkpoint=False, need_ready=False)
    if outcome is None:
        raise Wait(POLL)
    m.status["newPod"] = {"name": m.pod_name, "uid": m.status["rollbackPod"]["uid"], "node": ""}
    suffix = (
        "recreated from its original spec (in-memory state lost)"
        if outcome
        else "recreated from its original spec but it is not running"
    )
    await artifacts.release(ctx, m)
    await finish(ctx, m, phase=Phase.FAILED, reason=failure["reason"], message=f"{failure['message']}; the pod was {suffix}")
