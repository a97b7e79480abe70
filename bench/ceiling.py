"""The registry's ceilings, measured in the same run: how fast the local registry takes and serves a blob at best.

Why: the floor (raw ``criu dump`` + ``criu restore``) prices the whole pipeline, but it says nothing about the
upload, which CRIU never does. To tell a slow upload from a registry that cannot go faster, the bench pushes a blob
of the same size of random bytes straight to the same registry, with a client that does nothing else: no archive
to read from a kubelet, no hashing while it sends (the digest is computed beforehand, not timed), no retries, no
HEAD. Once as one stream, once as ``STREAMS`` blobs of a quarter each sent at once (the registry hashes every
stream on its own goroutine, so parallel streams can use both cores), and the first blob is read back in full
(the target's fetch ceiling). The agent's upload is then compared with the better of the two push rates.

The client is aiohttp with the token flow done by hand (``ocicheckpoint.registry.parse_challenge`` reads the
challenge): the registry of ``localcluster`` requires a token, and ``podmigrate-push`` (the agents' user, from
``cluster.registry_credentials``) may pull, push and delete in the checkpoint repository. The blobs go to
``podmigrate-checkpoints/bench-ceiling`` and are deleted afterwards; every run writes fresh random bytes, so no
blob is ever already there. The source is a file in the bench's working directory, written just before (in the
page cache, like the kubelet's archive the agent reads), on the disk that also holds the registry's storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import aiohttp

from bench.cpu import process_cpu_seconds
from bench.results import CeilingRun
from bench.stats import MIB
from localcluster import registryauth
from ocicheckpoint.credentials import Credentials
from ocicheckpoint.encryption import LayerPass, PublicKey, new_keypair, parse_public_key
from ocicheckpoint.image import CHUNK
from ocicheckpoint.names import MEDIA_TYPE_OCI_LAYER_TAR
from ocicheckpoint.registry import RegistryError, parse_challenge

REPOSITORY: Final = f"{registryauth.CHECKPOINT_REPOSITORY}/bench-ceiling"
STREAMS: Final = 4


def split_ranges(size: int, parts: int) -> list[tuple[int, int]]:
    """(offset, length) of ``parts`` consecutive ranges covering ``size`` bytes; the last one takes the remainder."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    base = size // parts
    ranges = [(i * base, base) for i in range(parts - 1)]
    ranges.append(((parts - 1) * base, size - (parts - 1) * base))
    return ranges


def write_random(path: Path, *, size: int, parts: int) -> tuple[str, list[str]]:
    """Write ``size`` random bytes to ``path``; the sha256 digest of the whole and of each of ``parts`` ranges.

    ``random.randbytes`` (Mersenne Twister), not ``os.urandom``: just as incompressible for a registry that does not
    compress anyway, and cheaper to make a GiB of. Not timed.
    """
    whole = hashlib.sha256()
    digests = []
    rng = random.Random()
    with path.open("wb") as out:
        for _, length in split_ranges(size, parts):
            part = hashlib.sha256()
            left = length
            while left:
                chunk = rng.randbytes(min(CHUNK, left))
                out.write(chunk)
                whole.update(chunk)
                part.update(chunk)
                left -= len(chunk)
            digests.append("sha256:" + part.hexdigest())
    return "sha256:" + whole.hexdigest(), digests


async def _file_range(path: Path, *, offset: int, length: int) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        fh.seek(offset)
        left = length
        while left and (chunk := fh.read(min(CHUNK, left))):
            left -= len(chunk)
            yield chunk


async def _authorization(session: aiohttp.ClientSession, *, base: str, credentials: Credentials | None) -> dict[str, str]:
    """The Authorization header for pull, push and delete on ``REPOSITORY``: ask ``/v2/``, answer its challenge."""
    async with session.get(f"{base}/") as resp:
        if resp.status == 200:
            return {}
        challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
    if challenge is None:
        raise RegistryError(f"GET {base}/ answered {resp.status} without a challenge", status=resp.status)
    basic = {"Authorization": credentials.header()} if credentials is not None and credentials.has_password else {}
    if challenge.scheme == "basic":
        return basic
    realm = challenge.params.get("realm")
    if challenge.scheme != "bearer" or not realm:
        raise RegistryError(f"GET {base}/: a challenge the bench cannot answer: {challenge}")
    query = {"scope": f"repository:{REPOSITORY}:pull,push,delete"}
    if service := challenge.params.get("service"):
        query["service"] = service
    async with session.get(realm, params=query, headers=basic) as resp:
        if resp.status != 200:
            raise RegistryError(f"token server {realm}: HTTP {resp.status}: {(await resp.text())[:300]}", status=resp.status)
        doc = await resp.json(content_type=None)
    token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
    if not token:
        raise RegistryError(f"token server {realm} answered without a token")
    return {"Authorization": f"Bearer {token}"}


async def _push(
    session: aiohttp.ClientSession, *, base: str, auth: dict[str, str], path: Path, offset: int, length: int, digest: str
) -> None:
    """One monolithic upload, as the agent's client does it: POST for a location, then one streamed PUT."""
    async with session.post(f"{base}/{REPOSITORY}/blobs/uploads/", headers={**auth, "Content-Length": "0"}) as resp:
        if resp.status != 202:
            raise RegistryError(f"start upload: HTTP {resp.status}: {(await resp.text())[:300]}", status=resp.status)
        location = resp.headers["Location"]
    if location.startswith("/"):
        location = base.removesuffix("/v2") + location
    sep = "&" if "?" in location else "?"
    headers = {**auth, "Content-Type": "application/octet-stream", "Content-Length": str(length)}
    body = _file_range(path, offset=offset, length=length)
    async with session.put(f"{location}{sep}digest={digest}", headers=headers, data=body) as resp:
        if resp.status != 201:
            raise RegistryError(f"upload {digest}: HTTP {resp.status}: {(await resp.text())[:300]}", status=resp.status)


async def _get(session: aiohttp.ClientSession, *, base: str, auth: dict[str, str], digest: str) -> int:
    """Read a blob to its end and throw it away (no hashing: the ceiling of the transfer, not of verifying it)."""
    size = 0
    async with session.get(f"{base}/{REPOSITORY}/blobs/{digest}", headers=auth) as resp:
        if resp.status != 200:
            raise RegistryError(f"get {digest}: HTTP {resp.status}: {(await resp.text())[:300]}", status=resp.status)
        async for chunk in resp.content.iter_chunked(CHUNK):
            size += len(chunk)
    return size


async def _delete(session: aiohttp.ClientSession, *, base: str, auth: dict[str, str], digests: list[str]) -> None:
    for digest in digests:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.delete(f"{base}/{REPOSITORY}/blobs/{digest}", headers=auth) as resp:
                await resp.read()


async def _measure(
    run: CeilingRun,
    *,
    registry: str,
    registry_pid: int | None,
    credentials: Credentials | None,
    path: Path,
    digest: str,
    parts: list[str],
) -> None:
    base = f"http://{registry}/v2"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
    # trust_env=False: no proxy from the environment between the bench and a loopback registry.
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
        auth = await _authorization(session, base=base, credentials=credentials)
        try:
            cpu0 = process_cpu_seconds(registry_pid)
            t0 = time.monotonic()
            await _push(session, base=base, auth=auth, path=path, offset=0, length=run.blob_bytes, digest=digest)
            run.push_1_s = time.monotonic() - t0
            cpu1 = process_cpu_seconds(registry_pid)
            run.push_1_registry_cpu_s = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None

            ranges = split_ranges(run.blob_bytes, run.streams)
            t0 = time.monotonic()
            await asyncio.gather(
                *(
                    _push(session, base=base, auth=auth, path=path, offset=offset, length=length, digest=part)
                    for (offset, length), part in zip(ranges, parts, strict=True)
                )
            )
            run.push_n_s = time.monotonic() - t0

            t0 = time.monotonic()
            got = await _get(session, base=base, auth=auth, digest=digest)
            run.get_s = time.monotonic() - t0
            if got != run.blob_bytes:
                run.get_s = None
                raise RegistryError(f"get {digest}: {got} bytes, expected {run.blob_bytes}")
        finally:
            await _delete(session, base=base, auth=auth, digests=[digest, *parts])


def layer_pass_seconds(path: Path, *, recipient: PublicKey, parallel: bool) -> float:
    """Hash and encrypt ``path`` as the agent's upload does (``LayerPass``, ``CHUNK`` at a time), the output thrown
    away: how fast the agent's side of an upload can go on this machine, with no registry in the way."""
    t0 = time.monotonic()
    with LayerPass(media_type=MEDIA_TYPE_OCI_LAYER_TAR, recipients=[recipient], parallel=parallel) as layer:
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                layer.feed(chunk)
        layer.finish()
    return time.monotonic() - t0


def measure(
    *,
    registry: str,
    credentials: Credentials | None,
    size_mib: int,
    workdir: Path,
    streams: int = STREAMS,
    registry_pid: int | None = None,
) -> CeilingRun:
    """Hash and encrypt ``size_mib`` MiB of fresh random bytes as the agent does (1 thread, then lanes), push them in
    1 and in ``streams`` streams, read them back; always clean up. With ``registry_pid``, also the registry
    process's CPU seconds during the one-stream push."""
    run = CeilingRun(blob_bytes=size_mib * MIB, streams=streams)
    path = workdir / f"ceiling-{size_mib}mib.bin"
    try:
        digest, parts = write_random(path, size=run.blob_bytes, parts=streams)
        recipient = parse_public_key(new_keypair()[1])
        run.encrypt_1_s = layer_pass_seconds(path, recipient=recipient, parallel=False)
        run.encrypt_lanes_s = layer_pass_seconds(path, recipient=recipient, parallel=True)
        asyncio.run(
            _measure(
                run, registry=registry, registry_pid=registry_pid, credentials=credentials, path=path, digest=digest,
                parts=parts,
            )
        )  # fmt: skip
    except (OSError, aiohttp.ClientError, RegistryError, TimeoutError, KeyError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        path.unlink(missing_ok=True)
    return run
