"""The local cluster's demo: a stateful, slow-to-warm app checkpointed on one node, restored on another.

It does by hand, through the same interfaces a real cluster offers, what podmigrate automates:
the kubelet's ``POST /checkpoint`` with a ServiceAccount token that may only
``create nodes/checkpoint``, the archive turned into a checkpoint OCI image and pushed to the
registry, and a pod on the other node whose image is that checkpoint image. The app's
in-memory writes and its warm-up survive; the cold start it would otherwise pay is measured
first, for comparison.
"""

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

import aiohttp

from localcluster import cluster as lc
from ocicheckpoint import image as oci
from ocicheckpoint import names
from ocicheckpoint.registry import RegistryClient

CHECKPOINTER = """apiVersion: v1
kind: ServiceAccount
metadata: {name: demo-checkpointer, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: demo-node-checkpoint}
rules:
- {apiGroups: [""], resources: [nodes/checkpoint], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: demo-node-checkpoint}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: demo-node-checkpoint}
subjects: [{kind: ServiceAccount, name: demo-checkpointer, namespace: default}]
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
    *, registry: str, archive: Path, repository: str, tag: str, container: str, pod: str, namespace: str
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
    img = oci.checkpoint_image(archive=archive, info=info)

    async def push() -> str:
        async with aiohttp.ClientSession() as session:
            client = RegistryClient(host=registry, session=session, plain_http=True)
            return await client.push_image(
                repository=repository,
                tag=tag,
                layers=[(img.layer, img.layer_path)],
                config=img.config,
                config_bytes=img.config_bytes,
                manifest=img.manifest_bytes,
            )

    digest = asyncio.run(push())
    return f"{registry}/{repository}:{tag}@{digest}"


class _Kubectl:
    def __init__(self, c: lc.Cluster) -> None:
        self.c = c

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [self.c.kubectl, f"--kubeconfig={self.c.kubeconfig}", *args], input=stdin, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def pod(self, name: str) -> dict:
        return json.loads(self("get", "pod", name, "-o", "json"))

    def wait_ready(self, name: str, timeout: float = 120) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            statuses = self.pod(name)["status"].get("containerStatuses") or []
            if statuses and statuses[0]["ready"]:
                return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"pod {name} not Ready after {timeout}s: {self.pod(name)['status']}")


def _http(method: str, url: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, method=method, data=b"" if method == "POST" else None), timeout=5) as resp:
        return json.loads(resp.read())


def _app_pod(name: str, node: str, image: str) -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: warmup}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {image}
    env: [{{name: WARMUP_SECONDS, value: "20"}}]
    readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
"""


def run(*, state_dir: Path, keep: bool) -> None:
    say = lambda text: print(f"demo: {text}", flush=True)  # noqa: E731
    fresh = not (state_dir / "cluster.json").exists()
    c = lc.up(state_dir=state_dir, nodes=2) if fresh else lc.Cluster.load(state_dir)
    kubectl = _Kubectl(c)
    source, target = c.nodes[0], c.nodes[1]
    try:
        say(f"cluster: {', '.join(n.name for n in c.nodes)}; registry {c.registry}")
        kubectl("apply", "-f", "-", stdin=CHECKPOINTER + "---\n" + _app_pod("app", source.name, c.images["warmup"]))
        cold = kubectl.wait_ready("app")
        say(f"app warmed up and Ready on {source.name} after a cold start of {cold:.1f}s")
        ip = kubectl.pod("app")["status"]["podIP"]
        for i in range(5):
            _http("POST", f"http://{ip}:8080/write?key=k{i}&value=v{i}")
        before = _http("GET", f"http://{ip}:8080/state")
        say(f"wrote 5 keys; app state: boot {before['boot_id']}, {before['writes']} writes")

        token = kubectl("create", "token", "demo-checkpointer").strip()
        started = time.monotonic()
        archive = kubelet_checkpoint(cluster=c, node=source, namespace="default", pod="app", container="app", token=token)
        say(f"kubelet checkpoint on {source.name}: {archive.name} ({archive.stat().st_size / 1e6:.1f} MB)")
        image = push_checkpoint_archive(
            registry=c.registry,
            archive=archive,
            repository="checkpoints/demo",
            tag="app",
            container="app",
            pod="app",
            namespace="default",
        )
        archive.unlink()
        say(f"checkpoint image pushed: {image}")
        # CRI-O restores only on top of a base image already on the node: pull it there first.
        kubectl("apply", "-f", "-", stdin=_app_pod("prepull", target.name, c.images["warmup"]))
        kubectl("delete", "pod", "app", "--grace-period=1")
        kubectl("apply", "-f", "-", stdin=_app_pod("app", target.name, image))
        restored = kubectl.wait_ready("app")
        total = time.monotonic() - started
        ip2 = kubectl.pod("app")["status"]["podIP"]
        after = _http("GET", f"http://{ip2}:8080/state")
        values = [_http("GET", f"http://{ip2}:8080/read?key=k{i}")["value"] for i in range(5)]
        say(
            f"restored on {target.name}, Ready {restored:.1f}s after creation"
            f" ({total:.1f}s end to end); the cold start took {cold:.1f}s"
        )
        say(f"same process state: boot {after['boot_id']} (was {before['boot_id']}), keys {values}")
        restarts = kubectl.pod("app")["status"]["containerStatuses"][0]["restartCount"]
        if after["boot_id"] != before["boot_id"] or values != [f"v{i}" for i in range(5)] or restarts != 0:
            raise RuntimeError("the restored app lost its state")
        say("OK: in-memory state and warm-up survived the move")
    finally:
        if fresh and not keep:
            lc.down(state_dir=state_dir)
