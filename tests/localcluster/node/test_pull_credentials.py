"""The stand-in node pulls like a kubelet's keyring: the pod's imagePullSecrets in order, then the node's own
credentials, the next one after a refusal; anonymously when none names the registry."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from localcluster.node.images import ImagePullError, ImageStore
from ocicheckpoint import image as oci
from ocicheckpoint import names
from ocicheckpoint.credentials import Credentials, DockerConfig

GOOD = Credentials(username="reader", password="right")


def _image() -> tuple[dict[str, bytes], bytes]:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = b"hello\n"
        info = tarfile.TarInfo("greeting")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    layer_desc = oci.Descriptor(
        media_type=names.MEDIA_TYPE_OCI_LAYER_TAR, digest=oci.sha256_bytes(layer_bytes), size=len(layer_bytes)
    )
    config = oci.build_config(diff_ids=[layer_desc.digest], entrypoint=["/bin/true"], cmd=[], env=[])
    config_desc = oci.Descriptor(media_type=names.MEDIA_TYPE_OCI_CONFIG, digest=oci.sha256_bytes(config), size=len(config))
    manifest = oci.build_manifest(config=config_desc, layers=[layer_desc])
    return {layer_desc.digest: layer_bytes, config_desc.digest: config}, manifest


SEEN: web.AppKey[list[str]] = web.AppKey("seen", list)


@pytest.fixture
async def registry() -> AsyncIterator[TestServer]:
    """Basic auth: only ``GOOD`` reads; every request's Authorization is recorded."""
    blobs, manifest = _image()

    def allowed(request: web.Request) -> bool:
        return request.headers.get("Authorization") == GOOD.header()

    async def get_manifest(request: web.Request) -> web.Response:
        request.app[SEEN].append(request.headers.get("Authorization", ""))
        if not allowed(request):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="test"'})
        return web.Response(body=manifest, content_type=names.MEDIA_TYPE_OCI_MANIFEST)

    async def get_blob(request: web.Request) -> web.Response:
        if not allowed(request):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="test"'})
        return web.Response(body=blobs[request.match_info["digest"]])

    app = web.Application()
    app[SEEN] = []
    app.router.add_get("/v2/{repo:.+}/manifests/{ref}", get_manifest)
    app.router.add_get("/v2/{repo:.+}/blobs/{digest}", get_blob)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def _config(host: str, creds: Credentials) -> DockerConfig:
    return DockerConfig(auths={host: creds})


async def test_a_refused_pull_secret_falls_through_to_the_next_then_the_nodes(registry: TestServer, tmp_path: Path) -> None:
    host = f"{registry.host}:{registry.port}"
    wrong = Credentials(username="checkpoint-puller", password="x")
    async with aiohttp.ClientSession() as session:
        store = ImageStore(
            root=tmp_path / "images",
            session=session,
            plain_http_registries=frozenset({host}),
            node_credentials=_config(host, GOOD),
        )
        pulled = await store.pull(f"{host}/app:1", pull_secrets=[_config(host, wrong), DockerConfig()])
    assert (pulled.root / "greeting").read_text() == "hello\n"
    seen = registry.app[SEEN]
    assert seen[:2] == ["", wrong.header()], "the pod's Secret first (after the challenge)"
    assert GOOD.header() in seen[2:], "then the node's own"


async def test_without_working_credentials_the_pull_fails(registry: TestServer, tmp_path: Path) -> None:
    host = f"{registry.host}:{registry.port}"
    async with aiohttp.ClientSession() as session:
        store = ImageStore(root=tmp_path / "images", session=session, plain_http_registries=frozenset({host}))
        with pytest.raises(ImagePullError, match="401"):
            await store.pull(f"{host}/app:1", pull_secrets=[_config(host, Credentials(username="u", password="bad"))])
        with pytest.raises(ImagePullError, match="401"):
            await store.pull(f"{host}/app:1")
