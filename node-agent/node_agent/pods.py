"""What the agent reads from the API server: the pod to checkpoint and the node it runs on.

Only the few facts the agent acts on are kept (``PodView``, ``NodeView``), parsed from the
API's JSON once, so the rest of the agent neither touches client models nor guesses at
missing fields. ``PodSource`` is the seam: the agent's ServiceAccount reads through
``KubePods``; tests hand in dictionaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes_asyncio import client

from node_agent.kubelet import KubeletEndpoint

DEFAULT_KUBELET_PORT = 10250


@dataclass(frozen=True, kw_only=True)
class ContainerState:
    name: str
    container_id: str | None  # as the status says it: cri-o://<id>
    running: bool


@dataclass(frozen=True, kw_only=True)
class PodView:
    namespace: str
    name: str
    uid: str
    node_name: str | None
    phase: str
    containers: tuple[str, ...]  # spec order
    statuses: Mapping[str, ContainerState] = field(default_factory=dict)
    empty_dirs: Mapping[str, str] = field(default_factory=dict)  # emptyDir volume name -> medium ("" or "Memory")

    @classmethod
    def from_json(cls, pod: Mapping[str, Any]) -> PodView:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        statuses = {}
        for cs in status.get("containerStatuses") or []:
            state = cs.get("state") or {}
            statuses[cs["name"]] = ContainerState(
                name=cs["name"], container_id=cs.get("containerID") or None, running=state.get("running") is not None
            )
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            node_name=spec.get("nodeName"),
            phase=status.get("phase") or "Pending",
            containers=tuple(c["name"] for c in spec.get("containers") or []),
            statuses=statuses,
            empty_dirs={
                v["name"]: (v["emptyDir"] or {}).get("medium") or "" for v in spec.get("volumes") or [] if "emptyDir" in v
            },
        )

    def running_container_ids(self) -> dict[str, str]:
        """name -> containerID of every container that is running now (the ones with a cgroup to freeze)."""
        return {name: s.container_id for name, s in self.statuses.items() if s.running and s.container_id}

    def known_container_ids(self) -> dict[str, str]:
        """name -> containerID of every container that has one (running or not): what a thaw looks at."""
        return {name: s.container_id for name, s in self.statuses.items() if s.container_id}


@dataclass(frozen=True, kw_only=True)
class NodeView:
    name: str
    kubelet: KubeletEndpoint
    runtime_version: str  # e.g. cri-o://1.30.0

    @property
    def engine(self) -> str:
        """The container engine in checkpointctl's spelling (the ``org.criu.checkpoint.engine`` annotation)."""
        kind = self.runtime_version.partition("://")[0].lower()
        return {"cri-o": "CRI-O", "containerd": "containerd", "docker": "docker"}.get(kind, "CRI-O")

    @property
    def checkpoints_frozen_containers(self) -> bool:
        """Does the runtime checkpoint a container the agent froze first? containerd does not: it pauses it itself."""
        return self.runtime_version.partition("://")[0].lower() != "containerd"

    @classmethod
    def from_json(cls, node: Mapping[str, Any]) -> NodeView:
        meta = node.get("metadata") or {}
        status = node.get("status") or {}
        addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
        host = addresses.get("InternalIP") or addresses.get("Hostname") or meta.get("name", "")
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or DEFAULT_KUBELET_PORT
        info = status.get("nodeInfo") or {}
        return cls(
            name=meta.get("name", ""),
            kubelet=KubeletEndpoint(host=host, port=int(port)),
            runtime_version=info.get("containerRuntimeVersion") or "",
        )


class PodSource(Protocol):
    async def read_pod(self, *, namespace: str, name: str) -> PodView | None: ...

    async def read_node(self, *, name: str) -> NodeView: ...


class KubePods:
    """``PodSource`` on the API server (needs ``get`` on pods and nodes)."""

    def __init__(self, *, api: client.ApiClient) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)

    async def read_pod(self, *, namespace: str, name: str) -> PodView | None:
        try:
            pod = await self._core.read_namespaced_pod(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return PodView.from_json(self._api.sanitize_for_serialization(pod))

    async def read_node(self, *, name: str) -> NodeView:
        node = await self._core.read_node(name)
        return NodeView.from_json(self._api.sanitize_for_serialization(node))
