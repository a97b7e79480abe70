"""Host namespaces and security contexts on a stand-in node, seen from inside the containers.

What podmigrate's own install needs of every node: a privileged agent on the host network and
PID namespace, and a controller that runs as 65532 with a read-only root and no capabilities,
still able to read its ServiceAccount token and write its emptyDir.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localcluster import cluster as lc
from tests.conftest import Kube, wait_for

pytestmark = pytest.mark.cluster


def standin(cluster: lc.Cluster) -> lc.NodeInfo:
    return next(n for n in cluster.nodes if n.kind != "real")


def pod_manifest(*, name: str, namespace: str, node: str, image: str, script: str, spec: str = "", container: str = "") -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n"
        f"  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n{spec}"
        f"  containers:\n  - name: main\n    image: {image}\n    command: [sh, -c, {json.dumps(script)}]\n{container}"
    )


def test_host_network_pid_privileged_pod_sees_the_host(kube: Kube, cluster: lc.Cluster, namespace: str) -> None:
    node = standin(cluster)
    script = "tr '\\0' ' ' < /proc/1/cmdline; echo; hostname; grep CapEff /proc/self/status; echo done; sleep 3600"
    kube.apply(
        pod_manifest(
            name="hostly", namespace=namespace, node=node.name, image=cluster.images["counter"], script=script,
            spec="  hostNetwork: true\n  hostPID: true\n",
            container="    securityContext: {privileged: true}\n",
        )
    )  # fmt: skip
    lines = wait_for("the pod's report", lambda: (out := kube.logs("hostly", namespace).splitlines()) and "done" in out and out)
    host_init = Path("/proc/1/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert lines[0].strip() == host_init.strip(), "hostPID: PID 1 is the host's init"
    assert lines[1] == node.name, "the host network's hostname is the node's name"
    bounding = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("CapBnd:")).split()[1]
    assert lines[2].split()[1] == bounding, "privileged: every capability the host has"
    pod = kube.get("pod", "hostly", namespace)
    assert pod["status"]["podIP"] == node.address and pod["status"]["podIPs"] == [{"ip": node.address}]
    uid = pod["metadata"]["uid"]
    assert not [p for p in Path("/run/netns").iterdir() if p.name.endswith(uid.replace("-", "")[:8])], "no pod netns"
    kube.run("delete", "pod", "hostly", "-n", namespace, "--grace-period=1")
    assert not (Path(node.state_dir) / "kubelet" / "pods" / uid).exists()


def test_restricted_pod_runs_as_its_user(kube: Kube, cluster: lc.Cluster, namespace: str) -> None:
    node = standin(cluster)
    script = (
        "id -u; id -g; grep CapEff /proc/self/status; "
        "test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token-readable; "
        "touch /rootfs-write 2>/dev/null || echo root-readonly; touch /tmp/x && echo tmp-writable; echo done; sleep 3600"
    )
    kube.apply(
        pod_manifest(
            name="restricted", namespace=namespace, node=node.name, image=cluster.images["counter"], script=script,
            spec="  securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532}\n"
                 "  volumes: [{name: tmp, emptyDir: {medium: Memory, sizeLimit: 1Mi}}]\n",
            container="    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}\n"
                      "    volumeMounts: [{name: tmp, mountPath: /tmp}]\n",
        )
    )  # fmt: skip
    lines = wait_for(
        "the pod's report", lambda: (out := kube.logs("restricted", namespace).splitlines()) and "done" in out and out
    )
    assert lines[:2] == ["65532", "65532"]
    assert lines[2].split()[1] == "0000000000000000"
    assert lines[3:6] == ["token-readable", "root-readonly", "tmp-writable"]
    uid = kube.get("pod", "restricted", namespace)["metadata"]["uid"]
    kube.run("delete", "pod", "restricted", "-n", namespace, "--grace-period=1")
    pod_dir = Path(node.state_dir) / "kubelet" / "pods" / uid
    assert str(pod_dir) not in Path("/proc/self/mountinfo").read_text(), "the memory emptyDir is unmounted"


def test_run_as_non_root_with_a_root_image_is_refused(kube: Kube, cluster: lc.Cluster, namespace: str) -> None:
    node = standin(cluster)
    kube.apply(
        pod_manifest(
            name="rooty", namespace=namespace, node=node.name, image=cluster.images["counter"], script="sleep 3600",
            spec="  securityContext: {runAsNonRoot: true}\n",
        )
    )  # fmt: skip

    def waiting() -> dict[str, str] | None:
        statuses = kube.get("pod", "rooty", namespace).get("status", {}).get("containerStatuses") or []
        state = statuses[0]["state"].get("waiting", {}) if statuses else {}
        return state if state.get("reason") == "CreateContainerConfigError" else None

    state = wait_for("CreateContainerConfigError", waiting)
    assert state["message"].startswith('container has runAsNonRoot and image will run as root (pod: "rooty_')
