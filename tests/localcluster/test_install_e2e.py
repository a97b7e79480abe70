"""The user's install, as installed: podmigrate's image and manifests running as pods on the local cluster.

Every end-to-end test runs against this installation (``tests/conftest.py``); these check the
installation itself: who runs as whom, that each agent's certificate is its node's alone and that
nobody else can get one, and that the shipped DaemonSet really ends a migrated source.
"""

from __future__ import annotations

import base64
import itertools
import json
import socket
import ssl
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agentapi import certificates
from localcluster import cluster as lc
from tests.conftest import Kube, Podmigrate, wait_for
from tests.migrator.workloads import counter_pod, migration

pytestmark = pytest.mark.cluster

NS = "podmigrate-system"


@pytest.fixture(scope="module")
def installed(podmigrate: Podmigrate) -> Any:
    if not hasattr(podmigrate.installation, "agent_pod"):
        pytest.skip("podmigrate runs as host processes here (PODMIGRATE_INSTALL=processes)")
    return podmigrate.installation


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def test_the_controller_and_one_agent_per_node_run_as_pods_under_their_service_accounts(
    kube: Kube, cluster: lc.Cluster, installed: Any
) -> None:
    deployment = kube.get("deployment", "podmigrate-controller", NS)
    assert deployment["status"].get("readyReplicas") == 2 == deployment["spec"]["replicas"]
    daemonset = kube.get("daemonset", "podmigrate-agent", NS)
    assert daemonset["status"]["numberReady"] == daemonset["status"]["desiredNumberScheduled"] == len(cluster.nodes)
    pods = kube.get("pods", namespace=NS)["items"]
    agents = [p for p in pods if p["metadata"]["labels"]["app.kubernetes.io/component"] == "agent"]
    controllers = [p for p in pods if p["metadata"]["labels"]["app.kubernetes.io/component"] == "controller"]
    assert sorted(p["spec"]["nodeName"] for p in agents) == sorted(n.name for n in cluster.nodes), "one agent per node"
    for pod in pods:
        assert pod["status"]["phase"] == "Running" and all(c["ready"] for c in pod["status"]["containerStatuses"])
        assert pod["spec"]["containers"][0]["image"] == installed.image, "the image make image pushed, by digest"
    assert {p["spec"]["serviceAccountName"] for p in agents} == {"podmigrate-agent"}
    assert {p["spec"]["serviceAccountName"] for p in controllers} == {"podmigrate-controller"}
    assert {p["spec"]["nodeName"] for p in controllers}.__len__() == 2, "the replicas on different nodes"
    # The controller's process runs as the image's non-root user; the agent's as root in the host PID namespace.
    for pod in controllers:
        assert _uid_of(installed._process_of(pod)) == 65532
    for pod in agents:
        assert _uid_of(installed._process_of(pod)) == 0
        assert pod["spec"]["hostPID"] is True


def _ca(kube: Kube) -> bytes:
    secret = kube.get("secret", certificates.CA_SECRET, NS)
    return base64.b64decode(secret["data"]["tls.crt"])


def _handshake(*, address: str, server_hostname: str, ca: bytes) -> ssl.SSLObject | Any:
    context = ssl.create_default_context(cadata=ca.decode())
    with (
        socket.create_connection((address, 10260), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname=server_hostname) as tls,
    ):
        return tls.getpeercert()


def test_each_agents_certificate_is_valid_for_its_own_node_only(kube: Kube, cluster: lc.Cluster, installed: Any) -> None:
    ca = _ca(kube)
    addresses = [n.address for n in cluster.nodes]
    for node in cluster.nodes:
        cert = _handshake(address=node.address, server_hostname=node.address, ca=ca)
        assert [v for k, v in cert["subjectAltName"]] == [node.address], "its own InternalIP and nothing else"
        assert dict(x[0] for x in cert["subject"])["commonName"] == certificates.agent_common_name(node.name)
        other = next(a for a in addresses if a != node.address)
        with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
            _handshake(address=node.address, server_hostname=other, ca=ca)  # node A's agent posing as node B's
    # Every request was asked by the agent's pod on that node, and granted saying so.
    csrs = kube.get("csr")["items"]
    ours = [c for c in csrs if c["spec"]["signerName"] == certificates.SIGNER_NAME and c["status"].get("certificate")]
    assert {c["metadata"]["labels"]["podmigrate.io/node"] for c in ours} >= {n.name for n in cluster.nodes}
    for csr in ours:
        assert csr["spec"]["username"] == "system:serviceaccount:podmigrate-system:podmigrate-agent"
        assert csr["spec"]["extra"][certificates.EXTRA_NODE_NAME] == [csr["metadata"]["labels"]["podmigrate.io/node"]]


def _csr(name: str, *, node: str, ip: str) -> str:
    request = certificates.agent_csr(key=certificates.new_key(), node_name=node, node_ip=ip)
    return json.dumps({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": name},
        "spec": {"request": base64.b64encode(request).decode(), "signerName": certificates.SIGNER_NAME,
                 "usages": list(certificates.AGENT_USAGES)},
    })  # fmt: skip


def _denial(kube: Kube, name: str) -> str:
    def denied() -> str | None:
        conditions = (kube.get("csr", name).get("status") or {}).get("conditions") or []
        return next((c["message"] for c in conditions if c["type"] == "Denied"), None)

    try:
        return wait_for(f"CertificateSigningRequest {name} denied", denied, timeout=30)
    finally:
        assert not (kube.get("csr", name).get("status") or {}).get("certificate"), "never signed"
        kube.run("delete", "csr", name, check=False)


def test_nobody_else_gets_an_agent_certificate(kube: Kube, cluster: lc.Cluster, installed: Any, tmp_path: Path) -> None:
    node = cluster.nodes[0]
    # An administrator (not the agent): refused by who asked.
    kube.run("create", "-f", "-", input=_csr("pm-test-admin", node=node.name, ip=node.address))
    assert "only system:serviceaccount:podmigrate-system:podmigrate-agent may ask" in _denial(kube, "pm-test-admin")
    # The agent's ServiceAccount, but a token not bound to a pod on a node (kubectl create token): refused.
    token = kube.run("create", "token", "podmigrate-agent", "-n", NS).stdout.strip()
    result = subprocess.run(
        [cluster.kubectl, f"--server={cluster.server}", f"--certificate-authority={cluster.ca_cert}", f"--token={token}",
         "--kubeconfig=/dev/null", "create", "-f", "-"],
        input=_csr("pm-test-unbound", node=node.name, ip=node.address), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "not bound to a pod on a node" in _denial(kube, "pm-test-unbound")


def _source_pids(pod_uid: str) -> set[int]:
    return {
        int(pid)
        for procs in Path("/sys/fs/cgroup/freezer").glob(f"localcluster-n*/{pod_uid}/*/cgroup.procs")
        for pid in procs.read_text().split()
    }


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


class LogFollower(threading.Thread):
    """``kubectl logs -f --timestamps``: every line the source printed, with when, until its pod is gone."""

    def __init__(self, kube: Kube, namespace: str, pod: str) -> None:
        super().__init__(daemon=True)
        self.lines: list[tuple[datetime, int]] = []
        self.proc = subprocess.Popen(
            [kube.cluster.kubectl, f"--kubeconfig={kube.kubeconfig}", "logs", "-f", "--timestamps", pod, "-n", namespace],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            stamp, _, value = line.strip().partition(" ")
            if value.isdigit():
                self.lines.append((datetime.fromisoformat(stamp.replace("Z", "+00:00")), int(value)))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)
        self.join(timeout=5)


def _copies(kube: Kube, namespace: str) -> int:
    pods = kube.get("pods", namespace=namespace)["items"]
    return sum(1 for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"))


def test_the_shipped_daemonset_ends_the_source_for_good(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, installed: Any, namespace: str
) -> None:
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    kube.apply(counter_pod(namespace, source, cluster.images["counter"]))
    wait_for("counting", lambda: len(kube.logs("counter", namespace).split()) >= 3)
    uid = kube.get("pod", "counter", namespace)["metadata"]["uid"]
    pids = {pid: _start_time(pid) for pid in _source_pids(uid)}
    assert pids, "the source's processes, seen in its cgroup"
    follower = LogFollower(kube, namespace, "counter")
    follower.start()
    most = 0
    try:
        kube.apply(migration(namespace, "counter", target=target))
        deadline = time.monotonic() + 180
        while (podmigrate.migration(namespace, "move-counter").get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            most = max(most, _copies(kube, namespace))
            assert time.monotonic() < deadline, "the migration did not finish"
            time.sleep(0.1)
    finally:
        follower.close()
    status = podmigrate.migration(namespace, "move-counter")["status"]
    assert status["phase"] == "Succeeded", status
    assert most <= 1, "never a second copy running"
    # Every process of the frozen source is gone (not merely thawed): SIGKILLed while frozen by the agent's pod.
    alive = [pid for pid, started in pids.items() if _start_time(pid) == started]
    assert not alive, f"source processes still alive after the migration: {alive}"
    # The source printed nothing once its checkpoint was taken: it never ran past the checkpointed count.
    checkpoint = next(p for p in status["phases"] if p["name"] == "checkpoint")
    taken = datetime.fromisoformat(checkpoint["end"].replace("Z", "+00:00"))
    late = [(t.isoformat(), n) for t, n in follower.lines if t > taken]
    assert not late, f"the source counted on after its checkpoint ({taken.isoformat()}): {late}"
    last = max(n for _, n in follower.lines)
    wait_for("the restored copy counting on", lambda: max(int(x) for x in kube.logs("counter", namespace).split()) >= last + 2)
    numbers = [int(x) for x in kube.logs("counter", namespace).split()]
    assert all(b == a + 1 for a, b in itertools.pairwise(numbers)), f"never back, never twice: {numbers}"
    assert [n for n in numbers if n > last][:2] == [last + 1, last + 2], f"the restored copy goes on from {last}: {numbers}"


def _agents_with_host_pid(kube: Kube, cluster: lc.Cluster, host_pid: bool) -> None:
    """Until every node runs a Ready agent pod with ``hostPID: host_pid`` (read from the pods, not the DaemonSet's status)."""

    def rolled() -> bool:
        pods = [
            p for p in kube.get("pods", namespace=NS, )["items"]
            if p["metadata"]["labels"]["app.kubernetes.io/component"] == "agent" and not p["metadata"].get("deletionTimestamp")
            and bool(p["spec"].get("hostPID")) == host_pid
            and all(c["ready"] for c in p["status"].get("containerStatuses") or [{"ready": False}])
        ]  # fmt: skip
        return {p["spec"]["nodeName"] for p in pods} == {n.name for n in cluster.nodes}

    wait_for(f"every agent with hostPID {host_pid}", rolled, timeout=240)


def test_an_agent_that_cannot_see_the_sources_processes_fails_the_migration_and_keeps_the_source(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, installed: Any, namespace: str
) -> None:
    """The DaemonSet as it shipped before (hostPID: false): the agent would have 'killed' nothing and reported
    success. Now it refuses, the migration fails with the reason, and the source is thawed and counts on."""
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    patch = '{"spec":{"template":{"spec":{"hostPID":%s}}}}'
    kube.run("patch", "daemonset", "podmigrate-agent", "-n", NS, "-p", patch % "false")
    try:
        _agents_with_host_pid(kube, cluster, False)
        kube.apply(counter_pod(namespace, source, cluster.images["counter"]))
        wait_for("counting", lambda: len(kube.logs("counter", namespace).split()) >= 3)
        kube.apply(migration(namespace, "counter", target=target))
        status = podmigrate.wait_done(namespace, "move-counter")["status"]
        assert status["phase"] == "Failed" and status["reason"] == "SourceNotKilled", status
        assert "hostPID: true" in status["message"]
        pod = kube.get("pod", "counter", namespace)
        assert pod["spec"]["nodeName"] == source and pod["status"]["phase"] == "Running"
        before = max(int(x) for x in kube.logs("counter", namespace).split())
        wait_for("the source counting on", lambda: max(int(x) for x in kube.logs("counter", namespace).split()) >= before + 2)
    finally:
        kube.run("patch", "daemonset", "podmigrate-agent", "-n", NS, "-p", patch % "true")
        _agents_with_host_pid(kube, cluster, True)
