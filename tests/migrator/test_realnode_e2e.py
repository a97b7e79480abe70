"""End to end on real nodes: podmigrate between two upstream kubelets on containerd 2.3.

The same control service and agents as every other end-to-end test, on the session cluster's
real nodes (``real-1``, ``real-2``): the agent checkpoints through the real kubelet's API (the
container stopped at the end of its dump by the node's CRIU hook, ``node_agent.dumphook``),
builds the image from containerd's archive, and containerd restores it on the other node.
A failed restore is injected through the node's CRIU configuration
(``localcluster.realnode.inject_fault``), the real-node counterpart of the stand-ins' annotations.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import cluster as lc
from localcluster import realnode
from tests.conftest import REAL_NODE_TAINT, Kube, Podmigrate, wait_for
from tests.migrator.test_migration_e2e import assert_stages_in_time_order
from tests.migrator.workloads import (
    counter_pod,
    deployment,
    http,
    migrate_while_writing,
    migration,
    pod_ip,
    ready,
    warmup_pod,
)

pytestmark = pytest.mark.cluster

CLI = str(Path(sys.executable).parent / "kubectl-migrate")


def numbers(kube: Kube, namespace: str, pod: str) -> list[int]:
    return [int(x) for x in kube.logs(pod, namespace).split() if x.isdigit()]


@pytest.fixture
def real(cluster: lc.Cluster) -> tuple[str, str]:
    names = [n.name for n in cluster.nodes if n.kind == "real"]
    assert len(names) >= 2, "the session cluster has two real nodes"
    return names[0], names[1]


def test_the_real_nodes_run_containerd(kube: Kube, real: tuple[str, str]) -> None:
    wide = kube.run("get", "nodes", "-o", "wide").stdout
    print("\n$ kubectl get nodes -o wide\n" + wide)
    for name in real:
        line = next(line for line in wide.splitlines() if line.startswith(name + " "))
        assert " Ready " in line and "containerd://2.3." in line, line


def test_counter_moves_between_real_nodes_and_continues(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, real: tuple[str, str]
) -> None:
    source, target = real
    kube.apply(counter_pod(namespace, source, cluster.images["counter"]))
    wait_for("counter at 3", lambda: len(numbers(kube, namespace, "counter")) >= 3)
    old_uid = kube.get("pod", "counter", namespace)["metadata"]["uid"]
    started = time.monotonic()
    result = subprocess.run(
        [CLI, f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, "pod", "counter", "--to", target, "--wait", "--timeout", "2m"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    took = time.monotonic() - started
    print(f"\n$ kubectl migrate pod counter --to {target} --wait   ({took:.1f}s)\n{result.stdout}{result.stderr}")
    assert result.returncode == 0, result.stderr
    status = kube.get("podmigration", json.loads(kube.run("get", "pmig", "-n", namespace, "-o", "json").stdout)["items"][0]
                      ["metadata"]["name"], namespace)["status"]  # fmt: skip
    assert status["phase"] == "Succeeded" and (status["sourceNode"], status["targetNode"]) == (source, target), status
    print(f"real nodes: downtime {status['downtimeSeconds']}s")
    pod = kube.get("pod", "counter", namespace)
    assert pod["metadata"]["uid"] != old_uid and pod["spec"]["nodeName"] == target
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")
    seen = wait_for("the restored counter counting on", lambda: (n := numbers(kube, namespace, "counter")) and len(n) > 3 and n)
    # containerd carries the checkpointed log into the new container; then the process goes on from
    # its memory. One unbroken sequence: nothing repeated (the source never ran past its checkpoint)
    # and nothing restarted from 1.
    assert seen == list(range(seen[0], seen[0] + len(seen))), f"one unbroken count across the move: {seen}"
    (container,) = status["containers"]
    assert container["image"].startswith(f"{cluster.registry}/") and "@sha256:" in container["image"]
    # The stages from the real kubelet's Events (whole seconds, a measured pull) as from the stand-in's.
    assert_stages_in_time_order(status, freeze_first=False)


def test_warm_app_moves_between_real_nodes_with_no_lost_writes(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, real: tuple[str, str]
) -> None:
    source, target = real
    kube.apply(warmup_pod(namespace, source, cluster.images["warmup"], warmup=5))
    pod = wait_for("app warmed up and Ready", lambda: ready(kube, namespace, "app"), timeout=90)
    before = http("GET", f"http://{pod['status']['podIP']}:8080/state")
    status, writer = migrate_while_writing(kube, podmigrate, namespace, manifest=migration(namespace, "app", target=target))
    moved = kube.get("pod", "app", namespace)
    assert moved["spec"]["nodeName"] == target and moved["status"]["containerStatuses"][0]["restartCount"] == 0
    after = http("GET", f"http://{pod_ip(kube, namespace, 'app')}:8080/state")
    assert after["boot_id"] == before["boot_id"] and after["warm"], "the same warmed-up process, not a cold start"
    print(f"real nodes, warm app: downtime {status['downtimeSeconds']}s, {len(writer.acked)} writes acknowledged, none lost")


@pytest.fixture
def failing_restores(cluster: lc.Cluster, real: tuple[str, str]) -> Iterator[realnode.RealNode]:
    node = next(n for n in cluster.nodes if n.name == real[1])
    spec = realnode.RealNode.load(Path(node.state_dir) / realnode.SPEC_FILE)
    realnode.inject_fault(spec, "fail-restore", "CRIU images from the future (injected)")
    yield spec
    realnode.inject_fault(spec, "fail-restore", None)


def test_a_failed_restore_on_a_real_node_restores_the_pod_on_its_source(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, real: tuple[str, str], failing_restores: Any
) -> None:
    source, target = real
    kube.apply(counter_pod(namespace, source, cluster.images["counter"]))
    wait_for("counting", lambda: len(numbers(kube, namespace, "counter")) >= 3)
    kube.apply(migration(namespace, "counter", target=target, extra="  timeoutSeconds: 120\n"))
    status = podmigrate.wait_done(namespace, "move-counter")["status"]
    assert status["phase"] == "Failed" and status["reason"] == "RestoreFailed", status
    assert f"restored on its source node {source}" in status["message"], status["message"]
    pod = wait_for("running again on the source", lambda: ready(kube, namespace, "counter"))
    assert pod["spec"]["nodeName"] == source
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    seen = wait_for("counting on", lambda: (n := numbers(kube, namespace, "counter")) and len(n) > 3 and n)
    assert seen == list(range(seen[0], seen[0] + len(seen))), f"restored from the checkpoint, not restarted: {seen}"


def test_a_pod_is_not_moved_to_a_node_of_another_runtime(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, real: tuple[str, str]
) -> None:
    standin = next(n.name for n in cluster.nodes if n.kind == "standin")
    kube.apply(counter_pod(namespace, real[0], cluster.images["counter"]))
    wait_for("counting", lambda: len(numbers(kube, namespace, "counter")) >= 2)
    uid = kube.get("pod", "counter", namespace)["metadata"]["uid"]
    kube.apply(migration(namespace, "counter", target=standin))
    status = podmigrate.wait_done(namespace, "move-counter")["status"]
    assert status["phase"] == "Failed" and status["reason"] == "NodeDoesNotFit", status
    assert "runs cri-o, the pod's node runs containerd" in status["message"]
    assert kube.get("pod", "counter", namespace)["metadata"]["uid"] == uid, "refused before anything was touched"


def _on_nodes(nodes: tuple[str, str]) -> str:
    """The pod-spec lines that keep a Deployment's pods on the two real nodes (tolerating their taint)."""
    return (
        f"      tolerations: [{{key: {REAL_NODE_TAINT}, operator: Exists, effect: NoSchedule}}]\n"
        "      affinity:\n        nodeAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n"
        f"            nodeSelectorTerms: [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, "
        f"values: [{nodes[0]}, {nodes[1]}]}}]}}]\n"
    )


def test_draining_a_real_node_moves_its_pods_to_the_other_real_node(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, real: tuple[str, str]
) -> None:
    source, target = real
    kube.apply(counter_pod(namespace, source, cluster.images["counter"], name="drain-counter"))
    kube.run("cordon", target)  # so that the Deployment's pods land on the node to drain
    try:
        kube.apply(deployment(namespace, name="drain-counters", image=cluster.images["counter"], container="counter",
                              replicas=2, pod_spec=_on_nodes(real),
                              container_spec="        resources: {requests: {cpu: 50m, memory: 16Mi}}\n"))  # fmt: skip
        wait_for(
            "2 replicas Running on the source",
            lambda: (
                (pods := kube.get("pods", namespace=namespace)["items"])
                and sum(1 for p in pods if p["spec"].get("nodeName") == source and p["status"].get("phase") == "Running") == 3
            ),
            timeout=90,
        )
    finally:
        kube.run("uncordon", target)
    wait_for("everyone counting", lambda: all(len(numbers(kube, namespace, p["metadata"]["name"])) >= 2
                                            for p in kube.get("pods", namespace=namespace)["items"]))  # fmt: skip
    before = {p["metadata"]["name"]: numbers(kube, namespace, p["metadata"]["name"])[-1]
              for p in kube.get("pods", namespace=namespace)["items"]}  # fmt: skip
    result = subprocess.run(
        [CLI, f"--kubeconfig={cluster.kubeconfig}", "drain", source, "--wait", "--timeout", "4m", "--pod-selector", "app in (drain-counter,drain-counters)"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    print(f"\n$ kubectl migrate drain {source} --wait\n{result.stdout}{result.stderr}")
    try:
        assert result.returncode == 0, result.stderr
        pods = kube.get("pods", namespace=namespace)["items"]
        assert len(pods) == 3 and all(p["spec"]["nodeName"] == target for p in pods), [
            (p["metadata"]["name"], p["spec"].get("nodeName")) for p in pods
        ]
        assert all(p["status"]["containerStatuses"][0]["restartCount"] == 0 for p in pods)
        moved = wait_for("all counting on", lambda: {p["metadata"]["name"]: n for p in pods
                                                      if (n := numbers(kube, namespace, p["metadata"]["name"]))})  # fmt: skip
        assert moved["drain-counter"][-1] > before["drain-counter"], "the bare pod continued its count"
        for name, seen in moved.items():
            assert seen == list(range(seen[0], seen[0] + len(seen))), f"{name}: restored, not restarted: {seen}"
    finally:
        kube.run("delete", "nodedrain", "--all", check=False)
        wait_for(f"{source} uncordoned", lambda: not kube.get("node", source)["spec"].get("unschedulable"), timeout=60)
