"""An asynchronous OCI distribution client: the one way this project talks to registries.

Why not oras-py for the byte-moving: it is synchronous, reads a monolithic blob into memory,
and measured here it pushes at ~150 MB/s where a streamed PUT reaches the registry's own
~250 MB/s (docs/facts.md, "Registry throughput"). This client streams blobs from disk in one monolithic upload,
verifies every pulled blob's digest while it streams (oras-py's download does not), and
retries nothing itself: callers decide (tenacity) what is transient.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ocicheckpoint import names
from ocicheckpoint.image import CHUNK, Descriptor, sha256_bytes


class RegistryError(RuntimeError):
    """The registry answered something other than success."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DigestMismatch(RegistryError):
    """A pulled blob's content did not hash to the digest it was asked for."""


@dataclass(frozen=True, kw_only=True)
class Credentials:
    username: str
    password: str

    def header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


# The slowest upload taken for progress: below this, a PUT is a stalled registry (measured ingest on
# loopback is 200-360 MB/s: docs/facts.md, "Registry throughput").
MIN_UPLOAD_BYTES_PER_S = 4 << 20
MIN_UPLOAD_DEADLINE_S = 30.0


def upload_deadline(size: int) -> float:
    return MIN_UPLOAD_DEADLINE_S + size / MIN_UPLOAD_BYTES_PER_S


class RegistryClient:
    """One registry host. ``plain_http`` for a loopback test registry without TLS."""

    def __init__(
        self,
        *,
        host: str,
        session: aiohttp.ClientSession,
        plain_http: bool = False,
        credentials: Credentials | None = None,
    ) -> None:
        self._base = f"{'http' if plain_http else 'https'}://{host}/v2"
        self._session = session
        self._headers = {"Authorization": credentials.header()} if credentials else {}

    async def _check(self, resp: aiohttp.ClientResponse, what: str, *ok: int) -> None:
        if resp.status not in ok:
            body = (await resp.text())[:500]
            raise RegistryError(f"{what}: HTTP {resp.status}: {body.strip()}", status=resp.status)

    async def blob_exists(self, *, repository: str, digest: str) -> bool:
        async with self._session.head(f"{self._base}/{repository}/blobs/{digest}", headers=self._headers) as resp:
            if resp.status == 404:
                return False
            await self._check(resp, f"HEAD blob {digest}", 200)
            return True

    async def _upload(self, *, repository: str, digest: str, size: int, body: object) -> None:
        start = f"{self._base}/{repository}/blobs/uploads/"
        async with self._session.post(start, headers={**self._headers, "Content-Length": "0"}) as resp:
            await self._check(resp, f"start upload to {repository}", 202)
            location = resp.headers["Location"]
        if location.startswith("/"):
            location = self._base.removesuffix("/v2") + location
        sep = "&" if "?" in location else "?"
        headers = {**self._headers, "Content-Type": "application/octet-stream", "Content-Length": str(size)}
        # aiohttp has no write timeout: a registry that stops reading mid-upload would hold the push (and
        # the frozen pod's lock) forever. So the whole PUT has a deadline from the blob's size.
        try:
            async with asyncio.timeout(upload_deadline(size)):
                async with self._session.put(f"{location}{sep}digest={digest}", data=body, headers=headers) as resp:
                    await self._check(resp, f"upload blob {digest}", 201)
        except TimeoutError:
            raise TimeoutError(
                f"upload of blob {digest} ({size} bytes) did not finish within {upload_deadline(size):.0f}s: the registry stalled"
            ) from None

    async def push_blob_file(self, *, repository: str, path: Path, descriptor: Descriptor) -> bool:
        """Stream a file as one blob. Returns False when the registry already had it."""
        if await self.blob_exists(repository=repository, digest=descriptor.digest):
            return False
        await self._upload(repository=repository, digest=descriptor.digest, size=descriptor.size, body=_file_chunks(path))
        return True

    async def push_blob_bytes(self, *, repository: str, data: bytes, descriptor: Descriptor) -> bool:
        if await self.blob_exists(repository=repository, digest=descriptor.digest):
            return False
        await self._upload(repository=repository, digest=descriptor.digest, size=len(data), body=data)
        return True

    async def push_manifest(self, *, repository: str, reference: str, manifest: bytes, media_type: str) -> str:
        """Put a manifest under a tag (or its digest); returns the manifest digest."""
        url = f"{self._base}/{repository}/manifests/{reference}"
        async with self._session.put(url, data=manifest, headers={**self._headers, "Content-Type": media_type}) as resp:
            await self._check(resp, f"push manifest {repository}:{reference}", 201)
            return resp.headers.get("Docker-Content-Digest") or sha256_bytes(manifest)

    async def push_image(
        self,
        *,
        repository: str,
        tag: str,
        layers: Sequence[tuple[Descriptor, Path]],
        config: Descriptor,
        config_bytes: bytes,
        manifest: bytes,
    ) -> str:
        """Push a whole OCI image (layers streamed from files, then config, then manifest); returns its digest."""
        for descriptor, path in layers:
            await self.push_blob_file(repository=repository, path=path, descriptor=descriptor)
        await self.push_blob_bytes(repository=repository, data=config_bytes, descriptor=config)
        return await self.push_manifest(
            repository=repository, reference=tag, manifest=manifest, media_type=names.MEDIA_TYPE_OCI_MANIFEST
        )

    async def get_manifest(self, *, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index, by tag or digest."""
        url = f"{self._base}/{repository}/manifests/{reference}"
        accept = ", ".join(names.MANIFEST_MEDIA_TYPES)
        async with self._session.get(url, headers={**self._headers, "Accept": accept}) as resp:
            await self._check(resp, f"get manifest {repository}:{reference}", 200)
            body = await resp.read()
            media_type = resp.headers.get("Content-Type", names.MEDIA_TYPE_OCI_MANIFEST).split(";")[0]
        digest = sha256_bytes(body)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(f"manifest {reference} hashed to {digest}")
        return body, media_type, digest

    async def get_blob_bytes(self, *, repository: str, digest: str) -> bytes:
        async with self._session.get(f"{self._base}/{repository}/blobs/{digest}", headers=self._headers) as resp:
            await self._check(resp, f"get blob {digest}", 200)
            body = await resp.read()
        if sha256_bytes(body) != digest:
            raise DigestMismatch(f"blob {digest} hashed to {sha256_bytes(body)}")
        return body

    async def get_blob_to_file(self, *, repository: str, digest: str, path: Path) -> int:
        """Stream a blob to ``path`` (via a temp file), verifying its digest on the way."""
        hasher = hashlib.sha256()
        size = 0
        tmp = path.with_name(path.name + ".partial")
        async with self._session.get(f"{self._base}/{repository}/blobs/{digest}", headers=self._headers) as resp:
            await self._check(resp, f"get blob {digest}", 200)
            with tmp.open("wb") as fh:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    hasher.update(chunk)
                    fh.write(chunk)
                    size += len(chunk)
        got = "sha256:" + hasher.hexdigest()
        if got != digest:
            tmp.unlink(missing_ok=True)
            raise DigestMismatch(f"blob {digest} hashed to {got}")
        tmp.rename(path)
        return size

    async def delete_manifest(self, *, repository: str, digest: str) -> bool:
        """Delete a manifest by digest; False if it was already gone."""
        async with self._session.delete(f"{self._base}/{repository}/manifests/{digest}", headers=self._headers) as resp:
            if resp.status == 404:
                return False
            await self._check(resp, f"delete manifest {digest}", 202)
            return True
