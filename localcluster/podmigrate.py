"""Install podmigrate on the local cluster: CRD, RBAC, and the control service and agents as daemons.

In a real cluster the control service is a Deployment and the agents a DaemonSet
(``manifests/deploy``). The local cluster's nodes cannot run privileged host-network pods, so
here they run as processes on the host, but with exactly the identities the manifests give
them: each authenticates with a token of its ServiceAccount from ``manifests/rbac``, so RBAC
that is too narrow fails here as it would in a cluster. Agents listen on their node's address
at the agent port with a serving certificate from the cluster CA, as the DaemonSet would.

The demo, the tests and the benchmark all install podmigrate through this module, and
``localcluster down`` stops what it started (the daemons' PIDs are in the cluster's ``pids/``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from localcluster import nodesetup, processes, realnode
from localcluster.cluster import Cluster, ClusterError, NodeInfo

REPO: Final = Path(__file__).resolve().parent.parent
MANIFESTS: Final = REPO / "manifests"
AGENT_PORT: Final = 10260
CONTROLLER: Final = "podmigrate-controller"
NAMESPACE: Final = "podmigrate-system"
# The replicas' Lease: shorter than the Deployment's default (15 s) because the local cluster is one host
# (no clock skew, no network partition between replicas and the API server), so tests wait less for takeovers.
LEASE_SECONDS: Final = 6


def controller_name(replica: int) -> str:
    return CONTROLLER if replica == 0 else f"{CONTROLLER}-{replica}"


def agent_name(node: str) -> str:
    return f"podmigrate-agent-{node}"


@dataclass(frozen=True, kw_only=True)
class Installation:
    cluster: Cluster
    workdir: Path
    repository: str
    controller_kubeconfig: Path
    agent_kubeconfig: Path
    health_address: str
    webhook_address: str
    otlp_endpoint: str | None
    standby_health: dict[int, str] = field(default_factory=dict)  # replica -> its health address

    @property
    def state(self) -> Path:
        return Path(self.cluster.state_dir)

    def _launcher(self) -> processes.Launcher:
        return processes.Launcher(state_dir=self.state, deadline=time.monotonic() + 60)

    def _env(self, service: str) -> dict[str, str]:
        env = {"OTEL_SERVICE_NAME": service}
        if self.otlp_endpoint:
            env.update(OTEL_EXPORTER_OTLP_ENDPOINT=self.otlp_endpoint, OTEL_BSP_SCHEDULE_DELAY="200")
        return env

    @staticmethod
    def _hook_args(node: NodeInfo) -> list[str]:
        """The node's directories: its kubelet's, the volume staging its CRIU hook reads, and (real
        nodes) where the agent arms the post-dump hook its containerd was told of."""
        args = nodesetup.agent_args(Path(node.state_dir))
        if node.kind != "real":
            return args
        spec = realnode.RealNode.load(Path(node.state_dir) / realnode.SPEC_FILE)
        return [*args, "--dump-hook-dir", str(spec.dump_hook_dir)]

    def start_agent(self, node_name: str) -> None:
        node = next(n for n in self.cluster.nodes if n.name == node_name)
        cert, key = self.cluster.controlplane().issue_serving_cert(name=f"agent-{node.name}", ips=[node.address])
        self._launcher().launch(
            name=agent_name(node.name),
            argv=[
                sys.executable, "-m", "node_agent.main", "--node-name", node.name, "--kubeconfig", str(self.agent_kubeconfig),
                "--listen", f"{node.address}:{AGENT_PORT}", "--tls-cert", str(cert), "--tls-key", str(key),
                "--plain-http-registry", self.cluster.registry,
                *self._hook_args(node),
            ],
            env=self._env("podmigrate-agent"),
        )  # fmt: skip

    def start_controller(self, *, replica: int = 0) -> None:
        """Start a control-service replica; they elect a leader on the Lease, as the Deployment's replicas do.

        Replica 0 serves the admission webhook at the address the cluster was told of (in a real
        cluster every replica does, behind the Service; here one host port can serve only one).
        """
        name = controller_name(replica)
        health = (
            self.health_address if replica == 0 else self.standby_health.setdefault(replica, f"127.0.0.1:{_free_loopback_port()}")
        )
        webhook: list[str] = []
        if replica == 0:
            cert, key = self.cluster.controlplane().issue_serving_cert(name="podmigrate-webhook", ips=["127.0.0.1"])
            webhook = ["--webhook-address", self.webhook_address, "--webhook-cert", str(cert), "--webhook-key", str(key)]
        launcher = self._launcher()
        launcher.launch(
            name=name,
            argv=[
                sys.executable, "-m", "migrator.service", "--kubeconfig", str(self.controller_kubeconfig),
                "--checkpoint-repository", self.repository, "--agent-port", str(AGENT_PORT),
                "--agent-ca", self.cluster.ca_cert, "--health-address", health, *webhook,
                "--leader-election-namespace", NAMESPACE, "--leader-election-id", f"{name}-{time.monotonic_ns()}",
                "--lease-seconds", str(LEASE_SECONDS),
            ],
            env=self._env(CONTROLLER),
        )  # fmt: skip
        launcher.wait(name=name, what=f"GET http://{health}/healthz", ready=lambda: self.controller_healthy(health))

    def controller_healthy(self, address: str | None = None) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{address or self.health_address}/healthz", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def pid(self, name: str) -> int | None:
        try:
            pid = int(processes.pid_file(state_dir=self.state, name=name).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if processes.is_ours(pid=pid, name=name, state_dir=self.state) else None

    def kill_controller(self, *, replica: int = 0) -> None:
        """SIGKILL a control-service replica: no clean-up, no flush, no lease released, like a crashed pod."""
        name = controller_name(replica)
        pid = self.pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.pid(name) is not None and time.monotonic() < deadline:
                time.sleep(0.05)

    def stop(self) -> None:
        names = [*(controller_name(r) for r in (0, *self.standby_health)), *(agent_name(n.name) for n in self.cluster.nodes)]
        pids = {name: pid for name in names if (pid := self.pid(name)) is not None}
        processes.terminate(pids=pids, state_dir=self.state, children={}, timeout=15)


def _free_loopback_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def token_kubeconfig(cluster: Cluster, *, token: str, path: Path) -> Path:
    """A kubeconfig whose user is a bearer token (a ServiceAccount's), like in-cluster credentials."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": cluster.server, "certificate-authority": cluster.ca_cert}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
        "current-context": "sa",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def install(cluster: Cluster, *, otlp_endpoint: str | None = None) -> Installation:
    """Apply the CRD and RBAC, mint the ServiceAccount tokens, start one agent per node and the controller."""
    cp = cluster.controlplane()
    for part in ("crd", "rbac"):
        result = cp.kubectl("apply", "-k", str(MANIFESTS / part), check=False)
        if result.returncode != 0:
            raise ClusterError(f"kubectl apply -k manifests/{part}: {result.stderr.strip()}")
    deadline = time.monotonic() + 30
    while cp.kubectl("get", "podmigrations", "-A", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise ClusterError("the PodMigration CRD was not established within 30s")
        time.sleep(0.2)
    workdir = Path(cluster.state_dir) / "podmigrate"
    workdir.mkdir(exist_ok=True)

    def token(sa: str) -> str:
        return cp.kubectl("create", "token", sa, "-n", NAMESPACE, "--duration=24h").stdout.strip()

    inst = Installation(
        cluster=cluster,
        workdir=workdir,
        repository=f"{cluster.registry}/podmigrate-checkpoints",
        controller_kubeconfig=token_kubeconfig(cluster, token=token(CONTROLLER), path=workdir / "controller.kubeconfig"),
        agent_kubeconfig=token_kubeconfig(cluster, token=token("podmigrate-agent"), path=workdir / "agent.kubeconfig"),
        health_address=f"127.0.0.1:{_free_loopback_port()}",
        webhook_address=f"127.0.0.1:{_free_loopback_port()}",
        otlp_endpoint=otlp_endpoint,
    )
    for node in cluster.nodes:
        inst.start_agent(node.name)
    inst.start_controller()
    register_webhook(cluster, address=inst.webhook_address)
    return inst


def register_webhook(cluster: Cluster, *, address: str) -> None:
    """Register the webhooks of ``manifests/deploy/webhook.yaml``, pointed at the controller process.

    In a cluster they reach the controller's Service; here the API server reaches the process on
    loopback, so only ``clientConfig`` changes (a URL and the cluster CA as caBundle).
    """
    import base64

    import yaml

    ca_bundle = base64.b64encode(Path(cluster.ca_cert).read_bytes()).decode()
    docs = list(yaml.safe_load_all((MANIFESTS / "deploy" / "webhook.yaml").read_text()))
    for doc in docs:
        if not doc["kind"].endswith("WebhookConfiguration"):
            continue
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://{address}{path}", "caBundle": ca_bundle}
        doc["metadata"].pop("annotations", None)
        result = cluster.controlplane().kubectl("apply", "-f", "-", check=False, input=json.dumps(doc))
        if result.returncode != 0:
            raise ClusterError(f"registering webhook {doc['metadata']['name']}: {result.stderr.strip()}")
