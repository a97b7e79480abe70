"""End to end: PodMigrations on the real local cluster, driven by the real control service and agents."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from localcluster import cluster as lc
from tests.conftest import Kube, Podmigrate, wait_for

pytestmark = pytest.mark.cluster


def counter_pod(namespace: str, node: str, image: str, name: str = "counter") -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}}}}}\n"
        f"spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n"
        f"  containers:\n  - name: counter\n    image: {image}\n    resources: {{requests: {{cpu: 50m, memory: 16Mi}}}}\n"
    )


def warmup_pod(namespace: str, node: str, image: str, *, warmup: int = 15, ballast: int = 0, name: str = "app") -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {image}
    env: [{{name: WARMUP_SECONDS, value: "{warmup}"}}, {{name: BALLAST_MB, value: "{ballast}"}}]
    readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
"""


def migration(namespace: str, pod: str, *, name: str | None = None, target: str | None = None, extra: str = "") -> str:
    target_line = f"  targetNode: {target}\n" if target else ""
    name = name or f"move-{pod}"
    return (
        f"apiVersion: podmigrate.io/v1alpha1\nkind: PodMigration\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  podName: {pod}\n{target_line}{extra}"
    )


def http(method: str, url: str, timeout: float = 2.0) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with opener.open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def ready(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    pod = kube.get("pod", name, namespace)
    conditions = pod["status"].get("conditions") or []
    return pod if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None


def test_counter_moves_to_the_other_node_and_continues(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    kube.apply(counter_pod(namespace, source, cluster.images["counter"]))
    wait_for("counter at 3", lambda: len(kube.logs("counter", namespace).split()) >= 3)
    old_uid = kube.get("pod", "counter", namespace)["metadata"]["uid"]
    kube.apply(migration(namespace, "counter"))
    before = int(kube.logs("counter", namespace).split()[-1])
    done = podmigrate.wait_done(namespace, "move-counter")
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["sourceNode"] == source and status["targetNode"] == target
    pod = kube.get("pod", "counter", namespace)
    assert pod["metadata"]["uid"] != old_uid and pod["spec"]["nodeName"] == target
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    numbers = wait_for("restored output", lambda: [int(x) for x in kube.logs("counter", namespace).split()][:1])
    assert numbers[0] > before, f"continued from the checkpoint (>{before}), never reset: {numbers}"
    (container,) = status["containers"]
    assert "@sha256:" in container["image"] and container["archiveBytes"] > 0
    assert {p["name"] for p in status["phases"]} >= {
        "validate",
        "checkpoint",
        "prepare-target",
        "remove-source",
        "create-target",
        "restore",
    }
    assert float(status["downtimeSeconds"]) > 0
    assert len(status["traceID"]) == 32
