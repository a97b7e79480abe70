"""The node agent against a real local cluster: real API server (TokenReview, SubjectAccessReview,
RBAC), real kubelet checkpoint API, runc + CRIU, cgroup v1 freezer, and the real registry.

The cluster is the session's shared one (``tests/conftest.py``). The agent under test runs as
its own process (not the one ``podmigrate`` installs) with a ServiceAccount token limited to
exactly what ``manifests/rbac`` grants, on node-1's address at a free port, over HTTPS with a
certificate from the cluster CA, its spans on stdout. Callers are ServiceAccounts too: one that
may update ``podmigrations/status`` cluster-wide, one that may only in this module's namespace
``agent-e2e``, and one that may not at all. Its pods live in ``agent-e2e``; the namespace and
the callers' RBAC are deleted afterwards.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentapi import contract
from localcluster import cluster as lc
from localcluster import nodesetup, registryauth
from ocicheckpoint import names
from tests.conftest import Kube

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
AGENT_SRC = REPO / "node-agent"
NAMESPACE = "podmigrate-system"  # where the callers' ServiceAccounts live, next to the agent's
PODS = "agent-e2e"  # the namespace of this module's pods
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"

CALLERS = f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: migrator, namespace: {NAMESPACE}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: ns-migrator, namespace: {NAMESPACE}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: nobody, namespace: {NAMESPACE}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: agent-e2e-migration-driver}}
rules: [{{apiGroups: [podmigrate.io], resources: [podmigrations/status], verbs: [update]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: agent-e2e-migration-driver}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: agent-e2e-migration-driver}}
subjects: [{{kind: ServiceAccount, name: migrator, namespace: {NAMESPACE}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: agent-e2e-migration-driver, namespace: {PODS}}}
rules: [{{apiGroups: [podmigrate.io], resources: [podmigrations/status], verbs: [update]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: agent-e2e-migration-driver, namespace: {PODS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: agent-e2e-migration-driver}}
subjects: [{{kind: ServiceAccount, name: ns-migrator, namespace: {NAMESPACE}}}]
"""


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http(url: str, *, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None, context: Any = None):
    """(status, headers, body bytes) without proxies (loopback only)."""
    handlers: list[Any] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={**(headers or {})})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.build_opener(*handlers).open(req, timeout=120) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@dataclass
class RunningAgent:
    url: str
    tls: ssl.SSLContext
    tokens: dict[str, str]
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def call(self, method: str, path: str, body: Any = None, *, caller: str | None = "migrator", traceparent: str = ""):
        headers = {"Authorization": f"Bearer {self.tokens[caller]}"} if caller else {}
        if traceparent:
            headers["traceparent"] = traceparent
        status, _, raw = http(self.url + path, method=method, body=body, headers=headers, context=self.tls)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _token(kube: Kube, name: str, *, audience: str | None = None) -> str:
    flags = [f"--audience={audience}"] if audience else []
    return kube.run("create", "token", name, "-n", NAMESPACE, "--duration=2h", *flags).stdout.strip()


@pytest.fixture(scope="module")
def callers(kube: Kube) -> Iterator[None]:
    """The namespace of this module's pods and the callers' ServiceAccounts and RBAC; all deleted afterwards."""
    kube.run("create", "namespace", PODS)
    wait_for(
        lambda: kube.run("get", "sa", "default", "-n", PODS, check=False).returncode == 0,
        timeout=60,
        what=f"the default ServiceAccount of {PODS} (pods are refused without it)",
    )
    kube.run("apply", "-k", str(REPO / "manifests" / "rbac"))  # podmigrate's own: left in place (shared)
    kube.apply(CALLERS)
    yield
    kube.run("delete", "-f", "-", "--ignore-not-found", "--wait=false", input=CALLERS, check=False)
    kube.run("delete", "pods", "--all", "-n", PODS, "--grace-period=0", "--force", "--wait=false", check=False)
    kube.run("delete", "namespace", PODS, "--wait=false", check=False)


@pytest.fixture(scope="module")
def agent(cluster: lc.Cluster, kube: Kube, callers: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    c = cluster
    work = tmp_path_factory.mktemp("agent")
    # Callers present tokens for the agents' audience; "api-audience" is the migrator's ordinary token.
    tokens = {name: _token(kube, name, audience=contract.AUDIENCE) for name in ("migrator", "ns-migrator", "nobody")}
    tokens["api-audience"] = _token(kube, "migrator")

    # The agent's kubeconfig: the cluster from the admin kubeconfig, the agent's own SA token as user.
    admin = json.loads(Path(c.kubeconfig).read_text())
    kubeconfig = work / "agent.kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": admin["clusters"],
                "users": [{"name": "podmigrate-agent", "user": {"token": _token(kube, "podmigrate-agent")}}],
                "contexts": [{"name": "agent", "context": {"cluster": admin["clusters"][0]["name"], "user": "podmigrate-agent"}}],
                "current-context": "agent",
            }
        )
    )
    kubeconfig.chmod(0o600)
    address = _node(c, "node-1").address
    cert, key = c.controlplane().issue_serving_cert(name="agent-e2e-node-1", ips=[address])
    port = _free_port(address)
    stdout, stderr = work / "agent.stdout", work / "agent.stderr"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(AGENT_SRC), str(REPO)]),
        "OTEL_TRACES_EXPORTER": "console",  # spans as JSON on stdout: the test finds its trace there
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    env.pop("KUBECONFIG", None)
    argv = [
        sys.executable,
        "-m",
        "node_agent.main",
        "--node-name",
        "node-1",
        "--kubeconfig",
        str(kubeconfig),
        "--listen",
        f"{address}:{port}",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--plain-http-registry",
        c.registry,
        "--checkpoint-repository",
        f"{c.registry}/{registryauth.CHECKPOINT_REPOSITORY}",
        "--registry-credentials",
        str(c.registry_credentials_file(registryauth.PUSH_USER)),
        "--encryption-key-dir",
        str(nodesetup.encryption_public_key(Path(c.state_dir)).parent),
        "--decryption-key-dir",
        str(nodesetup.decryption_key_dir(Path(_node(c, "node-1").state_dir))),
    ]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO)
    tls = ssl.create_default_context(cafile=c.ca_cert)
    running = RunningAgent(url=f"https://{address}:{port}", tls=tls, tokens=tokens, proc=proc, stdout=stdout, stderr=stderr)
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"agent exited {proc.returncode}:\n{stderr.read_text()}")
            try:
                return http(running.url + "/healthz", context=tls)[0] == 200
            except OSError:
                return False

        wait_for(healthy, timeout=30, what="the agent's /healthz")
        yield running
    finally:
        proc.terminate()  # by PID: only the process this fixture started
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        print(f"--- agent stderr ---\n{stderr.read_text()[-4000:]}", file=sys.stderr)


def _pod_manifest(name: str, *, node: str, image: str, containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": PODS},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": containers or [{"name": "counter", "image": image}],
        },
    }


def _node(cluster: lc.Cluster, name: str) -> lc.NodeInfo:
    return next(n for n in cluster.nodes if n.name == name)


def _pod(kube: Kube, name: str) -> dict[str, Any]:
    return kube.get("pod", name, PODS)


def _running(kube: Kube, name: str, container: str) -> bool:
    pod = _pod(kube, name)
    statuses = {s["name"]: s for s in pod.get("status", {}).get("containerStatuses") or []}
    return pod["status"].get("phase") == "Running" and "running" in (statuses.get(container, {}).get("state") or {})


def log_lines(kube: Kube, pod: str, container: str = "counter") -> list[int]:
    out = kube.logs(pod, PODS, "-c", container)
    return [int(line) for line in out.split() if line.isdigit()]


def last_count(kube: Kube, pod: str, container: str = "counter") -> int:
    lines = log_lines(kube, pod, container)
    return lines[-1] if lines else 0


@pytest.fixture(scope="module")
def pods(cluster: lc.Cluster, kube: Kube, callers: None) -> Iterator[None]:
    counter = cluster.images["counter"]
    halfdone_containers = [
        {"name": "runner", "image": counter},
        {"name": "done", "image": counter, "command": ["sh", "-c", "echo bye"]},
    ]
    for manifest in (
        _pod_manifest("agent-counter", node="node-1", image=counter),
        _pod_manifest("agent-elsewhere", node="node-2", image=counter),
        _pod_manifest("agent-halfdone", node="node-1", image=counter, containers=halfdone_containers),
    ):
        kube.apply(json.dumps(manifest))
    wait_for(lambda: last_count(kube, "agent-counter") >= 2, timeout=60, what="agent-counter counting")
    wait_for(lambda: _running(kube, "agent-elsewhere", "counter"), timeout=60, what="agent-elsewhere running")

    def halfdone() -> bool:
        statuses = {s["name"]: s["state"] for s in _pod(kube, "agent-halfdone")["status"].get("containerStatuses") or []}
        return "running" in statuses.get("runner", {}) and "terminated" in statuses.get("done", {})

    wait_for(halfdone, timeout=60, what="agent-halfdone: runner running, done exited")
    yield
    kube.run("delete", "pod", "agent-counter", "agent-elsewhere", "agent-halfdone", "-n", PODS, "--wait=false", check=False)


def archives_left(cluster: lc.Cluster, node: str = "node-1") -> list[str]:
    """This module's kubelet archives on ``node`` (``checkpoint-<pod>_<namespace>-<container>-<time>.tar``)."""
    directory = Path(_node(cluster, node).state_dir) / "kubelet" / "checkpoints"
    return sorted(p.name for p in directory.iterdir() if f"_{PODS}-" in p.name) if directory.exists() else []


def test_health_and_metrics_need_no_token(agent: RunningAgent) -> None:
    assert http(agent.url + "/healthz", context=agent.tls)[0] == 200
    status, _, body = http(agent.url + "/metrics", context=agent.tls)
    assert status == 200
    assert "process_resident_memory_bytes" in body.decode()


def test_without_a_valid_token_it_is_401(agent: RunningAgent, pods: None) -> None:
    body = {"namespace": PODS, "pod": "agent-counter"}
    assert agent.call("POST", "/v1/thaw", body, caller=None)[0] == 401
    agent.tokens["forged"] = "eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl"
    assert agent.call("POST", "/v1/thaw", body, caller="forged") == (401, {"error": "invalid bearer token"})
    # A real token of a caller that may drive migrations, but minted for the API server: refused all the same.
    assert agent.call("POST", "/v1/thaw", body, caller="api-audience") == (401, {"error": "invalid bearer token"})


def test_a_caller_that_does_not_drive_migrations_is_403(agent: RunningAgent, cluster: lc.Cluster, pods: None) -> None:
    status, body = agent.call("POST", "/v1/thaw", {"namespace": PODS, "pod": "agent-counter"}, caller="nobody")
    assert status == 403
    who = f"system:serviceaccount:{NAMESPACE}:nobody"
    assert body["error"] == f'user "{who}" may not update podmigrations/status (podmigrate.io) in namespace "{PODS}"'
    # Allowed in this namespace only: fine there, refused for another namespace's image (read from its repository).
    assert agent.call("GET", f"/v1/frozen?namespace={PODS}&pod=agent-counter", caller="ns-migrator")[0] == 200
    image = f"{cluster.registry}/podmigrate-checkpoints/kube-system/x@sha256:" + "0" * 64
    status, body = agent.call("DELETE", "/v1/images", {"image": image, "namespace": PODS}, caller="ns-migrator")
    assert status == 403
    assert 'in namespace "kube-system"' in body["error"]


def test_checkpoint_freezes_the_pod_pushes_the_image_and_thaw_resumes_it(
    agent: RunningAgent, cluster: lc.Cluster, kube: Kube, pods: None
) -> None:
    registry = cluster.registry
    request = {
        "namespace": PODS,
        "pod": "agent-counter",
        "image_repository": f"{registry}/podmigrate-checkpoints/{PODS}/agent-counter",
        "tag": "e2e-1",
        "freeze": True,
        "timeout_seconds": 60,
    }
    started = time.monotonic()
    status, body = agent.call("POST", "/v1/checkpoint", request, traceparent=TRACEPARENT)
    wall = time.monotonic() - started
    assert status == 200, body
    assert body["frozen"] is True
    (item,) = body["containers"]
    print(f"\ncheckpoint of agent-counter: wall {wall:.3f}s, response {json.dumps(body)}", file=sys.stderr)
    assert item["name"] == "counter"
    assert re.fullmatch(
        rf"{re.escape(registry)}/podmigrate-checkpoints/{PODS}/agent-counter@sha256:[0-9a-f]{{64}}", item["image"]
    )
    assert item["base_image"].startswith(f"{registry}/podmigrate/counter@sha256:")

    # The image is in the registry, by digest, with CRI-O's checkpoint annotation; the archive is its layer.
    pull = cluster.registry_credentials(registryauth.PULL_USER).for_registry(registry)
    scope = f"repository:{registryauth.CHECKPOINT_REPOSITORY}/{PODS}/agent-counter:pull"
    accept = {
        "Accept": names.MEDIA_TYPE_OCI_MANIFEST,
        **registryauth.bearer_headers(registry=registry, credentials=pull, scope=scope),
    }
    status, _, raw = http(
        f"http://{registry}/v2/podmigrate-checkpoints/{PODS}/agent-counter/manifests/{item['digest']}", headers=accept
    )
    assert status == 200
    manifest = json.loads(raw)
    assert manifest["mediaType"] == names.MEDIA_TYPE_OCI_MANIFEST
    assert manifest["annotations"][names.ANNOTATION_CRIO_CHECKPOINT_NAME] == "counter"
    assert manifest["annotations"][names.ANNOTATION_POD] == "agent-counter"
    (layer,) = manifest["layers"]
    assert layer["size"] == item["archive_bytes"]
    assert layer["mediaType"].endswith("+encrypted"), "process memory never rests in the clear"
    blob = f"http://{registry}/v2/podmigrate-checkpoints/{PODS}/agent-counter/blobs/{layer['digest']}"
    assert http(blob, method="HEAD", headers=accept)[0] == 200

    # The kubelet's archive (process memory) is gone.
    assert archives_left(cluster) == []

    # Frozen, and it stays frozen after the kubelet's checkpoint: the counter does not advance.
    assert agent.call("GET", f"/v1/frozen?namespace={PODS}&pod=agent-counter") == (
        200,
        {"frozen": True, "containers": {"counter": "FROZEN"}},
    )
    frozen_at = last_count(kube, "agent-counter")
    time.sleep(4)
    assert last_count(kube, "agent-counter") == frozen_at

    # Thaw: it continues from where it stopped (same process, same shell variable).
    assert agent.call("POST", "/v1/thaw", {"namespace": PODS, "pod": "agent-counter"}) == (
        200,
        {"frozen": False, "thawed": ["counter"]},
    )
    assert agent.call("GET", f"/v1/frozen?namespace={PODS}&pod=agent-counter")[1]["frozen"] is False
    wait_for(lambda: last_count(kube, "agent-counter") >= frozen_at + 2, timeout=10, what="the counter to advance after thaw")
    lines = log_lines(kube, "agent-counter")
    after = lines[lines.index(frozen_at) :]
    assert after[:3] == [frozen_at, frozen_at + 1, frozen_at + 2]

    # The caller's trace continues in the agent: its spans carry our trace ID.
    def spans() -> list[dict[str, Any]]:
        text = agent.stdout.read_text()
        found = []
        for match in re.finditer(r"^\{.*?^\}", text, re.M | re.S):
            span = json.loads(match.group(0))
            if span["context"]["trace_id"] == f"0x{TRACE_ID}":
                found.append(span)
        return found

    wanted = {"agent.checkpoint", "agent.freeze", "kubelet.checkpoint", "registry.push"}
    names_seen = wait_for(
        lambda: {s["name"] for s in spans()} >= wanted and {s["name"] for s in spans()},
        timeout=10,
        what="the agent's spans in our trace",
    )
    print(f"spans in trace {TRACE_ID}: {sorted(names_seen)}", file=sys.stderr)

    # Cleanup after a migration: the image can be deleted, once.
    assert agent.call("DELETE", "/v1/images", {"image": item["image"]}) == (200, {"deleted": True})
    status, _, _ = http(
        f"http://{registry}/v2/podmigrate-checkpoints/{PODS}/agent-counter/manifests/{item['digest']}", headers=accept
    )
    assert status == 404
    assert agent.call("DELETE", "/v1/images", {"image": item["image"]})[0] == 404

    _, _, metrics = http(agent.url + "/metrics", context=agent.tls)
    assert 'podmigrate_agent_checkpoints_total{outcome="success"} 1' in metrics.decode()


def test_a_kubelet_failure_is_502_and_leaves_the_pod_thawed(
    agent: RunningAgent, cluster: lc.Cluster, kube: Kube, pods: None
) -> None:
    request = {
        "namespace": PODS,
        "pod": "agent-halfdone",
        "containers": ["done"],  # exited: the kubelet answers 500 "container is not running"
        "image_repository": f"{cluster.registry}/podmigrate-checkpoints/{PODS}/agent-halfdone",
        "tag": "e2e-fail",
    }
    status, body = agent.call("POST", "/v1/checkpoint", request)
    assert status == 502, body
    assert body["stage"] == "checkpoint"
    assert body["error"].startswith("kubelet answered 500:")
    assert "container is not running" in body["error"]
    # The request froze "runner" first; the failure thawed it again.
    assert agent.call("GET", f"/v1/frozen?namespace={PODS}&pod=agent-halfdone") == (
        200,
        {"frozen": False, "containers": {"runner": "THAWED"}},
    )
    before = last_count(kube, "agent-halfdone", "runner")
    wait_for(lambda: last_count(kube, "agent-halfdone", "runner") > before, timeout=5, what="runner still counting")
    assert archives_left(cluster) == []


def test_an_unknown_container_is_404_and_the_pod_stays_thawed(
    agent: RunningAgent, cluster: lc.Cluster, kube: Kube, pods: None
) -> None:
    request = {
        "namespace": PODS,
        "pod": "agent-counter",
        "containers": ["nope"],
        "image_repository": f"{cluster.registry}/podmigrate-checkpoints/{PODS}/agent-counter",
        "tag": "e2e-404",
    }
    status, body = agent.call("POST", "/v1/checkpoint", request)
    assert (status, body["stage"]) == (404, "checkpoint")
    assert 'container "nope" not found' in body["error"]
    assert agent.call("GET", f"/v1/frozen?namespace={PODS}&pod=agent-counter")[1]["frozen"] is False


def test_a_pod_on_another_node_is_409(agent: RunningAgent, cluster: lc.Cluster, kube: Kube, pods: None) -> None:
    request = {
        "namespace": PODS,
        "pod": "agent-elsewhere",
        "image_repository": f"{cluster.registry}/podmigrate-checkpoints/{PODS}/agent-elsewhere",
        "tag": "e2e-409",
    }
    status, body = agent.call("POST", "/v1/checkpoint", request)
    assert status == 409
    assert 'runs on node "node-2"' in body["error"]
    assert agent.call("POST", "/v1/checkpoint", {**request, "pod": "agent-missing"})[0] == 404
