"""An asynchronous OCI distribution client: the one way this project talks to registries.

Why not oras-py for the byte-moving: it is synchronous, reads a monolithic blob into memory,
and measured here it pushes at ~150 MB/s where a streamed PUT reaches the registry's own
~250 MB/s (docs/facts.md, "Registry throughput"). This client streams blobs from disk in one monolithic upload,
verifies every pulled blob's digest while it streams (oras-py's download does not), and
retries nothing itself: callers decide (tenacity) what is transient.

Authentication (docs/registry.md) is the Docker/OCI token flow and Basic, answered the way
docker and containerd answer them: a request goes out with whatever this client already holds;
on ``401`` with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` it asks the realm
for a token for the scope (with the credentials as Basic, or anonymously), caches it per
repository and actions until ``expires_in`` and sends the request once more; on
``WWW-Authenticate: Basic`` it sends the credentials. The one request that cannot be sent twice
is a blob upload's streamed PUT (its body is a file being read, and it goes to the Location the
upload's POST returned), so uploads ask for ``pull,push`` from their first request: the token is
in hand before a byte streams, and a token about to expire is renewed rather than used.

A layer is read as it downloads (``read_layer``): its bytes go from the socket to a worker thread
that decrypts (``encryption.LayerOpening``) and reads the plaintext as a file (``tarfile`` unpacking
it, or ``criuimages.inspect_tar`` describing it), never the whole layer in memory or on disk; the
checks that need the whole blob come at its end. The stand-in node's pull and ``kubectl migrate
inspect --from-registry`` both read layers this way.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import aiohttp

from ocicheckpoint import names
from ocicheckpoint.credentials import Credentials
from ocicheckpoint.image import CHUNK, Descriptor, sha256_bytes
from ocicheckpoint.pipe import ThreadReader, worker_error

if TYPE_CHECKING:  # not at run time: encryption needs cryptography, which kubectl-migrate's krew build does not carry
    from ocicheckpoint.encryption import LayerOpening

__all__ = ["Credentials", "DigestMismatch", "RegistryClient", "RegistryError", "upload_deadline"]

WWW_AUTHENTICATE: Final = "WWW-Authenticate"
PULL: Final = ("pull",)
PUSH: Final = ("pull", "push")
DELETE: Final = ("delete",)
# The token spec's default lifetime when a token server does not say (distribution's docs/spec/auth/token.md).
TOKEN_DEFAULT_EXPIRES_S: Final = 60
# A token this close to its expiry (or half its lifetime, for a shorter-lived one) is renewed instead of
# sent: a request (an upload's PUT above all) must reach the registry while its token is still valid.
TOKEN_RENEW_BEFORE_S: Final = 15.0
# What an identity token is exchanged as (OAuth2 refresh_token grant, as docker does).
OAUTH_CLIENT_ID: Final = "podmigrate"
_CHALLENGE_PARAM: Final = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class RegistryError(RuntimeError):
    """The registry answered something other than success."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DigestMismatch(RegistryError):
    """A pulled blob's content did not hash to the digest it was asked for."""


@dataclass(frozen=True, kw_only=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: its scheme (``bearer``, ``basic``) and parameters."""

    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """``Bearer realm="https://auth/token",service="registry",scope="repository:a:pull"`` (or ``Basic realm=...``)."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3) for m in _CHALLENGE_PARAM.finditer(rest)}
    return Challenge(scheme=scheme.lower(), params=params)


@dataclass(frozen=True, kw_only=True)
class _Token:
    value: str
    actions: frozenset[str]
    renew_at: float  # time.monotonic()


T = TypeVar("T")


class PlaintextReader:
    """A read-only stream: the bytes of a downloading blob through ``transform`` (decryption, or none)."""

    def __init__(self, raw: ThreadReader, transform: Callable[[bytes], bytes]) -> None:
        self._raw, self._transform = raw, transform

    def read(self, n: int = -1, /) -> bytes:
        return self._transform(self._raw.read(n))


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
    """One registry host. ``plain_http`` for a loopback test registry without TLS.

    ``credentials`` are the host's (``ocicheckpoint.credentials.DockerConfig.for_registry``); without
    them the client still follows a Bearer challenge, anonymously, as public registries expect.
    Tokens are kept per client: reuse one client for a host to reuse its tokens.
    """

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
        self._credentials = credentials
        self._basic = False  # the registry asked for Basic: every request carries the credentials
        self._tokens: dict[str, list[_Token]] = {}  # repository -> tokens
        self._token_lock = asyncio.Lock()

    # --- authentication --------------------------------------------------------------------------
    def _token(self, repository: str, actions: Sequence[str]) -> str | None:
        now = time.monotonic()
        live = [t for t in self._tokens.get(repository, []) if t.renew_at > now]
        self._tokens[repository] = live
        return next((t.value for t in live if t.actions.issuperset(actions)), None)

    def _auth_headers(self, repository: str, actions: Sequence[str]) -> dict[str, str]:
        if self._basic and self._credentials is not None:
            return {"Authorization": self._credentials.header()}
        token = self._token(repository, actions)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _can_answer(self, challenge: Challenge | None) -> bool:
        if challenge is None:
            return False
        if challenge.scheme == "bearer":
            return bool(challenge.params.get("realm"))
        if challenge.scheme == "basic":
            return self._credentials is not None and self._credentials.has_password and not self._basic
        return False

    async def _answer(self, challenge: Challenge, *, repository: str, actions: Sequence[str], sent: str | None) -> None:
        """Get what the challenge asks for; ``sent`` is the Authorization the refused request carried."""
        if challenge.scheme == "basic":
            self._basic = True
            return
        async with self._token_lock:
            current = self._auth_headers(repository, actions).get("Authorization")
            if current is not None and current != sent:
                return  # another request fetched a token meanwhile
            await self._fetch_token(challenge, repository=repository, actions=actions)

    async def _fetch_token(self, challenge: Challenge, *, repository: str, actions: Sequence[str]) -> None:
        realm = challenge.params["realm"]
        scopes = [f"repository:{repository}:{','.join(actions)}"]
        for scope in challenge.params.get("scope", "").split():
            if scope not in scopes:
                scopes.append(scope)
        service = challenge.params.get("service")
        cred = self._credentials
        request: Any
        if cred is not None and cred.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": cred.identity_token, "client_id": OAUTH_CLIENT_ID}
            form["scope"] = " ".join(scopes)
            if service:
                form["service"] = service
            request = self._session.post(realm, data=form)
        else:
            query = [("service", service)] if service else []
            query += [("scope", scope) for scope in scopes]
            headers = {"Authorization": cred.header()} if cred is not None and cred.has_password else {}
            request = self._session.get(realm, params=query, headers=headers)
        async with request as resp:
            if resp.status != 200:
                body = (await resp.text())[:300].strip()
                who = f"as {cred.username!r}" if cred is not None and cred.username else "anonymously"
                raise RegistryError(
                    f"token server {realm} refused a token for {' '.join(scopes)} {who}: HTTP {resp.status}: {body}",
                    status=401 if resp.status in (401, 403) else resp.status,
                )
            doc = await resp.json(content_type=None)
        token = str(doc.get("token") or doc.get("access_token") or "") if isinstance(doc, dict) else ""
        if not token:
            raise RegistryError(f"token server {realm} answered without a token")
        expires_in = float(doc.get("expires_in") or TOKEN_DEFAULT_EXPIRES_S)
        renew_at = time.monotonic() + expires_in - min(TOKEN_RENEW_BEFORE_S, expires_in / 2)
        entry = _Token(value=token, actions=frozenset(actions), renew_at=renew_at)
        self._tokens.setdefault(repository, []).insert(0, entry)

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        url: str,
        *,
        repository: str,
        actions: Sequence[str],
        headers: dict[str, str] | None = None,
        data: Any = None,
        replayable: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request, sent again once after answering a 401's challenge (unless its body cannot be replayed)."""
        auth = self._auth_headers(repository, actions)
        resp = await self._session.request(method, url, headers={**(headers or {}), **auth}, data=data)
        if resp.status == 401 and replayable:
            challenge = parse_challenge(resp.headers.get(WWW_AUTHENTICATE, ""))
            if challenge is not None and self._can_answer(challenge):
                resp.release()
                await self._answer(challenge, repository=repository, actions=actions, sent=auth.get("Authorization"))
                resp = await self._session.request(
                    method, url, headers={**(headers or {}), **self._auth_headers(repository, actions)}, data=data
                )
        try:
            yield resp
        finally:
            resp.release()

    # --- the distribution API --------------------------------------------------------------------
    async def _check(self, resp: aiohttp.ClientResponse, what: str, *ok: int) -> None:
        if resp.status not in ok:
            body = (await resp.text())[:500]
            raise RegistryError(f"{what}: HTTP {resp.status}: {body.strip()}", status=resp.status)

    async def blob_exists(self, *, repository: str, digest: str, actions: Sequence[str] = PULL) -> bool:
        url = f"{self._base}/{repository}/blobs/{digest}"
        async with self._request("HEAD", url, repository=repository, actions=actions) as resp:
            if resp.status == 404:
                return False
            await self._check(resp, f"HEAD blob {digest}", 200)
            return True

    def _absolute(self, location: str) -> str:
        return self._base.removesuffix("/v2") + location if location.startswith("/") else location

    async def _start_upload(self, *, repository: str) -> str:
        """POST an upload session; its Location. The POST (empty, replayable) answers any challenge for
        pull,push, so the token is held before a body streams."""
        start = f"{self._base}/{repository}/blobs/uploads/"
        async with self._request("POST", start, repository=repository, actions=PUSH, headers={"Content-Length": "0"}) as resp:
            await self._check(resp, f"start upload to {repository}", 202)
            return self._absolute(resp.headers["Location"])

    async def push_blob_stream(
        self, *, repository: str, chunks: AsyncIterator[bytes], size: int, digest: Callable[[], Awaitable[str]]
    ) -> str:
        """Upload a blob whose digest is known only once its last byte is sent; returns that digest.

        The distribution spec's chunked upload with one chunk: ``POST`` opens the session, one
        ``PATCH`` streams the body as it is produced (chunked transfer encoding), and the closing
        ``PUT ?digest=`` names the digest, which ``digest()`` gives once the producer is done. So a
        blob is hashed (and encrypted) while it travels, never in a pass of its own before. The
        registry hashes what it received and refuses the PUT if the digests differ. ``size`` (what
        the producer will send) only sets the deadline.
        """
        location = await self._start_upload(repository=repository)
        try:
            async with asyncio.timeout(upload_deadline(size)):
                async with self._request(
                    "PATCH", location, repository=repository, actions=PUSH,
                    headers={"Content-Type": "application/octet-stream"}, data=chunks, replayable=False,
                ) as resp:  # fmt: skip
                    await self._check(resp, f"upload to {repository}", 202)
                    location = self._absolute(resp.headers["Location"])
        except TimeoutError:
            raise TimeoutError(
                f"streamed upload to {repository} ({size} bytes) did not finish within {upload_deadline(size):.0f}s: "
                "the registry stalled"
            ) from None
        blob_digest = await digest()
        sep = "&" if "?" in location else "?"
        async with self._request(
            "PUT", f"{location}{sep}digest={blob_digest}", repository=repository, actions=PUSH,
            headers={"Content-Length": "0"}, data=b"",
        ) as resp:  # fmt: skip
            await self._check(resp, f"finish upload of blob {blob_digest}", 201)
        return blob_digest

    async def _upload(self, *, repository: str, digest: str, size: int, body: object) -> None:
        location = await self._start_upload(repository=repository)
        sep = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        # aiohttp has no write timeout: a registry that stops reading mid-upload would hold the push (and
        # the frozen pod's lock) forever. So the whole PUT has a deadline from the blob's size.
        try:
            async with asyncio.timeout(upload_deadline(size)):
                async with self._request(
                    "PUT", f"{location}{sep}digest={digest}", repository=repository, actions=PUSH,
                    headers=headers, data=body, replayable=isinstance(body, bytes),
                ) as resp:  # fmt: skip
                    await self._check(resp, f"upload blob {digest}", 201)
        except TimeoutError:
            raise TimeoutError(
                f"upload of blob {digest} ({size} bytes) did not finish within {upload_deadline(size):.0f}s: the registry stalled"
            ) from None

    async def push_blob_file(self, *, repository: str, path: Path, descriptor: Descriptor) -> bool:
        """Stream a file as one blob. Returns False when the registry already had it."""
        if await self.blob_exists(repository=repository, digest=descriptor.digest, actions=PUSH):
            return False
        await self._upload(repository=repository, digest=descriptor.digest, size=descriptor.size, body=_file_chunks(path))
        return True

    async def push_blob_bytes(self, *, repository: str, data: bytes, descriptor: Descriptor) -> bool:
        if await self.blob_exists(repository=repository, digest=descriptor.digest, actions=PUSH):
            return False
        await self._upload(repository=repository, digest=descriptor.digest, size=len(data), body=data)
        return True

    async def push_manifest(self, *, repository: str, reference: str, manifest: bytes, media_type: str) -> str:
        """Put a manifest under a tag (or its digest); returns the manifest digest."""
        url = f"{self._base}/{repository}/manifests/{reference}"
        headers = {"Content-Type": media_type}
        async with self._request("PUT", url, repository=repository, actions=PUSH, headers=headers, data=manifest) as resp:
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
        async with self._request("GET", url, repository=repository, actions=PULL, headers={"Accept": accept}) as resp:
            await self._check(resp, f"get manifest {repository}:{reference}", 200)
            body = await resp.read()
            media_type = resp.headers.get("Content-Type", names.MEDIA_TYPE_OCI_MANIFEST).split(";")[0]
        digest = sha256_bytes(body)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(f"manifest {reference} hashed to {digest}")
        return body, media_type, digest

    async def get_blob_bytes(self, *, repository: str, digest: str) -> bytes:
        url = f"{self._base}/{repository}/blobs/{digest}"
        async with self._request("GET", url, repository=repository, actions=PULL) as resp:
            await self._check(resp, f"get blob {digest}", 200)
            body = await resp.read()
        if sha256_bytes(body) != digest:
            raise DigestMismatch(f"blob {digest} hashed to {sha256_bytes(body)}")
        return body

    @asynccontextmanager
    async def blob_chunks(self, *, repository: str, digest: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """A blob's bytes as they arrive, unverified: the caller hashes them (a pull that unpacks while it
        downloads verifies at the end and throws away what it unpacked if the digest is wrong)."""
        url = f"{self._base}/{repository}/blobs/{digest}"
        async with self._request("GET", url, repository=repository, actions=PULL) as resp:
            await self._check(resp, f"get blob {digest}", 200)
            yield resp.content.iter_chunked(CHUNK)

    async def read_layer(
        self,
        *,
        repository: str,
        layer: Descriptor,
        read: Callable[[PlaintextReader], T],
        opening: LayerOpening | None = None,
    ) -> tuple[T, str]:
        """Download a layer and hand its plaintext to ``read`` (in a worker thread) as it arrives; (what
        ``read`` returned, the plaintext's digest), once the whole blob was checked.

        ``opening``: the layer's ``encryption.LayerOpening`` when it is encrypted (the caller made it,
        with its keys). As CRI-O's containers/image and storage do (a decrypting, digest-verifying
        reader that ``ApplyDiff`` extracts from), nothing is written whole first: the blob's bytes go
        from the socket through ``ThreadReader``s to two threads, one checking the ciphertext (digest,
        HMAC), one decrypting, hashing and calling ``read`` (then reading whatever ``read`` left, so
        every byte is checked). On two cores that halves the CPU time per byte. The checks that need
        the whole blob (its digest against ``layer``; encrypted, the HMAC and the plaintext's digest
        against the wrapped options) come at the end: until they passed, whatever ``read`` made of the
        bytes is unverified, and a failed check raises (``DigestMismatch``, ``encryption.DecryptionError``)
        so the caller throws it away. An error of ``read`` stops the download and is raised as it is.
        """
        blob_hash = hashlib.sha256()  # of a plaintext blob (an encrypted one's hashes are the opening's)
        loop = asyncio.get_running_loop()
        to_check, to_read = ThreadReader(loop=loop), ThreadReader(loop=loop)
        check: Callable[[bytes], object] = opening.check if opening is not None else blob_hash.update
        plaintext: Callable[[bytes], bytes] = opening.decrypt if opening is not None else (lambda chunk: chunk)

        def run_check() -> None:
            try:
                while chunk := to_check.read(CHUNK):
                    check(chunk)
            except BaseException:
                to_check.abandon()
                raise

        def run_read() -> T:
            stream = PlaintextReader(to_read, plaintext)
            try:
                result = read(stream)
                while stream.read(CHUNK):  # the rest (a tar's end-of-archive padding) belongs to the blob too
                    pass
            except BaseException:
                to_read.abandon()  # the download stops instead of waiting for room that never comes
                raise
            return result

        checking = asyncio.ensure_future(asyncio.to_thread(run_check))
        reading = asyncio.ensure_future(asyncio.to_thread(run_read))
        try:
            async with self.blob_chunks(repository=repository, digest=layer.digest) as chunks:
                async for chunk in chunks:
                    await to_check.put(chunk)
                    await to_read.put(chunk)
            to_check.close()
            to_read.close()
            await asyncio.gather(checking, reading)
        except BaseException as exc:
            for stream in (to_check, to_read):
                stream.close(exc if isinstance(exc, Exception) else None)
            # The reader's refusal says the most, then the checker's.
            if (own := await worker_error([reading, checking], failure=exc)) is not None:
                raise own from None
            raise
        if opening is not None:
            return reading.result(), opening.finish().digest  # the blob's digest, the HMAC, the plaintext's digest
        got = "sha256:" + blob_hash.hexdigest()
        if got != layer.digest:
            raise DigestMismatch(f"blob {layer.digest} hashed to {got}")
        return reading.result(), got

    async def get_blob_to_file(self, *, repository: str, digest: str, path: Path) -> int:
        """Stream a blob to ``path`` (via a temp file), verifying its digest on the way."""
        hasher = hashlib.sha256()
        size = 0
        tmp = path.with_name(path.name + ".partial")
        url = f"{self._base}/{repository}/blobs/{digest}"
        async with self._request("GET", url, repository=repository, actions=PULL) as resp:
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
        url = f"{self._base}/{repository}/manifests/{digest}"
        async with self._request("DELETE", url, repository=repository, actions=DELETE) as resp:
            if resp.status == 404:
                return False
            await self._check(resp, f"delete manifest {digest}", 202)
            return True
