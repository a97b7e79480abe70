"""What a migration leaves in the registry and on nodes: checkpoint images, volume data, staged copies.

The checkpoint images hold process memory and the volume-data artifact the pod's files: both
are deleted when the migration ends, whatever its outcome, unless ``retainCheckpoint`` says to
keep them. Copies of the volume data staged on nodes (the target, and the source for a restore
there) are removed in any case: once a restore has moved them into the new pod they are empty,
and a staging nobody will restore must not wait for the next pod of the same name.

Staging happens before the pod that needs it exists: the node's CRIU hook moves the files in
at the restore's ``pre-restore`` stage and marks the staging with the new pod's UID, which
``volume_data_missing`` checks before a restore is called done.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentapi import contract
from agentapi.client import AgentError
from migrator.controllers.podmigration.migration import Context, Migration
from migrator.controllers.podmigration.pods import read_node


async def stage_volume_data(ctx: Context, m: Migration, *, node_name: str) -> None:
    """Have ``node_name``'s agent fetch the pod's emptyDir files for the restore there (idempotent)."""
    data = m.status["volumeData"]
    node = await read_node(ctx, node_name)
    if node is None:
        raise AgentError(f"node {node_name} not found", status=404)
    request = contract.StageRequest(namespace=m.namespace, pod=m.pod_name, image=data["image"])
    await ctx.agents.stage_volumes(node=node, request=request, traceparent=m.traceparent())
    if node_name not in data.setdefault("stagedOn", []):
        data["stagedOn"].append(node_name)


async def volume_data_missing(ctx: Context, m: Migration, *, pod: Mapping[str, Any]) -> str | None:
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


async def release(ctx: Context, m: Migration) -> None:
    """Delete the registry artifacts (unless retained) and every staged copy; failures become Events."""
    data = m.status.get("volumeData") or {}
    for node_name in list(data.get("stagedOn") or []):
        node = await read_node(ctx, node_name)
        try:
            if node:
                await ctx.agents.unstage_volumes(node=node, namespace=m.namespace, pod=m.pod_name, traceparent=m.traceparent())
            data["stagedOn"].remove(node_name)
        except AgentError as exc:
            await ctx.recorder.event(m, "CleanupFailed", f"emptyDir files staged on {node_name} not removed: {exc}", warning=True)
    if m.spec.get("retainCheckpoint"):
        return
    images = [(f"checkpoint image of {c['name']}", c["image"]) for c in m.status.get("containers") or []]
    if data.get("image"):
        images.append(("emptyDir data", data["image"]))
    node = await read_node(ctx, m.status["sourceNode"]) or await read_node(ctx, m.status.get("targetNode", ""))
    for what, image in images:
        try:
            if node:
                await ctx.agents.delete_image(node=node, image=image, traceparent=m.traceparent())
        except AgentError as exc:
            await ctx.recorder.event(m, "CleanupFailed", f"{what} {image} not deleted: {exc}", warning=True)
