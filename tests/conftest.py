"""Shared fixtures: one real local cluster per test session.

The cluster is the real thing (upstream API server, controllers, scheduler, registry, CRIU
nodes), started once per session because it takes ~10 s warm. Set PODMIGRATE_TEST_CLUSTER
to the state directory of a cluster you already started (``make cluster-up``) to reuse it
while iterating; otherwise the session starts its own and tears it down, checking that
nothing is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import cluster as lc


class Kube:
    """kubectl against the test cluster, as a person would use it."""

    def __init__(self, c: lc.Cluster) -> None:
        self.cluster = c
        self.kubeconfig = c.kubeconfig

    def run(
        self, *args: str, check: bool = True, input: str | None = None, kubeconfig: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.cluster.kubectl, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(self, manifest: str) -> None:
        self.run("apply", "-f", "-", input=manifest)

    def get(self, kind: str, name: str = "", namespace: str = "default") -> dict[str, Any]:
        args = ["get", kind] + ([name] if name else []) + ["-n", namespace, "-o", "json"]
        return json.loads(self.run(*args).stdout)

    def logs(self, pod: str, namespace: str = "default", *extra: str) -> str:
        return self.run("logs", pod, "-n", namespace, *extra).stdout

    def token(self, service_account: str, namespace: str = "default") -> str:
        return self.run("create", "token", service_account, "-n", namespace).stdout.strip()


def wait_for(what: str, predicate: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.5) -> Any:
    """Poll until ``predicate()`` is truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (AssertionError, KeyError, IndexError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lc.Cluster]:
    existing = os.environ.get("PODMIGRATE_TEST_CLUSTER")
    if existing:
        yield lc.Cluster.load(Path(existing).resolve())
        return
    state = tmp_path_factory.mktemp("cluster")
    started = time.monotonic()
    c = lc.up(state_dir=state, nodes=2)
    print(f"\nlocal cluster up in {time.monotonic() - started:.1f}s")
    try:
        yield c
    finally:
        lc.down(state_dir=state)
        assert not state.exists(), "cluster down must remove its state directory"


@pytest.fixture(scope="session")
def kube(cluster: lc.Cluster) -> Kube:
    return Kube(cluster)


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (pods stopped with grace 0)."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].rstrip("-")
    kube.run("create", "namespace", name)
    wait_for("default ServiceAccount", lambda: kube.run("get", "sa", "default", "-n", name, check=False).returncode == 0)
    yield name
    kube.run("delete", "pods", "--all", "-n", name, "--grace-period=0", "--force", "--wait=false", check=False)
    kube.run("delete", "namespace", name, "--wait=false", check=False)


# --- podmigrate itself, installed on the local cluster ---------------------------------------

REPO = Path(__file__).resolve().parent.parent
AGENT_PORT = 10260


def token_kubeconfig(cluster: lc.Cluster, *, token: str, path: Path) -> Path:
    """A kubeconfig whose user is a bearer token (a ServiceAccount), like in-cluster credentials."""
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


class Podmigrate:
    """The control service and one agent per node, run as processes with their ServiceAccounts' tokens."""

    def __init__(self, *, cluster: lc.Cluster, kube: Kube, workdir: Path, otlp_endpoint: str) -> None:
        self.cluster = cluster
        self.kube = kube
        self.workdir = workdir
        self.otlp_endpoint = otlp_endpoint
        self.repository = f"{cluster.registry}/podmigrate-checkpoints"
        self.controller: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        kube.run("apply", "-k", str(REPO / "manifests" / "crd"))
        kube.run("apply", "-k", str(REPO / "manifests" / "rbac"))
        wait_for("CRD established", lambda: kube.run("get", "podmigrations", "-A", check=False).returncode == 0)
        self.controller_kubeconfig = token_kubeconfig(
            cluster, token=kube.token("podmigrate-controller", "podmigrate-system"), path=workdir / "controller.kubeconfig"
        )
        self.agent_kubeconfig = token_kubeconfig(
            cluster, token=kube.token("podmigrate-agent", "podmigrate-system"), path=workdir / "agent.kubeconfig"
        )
        cp = cluster.controlplane()
        self.agent_certs = {n.name: cp.issue_serving_cert(name=f"agent-{n.name}", ips=[n.address]) for n in cluster.nodes}

    def _env(self, service: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=self.otlp_endpoint, OTEL_SERVICE_NAME=service, OTEL_BSP_SCHEDULE_DELAY="200")
        return env

    def _spawn(self, name: str, argv: list[str], service: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env(service), cwd=REPO
        )

    def start_agent(self, node: lc.NodeInfo) -> None:
        cert, key = self.agent_certs[node.name]
        self.agents[node.name] = self._spawn(
            f"agent-{node.name}",
            [
                sys.executable, "-m", "node_agent.main", "--node-name", node.name, "--kubeconfig", str(self.agent_kubeconfig),
                "--listen", f"{node.address}:{AGENT_PORT}", "--tls-cert", str(cert), "--tls-key", str(key),
                "--plain-http-registry", self.cluster.registry,
            ],
            "podmigrate-agent",
        )  # fmt: skip

    def start_controller(self) -> None:
        self.controller = self._spawn(
            "controller",
            [
                sys.executable, "-m", "migrator.service", "--kubeconfig", str(self.controller_kubeconfig),
                "--checkpoint-repository", self.repository, "--agent-port", str(AGENT_PORT), "--agent-ca", self.cluster.ca_cert,
                "--health-port", "0",
            ],
            "podmigrate-controller",
        )  # fmt: skip

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes] | None, *, kill: bool = False) -> None:
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill_controller(self) -> None:
        """SIGKILL: no chance to clean up or flush, like a crashed pod."""
        self._stop(self.controller, kill=True)
        self.controller = None

    def stop(self) -> None:
        self._stop(self.controller)
        for proc in self.agents.values():
            self._stop(proc)

    def migration(self, namespace: str, name: str) -> dict[str, Any]:
        return self.kube.get("podmigration", name, namespace)

    def wait_done(self, namespace: str, name: str, *, timeout: float = 180) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            m = self.migration(namespace, name)
            return m if (m.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

        return wait_for(f"PodMigration {name} to finish", done, timeout=timeout)


@pytest.fixture(scope="session")
def otlp() -> Iterator[Any]:
    from tests.otlp import OtlpReceiver

    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def podmigrate(cluster: lc.Cluster, kube: Kube, otlp: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podmigrate]:
    pm = Podmigrate(cluster=cluster, kube=kube, workdir=tmp_path_factory.mktemp("podmigrate"), otlp_endpoint=otlp.endpoint)
    for node in cluster.nodes:
        pm.start_agent(node)
    pm.start_controller()
    time.sleep(1.0)
    try:
        yield pm
    finally:
        pm.stop()
