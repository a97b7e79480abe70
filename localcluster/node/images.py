"""The node's image store: pull from a registry, unpack layers, find images by name.

Like CRI-O's containers/storage, it keeps each image once (by manifest digest) with a
flattened root filesystem that containers overlay, and a name index so that a restore can
ask for its base image by name *from local storage only* (CRI-O never pulls a checkpoint's
base image itself).

Encrypted layers (``+encrypted``, ocicrypt's format) are decrypted on pull with the node's
private keys, as CRI-O does with its ``decryption_keys_path`` (default ``/etc/crio/keys``; here
``--decryption-keys-path``), and an image no key here opens fails the pull (ErrImagePull) saying
so. A layer is downloaded, decrypted, hashed and unpacked in one pass, as containers/image and
containers/storage do (``RegistryClient.read_layer``); the blob's digest, the HMAC, the plaintext digest
and the config's ``diff_ids`` are checked when the last byte arrived, and a pull that fails any
of them removes what it unpacked: nothing of it is ever used or kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tarfile
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import aiohttp

from ocicheckpoint import encryption, names, safetar
from ocicheckpoint import image as oci
from ocicheckpoint.credentials import Credentials, DockerConfig
from ocicheckpoint.reference import Reference, parse_reference
from ocicheckpoint.registry import PlaintextReader, RegistryClient, RegistryError

log = logging.getLogger(__name__)

# The credentials the pull under way in this task asks with (``ImageStore._pull_as`` tries them one by one).
_PULL_CREDENTIALS: ContextVar[Credentials | None] = ContextVar("pull_credentials", default=None)


class ImagePullError(RuntimeError):
    """ErrImagePull in the pod's status."""


@dataclass(frozen=True, kw_only=True)
class LocalImage:
    reference: Reference  # with the manifest digest
    manifest: oci.Manifest
    config: oci.ImageConfig
    root: Path  # the unpacked content (a rootfs, or a checkpoint archive's files)
    user: str = ""  # the config's User ("", "name", "uid", "uid:gid", ...): what CRI-O's ImageStatus reports

    @property
    def uid(self) -> int | None:
        """The image user's uid when it is numeric (CRI-O's ImageStatus ``uid``; a name is ``username``)."""
        name = self.user.split(":", 1)[0]
        return int(name) if name.isdigit() else None

    @property
    def image_id(self) -> str:
        """What containerStatuses[].imageID says: repository@digest."""
        return f"{self.reference.registry}/{self.reference.repository}@{self.reference.digest}"


# Generous guards against a layer that would fill the node's disk (a decompression or sparse-file
# bomb), not quotas: per layer, since layers are applied one at a time. A checkpoint image is a
# layer too, and its CRIU page images are as large as the checkpointed container's memory.
LAYER_LIMITS: Final = safetar.Limits(max_file_bytes=64 << 30, max_total_bytes=128 << 30)


def unpack_layer(*, layer: Path, root: Path, gzip: bool, limits: safetar.Limits = LAYER_LIMITS) -> None:
    """Apply one layer tar to ``root``, honouring OCI whiteouts, never writing or removing outside ``root``.

    The rules are ``ocicheckpoint.safetar``'s: paths resolved in the root (an absolute symlink of an
    earlier layer leads to the root's own directory, never the host's), the last component never
    followed, hard links and whiteouts confined to the root, no device nodes, ``limits`` on bytes.
    A refusal is ``safetar.UnsafeArchiveError``, which ``pull`` reports as ErrImagePull with the
    image's name; the pull then removes its temporary directory, half-unpacked image and all.
    """
    with layer.open("rb") as fh:
        unpack_stream(stream=fh, root=root, gzip=gzip, limits=limits)


def unpack_stream(*, stream: IO[bytes], root: Path, gzip: bool, limits: safetar.Limits = LAYER_LIMITS) -> None:
    """``unpack_layer`` from a stream (a download in progress); reads it to its end, padding included."""
    policy = safetar.Policy(limits=limits, whiteouts=True, fifos=True, what="layer")
    with tarfile.open(fileobj=stream, mode="r|gz" if gzip else "r|", bufsize=oci.CHUNK) as tar:  # type: ignore[call-overload]
        safetar.extract(tar, root=root, policy=policy)
    while stream.read(oci.CHUNK):  # the end-of-archive blocks belong to the blob (and its digest) too
        pass


def image_user(config: bytes) -> str:
    """The ``User`` of an image config (the shared ``ImageConfig`` parser does not keep it)."""
    try:
        doc = json.loads(config)
    except ValueError:
        return ""
    cfg = doc.get("config") if isinstance(doc, dict) else None
    return str((cfg or {}).get("User") or "")


def _with_default_tag(ref: Reference) -> Reference:
    if ref.tag is None and ref.digest is None:
        return Reference(registry=ref.registry, repository=ref.repository, tag="latest")
    return ref


class ImageStore:
    """``node_credentials``: the node's own registry credentials (a kubelet's ``config.json``), tried after a pod's."""

    def __init__(
        self,
        *,
        root: Path,
        session: aiohttp.ClientSession,
        plain_http_registries: frozenset[str],
        node_credentials: DockerConfig | None = None,
        decryption_keys_path: Path | None = None,
    ) -> None:
        self._root = root
        self._decryption_keys_path = decryption_keys_path
        self._session = session
        self._plain_http = plain_http_registries
        self._node_credentials = node_credentials or DockerConfig()
        self._locks: dict[str, asyncio.Lock] = {}
        root.mkdir(parents=True, exist_ok=True)
        self._index_path = root / "names.json"

    def client(self, ref: Reference) -> RegistryClient:
        return RegistryClient(
            host=ref.registry,
            session=self._session,
            plain_http=ref.registry in self._plain_http,
            credentials=_PULL_CREDENTIALS.get(),
        )

    async def _pull_as(self, ref: Reference, *, pull_secrets: Sequence[DockerConfig]) -> LocalImage:
        """Pull with each credential for the host in turn, as the kubelet's keyring does.

        The pod's ``imagePullSecrets`` in order, then the node's own; the next one after a 401/403,
        anonymously when none names the host. Trying in turn matters: a restored pod's pull secret
        reads checkpoints only, and its other containers' images need the node's credentials.
        """
        found = [c for config in (*pull_secrets, self._node_credentials) if (c := config.for_registry(ref.registry))]
        candidates: list[Credentials | None] = list(dict.fromkeys(found)) or [None]
        for i, credentials in enumerate(candidates):
            token = _PULL_CREDENTIALS.set(credentials)
            try:
                return await self._pull(ref)
            except RegistryError as exc:
                if exc.status not in (401, 403) or i == len(candidates) - 1:
                    raise
                log.info("pull of %s as %s refused (%s); trying the next credentials", ref, credentials, exc.status)
            finally:
                _PULL_CREDENTIALS.reset(token)
        raise AssertionError("unreachable: the last candidate's error is raised")

    def _names(self) -> dict[str, str]:
        if self._index_path.exists():
            return json.loads(self._index_path.read_text())
        return {}

    def _remember(self, name: str, digest: str) -> None:
        index = self._names()
        index[name] = digest
        tmp = self._index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        tmp.rename(self._index_path)

    def _load(self, digest: str, ref: Reference) -> LocalImage | None:
        d = self._root / digest.removeprefix("sha256:")
        if not (d / "complete").exists():
            return None
        config = (d / "config.json").read_bytes()
        return LocalImage(
            reference=ref.with_digest(digest),
            manifest=oci.parse_manifest((d / "manifest.json").read_bytes()),
            config=oci.parse_config(config),
            root=d / "rootfs",
            user=image_user(config),
        )

    def local(self, name: str) -> LocalImage | None:
        """An image present on this node, by the name it was pulled as or by repo@digest."""
        ref = _with_default_tag(parse_reference(name))
        digest = ref.digest or self._names().get(str(ref))
        return self._load(digest, ref) if digest else None

    async def pull(self, name: str, *, policy: str = "IfNotPresent", pull_secrets: Sequence[DockerConfig] = ()) -> LocalImage:
        """``pull_secrets``: the pod's ``imagePullSecrets``, read and parsed (``ocicheckpoint.credentials.from_secret``)."""
        ref = _with_default_tag(parse_reference(name))
        if policy != "Always" and (found := self.local(str(ref))):
            return found
        if policy == "Never":
            raise ImagePullError(f'Container image "{name}" is not present with pull policy of Never')
        lock = self._locks.setdefault(str(ref), asyncio.Lock())
        async with lock:
            try:
                return await self._pull_as(ref, pull_secrets=pull_secrets)
            except ImagePullError:
                raise
            except Exception as exc:  # registry down, digest mismatch, bad tar: all ErrImagePull
                raise ImagePullError(f"failed to pull image {name!r}: {exc}") from exc

    async def _fetch_and_unpack(
        self, registry: RegistryClient, *, ref: Reference, layer: oci.Descriptor, diff_id: str | None, root: Path
    ) -> None:
        """Download one layer and apply it to ``root`` as it arrives: decrypted, hashed and unpacked in one pass.

        As CRI-O's containers/image and storage do, the layer is never written whole to disk first
        (``RegistryClient.read_layer``: the blob goes from the socket to a thread that checks the
        ciphertext and one that decrypts, hashes and untars). The checks that need the whole blob
        (its digest, the HMAC, the plaintext against the config's ``diff_id``) come at the end; until
        they pass, what was unpacked is only in the pull's temporary directory, which a failed pull
        removes (``_pull``).
        """
        media_type = layer.media_type
        opening: encryption.LayerOpening | None = None
        if encryption.is_encrypted(media_type):
            keys = encryption.load_private_keys(self._decryption_keys_path) if self._decryption_keys_path else []
            try:
                opening = encryption.LayerOpening(descriptor=layer, private_keys=keys)
            except encryption.NoMatchingKeyError as exc:
                where = self._decryption_keys_path or "(no --decryption-keys-path)"
                raise ImagePullError(
                    f"failed to pull image {str(ref)!r}: it is encrypted and no private key in {where} decrypts it: {exc}"
                ) from None
            media_type = encryption.plaintext_media_type(media_type)
        gzip = media_type in names.GZIP_LAYER_MEDIA_TYPES

        def unpack(stream: PlaintextReader) -> None:
            unpack_stream(stream=stream, root=root, gzip=gzip)

        _, got_plain = await registry.read_layer(repository=ref.repository, layer=layer, read=unpack, opening=opening)
        if diff_id and not gzip and got_plain != diff_id:
            raise ImagePullError(f"{ref}: layer {layer.digest} unpacked to {got_plain}, the config's diff_id is {diff_id}")

    async def _pull(self, ref: Reference) -> LocalImage:
        registry = self.client(ref)
        body, media_type, digest = await registry.get_manifest(repository=ref.repository, reference=ref.ref)
        if media_type in (names.MEDIA_TYPE_OCI_INDEX, names.MEDIA_TYPE_DOCKER_LIST):
            chosen = oci.pick_platform(body)
            body, media_type, digest = await registry.get_manifest(repository=ref.repository, reference=chosen.digest)
        if ref.tag:
            self._remember(str(Reference(registry=ref.registry, repository=ref.repository, tag=ref.tag)), digest)
        if found := self._load(digest, ref):
            return found
        manifest = oci.parse_manifest(body, media_type=media_type)
        d = self._root / digest.removeprefix("sha256:")
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "rootfs").mkdir(parents=True)
        config = await registry.get_blob_bytes(repository=ref.repository, digest=manifest.config.digest)
        diff_ids = oci.parse_config(config).diff_ids
        try:
            for i, layer in enumerate(manifest.layers):
                await self._fetch_and_unpack(
                    registry, ref=ref, layer=layer, diff_id=diff_ids[i] if i < len(diff_ids) else None, root=tmp / "rootfs"
                )
        except BaseException:
            # Unverified (and, for a checkpoint, a process's memory): never left on the node.
            await asyncio.to_thread(shutil.rmtree, tmp, True)
            raise
        (tmp / "manifest.json").write_bytes(body)
        (tmp / "config.json").write_bytes(config)
        (tmp / "complete").touch()
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
        log.info("pulled %s (%s)", ref, digest)
        loaded = self._load(digest, ref)
        assert loaded is not None
        return loaded
