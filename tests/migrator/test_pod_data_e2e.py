"""End to end: pods with data outside their processes are refused, or moved only as far as the user allowed.

The two pods of the report that opened this work: a loop appending a line to a file in an
emptyDir each second and printing how many lines it has (before, ``kubectl migrate pod`` said
"moved ... with its state" and the file had lost its lines), and the same loop holding the file
open (before, the restore failed on both nodes and the pod was gone). Now a move that would
leave data behind is refused before anything is frozen, in one line from the CLI and with the
reason in the PodMigration's status; with ``--delete-emptydir-data`` it moves, and the outcome
says the emptyDir started empty instead of claiming the state moved.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from localcluster import cluster as lc
from tests.conftest import Kube, Podmigrate, wait_for
from tests.migrator.workloads import migration

pytestmark = pytest.mark.cluster

CLI = str(Path(sys.executable).parent / "kubectl-migrate")


def appender(namespace: str, node: str, image: str, *, name: str, volume: str, hold_open: bool = False) -> str:
    loop = (
        "exec 3>>/data/log; while true; do echo line >&3; wc -l < /data/log; sleep 1; done"
        if hold_open
        else "while true; do echo line >> /data/log; wc -l < /data/log; sleep 1; done"
    )
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
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


@pytest.mark.parametrize("hold_open", [False, True], ids=["appending", "holding-the-file-open"])
def test_an_emptydir_pod_is_refused_unless_its_data_may_stay_behind(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, hold_open: bool
) -> None:
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    kube.apply(
        appender(namespace, source, cluster.images["counter"], name="ed-append", volume="emptyDir: {}", hold_open=hold_open)
    )
    wait_for("appending", lambda: len(lines(kube, namespace, "ed-append")) >= 3)
    uid = kube.get("pod", "ed-append", namespace)["metadata"]["uid"]

    refused = migrate(cluster, namespace, "ed-append", "--to", target, "--wait")
    assert refused.returncode == 1 and refused.stdout == "", refused
    assert refused.stderr.startswith('error: pod "ed-append" has emptyDir volume(s) data: a checkpoint carries')
    assert refused.stderr.count("\n") == 1 and "--delete-emptydir-data" in refused.stderr, "one line, with the way out"
    assert not kube.get("podmigrations", namespace=namespace)["items"], "the CLI created nothing"

    # The same through the API: refused in status, before anything was frozen.
    kube.apply(migration(namespace, "ed-append", target=target))
    status = podmigrate.wait_done(namespace, "move-ed-append")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "EmptyDirData"), status
    assert "sourceNode" not in status and kube.get("pod", "ed-append", namespace)["metadata"]["uid"] == uid
    counted = len(lines(kube, namespace, "ed-append"))
    wait_for("still appending where it was", lambda: len(lines(kube, namespace, "ed-append")) > counted)

    # With the data given up, it moves, and says so.
    moved = migrate(
        cluster, namespace, "ed-append", "--to", target, "--wait", "--delete-emptydir-data", "--on-failure", "Recreate"
    )
    print(f"\n$ kubectl migrate pod ed-append --to {target} --wait --delete-emptydir-data\n{moved.stdout}{moved.stderr}")
    pod = wait_for(
        "the pod running again", lambda: (p := kube.get("pod", "ed-append", namespace))["status"].get("phase") == "Running" and p
    )
    if hold_open:
        # Its open file is not on the target: the restore cannot succeed, and the pod must not be lost.
        assert moved.returncode == 1, moved.stdout
        assert "recreated from its original spec" in moved.stdout + moved.stderr, "state lost, never the pod"
    else:
        assert moved.returncode == 0, moved.stderr
        assert "with its memory; emptyDir volume(s) data started empty (deleteEmptyDirData)" in moved.stdout
        assert "with its state" not in moved.stdout
        assert pod["spec"]["nodeName"] == target and pod["status"]["containerStatuses"][0]["restartCount"] == 0


def test_a_hostpath_pod_is_refused_before_anything_is_frozen(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    host_dir = Path(cluster.state_dir) / f"hostpath-{namespace}"
    host_dir.mkdir(exist_ok=True)
    kube.apply(appender(namespace, source, cluster.images["counter"], name="hp", volume=f"hostPath: {{path: {host_dir}}}"))
    wait_for("appending", lambda: len(lines(kube, namespace, "hp")) >= 2)
    refused = migrate(cluster, namespace, "hp", "--to", target)
    assert refused.returncode == 1 and refused.stderr.startswith('error: pod "hp" mounts hostPath volume(s) data:'), refused
    assert refused.stderr.count("\n") == 1
