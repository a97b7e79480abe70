"""End to end: a pod's emptyDir files move with it, on stand-in and on real (kubelet + containerd) nodes.

The pods of the report that opened this work: a loop appending a line to a file in an emptyDir
each second and printing how many lines it has, and the same loop holding the file open on a
descriptor (before, the first lost its lines while the status said "with its state", and the
second was lost altogether). Now both move with every line, the descriptor still writes to the
same file, a ``medium: Memory`` emptyDir moves too, and the count goes on from where it was. What
cannot move (a hostPath volume) is refused in one line before anything is frozen.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster import cluster as lc
from tests.conftest import Kube, Podmigrate, wait_for
from tests.migrator.workloads import TOLERATE_REAL_NODES, migration

pytestmark = pytest.mark.cluster

CLI = str(Path(sys.executable).parent / "kubectl-migrate")


def appender(namespace: str, node: str, image: str, *, name: str, volume: str, hold_open: bool = False, labels: str = "") -> str:
    loop = (
        "exec 3>>/data/log; while true; do echo line >&3; wc -l < /data/log; sleep 1; done"
        if hold_open
        else "while true; do echo line >> /data/log; wc -l < /data/log; sleep 1; done"
    )
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
{TOLERATE_REAL_NODES}  containers:
  - name: app
    image: {image}
    command: ["/bin/sh", "-c", "{loop}"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, {volume}}}]
"""


def lines(kube: Kube, namespace: str, pod: str) -> list[int]:
    return [int(x) for x in kube.logs(pod, namespace).split() if x.isdigit()]


def migrate(cluster: lc.Cluster, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, "pod", *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def node_pair(cluster: lc.Cluster, kind: str) -> tuple[str, str]:
    names = [n.name for n in cluster.nodes if n.kind == kind]
    assert len(names) >= 2, f"the session cluster has two {kind} nodes"
    return names[0], names[1]


def assert_counts_go_on(before: list[int], after: list[int]) -> None:
    """The restored process's count continues from where it was: every line kept, none counted twice."""
    assert after, "the restored pod prints nothing"
    assert all(b == a + 1 for a, b in itertools.pairwise(after)), f"not one line per second: {after}"
    # Either the log starts after the move (containerd) or it kept what came before (a restored log):
    # in both cases the count never starts again at 1, which is what lost lines look like.
    assert after[0] > before[-1] or after[: len(before)] == before, (before, after)
    assert max(after) > max(before)


@pytest.mark.parametrize("kind", ["standin", "real"])
@pytest.mark.parametrize(
    ("variant", "volume", "hold_open"),
    [
        ("appending", "emptyDir: {}", False),
        ("holding-the-file-open", "emptyDir: {}", True),
        ("memory-medium", "emptyDir: {medium: Memory}", True),
    ],
)
def test_emptydir_files_and_open_descriptors_move_with_the_pod(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, kind: str, variant: str, volume: str,
    hold_open: bool,
) -> None:  # fmt: skip
    source, target = node_pair(cluster, kind)
    name = f"ed-{variant}"[:40]
    kube.apply(appender(namespace, source, cluster.images["counter"], name=name, volume=volume, hold_open=hold_open))
    wait_for("appending", lambda: len(lines(kube, namespace, name)) >= 3)

    before = lines(kube, namespace, name)  # the count a moment before the move (it goes on until the freeze)
    moved = migrate(cluster, namespace, name, "--to", target, "--wait")
    print(f"\n$ kubectl migrate pod {name} --to {target} --wait   # {kind} nodes\n{moved.stdout}{moved.stderr}")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "with its state and its emptyDir files (data, " in moved.stdout
    pod = kube.get("pod", name, namespace)
    assert pod["spec"]["nodeName"] == target and pod["status"]["containerStatuses"][0]["restartCount"] == 0
    (record,) = kube.get("podmigrations", namespace=namespace)["items"]
    assert record["status"]["volumeData"]["volumes"] == ["data"] and record["status"]["volumeData"]["dataBytes"] > 0
    wait_for("counting on the target", lambda: max(lines(kube, namespace, name) or [0]) >= max(before) + 3)
    assert_counts_go_on(before, lines(kube, namespace, name))


@pytest.mark.parametrize("kind", ["standin", "real"])
def test_a_deployments_pod_gets_its_files_in_the_replacement_its_controller_makes(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, kind: str
) -> None:
    """The ReplicaSet's replacement has another name; the files staged for the old one still reach it."""
    source, target = node_pair(cluster, kind)
    loop = "exec 3>>/data/log; while true; do echo line >&3; wc -l < /data/log; sleep 1; done"
    kube.apply(
        f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: cache, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: cache}}}}
  template:
    metadata: {{labels: {{app: cache}}}}
    spec:
      nodeName: {source}
      terminationGracePeriodSeconds: 1
{TOLERATE_REAL_NODES.replace("  tolerations", "      tolerations")}      containers:
      - name: app
        image: {cluster.images["counter"]}
        command: ["/bin/sh", "-c", "{loop}"]
        volumeMounts: [{{name: data, mountPath: /data}}]
      volumes: [{{name: data, emptyDir: {{}}}}]
"""
    )
    pod = wait_for(
        "the Deployment's pod counting",
        lambda: next((p for p in kube.get("pods", namespace=namespace)["items"] if len(lines(kube, namespace, p["metadata"]["name"])) >= 3), None),
    )  # fmt: skip
    name = pod["metadata"]["name"]
    before = lines(kube, namespace, name)
    moved = migrate(cluster, namespace, name, "--to", target, "--wait")
    print(f"\n$ kubectl migrate pod {name} --to {target} --wait   # Deployment, {kind} nodes\n{moved.stdout}{moved.stderr}")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    (record,) = kube.get("podmigrations", namespace=namespace)["items"]
    new = record["status"]["newPod"]["name"]
    assert new != name, "a ReplicaSet's replacement has a new name"
    assert kube.get("pod", new, namespace)["spec"]["nodeName"] == target
    wait_for("counting on the target", lambda: max(lines(kube, namespace, new) or [0]) >= max(before) + 3)
    assert_counts_go_on(before, lines(kube, namespace, new))


def test_leaving_the_files_behind_is_said_in_the_outcome(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    source, target = node_pair(cluster, "standin")
    kube.apply(appender(namespace, source, cluster.images["counter"], name="scratch", volume="emptyDir: {}"))
    wait_for("appending", lambda: len(lines(kube, namespace, "scratch")) >= 2)
    moved = migrate(cluster, namespace, "scratch", "--to", target, "--wait", "--delete-emptydir-data")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "with its memory; emptyDir volume(s) data started empty (deleteEmptyDirData)" in moved.stdout
    assert "with its state" not in moved.stdout


def test_a_hostpath_pod_is_refused_before_anything_is_frozen(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    source, target = node_pair(cluster, "standin")
    host_dir = Path(cluster.state_dir) / f"hostpath-{namespace}"
    host_dir.mkdir(exist_ok=True)
    kube.apply(appender(namespace, source, cluster.images["counter"], name="hp", volume=f"hostPath: {{path: {host_dir}}}"))
    wait_for("appending", lambda: len(lines(kube, namespace, "hp")) >= 2)
    uid = kube.get("pod", "hp", namespace)["metadata"]["uid"]
    refused = migrate(cluster, namespace, "hp", "--to", target)
    assert refused.returncode == 1 and refused.stderr.startswith('error: pod "hp" mounts hostPath volume(s) data:'), refused
    assert refused.stderr.count("\n") == 1
    assert not kube.get("podmigrations", namespace=namespace)["items"], "the CLI created nothing"
    # The same through the API: refused in status, before anything was frozen.
    kube.apply(migration(namespace, "hp", target=target))
    status = podmigrate.wait_done(namespace, "move-hp")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "HostPathVolume"), status
    assert "sourceNode" not in status and kube.get("pod", "hp", namespace)["metadata"]["uid"] == uid


# --- persistent volumes: shared storage follows the pod; a node's own storage does not ------------
def shared_volume(cluster: lc.Cluster, namespace: str, *, claim: str, mode: str = "ReadWriteMany", node: str = "") -> Path:
    """A PersistentVolume on a host directory every local node sees (what NFS is to a real cluster), bound to ``claim``."""
    path = Path(cluster.state_dir) / f"pv-{namespace}-{claim}"
    path.mkdir(mode=0o777, exist_ok=True)
    affinity = (
        f"  nodeAffinity: {{required: {{nodeSelectorTerms: [{{matchExpressions: [{{key: kubernetes.io/hostname, "
        f"operator: In, values: [{node}]}}]}}]}}}}\n"
        if node
        else ""
    )
    Kube(cluster).apply(
        f"""apiVersion: v1
kind: PersistentVolume
metadata: {{name: pv-{namespace}-{claim}, labels: {{podmigrate-test: "{namespace}"}}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [{mode}]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {{namespace: {namespace}, name: {claim}}}
  hostPath: {{path: {path}, type: Directory}}
{affinity}---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {claim}, namespace: {namespace}}}
spec:
  accessModes: [{mode}]
  storageClassName: ""
  volumeName: pv-{namespace}-{claim}
  resources: {{requests: {{storage: 1Gi}}}}
"""
    )
    kube = Kube(cluster)
    wait_for(f"claim {claim} bound", lambda: kube.get("pvc", claim, namespace)["status"].get("phase") == "Bound")
    return path


@pytest.fixture
def volumes_cleaned(kube: Kube, namespace: str) -> Iterator[None]:
    yield
    kube.run("delete", "pods", "--all", "-n", namespace, "--wait=true", "--timeout=60s", check=False)
    kube.run("delete", "pvc", "--all", "-n", namespace, "--wait=false", check=False)
    kube.run("delete", "pv", "-l", f"podmigrate-test={namespace}", "--wait=false", check=False)


def test_a_pod_on_shared_storage_moves_and_keeps_writing_to_the_same_file(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, volumes_cleaned: None
) -> None:
    source, target = node_pair(cluster, "real")
    path = shared_volume(cluster, namespace, claim="shared")
    volume = "persistentVolumeClaim: {claimName: shared}"
    kube.apply(appender(namespace, source, cluster.images["counter"], name="db", volume=volume, hold_open=True))
    wait_for("appending", lambda: len(lines(kube, namespace, "db")) >= 3)
    before = lines(kube, namespace, "db")
    moved = migrate(cluster, namespace, "db", "--to", target, "--wait")
    print(f"\n$ kubectl migrate pod db --to {target} --wait   # ReadWriteMany volume\n{moved.stdout}{moved.stderr}")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "with its state" in moved.stdout and "emptyDir" not in moved.stdout
    assert kube.get("pod", "db", namespace)["spec"]["nodeName"] == target
    wait_for("counting on the target", lambda: max(lines(kube, namespace, "db") or [0]) >= max(before) + 3)
    after = lines(kube, namespace, "db")
    assert_counts_go_on(before, after)
    assert len((path / "log").read_text().splitlines()) >= after[-1], "the volume holds every line the process counted"


@pytest.mark.parametrize(
    ("mode", "pinned", "refusal"),
    [
        ("ReadWriteMany", True, "cannot move there: node {target} is outside the node affinity of persistent volume pv-"),
        ("ReadWriteOnce", False, "mounts persistent volume pv-"),
    ],
    ids=["bound-to-its-node", "read-write-once"],
)
def test_a_volume_that_cannot_follow_is_refused_before_anything_is_frozen(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, volumes_cleaned: None, mode: str, pinned: bool,
    refusal: str,
) -> None:  # fmt: skip
    source, target = node_pair(cluster, "real")
    shared_volume(cluster, namespace, claim="own", mode=mode, node=source if pinned else "")
    kube.apply(
        appender(namespace, source, cluster.images["counter"], name="db", volume="persistentVolumeClaim: {claimName: own}")
    )
    wait_for("appending", lambda: len(lines(kube, namespace, "db")) >= 2)
    uid = kube.get("pod", "db", namespace)["metadata"]["uid"]
    refused = migrate(cluster, namespace, "db", "--to", target)
    print(f"\n$ kubectl migrate pod db --to {target}   # {mode}{' pinned to ' + source if pinned else ''}\n{refused.stderr}")
    assert refused.returncode == 1 and refused.stderr.startswith(f'error: pod "db" {refusal.format(target=target)}'), refused
    assert refused.stderr.count("\n") == 1
    # The same through the API: refused in status, before anything was frozen.
    kube.apply(migration(namespace, "db", target=target))
    status = podmigrate.wait_done(namespace, "move-db")["status"]
    assert status["phase"] == "Failed" and status["reason"] == ("NodeDoesNotFit" if pinned else "PersistentVolume"), status
    assert kube.get("pod", "db", namespace)["metadata"]["uid"] == uid


# --- a drain of a node with all of these ------------------------------------------------------------
def test_a_drain_moves_every_pod_with_its_data_and_reports_what_cannot_move(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, volumes_cleaned: None
) -> None:
    source, target = node_pair(cluster, "real")
    image = cluster.images["counter"]
    shared_volume(cluster, namespace, claim="shared")
    host_dir = Path(cluster.state_dir) / f"hostpath-{namespace}"
    host_dir.mkdir(exist_ok=True)
    label = f"drain-test: {namespace}"
    pods = {
        "appending": "emptyDir: {}",
        "holding": "emptyDir: {}",
        "memory": "emptyDir: {medium: Memory}",
        "shared": "persistentVolumeClaim: {claimName: shared}",
        "hostfiles": f"hostPath: {{path: {host_dir}}}",
    }
    for name, volume in pods.items():
        kube.apply(appender(namespace, source, image, name=name, volume=volume, hold_open=name != "appending", labels=label))
    for name in pods:
        wait_for(f"{name} appending", lambda n=name: len(lines(kube, namespace, n)) >= 3)  # type: ignore[misc]
    before = {name: lines(kube, namespace, name) for name in pods}
    drain = f"data-{namespace}"[:63]
    try:
        kube.apply(
            json.dumps({
                "apiVersion": "podmigrate.io/v1alpha1", "kind": "NodeDrain", "metadata": {"name": drain},
                "spec": {"nodeName": source, "podSelector": f"drain-test={namespace}", "unmigratablePolicy": "Evict"},
            })
        )  # fmt: skip
        status = wait_for(
            "the drain to finish",
            lambda: d["status"] if (d := kube.get("nodedrain", drain)).get("status", {}).get("phase") in ("Succeeded", "Failed", "Blocked") else None,
            timeout=240,
        )  # fmt: skip
        print(f"\nNodeDrain {drain}: {status['phase']} {status.get('message', '')}")
        for entry in status["pods"]:
            print(f"  {entry['name']:<10} {entry['action']:<8} {entry.get('outcome', ''):<9} {entry.get('reason', '')}")
        outcome = {p["name"]: p for p in status["pods"]}
        assert status["phase"] == "Succeeded", status
        for name in ("appending", "holding", "memory", "shared"):
            assert outcome[name]["outcome"] == "migrated", outcome[name]
            pod = kube.get("pod", name, namespace)
            assert pod["spec"]["nodeName"] == target
            wait_for(f"{name} counting on {target}", lambda n=name: max(lines(kube, namespace, n) or [0]) >= max(before[n]) + 2)  # type: ignore[misc]
            assert_counts_go_on(before[name], lines(kube, namespace, name))
        assert outcome["hostfiles"]["outcome"] == "evicted", outcome["hostfiles"]
        assert "hostPath volume(s) data" in outcome["hostfiles"]["reason"]
    finally:
        kube.run("delete", "nodedrain", drain, "--wait=true", "--timeout=60s", check=False)
        kube.run("uncordon", source, check=False)
