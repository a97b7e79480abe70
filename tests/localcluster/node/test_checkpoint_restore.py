"""The node's kubelet checkpoint API and CRI-O-style restore, exercised as a migration tool would."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from localcluster import cluster as lc
from localcluster import registryauth, testimages
from ocicheckpoint import image as oci
from ocicheckpoint import names
from ocicheckpoint.credentials import Credentials
from tests.conftest import Kube, wait_for

pytestmark = pytest.mark.cluster

CHECKPOINT_ROLE = """apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: test-node-checkpoint}
rules:
- {apiGroups: [""], resources: [nodes/checkpoint], verbs: [create]}
"""


def kubelet_checkpoint(*, cluster: lc.Cluster, node: lc.NodeInfo, namespace: str, pod: str, container: str, token: str) -> Path:
    """``POST /checkpoint/...`` on a node's kubelet API; returns the archive path it reports."""
    ctx = ssl.create_default_context(cafile=cluster.ca_cert)
    url = f"https://{node.address}:{lc.NODE_PORT}/checkpoint/{namespace}/{pod}/{container}?timeout=60"
    req = urllib.request.Request(url, method="POST", data=b"", headers={"Authorization": f"Bearer {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(req, timeout=120) as resp:
            (path,) = json.loads(resp.read())["items"]
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"kubelet checkpoint failed: HTTP {exc.code}: {exc.read().decode().strip()}") from None
    return Path(path)


def push_checkpoint_archive(
    *,
    registry: str,
    archive: Path,
    repository: str,
    tag: str,
    container: str,
    pod: str,
    namespace: str,
    credentials: Credentials | None = None,
) -> str:
    """Turn a kubelet archive into a checkpoint image in the registry; returns its reference."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile(names.CONFIG_DUMP_FILE)
        config_dump = json.loads(member.read()) if member else {}
    info = oci.CheckpointInfo(
        container=container,
        pod=pod,
        namespace=namespace,
        rootfs_image_name=config_dump.get("rootfsImageName", ""),
        rootfs_image_ref=config_dump.get("rootfsImageRef", ""),
        runtime="runc",
        criu_version="4.1.1",
    )
    digest = asyncio.run(
        testimages.push_checkpoint(
            archive=archive, info=info, registry=registry, repository=repository, tag=tag, credentials=credentials
        )
    )
    return f"{registry}/{repository}:{tag}@{digest}"


def kubelet_post(cluster: lc.Cluster, node: lc.NodeInfo, path: str, token: str | None) -> tuple[int, str]:
    """A raw call, to see the status codes (the happy path uses the demo's helper)."""
    ctx = ssl.create_default_context(cafile=cluster.ca_cert)
    req = urllib.request.Request(f"https://{node.address}:10250{path}", method="POST", data=b"")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(req, timeout=120) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def checkpointer_token(kube: Kube) -> str:
    """A ServiceAccount allowed exactly `create nodes/checkpoint`, as the node agent will be."""
    kube.apply(CHECKPOINT_ROLE)
    kube.run("create", "serviceaccount", "checkpointer", "-n", "default", check=False)
    kube.run("create", "serviceaccount", "nobody", "-n", "default", check=False)
    kube.run(
        "create",
        "clusterrolebinding",
        "test-checkpointer",
        "--clusterrole=test-node-checkpoint",
        "--serviceaccount=default:checkpointer",
        check=False,
    )
    return kube.token("checkpointer")


def start_counter(kube: Kube, cluster: lc.Cluster, namespace: str, name: str, node: str, *, volume: bool = False) -> None:
    mounts = (
        "    volumeMounts: [{name: scratch, mountPath: /scratch}]\n  volumes: [{name: scratch, emptyDir: {}}]\n" if volume else ""
    )
    kube.apply(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  nodeName: {node}\n"
        f"  terminationGracePeriodSeconds: 1\n  containers:\n  - name: counter\n    image: {cluster.images['counter']}\n{mounts}"
    )
    wait_for(f"{name} counting", lambda: len(kube.logs(name, namespace).split()) >= 3)


def push_checkpoint(cluster: lc.Cluster, archive: Path, *, repository: str, tag: str) -> str:
    """Pushed as one of the cluster's own images (``cluster-images``): restored here without a migration, so
    without a pull Secret, the node reads it with its own credentials (``localcluster.registryauth``)."""
    return push_checkpoint_archive(
        credentials=cluster.registry_credentials(registryauth.IMAGES_USER).for_registry(cluster.registry),
        registry=cluster.registry,
        archive=archive,
        repository=repository,
        tag=tag,
        container="counter",
        pod="counter",
        namespace="default",
    )


def checkpoint(cluster: lc.Cluster, node: lc.NodeInfo, token: str, namespace: str, pod: str) -> Path:
    return kubelet_checkpoint(cluster=cluster, node=node, namespace=namespace, pod=pod, container="counter", token=token)


def test_checkpoint_needs_nodes_checkpoint_permission(
    kube: Kube, cluster: lc.Cluster, namespace: str, checkpointer_token: str
) -> None:
    node = cluster.nodes[0]
    start_counter(kube, cluster, namespace, "counter", node.name)
    path = f"/checkpoint/{namespace}/counter/counter?timeout=60"
    assert kubelet_post(cluster, node, path, None)[0] == 401
    status, body = kubelet_post(cluster, node, path, kube.token("nobody"))
    assert status == 403 and "subresource=checkpoint" in body
    assert kubelet_post(cluster, node, f"/checkpoint/{namespace}/no-such-pod/counter", checkpointer_token)[0] == 404

    archive = checkpoint(cluster, node, checkpointer_token, namespace, "counter")
    assert archive.parent == Path(node.state_dir) / "kubelet" / "checkpoints"
    assert archive.name.startswith(f"checkpoint-counter_{namespace}-counter-") and archive.suffix == ".tar"
    assert archive.stat().st_mode & 0o777 == 0o600, "archives hold process memory: root-only"
    with tarfile.open(archive) as tar:
        members = set(tar.getnames())
    for required in (names.CONFIG_DUMP_FILE, names.SPEC_DUMP_FILE, names.ROOTFS_DIFF_TAR, names.CHECKPOINT_DIRECTORY):
        assert required in members
    assert any(m.startswith("checkpoint/pages-") for m in members)

    inspect = subprocess.run(
        [str(lc.tool("checkpointctl")), "inspect", str(archive)], capture_output=True, text=True, check=False
    )
    assert inspect.returncode == 0, inspect.stderr
    assert "podmigrate/counter" in inspect.stdout and "Engine: CRI-O" in inspect.stdout

    counted_before = int(kube.logs("counter", namespace).split()[-1])
    time.sleep(2.5)
    assert int(kube.logs("counter", namespace).split()[-1]) > counted_before, "the source keeps running after a checkpoint"


def test_restore_on_the_other_node_continues_the_counter(
    kube: Kube, cluster: lc.Cluster, namespace: str, checkpointer_token: str
) -> None:
    source, target = cluster.nodes[0], cluster.nodes[1]
    start_counter(kube, cluster, namespace, "counter", source.name)
    # CRI-O restores only on top of a base image already in the node's local storage.
    start_counter(kube, cluster, namespace, "prepull", target.name)
    archive = checkpoint(cluster, source, checkpointer_token, namespace, "counter")
    at_checkpoint = int(kube.logs("counter", namespace).split()[-1])
    kube.run("delete", "pod", "counter", "-n", namespace, "--grace-period=1")
    image = push_checkpoint(cluster, archive, repository=f"podmigrate/checkpoints/{namespace}", tag="counter")

    kube.apply(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: counter, namespace: {namespace}}}\nspec:\n  nodeName: {target.name}\n"
        f"  containers:\n  - name: counter\n    image: {image}\n"
    )
    numbers = wait_for(
        "restored counter output", lambda: [int(x) for x in kube.logs("counter", namespace).split()][:2], timeout=60
    )
    assert 1 < numbers[0] <= at_checkpoint + 1, f"restored from the checkpoint (was {at_checkpoint}), not from zero: {numbers}"
    status = kube.get("pod", "counter", namespace)["status"]
    assert status["containerStatuses"][0]["restartCount"] == 0
    assert status["containerStatuses"][0]["ready"]
    events = kube.run("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=counter", "-o", "json").stdout
    assert "Restored" in events


def test_restore_refuses_a_missing_bind_mount(kube: Kube, cluster: lc.Cluster, namespace: str, checkpointer_token: str) -> None:
    node = cluster.nodes[0]
    start_counter(kube, cluster, namespace, "withvol", node.name, volume=True)
    archive = checkpoint(cluster, node, checkpointer_token, namespace, "withvol")
    image = push_checkpoint(cluster, archive, repository=f"podmigrate/checkpoints/{namespace}", tag="withvol")
    kube.apply(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: novol, namespace: {namespace}}}\nspec:\n  nodeName: {node.name}\n"
        f"  containers:\n  - name: counter\n    image: {image}\n"
    )
    waiting = wait_for(
        "CreateContainerError",
        lambda: kube.get("pod", "novol", namespace)["status"]["containerStatuses"][0]["state"].get("waiting", {}).get("message"),
    )
    assert "expects following bind mounts defined (/scratch)" in waiting
