"""End to end: checkpoints as objects of their own (PodCheckpoint, PodRestore, warm start, CheckpointSchedule).

On the local cluster with podmigrate installed as users install it. What each test shows is one
use the checkpoint/restore community names: a forensic or periodic checkpoint of a pod that runs
on, and a clone from it; a pod suspended to the registry and resumed elsewhere; a Deployment that
scales up warm; checkpoints on a schedule, with retention that keeps what is pinned.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from localcluster import cluster as lc
from localcluster import nodesetup, registryauth
from migrator import api
from migrator.units import status_time as parse_time
from tests.conftest import Kube, Podmigrate, wait_for
from tests.migrator.workloads import checkpoint_manifests, counter_pod, deployment, http, ready, warmup_pod

pytestmark = pytest.mark.cluster


def _standins(cluster: lc.Cluster) -> list[str]:
    return [n.name for n in cluster.nodes if n.kind == "standin"]


def podcheckpoint(namespace: str, name: str, pod: str, *, mode: str = "Running", pinned: bool = False) -> str:
    return (
        f"apiVersion: {api.API_VERSION}\nkind: PodCheckpoint\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec: {{podName: {pod}, mode: {mode}, pinned: {str(pinned).lower()}}}\n"
    )


def podrestore(namespace: str, name: str, checkpoint: str, *, pod: str = "", node: str = "") -> str:
    extra = (f", podName: {pod}" if pod else "") + (f", targetNode: {node}" if node else "")
    return (
        f"apiVersion: {api.API_VERSION}\nkind: PodRestore\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec: {{checkpointName: {checkpoint}{extra}}}\n"
    )


def wait_phase(kube: Kube, kind: str, name: str, namespace: str, phases: tuple[str, ...], *, timeout: float = 180) -> Any:
    def reached() -> dict[str, Any] | None:
        obj = kube.get(kind, name, namespace)
        return obj if (obj.get("status") or {}).get("phase") in phases else None

    return wait_for(f"{kind} {name} to reach {'/'.join(phases)}", reached, timeout=timeout)


def cli(cluster: lc.Cluster, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    binary = str(Path(sys.executable).parent / "kubectl-migrate")
    return subprocess.run(
        [binary, f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, *args], capture_output=True, text=True, timeout=120
    )


class Poller(threading.Thread):
    """Reads the app's /state every 50 ms while a checkpoint runs: the pod must answer throughout, the same process."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.boot_ids: set[str] = set()
        self.answers = 0
        self.longest_gap = 0.0

    def run(self) -> None:
        last = time.monotonic()
        while not self.stop.is_set():
            try:
                self.boot_ids.add(http("GET", self.url, timeout=5.0)["boot_id"])
                self.answers += 1
                now = time.monotonic()
                self.longest_gap = max(self.longest_gap, now - last)
                last = now
            except OSError:
                pass
            time.sleep(0.05)


def test_a_running_pod_is_checkpointed_without_stopping_and_its_clone_has_its_memory(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, tmp_path: Path
) -> None:
    source, other = _standins(cluster)[:2]
    kube.apply(warmup_pod(namespace, source, cluster.images["warmup"], warmup=2))
    pod = wait_for("app Ready", lambda: ready(kube, namespace, "app"), timeout=60)
    ip = pod["status"]["podIP"]
    for i in range(5):
        http("POST", f"http://{ip}:8080/write?key=k{i}&value=v{i}")
    before = http("GET", f"http://{ip}:8080/state")
    poller = Poller(f"http://{ip}:8080/state")
    poller.start()
    try:
        kube.apply(podcheckpoint(namespace, "snap", "app"))
        checkpoint = wait_phase(kube, "podcheckpoint", "snap", namespace, ("Available", "Failed"))
    finally:
        poller.stop.set()
        poller.join()
    status = checkpoint["status"]
    assert status["phase"] == "Available", status
    assert status["sourceNode"] == source and not status.get("suspended")
    (container,) = status["containers"]
    assert "@sha256:" in container["image"] and container["imageBytes"] > 0 and status["totalBytes"] > 0
    assert poller.boot_ids == {before["boot_id"]} and poller.answers > 0, "the same process answered throughout"
    after_pod = kube.get("pod", "app", namespace)
    assert after_pod["metadata"]["uid"] == pod["metadata"]["uid"]
    assert after_pod["status"]["containerStatuses"][0]["restartCount"] == 0
    http("POST", f"http://{ip}:8080/write?key=later&value=1")  # after the checkpoint: not in the clone

    # What CRIU's images say, read from the checkpoint: the process tree of the warm-up app (a Python server).
    inspected = cli(cluster, namespace, "inspect", "snap")
    assert inspected.returncode == 0, inspected.stderr
    assert "python" in inspected.stdout.lower(), inspected.stdout
    assert container["image"] in inspected.stdout
    # The same, read from the encrypted image itself by whoever holds the nodes' key and pull credentials.
    node_key = nodesetup.decryption_key_dir(Path(cluster.nodes[0].state_dir)) / "node.key"
    pull_logins = tmp_path / "docker-config.json"
    pull_logins.write_text(cluster.registry_credentials(registryauth.PULL_USER).to_json())
    offline = cli(cluster, namespace, "inspect", "snap", "--from-registry", "--decryption-key", str(node_key),
                  "--registry-config", str(pull_logins))  # fmt: skip
    print(offline.stdout)  # shown with -s: the page as read from the registry
    assert offline.returncode == 0, offline.stderr
    assert "python" in offline.stdout.lower() and "read from the registry image, decrypted locally" in offline.stdout
    keyless = cli(cluster, namespace, "inspect", "snap", "--from-registry", "--registry-config", str(pull_logins))
    assert keyless.returncode == 1 and keyless.stdout == "", keyless
    assert keyless.stderr.endswith(
        "the image is encrypted: give --decryption-key with the nodes' private key (docs/encryption.md)\n"
    ), keyless.stderr
    listed = cli(cluster, namespace, "checkpoints")
    assert listed.returncode == 0 and "snap" in listed.stdout and "Available" in listed.stdout, listed

    kube.apply(podrestore(namespace, "clone", "snap", pod="app-clone", node=other))
    restored = wait_phase(kube, "podrestore", "clone", namespace, ("Succeeded", "Failed"))["status"]
    assert restored["phase"] == "Succeeded", restored
    clone = wait_for("the clone Ready", lambda: ready(kube, namespace, "app-clone"))
    assert clone["spec"]["nodeName"] == other
    annotations = clone["metadata"]["annotations"]
    assert annotations[api.ANNOTATION_CHECKPOINT] == f"{namespace}/snap"
    state = http("GET", f"http://{clone['status']['podIP']}:8080/state")
    assert state["boot_id"] == before["boot_id"] and state["warm"], "the checkpointed process, not a new one"
    assert http("GET", f"http://{clone['status']['podIP']}:8080/dump") == {f"k{i}": f"v{i}" for i in range(5)}
    # Both run: the original serves on, with what it was written after the checkpoint.
    assert http("GET", f"http://{ip}:8080/read?key=later")["value"] == "1"

    # A second restore under the original's name is refused: that pod runs.
    kube.apply(podrestore(namespace, "again", "snap"))
    refused = wait_phase(kube, "podrestore", "again", namespace, ("Succeeded", "Failed"))["status"]
    assert refused["phase"] == "Failed" and refused["reason"] == "PodExists", refused

    # Counted where operators look: the control service's metrics.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{podmigrate.installation.health_address}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert 'podmigrate_podcheckpoints_total{mode="Running",outcome="Available",reason="Checkpointed"}' in metrics
    assert 'podmigrate_podrestores_total{outcome="Succeeded",reason="Restored"}' in metrics

    # Deleting the checkpoint deletes its images from the registry.
    assert checkpoint_manifests(cluster, podmigrate, namespace, "app"), "the image is there: the check sees it"
    kube.run("delete", "podcheckpoint", "snap", "-n", namespace, "--wait=true", "--timeout=60s")
    assert checkpoint_manifests(cluster, podmigrate, namespace, "app") == []


def test_a_suspended_pod_resumes_on_another_node_with_its_state_and_identity(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    source, other = _standins(cluster)[:2]
    kube.apply(warmup_pod(namespace, source, cluster.images["warmup"], warmup=2))
    pod = wait_for("app Ready", lambda: ready(kube, namespace, "app"), timeout=60)
    kube.run("label", "pod", "app", "-n", namespace, "team=blue")
    ip = pod["status"]["podIP"]
    for i in range(5):
        http("POST", f"http://{ip}:8080/write?key=k{i}&value=v{i}")
    before = http("GET", f"http://{ip}:8080/state")

    suspended = cli(cluster, namespace, "checkpoint", "app", "--suspend", "--name", "nap", "--wait")
    assert suspended.returncode == 0, suspended.stdout + suspended.stderr
    status = kube.get("podcheckpoint", "nap", namespace)["status"]
    assert status["phase"] == "Available" and status["suspended"] is True, status
    assert kube.run("get", "pod", "app", "-n", namespace, check=False).returncode != 0, "the pod is gone while suspended"

    resumed = cli(cluster, namespace, "restore", "nap", "--to", other, "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    back = wait_for("app Ready again", lambda: ready(kube, namespace, "app"))
    assert back["spec"]["nodeName"] == other and back["metadata"]["labels"].get("team") == "blue"
    state = http("GET", f"http://{back['status']['podIP']}:8080/state")
    assert state["boot_id"] == before["boot_id"] and state["warm"] and state["writes"] == before["writes"]
    assert http("GET", f"http://{back['status']['podIP']}:8080/dump") == {f"k{i}": f"v{i}" for i in range(5)}
    assert kube.get("podcheckpoint", "nap", namespace)["status"]["suspended"] is False


def _ready_after(pod: dict[str, Any]) -> float:
    created = parse_time(pod["metadata"]["creationTimestamp"])
    condition = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    return (parse_time(condition["lastTransitionTime"]) - created).total_seconds()


def test_a_deployment_annotated_with_a_checkpoint_scales_up_warm(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    warmup = 12
    kube.apply(deployment(namespace, name="web", image=cluster.images["warmup"], container="app", container_spec=(
        f'        env: [{{name: WARMUP_SECONDS, value: "{warmup}"}}]\n'
        "        resources: {requests: {cpu: 10m, memory: 32Mi}}\n"
        "        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}\n"
    )))  # fmt: skip

    def pods() -> list[dict[str, Any]]:
        listed = kube.run("get", "pods", "-n", namespace, "-l", "app=web", "-o", "json").stdout
        return [p for p in json.loads(listed)["items"] if not p["metadata"].get("deletionTimestamp")]

    def all_ready(n: int) -> list[dict[str, Any]] | None:
        found = pods()
        ok = [
            p for p in found if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
        ]
        return ok if len(ok) == n == len(found) else None

    (first,) = wait_for("the first pod warm", lambda: all_ready(1), timeout=90)
    cold_seconds = _ready_after(first)
    assert cold_seconds >= warmup - 1, f"a cold pod pays its warm-up: {cold_seconds:.1f}s"
    warm_state = http("GET", f"http://{first['status']['podIP']}:8080/state")
    kube.apply(podcheckpoint(namespace, "web-warm", first["metadata"]["name"]))
    assert wait_phase(kube, "podcheckpoint", "web-warm", namespace, ("Available", "Failed"))["status"]["phase"] == "Available"
    kube.run("annotate", "deployment", "web", "-n", namespace, f"{api.ANNOTATION_WARM_START}=web-warm")

    def annotated() -> bool:
        sets = json.loads(kube.run("get", "replicasets", "-n", namespace, "-l", "app=web", "-o", "json").stdout)["items"]
        return any((rs["metadata"].get("annotations") or {}).get(api.ANNOTATION_WARM_START) == "web-warm" for rs in sets)

    wait_for("the Deployment's ReplicaSet carries the annotation", annotated, timeout=30)
    kube.run("scale", "deployment", "web", "-n", namespace, "--replicas=3")
    everyone = wait_for("3 pods Ready", lambda: all_ready(3), timeout=120)
    new = [p for p in everyone if p["metadata"]["uid"] != first["metadata"]["uid"]]
    assert len(new) == 2
    for pod in new:
        annotations = pod["metadata"].get("annotations") or {}
        assert annotations.get(api.ANNOTATION_CHECKPOINT) == f"{namespace}/web-warm", annotations
        state = http("GET", f"http://{pod['status']['podIP']}:8080/state")
        assert state["warm"] and state["boot_id"] == warm_state["boot_id"], "restored from the warm process"
        seconds = _ready_after(pod)
        assert seconds < cold_seconds / 2, f"{pod['metadata']['name']} Ready after {seconds:.1f}s, cold took {cold_seconds:.1f}s"
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


def test_a_schedule_checkpoints_on_time_and_retention_keeps_the_pinned_one(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    kube.apply(counter_pod(namespace, _standins(cluster)[0], cluster.images["counter"]))
    wait_for("counter running", lambda: len(kube.logs("counter", namespace).split()) >= 1)
    kube.apply(
        f"apiVersion: {api.API_VERSION}\nkind: CheckpointSchedule\nmetadata: {{name: every10, namespace: {namespace}}}\n"
        "spec:\n  schedule: '*/10 * * * * *'\n  podName: counter\n  retention: {maxCountPerPod: 2}\n"
    )

    def checkpoints() -> list[dict[str, Any]]:
        listed = kube.run("get", "podcheckpoints", "-n", namespace, "-l", f"{api.LABEL_SCHEDULE}=every10", "-o", "json")
        return json.loads(listed.stdout)["items"]

    def first_available() -> dict[str, Any] | None:
        done = [c for c in checkpoints() if (c.get("status") or {}).get("phase") == "Available"]
        return min(done, key=lambda c: c["metadata"]["creationTimestamp"]) if done else None

    pinned = wait_for("a first scheduled checkpoint", first_available, timeout=60)
    kube.run(
        "patch", "podcheckpoint", pinned["metadata"]["name"], "-n", namespace, "--type=merge", "-p", '{"spec":{"pinned":true}}'
    )
    seen: dict[str, dict[str, Any]] = {}

    def retention_deleted_some() -> bool:
        for c in checkpoints():
            seen[c["metadata"]["name"]] = c
        current = {c["metadata"]["name"] for c in checkpoints()}
        return len(seen) >= 5 and len(current - {pinned["metadata"]["name"]}) <= 2 < len(seen) - 1

    wait_for("five scheduled checkpoints, the oldest deleted", retention_deleted_some, timeout=120, interval=1.0)
    kube.run("patch", "checkpointschedule", "every10", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    # On time: each one created within a few seconds after a 10-second mark.
    for c in seen.values():
        created = parse_time(c["metadata"]["creationTimestamp"])
        assert created.second % 10 <= 3, f"{c['metadata']['name']} created at {created}, not on a 10 s mark"
    current = {c["metadata"]["name"]: c for c in checkpoints()}
    assert pinned["metadata"]["name"] in current, "the pinned checkpoint stays"
    deleted = [name for name in seen if name not in current]
    assert deleted, "retention deleted the oldest"

    def images_gone() -> bool:
        present = set(checkpoint_manifests(cluster, podmigrate, namespace, "counter"))
        wanted = {c["status"]["containers"][0]["image"] for c in current.values() if (c.get("status") or {}).get("containers")}
        # Tags are ck-<uid prefix>: the kept ones are there, the deleted ones not.
        kept_tags = {f"ck-{c['metadata']['uid'][:8]}" for c in current.values()}
        deleted_tags = {f"ck-{seen[name]['metadata']['uid'][:8]}" for name in deleted}
        return bool(wanted) and kept_tags & present == kept_tags and not (deleted_tags & present)

    wait_for("the deleted checkpoints' images gone from the registry, the kept ones there", images_gone, timeout=60)


def _statefulset(namespace: str, image: str) -> str:
    return f"""apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {namespace}}}
spec:
  replicas: 1
  serviceName: db
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {image}
        env: [{{name: WARMUP_SECONDS, value: "2"}}]
        readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
"""


def test_a_suspended_statefulset_pod_holds_its_place_and_resumes_with_its_identity(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    """Its controller replaces a deleted pod at once: the replacement holds the suspended pod's place instead (gated,
    running nothing), so no cold copy starts; a PodRestore releases it onto a node, where it restores the checkpoint."""
    kube.apply(_statefulset(namespace, cluster.images["warmup"]))
    pod = wait_for("db-0 Ready", lambda: ready(kube, namespace, "db-0"), timeout=60)
    source = pod["spec"]["nodeName"]
    other = next(n for n in _standins(cluster) if n != source)
    ip = pod["status"]["podIP"]
    for i in range(3):
        http("POST", f"http://{ip}:8080/write?key=k{i}&value=v{i}")
    before = http("GET", f"http://{ip}:8080/state")
    kube.apply(podcheckpoint(namespace, "db-nap", "db-0", mode="Suspend"))
    status = wait_phase(kube, "podcheckpoint", "db-nap", namespace, ("Available", "Failed"))["status"]
    assert status["phase"] == "Available" and status["reason"] == "Suspended" and status["suspended"], status
    held = status["heldPod"]
    assert held["name"] == "db-0" and held["uid"] != pod["metadata"]["uid"]
    time.sleep(3)  # the StatefulSet controller has had time to react: nothing but the held pod
    listed = json.loads(kube.run("get", "pods", "-n", namespace, "-l", "app=db", "-o", "json").stdout)["items"]
    assert [p["metadata"]["uid"] for p in listed] == [held["uid"]], "one pod: the one holding the place"
    (placeholder,) = listed
    assert placeholder["status"]["phase"] == "Pending" and not placeholder["spec"].get("nodeName")
    assert {"name": api.SCHEDULING_GATE_SUSPENDED} in placeholder["spec"]["schedulingGates"]

    # Resumed on another node: the held pod is bound there and restores the checkpoint, under its name.
    kube.apply(podrestore(namespace, "db-wake", "db-nap", node=other))
    restored = wait_phase(kube, "podrestore", "db-wake", namespace, ("Succeeded", "Failed"))["status"]
    assert restored["phase"] == "Succeeded", restored
    back = wait_for("db-0 Ready again", lambda: ready(kube, namespace, "db-0"))
    assert back["metadata"]["uid"] == held["uid"] and back["spec"]["nodeName"] == other
    state = http("GET", f"http://{back['status']['podIP']}:8080/state")
    assert state["boot_id"] == before["boot_id"] and state["writes"] == before["writes"], "the same process, its memory"
    assert back["status"]["containerStatuses"][0]["restartCount"] == 0
    assert kube.get("podcheckpoint", "db-nap", namespace)["status"]["suspended"] is False


def test_on_containerd_a_running_checkpoint_clones_and_a_suspended_pod_resumes_on_the_other_real_node(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    """The same on the upstream kubelet and containerd 2.3: the checkpoint through the real kubelet API (the pod left
    running, no CRIU hook stop), the clone and the resume restored by containerd on the other real node."""
    first, second = [n.name for n in cluster.nodes if n.kind == "real"][:2]
    kube.apply(warmup_pod(namespace, first, cluster.images["warmup"], warmup=2))
    pod = wait_for("app Ready", lambda: ready(kube, namespace, "app"), timeout=90)
    ip = pod["status"]["podIP"]
    for i in range(3):
        http("POST", f"http://{ip}:8080/write?key=k{i}&value=v{i}")
    before = http("GET", f"http://{ip}:8080/state")

    kube.apply(podcheckpoint(namespace, "snap", "app"))
    status = wait_phase(kube, "podcheckpoint", "snap", namespace, ("Available", "Failed"))["status"]
    assert status["phase"] == "Available", status
    assert http("GET", f"http://{ip}:8080/state")["boot_id"] == before["boot_id"], "it runs on, the same process"
    assert kube.get("pod", "app", namespace)["status"]["containerStatuses"][0]["restartCount"] == 0
    assert status.get("criuVersion") and status.get("inspection"), "the CRIU version and what its images say"
    kube.apply(podrestore(namespace, "clone", "snap", pod="app-clone", node=second))
    restored = wait_phase(kube, "podrestore", "clone", namespace, ("Succeeded", "Failed"))["status"]
    assert restored["phase"] == "Succeeded", restored
    clone = wait_for("the clone Ready", lambda: ready(kube, namespace, "app-clone"))
    assert clone["spec"]["nodeName"] == second
    assert http("GET", f"http://{clone['status']['podIP']}:8080/state")["boot_id"] == before["boot_id"]

    kube.apply(podcheckpoint(namespace, "nap", "app", mode="Suspend"))
    status = wait_phase(kube, "podcheckpoint", "nap", namespace, ("Available", "Failed"))["status"]
    assert status["phase"] == "Available" and status["suspended"], status
    kube.run("delete", "pod", "app-clone", "-n", namespace, "--wait=true")
    kube.apply(podrestore(namespace, "wake", "nap", node=second))
    restored = wait_phase(kube, "podrestore", "wake", namespace, ("Succeeded", "Failed"))["status"]
    assert restored["phase"] == "Succeeded", restored
    back = wait_for("app Ready on the other real node", lambda: ready(kube, namespace, "app"))
    assert back["spec"]["nodeName"] == second
    state = http("GET", f"http://{back['status']['podIP']}:8080/state")
    assert state["boot_id"] == before["boot_id"] and http("GET", f"http://{back['status']['podIP']}:8080/dump") == {
        f"k{i}": f"v{i}" for i in range(3)
    }
