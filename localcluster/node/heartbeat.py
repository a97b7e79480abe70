"""Node registration, status and Lease renewal: what makes the control plane call a node healthy.

The node-lifecycle controller in kube-controller-manager watches two things: the node's
Lease in ``kube-node-lease`` (renewed every 10 s by a real kubelet) and the node's Ready
condition. Stop renewing and it marks the node NotReady and taints it, exactly as it would a
dead kubelet; that is how tests can take a node away.
"""

from __future__ import annotations

import asyncio
import logging
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kubernetes_asyncio import client

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION = 40
RENEW_INTERVAL = 10.0
STATUS_INTERVAL = 60.0
KUBELET_VERSION = "v1.36.3"


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    name: str
    address: str
    port: int
    cpu: str = "4"
    memory: str = "8Gi"
    pods: str = "110"
    labels: dict[str, str] = field(default_factory=dict)
    runtime_version: str = "cri-o://localcluster-runc"


def _now() -> datetime:
    return datetime.now(UTC)


def _conditions(ready: bool) -> list[client.V1NodeCondition]:
    now = _now()
    out = [
        client.V1NodeCondition(
            type=kind,
            status="False",
            reason=f"KubeletHas{reason}",
            message=message,
            last_heartbeat_time=now,
            last_transition_time=now,
        )
        for kind, reason, message in (
            ("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"),
        )
    ]
    out.append(
        client.V1NodeCondition(
            type="Ready",
            status="True" if ready else "False",
            reason="KubeletReady" if ready else "KubeletNotReady",
            message="kubelet is posting ready status",
            last_heartbeat_time=now,
            last_transition_time=now,
        )
    )
    return out


def _status(spec: NodeSpec) -> client.V1NodeStatus:
    resources = {"cpu": spec.cpu, "memory": spec.memory, "pods": spec.pods, "ephemeral-storage": "50Gi"}
    return client.V1NodeStatus(
        capacity=resources,
        allocatable=resources,
        addresses=[
            client.V1NodeAddress(type="InternalIP", address=spec.address),
            client.V1NodeAddress(type="Hostname", address=spec.name),
        ],
        daemon_endpoints=client.V1NodeDaemonEndpoints(kubelet_endpoint=client.V1DaemonEndpoint(port=spec.port)),
        conditions=_conditions(ready=True),
        node_info=client.V1NodeSystemInfo(
            architecture={"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
            boot_id="",
            container_runtime_version=spec.runtime_version,
            kernel_version=platform.release(),
            kube_proxy_version="",
            kubelet_version=KUBELET_VERSION,
            machine_id="",
            operating_system="linux",
            os_image="localcluster node",
            system_uuid="",
        ),
    )


async def register(core: client.CoreV1Api, spec: NodeSpec) -> None:
    """Create the Node (NodeRestriction lets a node create only itself), then post status."""
    labels = {
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": _status(spec).node_info.architecture,
        **spec.labels,
    }
    body = client.V1Node(metadata=client.V1ObjectMeta(name=spec.name, labels=labels))
    try:
        await core.create_node(body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    await post_status(core, spec)


async def post_status(core: client.CoreV1Api, spec: NodeSpec) -> None:
    status = core.api_client.sanitize_for_serialization(_status(spec))
    await core.patch_node_status(spec.name, {"status": status})


async def renew_lease(coord: client.CoordinationV1Api, node: str) -> None:
    now = _now()
    try:
        lease = await coord.read_namespaced_lease(node, LEASE_NAMESPACE)
        lease.spec.renew_time = now
        lease.spec.holder_identity = node
        lease.spec.lease_duration_seconds = LEASE_DURATION
        await coord.replace_namespaced_lease(node, LEASE_NAMESPACE, lease)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=node, namespace=LEASE_NAMESPACE),
            spec=client.V1LeaseSpec(holder_identity=node, lease_duration_seconds=LEASE_DURATION, renew_time=now),
        )
        await coord.create_namespaced_lease(LEASE_NAMESPACE, body)


async def heartbeat_forever(*, core: client.CoreV1Api, coord: client.CoordinationV1Api, spec: NodeSpec) -> None:
    last_status = asyncio.get_running_loop().time()
    while True:
        try:
            await renew_lease(coord, spec.name)
            if asyncio.get_running_loop().time() - last_status >= STATUS_INTERVAL:
                await post_status(core, spec)
                last_status = asyncio.get_running_loop().time()
        except (client.ApiException, OSError) as exc:
            log.warning("heartbeat failed: %s", exc)
        await asyncio.sleep(RENEW_INTERVAL)
