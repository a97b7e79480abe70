"""Warm start: a Deployment's (or ReplicaSet's) new pods restored from a PodCheckpoint instead of starting cold.

Why: a workload that takes long to warm up (a JVM, a model server) pays that warm-up on every
scale-up. With the annotation ``podmigrate.io/warm-start-from: <PodCheckpoint>`` on a Deployment
(its controller copies annotations to the ReplicaSets it makes) or on a ReplicaSet, each new pod
passes through the restore webhook, which makes it a restore of that checkpoint: its processes
start where the checkpointed (warm) one was, and it is Ready as soon as they run.

The controller creates the pods, so their number, names and ownership stay the controller's; only
*what* each runs changes, as for a migration's replacement (``migrator.webhook``). A pod is started
cold, as if there were no annotation, and says why (annotation ``podmigrate.io/warm-start-skipped``)
when the checkpoint cannot serve it: not Available, made from another pod template (other
containers or images: old memory on a new image would be wrong), or no node that can restore it.
Which node can: one whose runtime wrote the checkpoint and whose local storage already holds its
base images (a runtime restores only on top of a local base image and never pulls one with
credentials: docs/facts.md), known from the checkpointed pod's node, the nodes running the
workload's other pods, and the images a kubelet reports; among those, the one with most room.

A StatefulSet is not warm-started: each of its pods has its own identity, which one checkpoint
cannot give to several. Who may warm-start is who may write the Deployment or ReplicaSet (they
choose what its pods run anyway): SECURITY.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client

from kubeclient.informing import Listing, PodsAndNodes
from migrator import api, placement

log = logging.getLogger(__name__)


def _base_names(status: Mapping[str, Any]) -> set[str]:
    """The checkpoint's base images as references and bare digests (a kubelet reports either)."""
    names: set[str] = set()
    for image in status.get("baseImages") or []:
        names.add(image)
        if "@" in image:
            names.add(image.partition("@")[2])
    return names


def _holds(node: Mapping[str, Any], wanted: set[str]) -> bool:
    for entry in (node.get("status") or {}).get("images") or []:
        for name in entry.get("names") or []:
            if name in wanted or ("@" in name and name.partition("@")[2] in wanted):
                return True
    return False


def _why_not_same_template(pod: Mapping[str, Any], status: Mapping[str, Any]) -> str | None:
    ours = {c["name"]: c.get("image") for c in (pod.get("spec") or {}).get("containers") or []}
    theirs = {c["name"]: c.get("image") for c in status["originalPod"]["spec"].get("containers") or []}
    if set(ours) != set(theirs):
        return f"its containers ({', '.join(sorted(ours))}) are not the checkpoint's ({', '.join(sorted(theirs))})"
    for name, image in ours.items():
        if image != theirs[name]:
            return f"container {name} runs {image}, the checkpoint was taken on {theirs[name]}"
    return None


class WarmStart:
    """Decides, for one new pod of a ReplicaSet, whether and where it restores a checkpoint."""

    def __init__(
        self,
        *,
        core: client.CoreV1Api,
        apps: client.AppsV1Api,
        custom: client.CustomObjectsApi,
        pods_and_nodes: PodsAndNodes | None = None,
    ) -> None:
        self._apps = apps
        self._custom = custom
        self._cluster = pods_and_nodes or Listing(core)

    async def checkpoint_for(self, pod: Mapping[str, Any], *, namespace: str) -> str | None:
        """The PodCheckpoint the pod's ReplicaSet names, or None (no warm start asked for)."""
        owner = next((o for o in (pod.get("metadata") or {}).get("ownerReferences") or [] if o.get("controller")), None)
        if owner is None or owner.get("kind") != "ReplicaSet":
            return None
        try:
            rs = await self._apps.read_namespaced_replica_set(owner["name"], namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return (rs.metadata.annotations or {}).get(api.ANNOTATION_WARM_START) or None

    async def plan(self, pod: Mapping[str, Any], *, namespace: str, checkpoint_name: str) -> tuple[dict[str, Any], str]:
        """(the PodCheckpoint, the node to restore on), or ``Skip`` with the reason the pod starts cold."""
        checkpoint = await api.PODCHECKPOINTS.get(self._custom, name=checkpoint_name, namespace=namespace)
        if checkpoint is None:
            raise Skip(f"PodCheckpoint {checkpoint_name} not found")
        status = checkpoint.get("status") or {}
        if status.get("phase") != api.CheckpointPhase.AVAILABLE or checkpoint["metadata"].get("deletionTimestamp"):
            state = "being deleted" if checkpoint["metadata"].get("deletionTimestamp") else status.get("phase") or "new"
            raise Skip(f"PodCheckpoint {checkpoint_name} is not Available ({state})")
        if why := _why_not_same_template(pod, status):
            raise Skip(f"the pod is not the one PodCheckpoint {checkpoint_name} was taken of: {why}")
        nodes = await self._cluster.nodes()
        wanted = _base_names(status)
        holders = {status.get("sourceNode")} | {n["metadata"]["name"] for n in nodes if _holds(n, wanted)}
        for other in await self._cluster.pods(namespace=namespace):
            statuses = (other.get("status") or {}).get("containerStatuses") or []
            ids = {(s.get("imageID") or "").removeprefix("docker-pullable://") for s in statuses}
            if (other.get("spec") or {}).get("nodeName") and ids & wanted:
                holders.add(other["spec"]["nodeName"])
        candidates = [n for n in nodes if n["metadata"]["name"] in holders]
        by_node: dict[str, list[Mapping[str, Any]]] = {}
        for candidate in candidates:
            name = candidate["metadata"]["name"]
            by_node[name] = list(await self._cluster.pods(node=name))
        runtime = str(status.get("runtime") or "") or None
        best, verdicts = placement.choose(pod=pod, nodes=candidates, pods_by_node=by_node, exclude="", runtime=runtime)
        if best is None:
            reasons = "; ".join(v.reason for v in verdicts) or "no node holds its base images"
            raise Skip(f"no node can restore PodCheckpoint {checkpoint_name}: {reasons}")
        return checkpoint, best.node


class Skip(Exception):
    """The pod starts cold; the message says why."""
