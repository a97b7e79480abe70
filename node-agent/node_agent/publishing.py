"""Pushing checkpoint images to a registry (and deleting them after a migration), with retries.

``ocicheckpoint.registry.RegistryClient`` moves the bytes and deliberately retries nothing. A
checkpoint's layer is streamed as it is read (``push_streamed``: read, hash, encrypt and upload
in one pass, so nothing waits for a whole-archive pass to end); smaller images (emptyDir data)
are pushed from their files (``push``). This module decides what is
transient: connection errors, timeouts, 408/429 and 5xx. Each step (layer, config, manifest)
is retried on its own, a bounded number of times with exponential backoff, so a hiccup on the
manifest does not re-upload a large layer (and a layer the registry already has is skipped).
A digest mismatch or a 4xx is a bug or a policy refusal: retrying would not help.

Credentials (``--registry-credentials``, a mounted ``kubernetes.io/dockerconfigjson`` Secret) are
the agents' alone: they push and delete checkpoints, restored pods only pull (docs/registry.md).
One client per registry host is kept, so a token fetched for a push serves the next push too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential

from ocicheckpoint import names
from ocicheckpoint.credentials import DockerConfig
from ocicheckpoint.encryption import LayerPass, PublicKey
from ocicheckpoint.image import Descriptor, ImageDocuments, Manifest, PushableImage, parse_manifest
from ocicheckpoint.pipe import Pipe, worker_error
from ocicheckpoint.reference import Reference
from ocicheckpoint.registry import DigestMismatch, RegistryClient, RegistryError

log = logging.getLogger(__name__)

T = TypeVar("T")
P = TypeVar("P")


def describe(exc: BaseException) -> str:
    """A registry failure in one line a user can act on (not a repr of the client's internals)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror if exc.os_error is not None and exc.os_error.strerror else str(exc.os_error)
        return f"cannot connect to the registry at {exc.host}:{exc.port}: {reason}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the registry closed the connection"
    if isinstance(exc, TimeoutError):
        return str(exc) or "the registry did not answer in time"
    return str(exc) or type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DigestMismatch):
        return False
    if isinstance(exc, RegistryError):
        return exc.status is None or exc.status in (408, 429) or exc.status >= 500
    return isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError)


@dataclass(frozen=True, kw_only=True)
class PushResult:
    manifest_digest: str
    uploaded_bytes: int  # what went over the wire (blobs the registry already had are not counted)


@dataclass(frozen=True, kw_only=True)
class StreamedPush(Generic[P]):
    """A streamed push's outcome: the push, the layer as uploaded, and what the producer returned."""

    result: PushResult
    layer: Descriptor
    diff_id: str
    produced: P
    documents: ImageDocuments


class Publisher:
    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        plain_http_registries: frozenset[str] = frozenset(),
        credentials: DockerConfig | None = None,
        attempts: int = 4,
        backoff_initial_s: float = 0.25,
        backoff_max_s: float = 4.0,
    ) -> None:
        self._session = session
        self._plain_http = plain_http_registries
        self._credentials = credentials or DockerConfig()
        self._clients: dict[str, RegistryClient] = {}
        self._attempts = attempts
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s

    def client(self, registry: str) -> RegistryClient:
        if (found := self._clients.get(registry)) is None:
            found = self._clients[registry] = RegistryClient(
                host=registry,
                session=self._session,
                plain_http=registry in self._plain_http,
                credentials=self._credentials.for_registry(registry),
            )
        return found

    async def _retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("%s failed (attempt %d/%d): %s; retrying", what, state.attempt_number, self._attempts, exc)

        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff_initial, max=self._backoff_max),
            retry=retry_if_exception(is_transient),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                return await step()
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def push(self, *, image: PushableImage, registry: str, repository: str, tag: str) -> PushResult:
        """Layers (streamed from their files), then config, then the manifest under ``tag``."""
        reg = self.client(registry)
        uploaded = 0
        for descriptor, path in image.files:
            if await self._retrying(
                f"push layer {descriptor.digest}",
                lambda d=descriptor, p=path: reg.push_blob_file(repository=repository, path=p, descriptor=d),  # type: ignore[misc]
            ):
                uploaded += descriptor.size
        uploaded += await self._push_documents(reg, repository=repository, tag=tag, docs=image)
        return PushResult(manifest_digest=image.manifest_digest, uploaded_bytes=uploaded)

    async def _push_documents(
        self, reg: RegistryClient, *, repository: str, tag: str, docs: ImageDocuments | PushableImage
    ) -> int:
        """The config blob, then the manifest under ``tag`` (the image's layers are already there); bytes uploaded."""
        uploaded = 0
        if await self._retrying(
            f"push config {docs.config.digest}",
            lambda: reg.push_blob_bytes(repository=repository, data=docs.config_bytes, descriptor=docs.config),
        ):
            uploaded += docs.config.size
        digest = await self._retrying(
            f"push manifest {repository}:{tag}",
            lambda: reg.push_manifest(
                repository=repository, reference=tag, manifest=docs.manifest_bytes, media_type=names.MEDIA_TYPE_OCI_MANIFEST
            ),
        )
        if digest != docs.manifest_digest:
            log.warning("registry reports manifest digest %s, expected %s", digest, docs.manifest_digest)
        return uploaded + len(docs.manifest_bytes)

    async def push_streamed(
        self,
        *,
        registry: str,
        repository: str,
        tag: str,
        size: int,
        media_type: str,
        recipients: Sequence[PublicKey],
        produce: Callable[[Callable[[bytes], object]], P],
        documents: Callable[[Descriptor, str, P], ImageDocuments],
        before_tag: Callable[[], Awaitable[object]] | None = None,
    ) -> StreamedPush[P]:
        """Push a one-layer image whose layer is read, hashed, encrypted and uploaded in one pass.

        ``produce(sink)`` runs in a worker thread and hands the layer's plaintext to ``sink`` in
        order (it returns what it learnt on the way: for a checkpoint, the archive's facts);
        each chunk goes through a ``LayerPass`` (hash, encrypt to ``recipients``, hash) into a
        bounded ``Pipe`` that the upload's streamed PATCH reads. Once the last byte is sent the
        blob's digest is known and closes the upload; ``documents(layer, diff_id, produced)``
        then makes the config and manifest, pushed as usual. ``size`` is the plaintext's (the
        ciphertext is as long: AES-CTR). A transient failure runs the whole pass again (the
        source is still on disk; a new key, so a new blob); the producer's own failure (not a
        checkpoint archive) is raised as is, without retrying. ``before_tag`` is awaited before the
        manifest moves ``tag`` (to read what the tag named until then).
        """
        reg = self.client(registry)

        async def attempt() -> tuple[Descriptor, str, P]:
            layer = LayerPass(media_type=media_type, recipients=recipients)
            pipe = Pipe(loop=asyncio.get_running_loop())

            def run() -> P:
                try:
                    produced = produce(lambda chunk: pipe.put(layer.feed(chunk)))
                except BaseException as exc:
                    pipe.close(exc)
                    raise
                pipe.close()
                return produced

            producer = asyncio.ensure_future(asyncio.to_thread(run))
            finished: list[tuple[Descriptor, str, P]] = []

            async def digest() -> str:
                produced = await producer
                blob, diff_id = layer.finish()
                finished.append((blob, diff_id, produced))
                return blob.digest

            try:
                await reg.push_blob_stream(repository=repository, chunks=pipe.chunks(), size=size, digest=digest)
            except BaseException as exc:
                pipe.abandon()  # a producer waiting for room stops
                own = await worker_error([producer], failure=exc)
                layer.close()  # after the producer stopped feeding it
                if own is not None:
                    raise own from None  # the source's failure, not the upload's
                raise
            return finished[0]

        blob, diff_id, produced = await self._retrying(f"stream layer to {repository}", attempt)
        docs = documents(blob, diff_id, produced)
        if before_tag is not None:
            await before_tag()
        uploaded = blob.size + await self._push_documents(reg, repository=repository, tag=tag, docs=docs)
        return StreamedPush(
            result=PushResult(manifest_digest=docs.manifest_digest, uploaded_bytes=uploaded),
            layer=blob,
            diff_id=diff_id,
            produced=produced,
            documents=docs,
        )

    async def delete(self, *, image: Reference) -> bool:
        """Delete a manifest by digest; False when the registry does not have it."""
        if not image.digest:
            raise ValueError("only digest-pinned images can be deleted")
        reg = self.client(image.registry)
        digest = image.digest
        return await self._retrying(f"delete {image}", lambda: reg.delete_manifest(repository=image.repository, digest=digest))

    async def manifest(self, *, image: Reference) -> Manifest:
        """The manifest an image pinned by digest names (verified against the digest)."""
        if not image.digest:
            raise ValueError("only digest-pinned images are fetched")
        reg = self.client(image.registry)
        digest = image.digest
        body, media_type, _ = await self._retrying(
            f"get manifest {image}", lambda: reg.get_manifest(repository=image.repository, reference=digest)
        )
        return parse_manifest(body, media_type=media_type)

    async def blob_to_file(self, *, image: Reference, digest: str, path: Path) -> int:
        """Stream one blob of ``image``'s repository to ``path``, verified against its digest."""
        reg = self.client(image.registry)
        return await self._retrying(
            f"get blob {digest}", lambda: reg.get_blob_to_file(repository=image.repository, digest=digest, path=path)
        )
