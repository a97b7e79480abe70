"""The local cluster behaves like a real one: scheduling, controllers, logs, deletion, probes."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from localcluster import cluster as lc
from localcluster import nodesetup
from tests.conftest import REAL_NODE_TAINT, Kube, wait_for

pytestmark = pytest.mark.cluster


def pod_manifest(name: str, namespace: str, image: str, *, node: str | None = None, extra: str = "") -> str:
    node_line = f"  nodeName: {node}\n" if node else ""
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{node_line}"
        f"  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {image}\n{extra}"
    )


def running_pods(kube: Kube, namespace: str, label: str) -> list[dict]:
    """Running, not terminating pods that carry ``label``."""
    pods = kube.get("pods", namespace=namespace)["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
        and label in p["metadata"].get("labels", {})
    ]


def test_every_node_is_ready_with_loopback_address(kube: Kube, cluster: lc.Cluster) -> None:
    nodes = kube.get("nodes")["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == sorted(n.name for n in cluster.nodes)
    for node in nodes:
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        lifecycle = [t for t in node["spec"].get("taints") or [] if t["key"] != REAL_NODE_TAINT]  # the session's own
        assert not lifecycle, "the node-lifecycle controller must not taint a healthy node"
        address = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
        assert ipaddress.ip_address(address).is_loopback
    # A real kubelet creates its Lease with its first heartbeat, shortly after it registered.
    wait_for(
        "every node's Lease",
        lambda: (
            {lease["metadata"]["name"] for lease in kube.get("leases", namespace="kube-node-lease")["items"]}
            >= {n.name for n in cluster.nodes}
        ),
        timeout=30,
    )


def test_every_nodes_checkpoints_directory_is_a_tmpfs_the_node_sees(cluster: lc.Cluster) -> None:
    """Checkpoints (CRIU's images, the archive: the pod's memory) never reach the disk, on either kind of node.

    Seen from the node's own process, as its runtime writes them: a stand-in once unmounted the tmpfs
    ``up`` had mounted for it while clearing its state directory, and its checkpoints went to the disk.
    """
    for node in cluster.nodes:
        directory = str(nodesetup.checkpoints_dir(Path(node.state_dir)).resolve())
        process = f"{node.name}-kubelet" if node.kind == "real" else node.name  # the stand-in is its own kubelet
        pid = int((Path(cluster.state_dir) / "pids" / f"{process}.pid").read_text().strip())
        found = [
            line.split(" - ")[1].split()[:2]
            for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
            if line.split()[4] == directory
        ]
        assert ["tmpfs", nodesetup.CHECKPOINTS_TMPFS_SOURCE] in found, f"{node.name}: {directory} is not its tmpfs"


def test_deployment_is_scheduled_replaced_logged_and_deleted(kube: Kube, cluster: lc.Cluster, namespace: str) -> None:
    image = cluster.images["counter"]
    kube.run("create", "deployment", "web", f"--image={image}", "--replicas=2", "-n", namespace)
    pods = wait_for("2 running replicas", lambda: (p := running_pods(kube, namespace, "app")) and len(p) == 2 and p)
    assert {p["spec"]["nodeName"] for p in pods} <= {n.name for n in cluster.nodes}
    for p in pods:
        ip = ipaddress.ip_address(p["status"]["podIP"])
        assert ip.is_link_local, f"pod IPs must be link-local, got {ip}"
        assert p["status"]["containerStatuses"][0]["restartCount"] == 0

    victim = pods[0]["metadata"]["name"]
    logs = wait_for("counter output", lambda: kube.logs(victim, namespace).split())
    assert logs[0] == "1", "the counter starts from 1 and `kubectl logs` goes through the API server to the node"

    kube.run("delete", "pod", victim, "-n", namespace, "--grace-period=1")
    replaced = wait_for(
        "the ReplicaSet controller's replacement",
        lambda: (
            (p := running_pods(kube, namespace, "app")) and len(p) == 2 and victim not in {x["metadata"]["name"] for x in p} and p
        ),
    )
    owners = {o["kind"] for p in replaced for o in p["metadata"]["ownerReferences"]}
    assert owners == {"ReplicaSet"}

    kube.run("delete", "deployment", "web", "-n", namespace)
    wait_for("pods garbage-collected", lambda: not kube.get("pods", namespace=namespace)["items"], timeout=60)


def test_readiness_probe_waits_for_warm_up(kube: Kube, cluster: lc.Cluster, namespace: str) -> None:
    extra = (
        "    env: [{name: WARMUP_SECONDS, value: '4'}]\n"
        "    readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}\n"
    )
    kube.apply(pod_manifest("warm", namespace, cluster.images["warmup"], extra=extra))
    pod = wait_for(
        "container running", lambda: (p := kube.get("pod", "warm", namespace))["status"].get("phase") == "Running" and p
    )
    started = time.monotonic()
    assert not pod["status"]["containerStatuses"][0]["ready"], "not ready before its warm-up is done"
    wait_for("ready after warm-up", lambda: kube.get("pod", "warm", namespace)["status"]["containerStatuses"][0]["ready"])
    assert time.monotonic() - started >= 1.5
    logs = kube.logs("warm", namespace)
    assert "warm after" in logs


def test_liveness_probe_failure_restarts_the_container(kube: Kube, cluster: lc.Cluster, namespace: str) -> None:
    extra = (
        "    command: [/bin/sh, -c, 'touch /tmp/alive; sleep 3; rm /tmp/alive; sleep 1000']\n"
        "    livenessProbe: {exec: {command: [test, -e, /tmp/alive]}, periodSeconds: 1, failureThreshold: 2}\n"
    )
    kube.apply(pod_manifest("flaky", namespace, cluster.images["counter"], extra=extra))
    pod = wait_for(
        "a restart after the liveness probe fails",
        lambda: (p := kube.get("pod", "flaky", namespace))["status"]["containerStatuses"][0]["restartCount"] >= 1 and p,
        timeout=60,
    )
    status = pod["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] != 0
    events = kube.run("get", "events", "-n", namespace, "-o", "json").stdout
    assert "Liveness probe failed" in events


def test_volumes_env_and_init_containers(kube: Kube, cluster: lc.Cluster, namespace: str) -> None:
    kube.run("create", "configmap", "cfg", "--from-literal=greeting=hello", "-n", namespace)
    kube.run("create", "secret", "generic", "sec", "--from-literal=password=s3cret", "-n", namespace)
    image = cluster.images["counter"]
    manifest = f"""apiVersion: v1
kind: Pod
metadata: {{name: vols, namespace: {namespace}}}
spec:
  restartPolicy: Never
  initContainers:
  - name: init
    image: {image}
    command: [/bin/sh, -c, 'echo from-init > /work/init.txt']
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: main
    image: {image}
    env:
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: cfg, key: greeting}}}}}}
    command: [/bin/sh, -c]
    args:
    - cat /work/init.txt /cfg/greeting /sec/password; echo; echo $POD_NAME $(GREETING);
      test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token-ok
    volumeMounts:
    - {{name: work, mountPath: /work}}
    - {{name: cfg, mountPath: /cfg}}
    - {{name: sec, mountPath: /sec}}
  volumes:
  - {{name: work, emptyDir: {{}}}}
  - {{name: cfg, configMap: {{name: cfg}}}}
  - {{name: sec, secret: {{secretName: sec}}}}
"""
    kube.apply(manifest)
    wait_for("pod Succeeded", lambda: kube.get("pod", "vols", namespace)["status"].get("phase") == "Succeeded", timeout=60)
    out = kube.logs("vols", namespace, "-c", "main")
    assert "from-init" in out and "hello" in out and "s3cret" in out
    assert "vols hello" in out, "fieldRef env and $(VAR) expansion"
    assert "token-ok" in out, "the ServiceAccount token is projected through the TokenRequest API"
    status = kube.get("pod", "vols", namespace)["status"]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_graceful_deletion_honours_the_grace_period(kube: Kube, cluster: lc.Cluster, namespace: str) -> None:
    extra = "    command: [/bin/sh, -c, 'trap \"echo got-TERM; exit 0\" TERM; while true; do sleep 0.2; done']\n"
    kube.apply(pod_manifest("graceful", namespace, cluster.images["counter"], extra=extra))
    wait_for("running", lambda: kube.get("pod", "graceful", namespace)["status"].get("phase") == "Running")
    node = kube.get("pod", "graceful", namespace)["spec"]["nodeName"]
    started = time.monotonic()
    kube.run("delete", "pod", "graceful", "-n", namespace, "--grace-period=10")
    elapsed = time.monotonic() - started
    assert elapsed < 8, "a container that exits on SIGTERM is gone well before the grace period ends"
    assert json.loads(kube.run("get", "pods", "-n", namespace, "-o", "json").stdout)["items"] == []
    assert node in {n.name for n in cluster.nodes}
