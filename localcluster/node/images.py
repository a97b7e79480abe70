"""The node's image store: pull from a registry, unpack layers, find images by name.

Like CRI-O's containers/storage, it keeps each image once (by manifest digest) with a
flattened root filesystem that containers overlay, and a name index so that a restore can
ask for its base image by name *from local storage only* (CRI-O never pulls a checkpoint's
base image itself).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ocicheckpoint import image as oci
from ocicheckpoint import names
from ocicheckpoint.reference import Reference, parse_reference
from ocicheckpoint.registry import RegistryClient

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"


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


def _safe_join(root: Path, member: str) -> Path:
    target = (root / member.lstrip("/")).resolve()
    if target != root and root not in target.parents:
        raise ImagePullError(f"layer entry {member!r} escapes the root filesystem")
    return target


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def unpack_layer(*, layer: Path, root: Path, gzip: bool) -> None:
    """Apply one layer tar to ``root``, honouring OCI whiteouts."""
    root = root.resolve()
    with tarfile.open(layer, "r:gz" if gzip else "r:") as tar:
        for member in tar:
            name = member.name.lstrip("./") if member.name not in (".", "./") else ""
            if not name:
                continue
            base = os.path.basename(name)
            parent = _safe_join(root, os.path.dirname(name)) if os.path.dirname(name) else root
            if base == OPAQUE_WHITEOUT:
                if parent.is_dir():
                    for child in parent.iterdir():
                        _remove(child)
                continue
            if base.startswith(WHITEOUT_PREFIX):
                _remove(parent / base[len(WHITEOUT_PREFIX) :])
                continue
            target = _safe_join(root, name)
            if (target.exists() or target.is_symlink()) and not (member.isdir() and target.is_dir()):
                _remove(target)
            tar.extract(member, root, set_attrs=True, numeric_owner=True, filter="tar")


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
    def __init__(self, *, root: Path, session: aiohttp.ClientSession, plain_http_registries: frozenset[str]) -> None:
        self._root = root
        self._session = session
        self._plain_http = plain_http_registries
        self._locks: dict[str, asyncio.Lock] = {}
        root.mkdir(parents=True, exist_ok=True)
        self._index_path = root / "names.json"

    def client(self, ref: Reference) -> RegistryClient:
        return RegistryClient(host=ref.registry, session=self._session, plain_http=ref.registry in self._plain_http)

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

    async def pull(self, name: str, *, policy: str = "IfNotPresent") -> LocalImage:
        ref = _with_default_tag(parse_reference(name))
        if policy != "Always" and (found := self.local(str(ref))):
            return found
        if policy == "Never":
            raise ImagePullError(f'Container image "{name}" is not present with pull policy of Never')
        lock = self._locks.setdefault(str(ref), asyncio.Lock())
        async with lock:
            try:
                return await self._pull(ref)
            except ImagePullError:
                raise
            except Exception as exc:  # registry down, digest mismatch, bad tar: all ErrImagePull
                raise ImagePullError(f"failed to pull image {name!r}: {exc}") from exc

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
        for layer in manifest.layers:
            blob = tmp / "layer"
            await registry.get_blob_to_file(repository=ref.repository, digest=layer.digest, path=blob)
            await asyncio.to_thread(
                unpack_layer, layer=blob, root=tmp / "rootfs", gzip=layer.media_type in names.GZIP_LAYER_MEDIA_TYPES
            )
            blob.unlink()
        (tmp / "manifest.json").write_bytes(body)
        (tmp / "config.json").write_bytes(config)
        (tmp / "complete").touch()
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
        log.info("pulled %s (%s)", ref, digest)
        loaded = self._load(digest, ref)
        assert loaded is not None
        return loaded
