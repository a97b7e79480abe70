"""A pod's emptyDir contents: captured on the source while it is frozen, staged on the target.

Why: a checkpoint carries the processes (memory, open descriptors, the container's own
filesystem changes) but not the files in the pod's volumes. A process that appends to a log
in an emptyDir, or holds a SQLite file open there, needs those files on the target, at the same
paths, with the sizes its descriptors expect (CRIU refuses to restore a descriptor whose file
is missing or changed size). So:

* **capture** (source agent, after every container's checkpoint, the pod still frozen, so the
  files are the ones the memory images saw): one tar per emptyDir volume, read from the
  kubelet's volume directory (``<kubelet root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>``,
  a tmpfs there for ``medium: Memory``), hashed while written, pushed as one artifact
  (``ocicheckpoint.volumedata``);
* **stage** (target agent, before the new pod exists): the artifact pulled and each layer
  extracted, confined to its directory (no absolute or escaping paths, no device nodes,
  numeric owners, modes kept: CRIU checks them), under ``<volume dir>/<namespace>/<pod>/<volume>``;
* **move in** (the node's CRIU action script ``criu_hook.sh``, at ``pre-restore``): the kubelet
  has made the new pod's emptyDir directories and the runtime is about to restore its first
  container; the script finds the pod (namespace, name, UID) in the container's OCI config,
  moves each staged volume's entries into the pod's emptyDir and leaves ``.restored-<uid>``
  in the staging directory. Before the runtime restores a single process the files are there.
  Nothing can race it: the kubelet creates the pod's volumes before any container, and the
  restore waits for the script.
* **check** (control service, before it calls the move done): the staging directory's
  ``.restored-<uid>`` names the new pod, or the move is failed rather than reported "with its
  state" (a node whose CRIU configuration lacks the hook restores the processes without the files).
* **unstage** when the migration ends, whatever the outcome; anything older than a day is swept
  at agent start (a migration's deadline is far shorter).

Encryption: the source encrypts each volume layer to the nodes' public keys like the checkpoint
layers (the files are the pod's data); staging decrypts them with this node's private keys
(``--decryption-key-dir``), verifying the HMAC and the plaintext digest before extracting. An
encrypted layer no key here opens fails the stage with the reason, before anything is extracted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from agentapi.contract import StageRequest, StageResponse
from ocicheckpoint import encryption
from ocicheckpoint.image import Descriptor, Manifest, encrypted_layer_path
from ocicheckpoint.reference import Reference, parse_reference
from ocicheckpoint.volumedata import VolumeLayer, volume_layers

log = logging.getLogger(__name__)

DEFAULT_KUBELET_ROOT: Final = Path("/var/lib/kubelet")
# Where staged data waits for its restore; the CRIU hook reads PODMIGRATE_VOLUME_DIR (set in the
# container runtime's environment) or this default. Same filesystem as the kubelet root is best:
# the hook's move is then a rename, whatever the size.
DEFAULT_VOLUME_DIR: Final = Path("/var/lib/podmigrate/restore-volumes")
EMPTY_DIR_PLUGIN: Final = "kubernetes.io~empty-dir"
RESTORED_PREFIX: Final = ".restored-"
CAPTURE_SUBDIR: Final = ".capture"
INCOMING_PREFIX: Final = ".incoming-"
STALE_AFTER_S: Final = 24 * 3600
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_UID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class Fetcher(Protocol):
    async def manifest(self, *, image: Reference) -> Manifest: ...

    async def blob_to_file(self, *, image: Reference, digest: str, path: Path) -> int: ...


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _confined(tar: tarfile.TarFile, *, dest: Path, volume: str) -> Iterator[tarfile.TarInfo]:
    """The members of a volume's tar that stay inside ``dest``, checked one by one as they are extracted.

    Written out rather than ``extractall(filter=...)``: the image's Python is Debian 12's 3.11.2,
    which predates extraction filters (3.11.4). Each member is checked after the ones before it
    were written, so a symlink planted by an earlier member cannot carry a later one outside:
    ``realpath`` follows it. Refused: devices, absolute names, names or links that resolve outside
    ``dest``. Modes are kept (CRIU compares the modes of open files) except setuid and setgid.
    """
    root = os.path.realpath(dest)
    for member in tar:
        if member.isdev():
            raise VolumeDataError(f"volume {volume}: device node {member.name!r} refused")
        if os.path.isabs(member.name) or not _inside(os.path.realpath(os.path.join(root, member.name)), root):
            raise VolumeDataError(f"volume {volume}: {member.name!r} would be written outside the volume")
        where = os.path.dirname(os.path.realpath(os.path.join(root, member.name)))
        if member.issym() and (
            os.path.isabs(member.linkname) or not _inside(os.path.realpath(os.path.join(where, member.linkname)), root)
        ):
            raise VolumeDataError(f"volume {volume}: symlink {member.name!r} -> {member.linkname!r} leaves the volume")
        if member.islnk() and not _inside(os.path.realpath(os.path.join(root, member.linkname)), root):
            raise VolumeDataError(f"volume {volume}: hard link {member.name!r} -> {member.linkname!r} leaves the volume")
        member.mode &= 0o1777
        yield member


class VolumeDataError(RuntimeError):
    """Capturing or staging volume data failed (the message says which volume and why)."""


@dataclass(frozen=True, kw_only=True)
class EmptyDir:
    name: str
    medium: str  # "" or "Memory"


class _HashingWriter:
    """A write-only file wrapper that hashes and counts every byte written (one pass, no re-read)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return int(self._raw.write(data))

    def flush(self) -> None:
        self._raw.flush()


def _clean_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""  # numeric owners only: the target's user database is not the source's
    return info


class VolumeData:
    """This node's side of moving emptyDir data (see the module docstring)."""

    def __init__(
        self,
        *,
        kubelet_root: Path = DEFAULT_KUBELET_ROOT,
        volume_dir: Path = DEFAULT_VOLUME_DIR,
        decryption_key_dir: Path | None = None,
    ) -> None:
        self.kubelet_root = kubelet_root
        self.volume_dir = volume_dir
        self.decryption_key_dir = decryption_key_dir

    def decrypt(self, *, layer: Descriptor, src: Path, dst: Path, volume: str) -> None:
        """Decrypt an encrypted volume layer with this node's private keys (read now: rotated keys
        need no restart); blocking."""
        keys = encryption.load_private_keys(self.decryption_key_dir) if self.decryption_key_dir else []
        try:
            encryption.decrypt_layer(descriptor=layer, src=src, dst=dst, private_keys=keys)
        except encryption.NoMatchingKeyError as exc:
            where = self.decryption_key_dir or "(no --decryption-key-dir)"
            raise VolumeDataError(f"volume {volume} is encrypted and no private key in {where} decrypts it: {exc}") from None
        except (encryption.EncryptionError, OSError) as exc:
            raise VolumeDataError(f"volume {volume}: decrypting: {exc}") from None

    # --- source -------------------------------------------------------------------------------
    def source_dir(self, *, pod_uid: str, volume: str) -> Path:
        if not _UID.match(pod_uid) or not _NAME.match(volume):
            raise VolumeDataError(f"unexpected pod UID {pod_uid!r} or volume name {volume!r}")
        return self.kubelet_root / "pods" / pod_uid / "volumes" / EMPTY_DIR_PLUGIN / volume

    def capture(self, *, pod_uid: str, volumes: list[EmptyDir]) -> list[VolumeLayer]:
        """One tar per volume, written under the capture directory (blocking: run in a thread)."""
        work = self.volume_dir / CAPTURE_SUBDIR / uuid.uuid4().hex
        work.mkdir(mode=0o700, parents=True)
        layers: list[VolumeLayer] = []
        try:
            for vol in volumes:
                source = self.source_dir(pod_uid=pod_uid, volume=vol.name)
                if not source.is_dir():
                    raise VolumeDataError(f"emptyDir {vol.name} is not at {source} (is --kubelet-root-dir right?)")
                path = work / f"{vol.name}.tar"
                with path.open("wb") as raw:
                    writer = _HashingWriter(raw)
                    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                        for entry in sorted(os.listdir(source)):
                            tar.add(source / entry, arcname=entry, recursive=True, filter=_clean_owner)
                layers.append(
                    VolumeLayer(
                        name=vol.name,
                        medium=vol.medium,
                        path=path,
                        digest="sha256:" + writer.hasher.hexdigest(),
                        size=writer.size,
                    )
                )
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return layers

    @staticmethod
    def discard(layers: list[VolumeLayer]) -> None:
        """Delete captured tars (they hold the pod's files: never kept past their push)."""
        for parent in {layer.path.parent for layer in layers}:
            shutil.rmtree(parent, ignore_errors=True)

    # --- target -------------------------------------------------------------------------------
    def staging_dir(self, *, namespace: str, pod: str) -> Path:
        if not _NAME.match(namespace) or not _NAME.match(pod):
            raise VolumeDataError(f"unexpected pod {namespace!r}/{pod!r}")
        return self.volume_dir / namespace / pod

    def incoming(self) -> Path:
        path = self.volume_dir / f"{INCOMING_PREFIX}{uuid.uuid4().hex}"
        path.mkdir(mode=0o700, parents=True)
        return path

    @staticmethod
    def extract(*, layer: Path, into: Path, volume: str) -> None:
        """Extract one volume's tar into ``into/volume``, refusing anything that leaves it (blocking)."""
        dest = into / volume
        dest.mkdir(mode=0o777)
        os.chmod(dest, 0o777)  # what the kubelet gives an emptyDir; the hook moves entries, not this directory

        try:
            with tarfile.open(layer, mode="r:") as tar:
                tar.extractall(dest, members=_confined(tar, dest=dest, volume=volume), numeric_owner=True)
        except (tarfile.TarError, OSError) as exc:
            raise VolumeDataError(f"volume {volume}: {exc}") from None

    def commit(self, *, incoming: Path, namespace: str, pod: str) -> None:
        """Make a fully extracted staging directory the pod's (replacing an older one)."""
        target = self.staging_dir(namespace=namespace, pod=pod)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        incoming.rename(target)

    async def stage(self, req: StageRequest, *, publisher: Fetcher) -> StageResponse:
        """Pull the artifact and extract every volume, then commit it as the pod's staging directory."""
        started = time.monotonic()
        image = parse_reference(req.image)
        manifest = await publisher.manifest(image=image)
        try:
            layers = volume_layers(manifest)
        except ValueError as exc:
            raise VolumeDataError(f"{req.image}: {exc}") from None
        incoming = await asyncio.to_thread(self.incoming)
        try:
            total = 0
            for name, layer in layers.items():
                blob = incoming / f".{name}.tar"
                if encryption.is_encrypted(layer.media_type):
                    sealed = encrypted_layer_path(blob)
                    total += await publisher.blob_to_file(image=image, digest=layer.digest, path=sealed)
                    await asyncio.to_thread(self.decrypt, layer=layer, src=sealed, dst=blob, volume=name)
                    sealed.unlink()
                else:
                    total += await publisher.blob_to_file(image=image, digest=layer.digest, path=blob)
                await asyncio.to_thread(self.extract, layer=blob, into=incoming, volume=name)
                blob.unlink()
            await asyncio.to_thread(self.commit, incoming=incoming, namespace=req.namespace, pod=req.pod)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        log.info("staged %s for %s/%s: %s (%d bytes)", req.image, req.namespace, req.pod, ", ".join(layers), total)
        return StageResponse(volumes=tuple(layers), data_bytes=total, seconds=time.monotonic() - started)

    def restored(self, *, namespace: str, pod: str) -> list[str]:
        """UIDs of the pods the CRIU hook moved this staging directory's data into."""
        directory = self.staging_dir(namespace=namespace, pod=pod)
        try:
            return sorted(e.name.removeprefix(RESTORED_PREFIX) for e in directory.iterdir() if e.name.startswith(RESTORED_PREFIX))
        except FileNotFoundError:
            return []

    def unstage(self, *, namespace: str, pod: str) -> bool:
        directory = self.staging_dir(namespace=namespace, pod=pod)
        existed = directory.exists()
        shutil.rmtree(directory, ignore_errors=True)
        with_parent = directory.parent
        if with_parent.is_dir() and not any(with_parent.iterdir()):
            with_parent.rmdir()
        return existed

    def sweep(self, *, older_than_s: float = STALE_AFTER_S) -> list[Path]:
        """Remove captures and partial stagings (always) and staged data older than ``older_than_s``."""
        removed: list[Path] = []
        if not self.volume_dir.is_dir():
            return removed
        cutoff = time.time() - older_than_s
        for entry in self.volume_dir.iterdir():
            if entry.name == CAPTURE_SUBDIR or entry.name.startswith(INCOMING_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
                continue
            if entry.is_dir():
                for staged in entry.iterdir():
                    if staged.stat().st_mtime < cutoff:
                        shutil.rmtree(staged, ignore_errors=True)
                        removed.append(staged)
        if removed:
            log.info("swept %d stale volume capture(s)/staging(s) under %s", len(removed), self.volume_dir)
        return removed
