"""Stand-ins for the agent's neighbours in unit tests: pods, kubelet, registry, cgroup tree.

Only the API server, kubelet and registry are faked; the agent's own code (freezer on a fake
cgroup tree, archive inspection, image building, the registry client, retries) runs for real.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from node_agent.kubelet import KubeletEndpoint, KubeletError
from node_agent.pods import NodeView, PodView

NODE = "node-1"


def pod_json(
    *,
    name: str = "counter",
    namespace: str = "default",
    node: str = NODE,
    phase: str = "Running",
    containers: dict[str, bool] | None = None,  # name -> running
    empty_dirs: dict[str, str] | None = None,  # emptyDir name -> medium
) -> dict[str, Any]:
    containers = containers if containers is not None else {"counter": True}
    statuses = []
    for cname, running in containers.items():
        state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}} if running else {"terminated": {"exitCode": 0}}
        statuses.append({"name": cname, "containerID": f"cri-o://{container_id(name, cname)}", "state": state})
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": "uid1"},
        "spec": {
            "nodeName": node,
            "containers": [{"name": c} for c in containers],
            "volumes": [{"name": v, "emptyDir": {"medium": m} if m else {}} for v, m in (empty_dirs or {}).items()],
        },
        "status": {"phase": phase, "containerStatuses": statuses},
    }


def container_id(pod: str, container: str) -> str:
    return f"uid-{pod}-{container}-0"


class FakePods:
    def __init__(self, *pods: dict[str, Any]) -> None:
        self.pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): PodView.from_json(p) for p in pods}

    async def read_pod(self, *, namespace: str, name: str) -> PodView | None:
        return self.pods.get((namespace, name))

    async def read_node(self, *, name: str) -> NodeView:
        return NodeView(name=name, kubelet=KubeletEndpoint(host="127.0.0.1", port=10250), runtime_version="cri-o://test")


def make_cgroup_tree(root: Path, *, container_ids: list[str], layout: str = "v1") -> dict[str, Path]:
    """A fake /sys/fs/cgroup with one cgroup per container, in the runtime's naming."""
    found = {}
    for cid in container_ids:
        if layout == "v1":
            d = root / "freezer" / "localcluster-n31" / "uid1" / cid
            d.mkdir(parents=True)
            (d / "freezer.state").write_text("THAWED\n")
        else:
            (root / "cgroup.controllers").write_text("cpu memory\n")
            d = root / "kubepods.slice" / "kubepods-pod.slice" / f"crio-{cid}.scope"
            d.mkdir(parents=True)
            (d / "cgroup.freeze").write_text("0\n")
            (d / "cgroup.events").write_text("populated 1\nfrozen 0\n")
        found[cid] = d
    return found


def make_archive(path: Path, *, container: str, extra_bytes: int = 300_000) -> Path:
    """A CRI-O layout checkpoint archive like the kubelet leaves (root-level entries, config.dump)."""
    config = {
        "id": container,
        "name": container,
        "rootfsImage": "127.0.0.1:5313/podmigrate/counter:v1",
        "rootfsImageRef": "sha256:" + "b" * 64,
        "rootfsImageName": "127.0.0.1:5313/podmigrate/counter@sha256:" + "b" * 64,
        "runtime": "runc",
    }
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("checkpoint")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        pages = tarfile.TarInfo("checkpoint/pages-1.img")
        pages.size = extra_bytes
        tar.addfile(pages, io.BytesIO(bytes(range(256)) * (extra_bytes // 256) + b"x" * (extra_bytes % 256)))
        for name, data in (("config.dump", json.dumps(config).encode()), ("spec.dump", b"{}")):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return path


class FakeKubelet:
    """Writes an archive into ``directory`` per call, or fails as told."""

    def __init__(self, *, directory: Path, fail: dict[str, KubeletError] | None = None) -> None:
        self.directory = directory
        self.fail = fail or {}
        self.calls: list[str] = []
        self.archives: list[Path] = []
        self.frozen_during_call: dict[str, bool] = {}
        self.observe_frozen: Any = None  # optional callable(container) -> bool
        self.delay_before_failure = 0.0
        self.delay = 0.0  # every call takes this long (a slow checkpoint)
        self.extra_bytes = 300_000  # the memory pages' size: changed, a checkpoint of a pod that ran on

    async def checkpoint(
        self, *, endpoint: KubeletEndpoint, namespace: str, pod: str, container: str, timeout_seconds: int
    ) -> str:
        self.calls.append(container)
        if self.observe_frozen is not None:
            self.frozen_during_call[container] = self.observe_frozen(container)
        await asyncio.sleep(self.delay)
        if container in self.fail:
            await asyncio.sleep(self.delay_before_failure)
            raise self.fail[container]
        path = make_archive(
            self.directory / f"checkpoint-{pod}_{namespace}-{container}-2026.tar",
            container=container,
            extra_bytes=self.extra_bytes,
        )
        self.archives.append(path)
        return str(path)


@dataclass
class FakeRegistry:
    """Just enough of the distribution API; ``fail`` holds statuses to answer the next requests with."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)  # digest -> body
    tags: dict[str, str] = field(default_factory=dict)  # repo:tag -> digest
    fail: list[int] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)  # upload id -> bytes PATCHed so far

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/v2/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        if self.fail:
            await request.read()
            return web.Response(status=self.fail.pop(0), text="injected failure")
        tail = request.match_info["tail"]
        if m := re.fullmatch(r"(.+)/blobs/uploads/", tail):
            return web.Response(status=202, headers={"Location": f"/v2/{m[1]}/blobs/uploads/{uuid.uuid4()}"})
        if m := re.fullmatch(r"(.+)/blobs/uploads/([^/]+)", tail):
            data = self.uploads.pop(m[2], b"") + await request.read()
            if request.method == "PATCH":  # a streamed chunk: kept until the closing PUT names the digest
                self.uploads[m[2]] = data
                return web.Response(status=202, headers={"Location": f"/v2/{tail}", "Range": f"0-{len(data) - 1}"})
            digest = request.query["digest"]
            if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                return web.Response(status=400, text="digest invalid")
            self.blobs[digest] = data
            return web.Response(status=201)
        if m := re.fullmatch(r"(.+)/blobs/(sha256:[0-9a-f]+)", tail):
            if m[2] not in self.blobs:
                return web.Response(status=404)
            return web.Response(body=self.blobs[m[2]])
        if m := re.fullmatch(r"(.+)/manifests/([^/]+)", tail):
            repo, ref = m[1], m[2]
            if request.method == "PUT":
                body = await request.read()
                digest = "sha256:" + hashlib.sha256(body).hexdigest()
                self.manifests[digest] = body
                self.tags[f"{repo}:{ref}"] = digest
                return web.Response(status=201, headers={"Docker-Content-Digest": digest})
            digest = ref if ref.startswith("sha256:") else self.tags.get(f"{repo}:{ref}", "")
            if digest not in self.manifests:
                return web.Response(status=404)
            if request.method == "DELETE":
                del self.manifests[digest]
                return web.Response(status=202)
            return web.Response(
                body=self.manifests[digest], headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
            )
        return web.Response(status=404)
