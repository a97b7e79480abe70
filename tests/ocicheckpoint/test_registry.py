"""The registry client (``ocicheckpoint.registry``) against a registry that stops reading mid-upload."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ocicheckpoint import registry
from ocicheckpoint.image import Descriptor, sha256_bytes


async def test_an_upload_the_registry_stops_reading_ends_at_its_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stalled, release = asyncio.Event(), asyncio.Event()

    async def start(request: web.Request) -> web.Response:
        return web.Response(status=202, headers={"Location": "/v2/ckpt/blobs/uploads/1"})

    async def put(request: web.Request) -> web.Response:
        await request.content.read(1 << 16)  # a little, then never again: the client's writes block
        stalled.set()
        await release.wait()
        return web.Response(status=500)

    app = web.Application(client_max_size=1 << 30)

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app.router.add_route("HEAD", "/v2/ckpt/blobs/{digest}", missing)
    app.router.add_post("/v2/ckpt/blobs/uploads/", start)
    app.router.add_put("/v2/ckpt/blobs/uploads/1", put)
    server = TestServer(app)
    await server.start_server()
    data = b"x" * (64 << 20)
    blob = tmp_path / "layer"
    blob.write_bytes(data)
    monkeypatch.setattr(registry, "MIN_UPLOAD_DEADLINE_S", 1.0)
    monkeypatch.setattr(registry, "MIN_UPLOAD_BYTES_PER_S", 1 << 40)
    try:
        async with aiohttp.ClientSession() as session:
            client = registry.RegistryClient(host=f"{server.host}:{server.port}", session=session, plain_http=True)
            started = time.monotonic()
            with pytest.raises(TimeoutError, match="the registry stalled"):
                await client.push_blob_file(
                    repository="ckpt", path=blob, descriptor=Descriptor(media_type="x", digest=sha256_bytes(data), size=len(data))
                )
            assert stalled.is_set() and time.monotonic() - started < 10
    finally:
        release.set()
        await server.close()
