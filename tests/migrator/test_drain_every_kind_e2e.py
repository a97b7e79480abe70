"""The headline: draining a node that runs every kind of pod moves them all with their state.

A bare counter pod, a 3-replica Deployment guarded by a PodDisruptionBudget (minAvailable 2), a
2-replica StatefulSet and a DaemonSet, all on node-1 of the 3-node cluster, drained with
``kubectl migrate drain``: every non-DaemonSet pod ends on another node with its counter
continued, owned by its controller, the StatefulSet's pods keep their names, the PDB is never
violated and the controllers' pod counts stay within one of their replicas throughout.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from localcluster import cluster as lc
from tests.conftest import Kube, wait_for
from tests.migrator.test_migration_e2e import ReplicaWatch
from tests.migrator.test_nodedrain_e2e import CLI, ReadyWatcher

pytestmark = pytest.mark.cluster


def _workloads(namespace: str, image: str, node: str) -> str:
    container = f"      containers: [{{name: counter, image: {image}, resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}}}]\n"
    meta = '    metadata: {{labels: {{app: {app}, headline: "yes"}}}}\n'
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: solo, namespace: {namespace}, labels: {{app: solo, headline: "yes"}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers: [{{name: counter, image: {image}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {namespace}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
{meta.format(app="web")}    spec:
      terminationGracePeriodSeconds: 1
{container}---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web, namespace: {namespace}}}
spec:
  minAvailable: 2
  selector: {{matchLabels: {{app: web}}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {namespace}}}
spec:
  replicas: 2
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
{meta.format(app="db")}    spec:
      terminationGracePeriodSeconds: 1
{container}---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
{meta.format(app="agent")}    spec:
      terminationGracePeriodSeconds: 1
      tolerations: [{{operator: Exists}}]
{container}"""


def _pods(kube: Kube, namespace: str) -> list[dict]:
    return [p for p in kube.get("pods", namespace=namespace)["items"] if not p["metadata"].get("deletionTimestamp")]


def test_draining_a_node_with_every_kind_of_pod(
    kube: Kube, cluster: lc.Cluster, podmigrate: object, otlp: object, namespace: str
) -> None:
    if len(cluster.nodes) < 3:
        pytest.fail("the drain headline needs the 3-node session cluster")
    # A stand-in node is drained; its pods can go to the other stand-ins only (the real nodes run another
    # runtime, and are tainted besides), while the DaemonSet, tolerating everything, runs on every node.
    source, others = cluster.nodes[0].name, [n.name for n in cluster.nodes[1:]]
    assert cluster.nodes[0].kind == "standin"
    try:
        # Put everything on node-1: the other nodes are cordoned while the scheduler places the pods.
        for node in others:
            kube.run("cordon", node)
        kube.apply(_workloads(namespace, cluster.images["counter"], source))

        def settled() -> list[dict] | None:
            pods = _pods(kube, namespace)
            running = [p for p in pods if p["status"].get("phase") == "Running" and p["spec"].get("nodeName") == source]
            return running if len(running) == 1 + 3 + 2 + 1 else None

        wait_for("7 pods running on node-1", settled, timeout=120)
        for node in others:
            kube.run("uncordon", node)
        wait_for(
            "the DaemonSet on every node",
            lambda: len([p for p in _pods(kube, namespace) if p["metadata"]["name"].startswith("agent-")]) == len(cluster.nodes),
        )
        before = {p["metadata"]["name"]: p for p in _pods(kube, namespace) if p["spec"].get("nodeName") == source}
        counted = {name: int(kube.logs(name, namespace).split()[-1]) for name in before if not name.startswith("agent-")}
        ds_pod = next(name for name in before if name.startswith("agent-"))

        ready = ReadyWatcher(kube, namespace, "app=web")
        ready.start()
        wait_for("the watcher to have seen the 3 web pods", lambda: len(ready.history) >= 3 and ready.history[-1][1] == 3)
        web_count, db_count = ReplicaWatch(kube, namespace, "app=web"), ReplicaWatch(kube, namespace, "app=db")
        web_count.start()
        db_count.start()
        started = time.monotonic()
        result = subprocess.run(
            [CLI, "--kubeconfig", cluster.kubeconfig, "drain", source, "--pod-selector", "headline=yes", "--timeout", "8m", "--wait"],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        for watcher in (web_count, db_count):
            watcher.done.set()
            watcher.join(timeout=5)
        time.sleep(1)
        ready.stop()
        assert result.returncode == 0, result.stdout + result.stderr

        name = result.stdout.splitlines()[0].removeprefix("nodedrain.podmigrate.io/").removesuffix(" created")
        drain = kube.get("nodedrain", name)
        assert drain["status"]["phase"] == "Succeeded"
        assert drain["status"]["counts"] == {"total": 7, "migrated": 6, "evicted": 0, "skipped": 1, "failed": 0}
        outcomes = {p["name"]: (p["action"], p["outcome"]) for p in drain["status"]["pods"]}
        assert outcomes[ds_pod] == ("skip", "skipped") and outcomes["solo"] == ("migrate", "migrated")
        assert json.loads(kube.run("get", "node", source, "-o", "json").stdout)["spec"].get("unschedulable") is True

        assert ready.lowest_since(started) >= 2, f"PDB minAvailable 2 violated: {ready.history}"
        assert min(web_count.counts) >= 2 and max(web_count.counts) <= 4, web_count.counts
        assert min(db_count.counts) >= 1 and max(db_count.counts) <= 3, db_count.counts

        after = _pods(kube, namespace)
        assert kube.get("pod", ds_pod, namespace)["spec"]["nodeName"] == source, "the DaemonSet pod is untouched"
        moved = [p for p in after if not p["metadata"]["name"].startswith("agent-")]
        assert len(moved) == 6 and all(p["spec"]["nodeName"] in others for p in moved), [
            (p["metadata"]["name"], p["spec"]["nodeName"]) for p in moved
        ]
        assert sorted(p["metadata"]["name"] for p in moved if p["metadata"]["name"].startswith("db-")) == ["db-0", "db-1"]
        for pod in moved:
            owners = [o["kind"] for o in pod["metadata"].get("ownerReferences") or [] if o.get("controller")]
            expected = {"solo": []}.get(
                pod["metadata"]["name"], ["StatefulSet"] if pod["metadata"]["name"].startswith("db-") else ["ReplicaSet"]
            )
            assert owners == expected, (pod["metadata"]["name"], owners)
            assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
        for old_name, old_value in counted.items():
            migration = next(p for p in drain["status"]["pods"] if p["name"] == old_name)["migration"]
            new_name = kube.get("podmigration", migration, namespace)["status"]["newPod"]["name"]
            first = wait_for(f"{new_name} counting", lambda n=new_name: [int(x) for x in kube.logs(n, namespace).split()][:1])[0]
            assert first > old_value, f"{old_name} -> {new_name} restarted from {first}, was at {old_value}"

        # One trace: the drain's root span holds the six migrations, each with its phases.
        trace_id = drain["status"]["traceID"]

        def whole_trace() -> list | None:
            spans = otlp.trace(trace_id)  # type: ignore[attr-defined]
            names = [sp.name for sp in spans]
            return spans if names.count("migration") == 6 and "nodedrain" in names else None

        spans = wait_for("the drain's trace at the OTLP receiver", whole_trace, timeout=30)
        (root,) = [sp for sp in spans if not sp.parent_span_id]
        assert root.name == "nodedrain"
        assert all(sp.parent_span_id == root.span_id for sp in spans if sp.name == "migration")
        assert "kubelet.checkpoint" in {sp.name for sp in spans}, "the agents' spans are in the drain's trace too"
    finally:
        kube.run("delete", "nodedrains", "--all", "--wait=false", check=False)
        for node in cluster.nodes:
            kube.run("uncordon", node.name, check=False)
