"""Install podmigrate on the local cluster, the way users install it, or as host processes.

:func:`install_pods` is the user's install: ``make image`` (``python -m imagebuild``) builds
podmigrate's image and pushes it to the local registry, and ``kubectl apply -k`` of the local
overlay (``localcluster/overlay.py``) applies ``manifests/``: the control service runs as the
Deployment's two pods, an agent as the DaemonSet's pod on every node, stand-in and real, under
their ServiceAccounts, with certificates issued in the cluster. The demo, the tests and the
benchmark use it. :class:`PodInstallation` is what tests do to it (kill the leader, an agent).

:func:`install` (``--as-processes``) is a developer convenience, not what the tests prove: the
same programs as host processes with the manifests' identities (tokens of the ServiceAccounts),
certificates from the cluster CA, quick to restart under a debugger. ``localcluster down`` stops
what either started (host processes by the PIDs in the cluster's ``pids/``; pods with their nodes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agentapi import contract
from localcluster import nodesetup, overlay, processes, registryauth
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
    agent_token: Path  # the controller's token for the agents' audience (a projected token, in a pod)
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
        """The node's directories: its kubelet's, the volume staging its CRIU hook reads, the post-dump hook's."""
        return nodesetup.agent_args(Path(node.state_dir))

    def _registry_args(self) -> list[str]:
        """The agents' registry credentials (push, pull, delete on the checkpoint repository)."""
        if not self.cluster.registry_auth:
            return []
        return ["--registry-credentials", str(self.cluster.registry_credentials_file(registryauth.PUSH_USER))]

    def start_agent(self, node_name: str) -> None:
        node = next(n for n in self.cluster.nodes if n.name == node_name)
        cert, key = self.cluster.controlplane().issue_serving_cert(name=f"agent-{node.name}", ips=[node.address])
        self._launcher().launch(
            name=agent_name(node.name),
            argv=[
                sys.executable, "-m", "node_agent.main", "--node-name", node.name, "--kubeconfig", str(self.agent_kubeconfig),
                "--listen", f"{node.address}:{AGENT_PORT}", "--tls-cert", str(cert), "--tls-key", str(key),
                "--plain-http-registry", self.cluster.registry, "--checkpoint-repository", self.repository,
                "--encryption-key-dir", str(nodesetup.encryption_public_key(self.state).parent),
                *self._registry_args(), *self._hook_args(node),
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
            webhook = [
                "--webhook-address", self.webhook_address, "--webhook-cert", str(cert), "--webhook-key", str(key),
                "--webhook-client-ca", str(self.cluster.controlplane().webhook_client_ca),
            ]  # fmt: skip
        launcher = self._launcher()
        launcher.launch(
            name=name,
            argv=[
                sys.executable, "-m", "migrator.service", "--kubeconfig", str(self.controller_kubeconfig),
                "--checkpoint-repository", self.repository, "--agent-port", str(AGENT_PORT),
                "--agent-ca", self.cluster.ca_cert, "--agent-token-file", str(self.agent_token),
                "--health-address", health, *webhook,
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

    def logs(self, *, component: str, node: str | None = None) -> str:
        name = CONTROLLER if component == "controller" else agent_name(node or "")
        path = self.state / "logs" / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def kill_agent(self, node: str) -> bool:
        pid = self.pid(agent_name(node))
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        return True

    def wait_agent(self, node: str) -> None:
        """The DaemonSet would restart a dead agent: here the test does."""
        if self.pid(agent_name(node)) is None:
            self.start_agent(node)

    def leader(self) -> str:
        result = self.cluster.controlplane().kubectl("get", "lease", CONTROLLER, "-n", NAMESPACE, "-o", "json", check=False)
        return str(json.loads(result.stdout)["spec"].get("holderIdentity") or "") if result.returncode == 0 else ""

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
    if cluster.registry_auth:  # the registry Secrets, as the pod install's overlay makes them (the controller copies one)
        auth = registryauth.Paths(directory=Path(cluster.registry_auth))
        secrets = {"apiVersion": "v1", "kind": "List", "items": registryauth.secret_manifests(paths=auth, namespace=NAMESPACE)}
        result = cp.kubectl("apply", "-f", "-", check=False, input=json.dumps(secrets))
        if result.returncode != 0:
            raise ClusterError(f"kubectl apply of the registry Secrets: {result.stderr.strip()}")
    deadline = time.monotonic() + 30
    while cp.kubectl("get", "podmigrations", "-A", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise ClusterError("the PodMigration CRD was not established within 30s")
        time.sleep(0.2)
    workdir = Path(cluster.state_dir) / "podmigrate"
    workdir.mkdir(exist_ok=True)

    def token(sa: str, *audience: str) -> str:
        flags = [f"--audience={a}" for a in audience]
        return cp.kubectl("create", "token", sa, "-n", NAMESPACE, "--duration=24h", *flags).stdout.strip()

    agent_token = workdir / "agent-audience.token"
    agent_token.write_text(token(CONTROLLER, contract.AUDIENCE))
    agent_token.chmod(0o600)

    inst = Installation(
        cluster=cluster,
        workdir=workdir,
        repository=f"{cluster.registry}/podmigrate-checkpoints",
        controller_kubeconfig=token_kubeconfig(cluster, token=token(CONTROLLER), path=workdir / "controller.kubeconfig"),
        agent_kubeconfig=token_kubeconfig(cluster, token=token("podmigrate-agent"), path=workdir / "agent.kubeconfig"),
        agent_token=agent_token,
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


# --- the user's install: podmigrate's image and manifests, as pods --------------------------------------------


def _kubectl_json(cluster: Cluster, *args: str) -> dict:
    result = cluster.controlplane().kubectl(*args, "-o", "json", check=False)
    if result.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def _instance(cluster: Cluster) -> int:
    """The cluster's instance number, from its addresses (127.0.<1+instance>.N)."""
    return int(cluster.nodes[0].address.split(".")[2]) - 1


def _ready(pod: dict) -> bool:
    """Ready as the endpoints and the tests see it: the pod's Ready condition and every container."""
    status = pod.get("status") or {}
    condition = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return condition and all(c.get("ready") for c in status.get("containerStatuses") or [{}])


def _in_back_off(pod: dict) -> bool:
    """A container the kubelet waits to restart (CrashLoopBackOff)."""
    return any(
        (status.get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"
        for status in pod["status"].get("containerStatuses") or []
    )


def build_image(cluster: Cluster) -> str:
    """``make image``: build podmigrate's image and push it to the cluster's registry; its reference by digest."""
    argv = [sys.executable, "-m", "imagebuild", "--registry", cluster.registry]
    if cluster.registry_auth:  # the registry refuses anonymous pushes: cluster-images pushes the cluster's own images
        argv += ["--registry-credentials", str(cluster.registry_credentials_file(registryauth.IMAGES_USER))]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"make image failed: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


@dataclass(frozen=True, kw_only=True)
class PodInstallation:
    """podmigrate installed from its manifests; what tests do to it goes through the API, as an operator's would."""

    cluster: Cluster
    image: str
    overlay_dir: Path
    repository: str

    @property
    def state(self) -> Path:
        return Path(self.cluster.state_dir)

    def _pods(self, component: str) -> list[dict]:
        selector = f"app.kubernetes.io/name=podmigrate,app.kubernetes.io/component={component}"
        return _kubectl_json(self.cluster, "get", "pods", "-n", NAMESPACE, "-l", selector)["items"]

    def leader(self) -> str:
        lease = _kubectl_json(self.cluster, "get", "lease", CONTROLLER, "-n", NAMESPACE)
        return str(lease["spec"].get("holderIdentity") or "")

    def leader_pod(self) -> dict | None:
        """The leading replica's pod (its identity in the Lease is ``<pod name>_<random>``)."""
        leader = self.leader().rpartition("_")[0]
        return next((p for p in self._pods("controller") if p["metadata"]["name"] == leader), None)

    @property
    def health_address(self) -> str:
        pod = self.leader_pod()
        if pod is None:
            raise ClusterError("no podmigrate controller is leading")
        return f"{pod['status']['podIP']}:8080"

    def agent_pod(self, node: str) -> dict | None:
        return next((p for p in self._pods("agent") if p["spec"].get("nodeName") == node), None)

    def logs(self, *, component: str, node: str | None = None) -> str:
        """The container logs of the leader (controller) or of a node's agent, as ``kubectl logs`` shows them."""
        pod = self.leader_pod() if component == "controller" else self.agent_pod(node or "")
        if pod is None:
            return ""
        cp = self.cluster.controlplane()
        name = pod["metadata"]["name"]
        return "".join(cp.kubectl("logs", "-n", NAMESPACE, name, *flag, check=False).stdout for flag in (["--previous"], []))

    def _process_of(self, pod: dict) -> int | None:
        """The PID of a pod's main process on this host, found by the pod's name in its environment.

        The pod's processes were started by this cluster's own node; only a process whose
        environment names this pod (POD_NAME or NODE_NAME plus the command) is ever matched.
        """
        name, node = pod["metadata"]["name"], pod["spec"].get("nodeName", "")
        component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        marker = f"POD_NAME={name}".encode() if component == "controller" else f"NODE_NAME={node}".encode()
        command = b"podmigrate-controller" if component == "controller" else b"podmigrate-agent"
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            # The registry's address is in both commands and names this cluster (another may run beside it).
            if marker in environ and command in cmdline and self.cluster.registry.encode() in cmdline:
                return int(entry.name)
        return None

    def kill_controller(self, *, replica: int = 0) -> None:
        """SIGKILL the leading replica's process (replica 0) or a standby's (1): a crash, no lease released.

        Its kubelet restarts the container; the other replica takes over once the Lease lapses.
        """
        pods = [p for p in self._pods("controller") if p["status"].get("phase") == "Running"]
        leader = self.leader().rpartition("_")[0]
        chosen = [p for p in pods if (p["metadata"]["name"] == leader) == (replica == 0)]
        for pod in chosen[:1]:
            pid = self._process_of(pod)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)

    def delete_controller_pod(self) -> str:
        """Delete the leader's pod outright (no grace): the Deployment creates another; returns the deleted pod's name."""
        pod = self.leader_pod()
        if pod is None:
            raise ClusterError("no podmigrate controller is leading")
        name = pod["metadata"]["name"]
        self.cluster.controlplane().kubectl("delete", "pod", "-n", NAMESPACE, name, "--grace-period=0", "--force", check=False)
        return name

    def start_controller(self, *, replica: int = 0) -> None:
        """Until two replicas run again and one leads.

        A killed replica is restarted by its kubelet, with the kubelet's back-off: after the fault
        matrix's dozen kills it would wait minutes (10 s doubling to 5 min), as it would in any
        cluster. A replica found waiting in back-off is deleted, as an operator would, and the
        Deployment starts a fresh one at once.
        """
        cp = self.cluster.controlplane()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pods = [p for p in self._pods("controller") if not p["metadata"].get("deletionTimestamp")]
            for pod in pods:
                if _in_back_off(pod):
                    cp.kubectl("delete", "pod", "-n", NAMESPACE, pod["metadata"]["name"], "--wait=false", check=False)
            ready = [p for p in pods if _ready(p)]
            if len(ready) >= 2 and any(p["metadata"]["name"] == self.leader().rpartition("_")[0] for p in ready):
                return
            time.sleep(0.5)
        raise ClusterError("the podmigrate controller did not get back to two replicas, one leading, within 120s")

    def kill_agent(self, node: str) -> bool:
        """SIGKILL the agent process of ``node`` (its kubelet restarts the container); False if none ran."""
        pod = self.agent_pod(node)
        pid = None if pod is None else self._process_of(pod)
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        return True

    def wait_agent(self, node: str, *, timeout: float = 90) -> None:
        """Until the node's agent pod is Ready; one waiting in back-off is deleted (the DaemonSet starts a fresh one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pod = self.agent_pod(node)
            if pod is not None and _ready(pod):
                return
            if pod is not None and _in_back_off(pod):
                name = pod["metadata"]["name"]
                self.cluster.controlplane().kubectl("delete", "pod", "-n", NAMESPACE, name, "--wait=false", check=False)
            time.sleep(0.5)
        raise ClusterError(f"the agent on {node} was not Ready within {timeout:.0f}s")

    def rolled_out(self) -> str | None:
        """What is not there yet: two controller pods and one agent pod per node, Ready, running this image."""

        def current(pod: dict) -> bool:
            return (
                not pod["metadata"].get("deletionTimestamp")
                and pod["spec"]["containers"][0]["image"] == self.image
                and _ready(pod)
            )

        controllers = [p for p in self._pods("controller") if current(p)]
        if len(controllers) < 2:
            return f"{len(controllers)} of 2 controller replicas Ready"
        agents = {p["spec"].get("nodeName") for p in self._pods("agent") if current(p)}
        missing = sorted({n.name for n in self.cluster.nodes} - agents)
        return f"no Ready agent on {', '.join(missing)}" if missing else None

    def wait_rolled_out(self, *, timeout: float) -> None:
        """Until :meth:`rolled_out` is satisfied, read from the pods themselves.

        Not ``kubectl rollout status``: it reads the DaemonSet's status, which its controller may
        leave behind for minutes after a conflict ("read version ... is not as new as written
        version", then the work queue's exponential back-off), while every pod is long Ready.
        """
        deadline = time.monotonic() + timeout
        while (missing := self.rolled_out()) is not None:
            if time.monotonic() > deadline:
                pods = self.cluster.controlplane().kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False).stdout
                raise ClusterError(f"podmigrate not rolled out within {timeout:.0f}s: {missing}\n{pods}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Leave the install in place: it goes with the cluster (nodes remove their pods at ``down``)."""


def install_pods(cluster: Cluster, *, otlp_endpoint: str | None = None, timeout: float = 300) -> PodInstallation:
    """``make image``, then ``kubectl apply -k`` of the local overlay; returns once every pod is Ready."""
    image = build_image(cluster)
    state = Path(cluster.state_dir)
    directory = overlay.write(
        state / "podmigrate" / "overlay", image=image, registry=cluster.registry, api_port=int(cluster.server.rpartition(":")[2]),
        instance=_instance(cluster), nodes_dir=state / "nodes", otlp_endpoint=otlp_endpoint,
        webhook_client_ca=cluster.controlplane().webhook_client_ca,
        registry_auth=Path(cluster.registry_auth) if cluster.registry_auth else None,
    )  # fmt: skip
    cp = cluster.controlplane()
    result = cp.kubectl("apply", "-k", str(directory), check=False)
    if result.returncode != 0:
        raise ClusterError(f"kubectl apply -k {directory}: {result.stderr.strip()}")
    installation = PodInstallation(
        cluster=cluster, image=image, overlay_dir=directory, repository=f"{cluster.registry}/podmigrate-checkpoints"
    )
    installation.wait_rolled_out(timeout=timeout)
    return installation
