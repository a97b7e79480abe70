"""Real nodes: upstream kubelet v1.36 + containerd 2.3 + runc + CRIU in the session cluster.

The session cluster (``tests/conftest.py``) has two real nodes beside the stand-ins, tainted so
that only tests meant for them run there. These tests check the nodes themselves, below
podmigrate: they are Ready with ``containerd://2.3``, run a pod from the local registry,
checkpoint it through the kubelet's API with webhook authorization, and containerd restores that
checkpoint, pushed as podmigrate's checkpoint image, as a new pod on the other real node. The
checks that nothing is left on the host and that the kubelets never changed the host's kernel
settings run when the session cluster goes down. They run in order within one namespace.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from localcluster import cluster as lc
from localcluster import realnode, registryauth
from ocicheckpoint import image as oci
from ocicheckpoint.registry import RegistryClient
from tests.conftest import HOST_SYSCTLS, REAL_NODE_TAINT, Kube, wait_for

pytestmark = pytest.mark.cluster

TIMINGS: dict[str, float] = {}
NS = "realnode"


class Env:
    def __init__(self, cluster: lc.Cluster, kube: Kube) -> None:
        self.cluster = cluster
        self.kube = kube
        self.archive: Path | None = None

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.kube.run(*args, input=input, check=check).stdout

    def node(self, name: str) -> lc.NodeInfo:
        return next(n for n in self.cluster.nodes if n.name == name)


@pytest.fixture(scope="module")
def env(cluster: lc.Cluster, kube: Kube) -> Iterator[Env]:
    kube.run("create", "namespace", NS)
    yield Env(cluster, kube)
    kube.run("delete", "pods", "--all", "-n", NS, "--grace-period=0", "--force", "--wait=false", check=False)
    kube.run("delete", "namespace", NS, "--wait=false", check=False)
    kube.run("delete", "clusterrolebinding,clusterrole", "realnode-checkpoint", check=False)
    print("\nreal-node timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in TIMINGS.items()))


def _pod(name: str, node: str, image: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "nodeName": node,
                "tolerations": [{"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "counter", "image": image}],
            },
        }
    )


def _running(env: Env, name: str) -> bool:
    pod = json.loads(env.kubectl("get", "pod", name, "-n", NS, "-o", "json"))
    return pod["status"].get("phase") == "Running" and all(s.get("ready") for s in pod["status"].get("containerStatuses", []))


def _numbers(text: str) -> list[int]:
    return [int(line) for line in text.split() if line.strip().isdigit()]


def _post_checkpoint(env: Env, *, node: str, token: str, path: str) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=env.cluster.ca_cert)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    req = urllib.request.Request(
        f"https://{env.node(node).address}:{realnode.KUBELET_PORT}{path}",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with opener.open(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_nodes_run_containerd_2_3(env: Env) -> None:
    wide = env.kubectl("get", "nodes", "-o", "wide")
    print("\n" + wide)
    lines = {line.split()[0]: line for line in wide.splitlines()[1:] if line.startswith("real-")}
    assert set(lines) == {"real-1", "real-2"}
    for name, line in lines.items():
        assert " Ready " in line, line
        assert "containerd://2.3." in line, line
        assert env.node(name).address in line, f"InternalIP is the node's loopback address: {line}"
        assert env.node(name).kind == "real"
    saved = json.loads((Path(env.cluster.state_dir) / "cluster.json").read_text())
    kinds = {n["name"]: n["kind"] for n in saved["nodes"]}
    assert {name for name, kind in kinds.items() if kind == "real"} == {"real-1", "real-2"}
    taints = json.loads(env.kubectl("get", "node", "real-1", "-o", "jsonpath={.spec.taints}"))
    assert [t["key"] for t in taints] == [REAL_NODE_TAINT], "only the session's own taint: the launcher lifted the cloud one"


def test_pod_from_local_registry_runs_on_real_node(env: Env) -> None:
    started = time.monotonic()
    env.kubectl("apply", "-f", "-", input=_pod("counter", "real-1", env.cluster.images["counter"]))
    wait_for("counter Running on real-1", lambda: _running(env, "counter"))
    TIMINGS["pod Running"] = time.monotonic() - started
    wait_for("counter counting", lambda: len(_numbers(env.kubectl("logs", "counter", "-n", NS))) >= 3)
    pod = json.loads(env.kubectl("get", "pod", "counter", "-n", NS, "-o", "json"))
    assert pod["spec"]["nodeName"] == "real-1"
    assert pod["status"]["podIP"].startswith("169.254."), "pod IPs are link-local"


def test_checkpoint_through_kubelet_api_with_webhook_authz(env: Env) -> None:
    env.kubectl("create", "serviceaccount", "checkpointer", "-n", NS)
    env.kubectl("create", "serviceaccount", "bystander", "-n", NS)
    env.kubectl("create", "clusterrole", "realnode-checkpoint", "--verb=create", "--resource=nodes/checkpoint")
    env.kubectl(
        "create",
        "clusterrolebinding",
        "realnode-checkpoint",
        "--clusterrole=realnode-checkpoint",
        f"--serviceaccount={NS}:checkpointer",
    )
    allowed = env.kubectl("create", "token", "checkpointer", "-n", NS).strip()
    denied = env.kubectl("create", "token", "bystander", "-n", NS).strip()
    path = f"/checkpoint/{NS}/counter/counter"

    status, body = _post_checkpoint(env, node="real-1", token=denied, path=path)
    assert status == 403, (status, body)

    # RBAC changes reach the kubelet's webhook authorizer at once; its cache holds denials briefly.
    started = time.monotonic()
    status, body = _post_checkpoint(env, node="real-1", token=allowed, path=path)
    TIMINGS["checkpoint (POST /checkpoint)"] = time.monotonic() - started
    assert status == 200, (status, body)
    items = json.loads(body)["items"]
    assert len(items) == 1
    archive = Path(items[0])
    print(f"\ncheckpoint archive: {archive}")
    assert archive.parent == Path(env.node("real-1").state_dir) / "kubelet" / "checkpoints"
    assert archive.name.startswith(f"checkpoint-counter_{NS}-counter-") and archive.suffix == ".tar"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    print("archive entries: " + ", ".join(sorted(n for n in names if not n.startswith("checkpoint/"))))
    assert {"config.dump", "spec.dump", "status.dump", "rootfs-diff.tar", "checkpoint/inventory.img"} <= names
    assert _running(env, "counter"), "the container keeps running after a checkpoint"
    env.archive = archive


def test_the_standin_writes_the_archive_a_real_node_writes(env: Env) -> None:
    """The stand-in node is checked against the real one: the same pod checkpointed on both through the
    same kubelet API gives archives with the same CRIU images and the fields the restores read."""
    assert env.archive is not None, "needs the real node's checkpoint of the previous test"
    standin = next(n for n in env.cluster.nodes if n.kind == "standin")
    pod = json.loads(_pod("counter-standin", standin.name, env.cluster.images["counter"]))
    pod["spec"].pop("tolerations")
    env.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait_for("counter Running on the stand-in", lambda: _running(env, "counter-standin"))
    wait_for("counting", lambda: len(_numbers(env.kubectl("logs", "counter-standin", "-n", NS))) >= 2)
    token = env.kubectl("create", "token", "checkpointer", "-n", NS).strip()
    status, body = _post_checkpoint(env, node=standin.name, token=token, path=f"/checkpoint/{NS}/counter-standin/counter")
    assert status == 200, (status, body)
    standin_archive = Path(json.loads(body)["items"][0])

    def contents(archive: Path) -> tuple[set[str], set[str], dict[str, str], dict[str, object]]:
        with tarfile.open(archive) as tar:
            names = set(tar.getnames())
            config = json.loads(tar.extractfile("config.dump").read())  # type: ignore[union-attr]
            spec = json.loads(tar.extractfile("spec.dump").read())  # type: ignore[union-attr]
        kinds = {
            name.split("/", 1)[1].split("-")[0].split(".")[0] for name in names if name.startswith("checkpoint/") and "/" in name
        }
        return names, kinds, config, spec

    real_names, real_kinds, real_config, real_spec = contents(env.archive)
    standin_names, standin_kinds, standin_config, standin_spec = contents(standin_archive)
    print(f"\nCRIU images: containerd {sorted(real_kinds)}\n             stand-in   {sorted(standin_kinds)}")
    core = {"inventory", "pstree", "core", "mm", "pagemap", "pages", "files", "fs", "ids"}
    assert core <= real_kinds and core <= standin_kinds, (real_kinds, standin_kinds)
    for key in ("id", "name", "rootfsImageName", "rootfsImageRef", "createdTime", "checkpointedTime"):
        assert key in real_config and key in standin_config, key
    assert real_config["rootfsImageName"] == standin_config["rootfsImageName"] == env.cluster.images["counter"]
    assert real_config["rootfsImageRef"] == standin_config["rootfsImageRef"], "both pin the same manifest"
    assert real_spec["process"]["args"] == standin_spec["process"]["args"], "the same process was checkpointed"
    for name in ("rootfs-diff.tar", "spec.dump", "config.dump"):
        assert name in real_names and name in standin_names, name


async def _push(archive: Path, registry: str, env: Env) -> str:
    with tarfile.open(archive) as tar:
        config = json.loads(tar.extractfile("config.dump").read())  # type: ignore[union-attr]
    info = oci.CheckpointInfo(
        container="counter",
        pod="counter",
        namespace=NS,
        rootfs_image_name=config["rootfsImageName"],
        rootfs_image_ref=config["rootfsImageRef"],
        runtime="runc",
        criu_version="4.2.1",
        engine="containerd",
    )
    img = oci.checkpoint_image(archive=archive, info=info)
    assert img.manifest_bytes and oci.parse_manifest(img.manifest_bytes).checkpoint_container == "counter"
    async with aiohttp.ClientSession() as session:
        # As one of the cluster's own images: restored without a migration (no pull Secret), the node reads it.
        creds = env.cluster.registry_credentials(registryauth.IMAGES_USER).for_registry(registry)
        client = RegistryClient(host=registry, session=session, plain_http=True, credentials=creds)
        digest = await client.push_image(
            repository="podmigrate/checkpoints/counter",
            tag="real-1",
            layers=[(img.layer, img.layer_path)],
            config=img.config,
            config_bytes=img.config_bytes,
            manifest=img.manifest_bytes,
        )
    return f"{registry}/podmigrate/checkpoints/counter@{digest}"


def test_checkpoint_image_restores_on_second_real_node(env: Env) -> None:
    assert env.archive is not None, "needs the checkpoint of the previous test"
    with tarfile.open(env.archive) as tar:
        log = tar.extractfile("container.log").read().decode()  # type: ignore[union-attr]
    before = _numbers(" ".join(line.split(" ", 3)[-1] for line in log.splitlines()))
    assert len(before) >= 2 and before == list(range(1, len(before) + 1)), before
    ref = asyncio.run(_push(env.archive, env.cluster.registry, env))
    # The base image first, as a migration's prepare-target does: containerd's restore pulls a missing base
    # image by itself, with no credentials, and this registry answers nobody anonymously.
    with tarfile.open(env.archive) as tar:
        base = json.loads(tar.extractfile("config.dump").read())["rootfsImageRef"]  # type: ignore[union-attr]
    env.kubectl("apply", "-f", "-", input=_pod("base-on-real-2", "real-2", base))
    wait_for("the base image on real-2", lambda: _running(env, "base-on-real-2"), timeout=90)

    started = time.monotonic()
    env.kubectl("apply", "-f", "-", input=_pod("counter-restored", "real-2", ref))
    wait_for("restored counter Running on real-2", lambda: _running(env, "counter-restored"), timeout=90)
    TIMINGS["restore (pod create -> Running)"] = time.monotonic() - started
    numbers = wait_for(
        "the restored counter to count on",
        lambda: (n := _numbers(env.kubectl("logs", "counter-restored", "-n", NS))) and len(n) >= len(before) + 3 and n,
    )
    print(f"\ncheckpointed log ends at {before[-1]}; restored pod logs: {numbers}")
    # containerd copies the checkpointed container.log into the new container's log, then
    # the restored process goes on from its memory: the next number, never 1 again.
    assert numbers[: len(before)] == before
    after = numbers[len(before) :]
    assert after[0] in (before[-1], before[-1] + 1), f"continues from {before[-1]}, not from scratch: {after}"
    assert after == list(range(after[0], after[0] + len(after)))
    pod = json.loads(env.kubectl("get", "pod", "counter-restored", "-n", NS, "-o", "json"))
    assert pod["spec"]["nodeName"] == "real-2"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    events = env.kubectl("get", "events", "-n", NS, "--field-selector", "involvedObject.name=counter-restored", "-o", "json")
    assert any(e["reason"] == "Started" for e in json.loads(events)["items"])


def test_host_kernel_settings_unchanged_while_running(env: Env) -> None:
    shadow = Path(env.node("real-1").state_dir) / "sysctl-shadow"
    # The kubelet did write its values, into the files standing in for them in its mount namespace ...
    assert (shadow / "kernel_panic").read_text().strip() == "10"
    assert (shadow / "vm_overcommit_memory").read_text().strip() == "1"
    # ... while the host kept its own (compared again once the session cluster is down).
    if HOST_SYSCTLS:  # recorded when this session started the cluster
        assert realnode.read_sysctls() == HOST_SYSCTLS
