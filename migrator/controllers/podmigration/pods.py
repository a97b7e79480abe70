"""The pods a migration reads and makes: the source, its replacement, rollbacks, and their health.

Everything here is idempotent, because any step may run twice (a control service killed
between the call and the status save): a delete of a gone pod is success, a create that finds
this migration's own pod adopts it, and a pod is only ever deleted with a UID precondition
when it is one this migration recorded.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

from kubernetes_asyncio import client

from kubeclient.reading import plain, read_or_none, read_plain
from migrator import api, placement, pullsecrets, slots
from migrator.claims import Claims
from migrator.controllers.podmigration.migration import Context, Migration, PodRecord, is_restored_pod_of
from migrator.reconciling import Wait
from migrator.slots import Slot
from migrator.units import now
from migrator.units import status_time as parse_time

# A container waiting for one of these reasons will not come up on its own: the restore failed.
CONTAINER_FAILURES: Final = frozenset(
    {
        "CreateContainerError",
        "RunContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "CrashLoopBackOff",
    }
)
# The kubelet retries these by itself (a Secret or ConfigMap created a moment later, a projected token the
# API server's caches do not know the new pod for yet): a failure only once they last this long.
RETRIED_BY_THE_KUBELET: Final = frozenset({"CreateContainerConfigError"})
RETRY_GRACE: Final = timedelta(seconds=20)


async def read_pod(ctx: Context, namespace: str, name: str) -> dict[str, Any] | None:
    return await read_plain(ctx.core.read_namespaced_pod(name, namespace))


async def read_node(ctx: Context, name: str) -> dict[str, Any] | None:
    return await read_plain(ctx.core.read_node(name))


# Deleting a pod that may still run: a grace period above 0 is not a forced deletion, so the object
# stays (terminating) until its node's kubelet confirms the containers are gone. On a node that does
# not answer that never happens, and whatever waits for the pod to be gone waits with it: a second
# copy is never started beside one that may still run (a StatefulSet's at-most-one included).
# Grace 0 (forced, gone at once) only for pods that cannot run: prepull pods, a source its agent killed.
CONFIRMED_GRACE: Final = 1


async def note_unconfirmed(ctx: Context, m: Migration, pod: Mapping[str, Any]) -> None:
    """Say why a rollback waits: the pod's node has not confirmed its end (it may be unreachable)."""
    since = pod["metadata"].get("deletionTimestamp")
    node_name = pod["spec"].get("nodeName")
    if not since or not node_name:
        return
    node = await read_node(ctx, node_name)
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    if not ready and not m.status.get("waitingFor"):
        m.status["waitingFor"] = f"node {node_name} to confirm pod {pod['metadata']['name']} is gone"
        m.note(
            "WaitingForNode",
            f"pod {pod['metadata']['name']} may still run on node {node_name}, which is not Ready: nothing is started "
            f"elsewhere until the node confirms it gone (or the Node object is deleted, which fences it)",
            warning=True,
        )


async def delete_pod(ctx: Context, namespace: str, name: str, *, uid: str | None = None, grace: int = 0) -> None:
    options = client.V1DeleteOptions(grace_period_seconds=grace, preconditions=client.V1Preconditions(uid=uid) if uid else None)
    try:
        await ctx.core.delete_namespaced_pod(name, namespace, body=options)
    except client.ApiException as exc:
        if exc.status not in (404, 409):  # gone already, or another pod holds the name now
            raise


def is_ready(pod: Mapping[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or [])


def is_running(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def container_failure(pod: Mapping[str, Any]) -> str | None:
    """Why this pod will not come up by itself, or None while it still may."""
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return f"pod failed: {status.get('reason', '')} {status.get('message', '')}".strip()
    for s in status.get("containerStatuses") or []:
        waiting = (s.get("state") or {}).get("waiting") or {}
        created = (pod.get("metadata") or {}).get("creationTimestamp")
        lasting = waiting.get("reason") in RETRIED_BY_THE_KUBELET and (not created or now() - parse_time(created) >= RETRY_GRACE)
        if waiting.get("reason") in CONTAINER_FAILURES or lasting:
            return f"container {s['name']}: {waiting['reason']}: {waiting.get('message', '')}".strip()
        if (s.get("state") or {}).get("terminated") or s.get("restartCount", 0) > 0:
            return f"container {s['name']} exited after the restore"
    return None


def replacement(m: Migration, *, node: str | None, from_checkpoint: bool) -> dict[str, Any]:
    """The pod again, from its original spec: on ``node`` (or scheduled anew), as a restore or cold."""
    annotations = {api.ANNOTATION_MIGRATION: f"{m.namespace}/{m.name}", api.ANNOTATION_MIGRATION_UID: m.uid}
    if not from_checkpoint:
        return pod_from(m.status["originalPod"], name=m.pod_name, node=node, annotations=annotations)
    return restore_body(
        m.status["originalPod"], name=m.pod_name, node=node, images=m.images(), source_node=m.status["sourceNode"],
        restored_from=f"{m.namespace}/{m.pod_name}", annotations=annotations,
        pull_secret=str(m.status.get(pullsecrets.STATUS_KEY) or ""),
    )  # fmt: skip


def pod_from(original: Mapping[str, Any], *, name: str, node: str | None, annotations: Mapping[str, str]) -> dict[str, Any]:
    """A pod from a recorded original (``status.originalPod``), named ``name``, on ``node`` (None: scheduled anew)."""
    meta = copy.deepcopy(dict(original["metadata"]))
    spec = copy.deepcopy(dict(original["spec"]))
    meta["name"] = name
    # Without what an earlier migration or restore wrote on the original (they name other objects and
    # images, which the guard would then check this pod against), and without kubectl's last applied copy.
    merged = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith(f"{api.GROUP}/") and k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    merged.update(annotations)
    meta["annotations"] = merged
    if node:
        spec["nodeName"] = node
    else:
        spec.pop("nodeName", None)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def restore_body(
    original: Mapping[str, Any],
    *,
    name: str,
    node: str | None,
    images: Mapping[str, str],
    source_node: str,
    restored_from: str,
    annotations: Mapping[str, str],
    pull_secret: str,
) -> dict[str, Any]:
    """The pod that restores checkpoint ``images`` ({container: image}), from the checkpointed pod's recorded spec.

    Its containers run the checkpoint images (the runtime restores them on their base images);
    init containers are dropped (they ran before the checkpoint: their effects are in the restored
    processes); ``restored_from`` ("<namespace>/<pod>" of the checkpointed pod) is in each
    container's environment for the node's CRIU hook (``api.ENV_RESTORED_FROM``).
    """
    body = pod_from(original, name=name, node=node, annotations=annotations)
    meta, spec = body["metadata"], body["spec"]
    meta["annotations"][api.ANNOTATION_RESTORED_FROM] = source_node
    meta["annotations"][api.ANNOTATION_CHECKPOINT_IMAGES] = json.dumps(dict(images), sort_keys=True)
    meta["annotations"][api.ANNOTATION_ORIGINAL_IMAGES] = json.dumps(
        {c["name"]: c["image"] for c in spec["containers"]}, sort_keys=True
    )
    for container in spec["containers"]:
        if container["name"] in images:
            container["image"] = images[container["name"]]
            container["imagePullPolicy"] = "IfNotPresent"
            container["env"] = [*(container.get("env") or []), {"name": api.ENV_RESTORED_FROM, "value": restored_from}]
    if spec.get("initContainers"):
        meta["annotations"][api.ANNOTATION_SKIPPED_INIT] = ",".join(c["name"] for c in spec.pop("initContainers"))
    if pull_secret and {"name": pull_secret} not in (spec.get("imagePullSecrets") or []):
        # The checkpoint registry's pull-only Secret, copied into this namespace (migrator/pullsecrets.py).
        spec["imagePullSecrets"] = [*(spec.get("imagePullSecrets") or []), {"name": pull_secret}]
    return body


async def pull_on_node(
    ctx: Context,
    *,
    namespace: str,
    name: str,
    node: str,
    images: list[str],
    pull_secrets: list[Mapping[str, Any]],
    labels: Mapping[str, str],
) -> str | None:
    """Have ``node`` pull ``images`` (a short-lived pod ``name``); ``Wait`` while it pulls, then None or why it failed.

    A runtime restores a checkpoint only on top of its base image in the node's local storage, and
    never pulls it with credentials by itself (docs/facts.md): so the base images are pulled first,
    by the kubelet, with the checkpointed pod's pull Secrets. The pod is deleted once they are in.
    """
    pod = await read_pod(ctx, namespace, name)
    if pod is None:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {
                "nodeName": node,
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": False,
                "tolerations": [{"operator": "Exists"}],
                **({"imagePullSecrets": list(pull_secrets)} if pull_secrets else {}),
                # Only the pull matters: the kubelet pulls before it creates, and this command does not exist.
                "containers": [
                    {"name": f"pull-{i}", "image": image, "imagePullPolicy": "IfNotPresent", "command": ["/.podmigrate-prepull"]}
                    for i, image in enumerate(images)
                ],
            },
        }
        try:
            await ctx.core.create_namespaced_pod(namespace, body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        raise Wait(PULL_POLL)
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    pulled = [s for s in statuses if s.get("imageID")]
    failed = [
        s for s in statuses if (s.get("state") or {}).get("waiting", {}).get("reason") in ("ErrImagePull", "ImagePullBackOff")
    ]
    if failed:
        await delete_pod(ctx, namespace, name)
        return str(failed[0]["state"]["waiting"].get("message", ""))
    if len(pulled) < len(images):
        raise Wait(PULL_POLL)
    await delete_pod(ctx, namespace, name)
    return None


PULL_POLL: Final = 0.5


class Unplaceable(Exception):
    """No node takes the pod: ``reason`` (NodeNotFound, NodeDoesNotFit, NoNodeFits) and the message that says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


async def choose_node(
    ctx: Context,
    *,
    pod: Mapping[str, Any],
    name: str,
    wanted: str | None,
    exclude: str,
    runtime: str | None,
    claims: Claims | None = None,
) -> str:
    """The node ``pod`` goes to: ``wanted`` if it fits, else the best-fitting node other than ``exclude``.

    The nodes and the pods on them as the service's caches hold them (``ctx.cluster``; the pod itself
    not counted); the scheduler's rules as ``migrator.placement`` applies them, the runtime that wrote
    the checkpoint included. ``Unplaceable`` with the reason when none fits; ``name`` is the pod's
    name in its message.
    """
    own_uid = (pod.get("metadata") or {}).get("uid")
    nodes = await ctx.cluster.nodes()
    grouped, _ = await ctx.cluster.pods_by_node()
    by_node = {node: [p for p in there if p["metadata"].get("uid") != own_uid] for node, there in grouped.items()}
    if wanted:
        node = next((n for n in nodes if n["metadata"]["name"] == wanted), None)
        if node is None:
            raise Unplaceable("NodeNotFound", f'target node "{wanted}" not found')
        verdict = placement.check(pod=pod, node=node, pods_on_node=by_node.get(wanted, []), runtime=runtime, claims=claims)
        if not verdict.fits:
            raise Unplaceable("NodeDoesNotFit", verdict.reason)
        return wanted
    best, verdicts = placement.choose(pod=pod, nodes=nodes, pods_by_node=by_node, exclude=exclude, runtime=runtime, claims=claims)
    if best is None:
        none = "the cluster has no other node" if exclude else "the cluster has no node"
        raise Unplaceable("NoNodeFits", f"no node can take pod {name}: {'; '.join(v.reason for v in verdicts) or none}")
    return best.node


class NamespaceTerminating(RuntimeError):
    """The namespace is being deleted: no pod can be created in it any more, so nothing is left to bring back."""


async def check_namespace(ctx: Context, m: Migration) -> None:
    """``NamespaceTerminating`` when the migration's namespace is being deleted (read now).

    For the waits that only another controller can end (a workload controller's replacement): in a
    namespace being deleted it never comes, and the finalizer would hold the namespace for ever.
    """
    namespace = await read_or_none(ctx.core.read_namespace(m.namespace))
    if namespace is not None and namespace.metadata.deletion_timestamp is not None:
        raise NamespaceTerminating(m.namespace)


async def create_pod(ctx: Context, m: Migration, body: dict[str, Any]) -> dict[str, Any]:
    """Create the pod, or adopt it if a previous pass of this migration already did."""
    try:
        return plain(await ctx.core.create_namespaced_pod(m.namespace, body))
    except client.ApiException as exc:
        if exc.status == 403 and "being terminated" in str(exc.body or ""):
            raise NamespaceTerminating(m.namespace) from None
        if exc.status != 409:
            raise
    existing = await read_pod(ctx, m.namespace, body["metadata"]["name"])
    if existing and is_restored_pod_of(m, existing):
        return existing
    raise Wait(1.0)  # someone else's pod holds the name (or ours is still terminating): look again


# --- controller-owned pods ----------------------------------------------------------------------
async def open_slot(ctx: Context, m: Migration, *, node: str) -> None:
    """Let the webhook turn the owner's next replacement pod into the restore on ``node`` (``migrator.slots``).

    Saved at once, and the PodMigration labelled with the owner, before the caller does what makes
    the controller create that pod; a slot already open for ``node`` stays as it is (claimed or not).
    """
    owner = m.status["owner"]
    original = m.status["originalPod"]
    slot = Slot(
        migration=f"{m.namespace}/{m.name}",
        migration_uid=m.uid,
        namespace=m.namespace,
        owner_uid=owner["uid"],
        pod_name=m.pod_name if owner["kind"] == "StatefulSet" else None,
        node=node,
        images=m.images(),
        source_node=m.status["sourceNode"],
        original_images={c["name"]: c["image"] for c in original["spec"]["containers"]},
        source_pod=m.pod_name,
        pull_secret=str(m.status.get(pullsecrets.STATUS_KEY) or ""),
    )
    if slots.open_slot(m.status, slot):
        await ctx.recorder.save(m)
    if m.slot_label != owner["uid"]:
        await _label(ctx, m, owner["uid"])


async def close_slot(ctx: Context, m: Migration) -> None:
    """No pod may claim the slot any more (the restored pod was found, or the rollback goes cold)."""
    m.status.pop(slots.STATUS_KEY, None)
    if m.slot_label:
        await _label(ctx, m, None)


async def _label(ctx: Context, m: Migration, owner_uid: str | None) -> None:
    written = await slots.label_owner(ctx.custom, api.PODMIGRATIONS, name=m.name, namespace=m.namespace, owner_uid=owner_uid)
    if written is not None:
        m.slot_label = owner_uid


async def owned_pods(ctx: Context, m: PodRecord) -> list[dict[str, Any]]:
    """Pods of the recorded pod's controller (``status.owner``), in its namespace, newest last."""
    owner_uid = m.status["owner"]["uid"]
    pods = [plain(p) for p in (await ctx.core.list_namespaced_pod(m.namespace)).items]
    owned = [p for p in pods if any(o.get("uid") == owner_uid for o in p["metadata"].get("ownerReferences") or [])]
    return sorted(owned, key=lambda p: p["metadata"].get("creationTimestamp") or "")


async def find_restored(ctx: Context, m: Migration, *, exclude: set[str]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Our restored replacement (annotated by the webhook), and the owner's other new pods."""
    ours, others = None, []
    for pod in await owned_pods(ctx, m):
        meta = pod["metadata"]
        if meta["uid"] in exclude or meta.get("deletionTimestamp"):
            continue
        if is_restored_pod_of(m, pod):
            ours = pod
        else:
            others.append(pod)
    return ours, others
