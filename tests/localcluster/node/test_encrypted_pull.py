"""The stand-in node decrypts ``+encrypted`` layers on pull (CRI-O's ``decryption_keys_path``), and an
image no key of the node opens fails the pull saying so, before anything is unpacked; an altered blob
fails it too and leaves nothing unpacked."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from localcluster.node.images import ImagePullError, ImageStore
from ocicheckpoint import encryption, names
from ocicheckpoint.image import CheckpointImage, CheckpointInfo, checkpoint_image

INFO = CheckpointInfo(
    container="c", pod="p", namespace="ns", rootfs_image_name="r/app:1", rootfs_image_ref="r/app@sha256:" + "1" * 64,
    runtime="runc", criu_version="4.2",
)  # fmt: skip


def _archive(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        data = b'{"id": "x"}'
        info = tarfile.TarInfo(names.CONFIG_DUMP_FILE)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@asynccontextmanager
async def _pulling(
    tmp_path: Path, image: CheckpointImage, *, layer: bytes, keys: Path | None = None
) -> AsyncIterator[tuple[ImageStore, str]]:
    """A registry serving ``image`` (its layer's bytes given: altered ones too) and a node store pulling
    from it; yields the store and the image's name."""
    server = await _serve({image.layer.digest: layer, image.config.digest: image.config_bytes}, image.manifest_bytes)
    host = f"{server.host}:{server.port}"
    try:
        async with aiohttp.ClientSession() as session:
            store = ImageStore(
                root=tmp_path / "store", session=session, plain_http_registries=frozenset({host}), decryption_keys_path=keys
            )
            yield store, f"{host}/ckpt/p@{image.manifest_digest}"
    finally:
        await server.close()


def _unpacked_config_dumps(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "store").rglob("*") if p.name == names.CONFIG_DUMP_FILE]


async def _serve(blobs: dict[str, bytes], manifest: bytes) -> TestServer:
    async def get_manifest(request: web.Request) -> web.Response:
        return web.Response(body=manifest, content_type=names.MEDIA_TYPE_OCI_MANIFEST)

    async def get_blob(request: web.Request) -> web.Response:
        return web.Response(body=blobs[request.match_info["digest"]])

    app = web.Application()
    app.router.add_get("/v2/{repo:.+}/manifests/{ref}", get_manifest)
    app.router.add_get("/v2/{repo:.+}/blobs/{digest}", get_blob)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.mark.parametrize("has_key", [True, False])
async def test_pull_decrypts_with_the_node_key_or_says_it_has_none(tmp_path: Path, has_key: bool) -> None:
    private, public = encryption.new_keypair(bits=2048)
    image = checkpoint_image(archive=_archive(tmp_path / "a.tar"), info=INFO, recipients=[encryption.parse_public_key(public)])
    assert image.encrypted and image.layer.media_type == names.MEDIA_TYPE_OCI_LAYER_TAR_ENCRYPTED
    keys = tmp_path / "keys"
    key = private if has_key else encryption.new_keypair(bits=2048)[0]
    encryption.write_private_key(path=keys / "node.key", pem=key)
    async with _pulling(tmp_path, image, layer=image.layer_path.read_bytes(), keys=keys) as (store, name):
        if has_key:
            pulled = await store.pull(name)
            assert (pulled.root / names.CONFIG_DUMP_FILE).read_bytes() == b'{"id": "x"}'
        else:
            with pytest.raises(ImagePullError, match=r"no private key in .* decrypts it"):
                await store.pull(name)
            assert not (tmp_path / "store" / image.manifest_digest.removeprefix("sha256:")).exists()


async def test_a_blob_altered_in_the_registry_fails_the_pull_and_leaves_nothing_unpacked(tmp_path: Path) -> None:
    """The layer is unpacked while it downloads; the HMAC and digests are checked at its end, and a
    failure removes what was unpacked (a checkpoint's plaintext is never left on the node)."""
    private, public = encryption.new_keypair(bits=2048)
    image = checkpoint_image(archive=_archive(tmp_path / "a.tar"), info=INFO, recipients=[encryption.parse_public_key(public)])
    sealed = bytearray(image.layer_path.read_bytes())
    sealed[-1] ^= 0x01  # the tar's last padding byte: unpacking succeeds, the HMAC does not
    keys = tmp_path / "keys"
    encryption.write_private_key(path=keys / "node.key", pem=private)
    async with _pulling(tmp_path, image, layer=bytes(sealed), keys=keys) as (store, name):
        with pytest.raises(ImagePullError, match="hashed to"):
            await store.pull(name)
        assert _unpacked_config_dumps(tmp_path) == [], "nothing unpacked from the altered blob stays"


async def test_a_layer_the_unpacker_refuses_mid_download_fails_the_pull_with_its_reason(tmp_path: Path) -> None:
    """A device node in a (plaintext) layer: the unpacking thread refuses it while the download runs;
    the download stops, the pull fails with the unpacker's reason, and nothing unpacked stays."""
    layer_tar = tmp_path / "layer.tar"
    with tarfile.open(layer_tar, "w") as tar:
        data = b'{"id": "x"}'
        info = tarfile.TarInfo(names.CONFIG_DUMP_FILE)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        dev = tarfile.TarInfo("dev-null")
        dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
        tar.addfile(dev)
        filler = tarfile.TarInfo("filler")
        filler.size = 8 << 20  # more than the pipes hold: the download must be stopped, not finish on its own
        tar.addfile(filler, io.BytesIO(bytes(filler.size)))
    image = checkpoint_image(archive=layer_tar, info=INFO)
    async with _pulling(tmp_path, image, layer=layer_tar.read_bytes()) as (store, name):
        with pytest.raises(ImagePullError, match="device node"):
            await store.pull(name)
        assert _unpacked_config_dumps(tmp_path) == []
