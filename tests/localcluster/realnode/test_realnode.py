"""Real nodes: upstream kubelet v1.36 + containerd 2.3 + runc + CRIU in the local cluster.

This module starts a cluster of its own (2 real nodes, no stand-ins, instance 3 unless
PODMIGRATE_REALNODE_INSTANCE says otherwise) and stops it in its last test, so it neither
needs nor disturbs the session cluster. The tests run in order: nodes, a pod, a checkpoint
through the kubelet API with webhook authorization, the checkpoint pushed as an OCI image
and restored as a new pod on the other node, then the host checks after ``down``.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from localcluster import cluster as lc
from localcluster import realnode
from ocicheckpoint import image as oci
from ocicheckpoint.registry import RegistryClient

pytestmark = pytest.mark.cluster

INSTANCE = int(os.environ.get("PODMIGRATE_REALNODE_INSTANCE", "3"))
TIMINGS: dict[str, float] = {}


class Env:
    def __init__(self, cluster: lc.Cluster, state: Path, sysctls: dict[str, str]) -> None:
        self.cluster = cluster
        self.state = state
        self.sysctls_before = sysctls
        self.archive: Path | None = None
        self.down_result: list[str] | None = None

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [self.cluster.kubectl, f"--kubeconfig={self.cluster.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def node(self, name: str) -> lc.NodeInfo:
        return next(n for n in self.cluster.nodes if n.name == name)


def wait_for(what: str, predicate: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (AssertionError, KeyError, IndexError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    state = tmp_path_factory.mktemp("realnodes") / "cluster"
    sysctls = realnode.read_sysctls()
    started = time.monotonic()
    try:
        c = lc.up(state_dir=state, nodes=0, real_nodes=2, instance=INSTANCE)
    except BaseException:
        lc.down(state_dir=state)
        raise
    TIMINGS["cluster up (2 real nodes)"] = time.monotonic() - started
    e = Env(c, state, sysctls)
    yield e
    if state.exists():  # a test failed before test_down_leaves_nothing
        lc.down(state_dir=state)
    print("\nreal-node timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in TIMINGS.items()))


def _pod(name: str, node: str, image: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "counter", "image": image}],
            },
        }
    )


def _running(env: Env, name: str) -> bool:
    pod = json.loads(env.kubectl("get", "pod", name, "-o", "json"))
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
    lines = {line.split()[0]: line for line in wide.splitlines()[1:]}
    assert set(lines) == {"real-1", "real-2"}
    for name, line in lines.items():
        assert " Ready " in line, line
        assert "containerd://2.3." in line, line
        assert env.node(name).address in line, f"InternalIP is the node's loopback address: {line}"
        assert env.node(name).kind == "real"
    saved = json.loads((env.state / "cluster.json").read_text())
    assert {n["name"]: n["kind"] for n in saved["nodes"]} == {"real-1": "real", "real-2": "real"}


def test_pod_from_local_registry_runs_on_real_node(env: Env) -> None:
    started = time.monotonic()
    env.kubectl("apply", "-f", "-", input=_pod("counter", "real-1", env.cluster.images["counter"]))
    wait_for("counter Running on real-1", lambda: _running(env, "counter"))
    TIMINGS["pod Running"] = time.monotonic() - started
    wait_for("counter counting", lambda: len(_numbers(env.kubectl("logs", "counter"))) >= 3)
    pod = json.loads(env.kubectl("get", "pod", "counter", "-o", "json"))
    assert pod["spec"]["nodeName"] == "real-1"
    assert pod["status"]["podIP"].startswith("169.254."), "pod IPs are link-local"


def test_checkpoint_through_kubelet_api_with_webhook_authz(env: Env) -> None:
    env.kubectl("create", "serviceaccount", "checkpointer")
    env.kubectl("create", "serviceaccount", "bystander")
    env.kubectl("create", "clusterrole", "realnode-checkpoint", "--verb=create", "--resource=nodes/checkpoint")
    env.kubectl(
        "create",
        "clusterrolebinding",
        "realnode-checkpoint",
        "--clusterrole=realnode-checkpoint",
        "--serviceaccount=default:checkpointer",
    )
    allowed = env.kubectl("create", "token", "checkpointer").strip()
    denied = env.kubectl("create", "token", "bystander").strip()
    path = "/checkpoint/default/counter/counter"

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
    assert archive.name.startswith("checkpoint-counter_default-counter-") and archive.suffix == ".tar"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    print("archive entries: " + ", ".join(sorted(n for n in names if not n.startswith("checkpoint/"))))
    assert {"config.dump", "spec.dump", "status.dump", "rootfs-diff.tar", "checkpoint/inventory.img"} <= names
    assert _running(env, "counter"), "the container keeps running after a checkpoint"
    env.archive = archive


async def _push(archive: Path, registry: str, env: Env) -> str:
    with tarfile.open(archive) as tar:
        config = json.loads(tar.extractfile("config.dump").read())  # type: ignore[union-attr]
    info = oci.CheckpointInfo(
        container="counter",
        pod="counter",
        namespace="default",
        rootfs_image_name=config["rootfsImageName"],
        rootfs_image_ref=config["rootfsImageRef"],
        runtime="runc",
        criu_version="4.2.1",
        engine="containerd",
    )
    img = oci.checkpoint_image(archive=archive, info=info)
    assert img.manifest_bytes and oci.parse_manifest(img.manifest_bytes).checkpoint_container == "counter"
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(host=registry, session=session, plain_http=True)
        digest = await client.push_image(
            repository="checkpoints/counter",
            tag="real-1",
            layers=[(img.layer, img.layer_path)],
            config=img.config,
            config_bytes=img.config_bytes,
            manifest=img.manifest_bytes,
        )
    return f"{registry}/checkpoints/counter@{digest}"


def test_checkpoint_image_restores_on_second_real_node(env: Env) -> None:
    assert env.archive is not None, "needs the checkpoint of the previous test"
    with tarfile.open(env.archive) as tar:
        log = tar.extractfile("container.log").read().decode()  # type: ignore[union-attr]
    before = _numbers(" ".join(line.split(" ", 3)[-1] for line in log.splitlines()))
    assert len(before) >= 2 and before == list(range(1, len(before) + 1)), before
    ref = asyncio.run(_push(env.archive, env.cluster.registry, env))

    started = time.monotonic()
    env.kubectl("apply", "-f", "-", input=_pod("counter-restored", "real-2", ref))
    wait_for("restored counter Running on real-2", lambda: _running(env, "counter-restored"), timeout=90)
    TIMINGS["restore (pod create -> Running)"] = time.monotonic() - started
    numbers = wait_for(
        "the restored counter to count on",
        lambda: (n := _numbers(env.kubectl("logs", "counter-restored"))) and len(n) >= len(before) + 3 and n,
    )
    print(f"\ncheckpointed log ends at {before[-1]}; restored pod logs: {numbers}")
    # containerd copies the checkpointed container.log into the new container's log, then
    # the restored process goes on from its memory: the next number, never 1 again.
    assert numbers[: len(before)] == before
    after = numbers[len(before) :]
    assert after[0] in (before[-1], before[-1] + 1), f"continues from {before[-1]}, not from scratch: {after}"
    assert after == list(range(after[0], after[0] + len(after)))
    pod = json.loads(env.kubectl("get", "pod", "counter-restored", "-o", "json"))
    assert pod["spec"]["nodeName"] == "real-2"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    events = env.kubectl("get", "events", "--field-selector", "involvedObject.name=counter-restored", "-o", "json")
    assert any(e["reason"] == "Started" for e in json.loads(events)["items"])


def test_host_kernel_settings_unchanged_while_running(env: Env) -> None:
    assert realnode.read_sysctls() == env.sysctls_before
    # ... although the kubelet did write its values: into the files standing in for them.
    shadow = Path(env.node("real-1").state_dir) / "sysctl-shadow"
    assert (shadow / "kernel_panic").read_text().strip() == "10"
    assert (shadow / "vm_overcommit_memory").read_text().strip() == "1"


def test_down_leaves_nothing(env: Env) -> None:
    nodes = realnode.planned_nodes(env.state)
    assert [n.name for n in nodes] == ["real-1", "real-2"]
    started = time.monotonic()
    stopped = lc.down(state_dir=env.state)  # raises if anything is left behind
    TIMINGS["down"] = time.monotonic() - started
    assert {"real-1-kubelet", "real-1-containerd", "real-2-kubelet", "real-2-containerd"} <= set(stopped)
    assert not env.state.exists()
    mountinfo = Path("/proc/self/mountinfo").read_text()
    for n in nodes:
        assert not Path(n.run_dir).exists()
        assert n.state_dir not in mountinfo and n.run_dir not in mountinfo
        assert not Path(f"/sys/class/net/{n.bridge}").exists()
        assert not any((h / n.cgroup_name).exists() for h in Path("/sys/fs/cgroup").iterdir())
    shims = [p for p in Path("/proc").iterdir() if p.name.isdigit() and b"podmigrate-rn" in _cmdline(p)]
    assert not shims, shims
    assert realnode.read_sysctls() == env.sysctls_before, "the host's kernel settings are unchanged after the nodes ran"


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
