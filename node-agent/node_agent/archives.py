"""Checkpoint archives on this node: read once, describe, and delete.

The kubelet leaves an uncompressed tar under its checkpoints directory and never deletes it.
The archive *is* the checkpoint image's layer (``ocicheckpoint.image``), so the agent needs
its sha256 and what ``config.dump`` says (base image, runtime) before it can build the
manifest. Both come from a single sequential pass: the tar stream is parsed and ``config.dump``
picked out on the way, while every byte read is handed to a sink: the upload's
``ocicheckpoint.encryption.LayerPass``, which hashes, encrypts and passes it on to the registry
(``node_agent.publishing``), or, without one, an in-process hash (hashlib ~1 GB/s, docs/facts.md,
"Hashing"). No second read, no external ``sha256sum``.

The same pass keeps the checkpoint's small CRIU image files (the process tree, memory maps, file
tables; never the memory pages) and describes them: which processes, how much memory, which files
and sockets were open, answered beside the image. The pass *is* ``criuimages.inspect_tar`` (the one
reader of a checkpoint's tar, which ``kubectl migrate inspect --from-registry`` runs on the decrypted
image too), with ``config.dump`` picked out through its ``other`` hook. Per-file and total caps bound
what is kept in memory (an image over them is skipped, and the inspection names it), and an
inspection that cannot be made is a warning, never a failed checkpoint: it is a description, the
checkpoint is the archive. Describing them is pure Python, about 6 MB/s on this project's 2-core
machine (60,000 open files and 20,000 memory areas took about 1.1 s): milliseconds for a usual
container's images, and the caps bound the rest, since it runs while the pod is still frozen.

Archives hold the container's memory (secrets): the agent deletes each one as soon as it is
pushed or the checkpoint failed, and refuses to touch anything but a regular ``.tar`` file.
What escapes that (an agent killed mid-checkpoint, a kubelet that finishes writing after its
caller gave up) is swept: at agent start every archive is such a leftover, and afterwards any
older than a bound that no checkpoint in flight holds. A sweep touches only entries named like
the kubelet's archives (``names.KUBELET_ARCHIVE_PATTERN``) or side files named after one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocicheckpoint import criuimages, names
from ocicheckpoint.criuimages import CriuImageError, Inspection
from ocicheckpoint.image import CHUNK, CheckpointInfo

log = logging.getLogger(__name__)

MAX_CONFIG_DUMP_BYTES = 4 << 20
# What the inspection may keep in memory from one archive: criuimages' caps, under the agent's own names (tests lower them).
MAX_CRIU_IMAGE_BYTES = criuimages.MAX_IMAGE_FILE_BYTES
MAX_CRIU_IMAGES_BYTES = criuimages.MAX_IMAGE_FILES_BYTES


class ArchiveError(RuntimeError):
    """The kubelet's archive is missing, not a file, or not a checkpoint archive."""


class _TappedReader:
    """A read-only file wrapper that hands every byte it reads to ``sink`` and counts them."""

    def __init__(self, raw: Any, sink: Callable[[bytes], object]) -> None:
        self._raw = raw
        self._sink = sink
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._sink(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


@dataclass(frozen=True, kw_only=True)
class ArchiveFacts:
    path: Path
    digest: str | None  # sha256:... of the whole file (= diff_id); None when a sink did the hashing
    size: int
    config_dump: dict[str, Any]
    # What the CRIU images say (processes, memory, files, sockets, mounts); None when they could not be read.
    inspection: Inspection | None = None

    @property
    def base_image(self) -> str:
        """The image the restored container runs on; the target node must have it (CRI-O never pulls it).

        The pinned reference when the runtime wrote one (containerd's ``rootfsImageRef`` is
        ``repo@sha256:...``; CRI-O's is a bare image ID, which no registry answers to), else the name.
        """
        ref = str(self.config_dump.get("rootfsImageRef") or "")
        return ref if "@" in ref else str(self.config_dump.get("rootfsImageName") or self.config_dump.get("rootfsImage") or "")


def inspect_archive(path: Path, *, sink: Callable[[bytes], object] | None = None) -> ArchiveFacts:
    """Read the archive's ``config.dump`` and CRIU images in one sequential pass over all of it (blocking: run it in a thread).

    Every byte read goes to ``sink`` in order (the upload: it hashes them); without a sink they
    are hashed here and the facts carry the digest.
    """
    config: dict[str, Any] | None = None

    def keep_config(member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        nonlocal config
        if member.name.removeprefix("./") != names.CONFIG_DUMP_FILE:
            return
        if member.size > MAX_CONFIG_DUMP_BYTES:
            raise ArchiveError(f"{names.CONFIG_DUMP_FILE} in {path} is {member.size} bytes: not a checkpoint")
        fh = tar.extractfile(member)
        if fh is not None:
            config = json.loads(fh.read())

    inspection: Inspection | None = None
    hasher = hashlib.sha256()
    try:
        with path.open("rb") as raw:
            reader = _TappedReader(raw, sink if sink is not None else hasher.update)
            try:
                inspection = criuimages.inspect_tar(
                    reader, max_image_bytes=MAX_CRIU_IMAGE_BYTES, max_total_bytes=MAX_CRIU_IMAGES_BYTES, other=keep_config
                )
            except CriuImageError as exc:  # raised only once the whole tar was read: a warning, the checkpoint is fine
                log.warning("could not inspect the CRIU images in %s (the checkpoint is not affected): %s", path, exc)
            reader.drain()  # the end-of-archive padding belongs to the layer too
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise ArchiveError(f"reading checkpoint archive {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ArchiveError(f"{path} has no {names.CONFIG_DUMP_FILE}: not a checkpoint archive")
    digest = "sha256:" + hasher.hexdigest() if sink is None else None
    return ArchiveFacts(path=path, digest=digest, size=reader.size, config_dump=config, inspection=inspection)


def checkpoint_info(
    *, facts: ArchiveFacts, pod: str, namespace: str, container: str, criu_version: str, engine: str, cgroup_version: str
) -> CheckpointInfo:
    """The image annotations' facts: the archive's own metadata plus what only this node knows."""
    dump = facts.config_dump
    return CheckpointInfo(
        container=container,
        pod=pod,
        namespace=namespace,
        rootfs_image_name=str(dump.get("rootfsImageName") or dump.get("rootfsImage") or ""),
        rootfs_image_ref=str(dump.get("rootfsImageRef") or ""),
        runtime=str(dump.get("runtime") or "unknown"),
        criu_version=criu_version,
        engine=engine,
        cgroup_version=cgroup_version,
    )


def archive_on_host(reported: str, *, host_root: Path) -> Path:
    """Where the kubelet's archive is as this process sees it (``host_root`` when the host is mounted elsewhere)."""
    given = Path(reported)
    if not given.is_absolute() or ".." in given.parts or given.suffix != ".tar":
        raise ArchiveError(f"kubelet reported an unexpected archive path {reported!r}")
    path = host_root / given.relative_to("/")
    if path.is_symlink() or not path.is_file():
        raise ArchiveError(f"checkpoint archive {path} is not a regular file on this node")
    return path


def remove_archive(path: Path) -> None:
    """Delete an archive; never raises (a leftover is logged loudly: it holds process memory)."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.error("could not delete checkpoint archive %s (it holds process memory): %s", path, exc)


# The kubelet's archive names (``names.KUBELET_ARCHIVE_PATTERN``) as a regular expression: a sweep
# deletes only what the kubelet wrote there (and side files named after such an archive), never
# anything else an operator keeps in that directory.
_NAME_PARTS = {
    "pod": r"[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?",  # a DNS subdomain
    "namespace": r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?",  # a DNS label
    "container": r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?",
    "timestamp": r"[0-9][0-9TZtz:.+-]*",  # RFC 3339 (the kubelet's time.RFC3339)
}
ARCHIVE_NAME = re.compile(
    "".join(
        f"(?P<{part[1:-1]}>{_NAME_PARTS[part[1:-1]]})" if part.startswith("{") else re.escape(part)
        for part in re.split(r"(\{[a-z]+\})", names.KUBELET_ARCHIVE_PATTERN)
        if part
    )
)
# Beside an archive: ``<archive>.<suffix>``, e.g. an encrypted copy (``.enc``) or an unpacked one.
_ENTRY_NAME = re.compile(rf"(?P<archive>{ARCHIVE_NAME.pattern})(?:\.[A-Za-z0-9][A-Za-z0-9._-]*)?")


def archive_of(name: str) -> str | None:
    """The kubelet archive a directory entry of that name belongs to (itself, or a side file of it); None: not ours."""
    found = _ENTRY_NAME.fullmatch(name)
    return found["archive"] if found else None


def _remove_entry(path: Path) -> bool:
    """Delete a leftover file or directory (never through a symlink); whether it is gone."""
    try:
        if path.is_symlink():
            return False
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        log.error("could not delete checkpoint leftover %s (it holds process memory): %s", path, exc)
        return False
    return True


def sweep(checkpoints_dir: Path, *, older_than_s: float, keep: Collection[Path] = ()) -> list[Path]:
    """Delete the kubelet's checkpoint archives (and their side files) older than ``older_than_s``.

    Archives are normally deleted as soon as they are pushed; these are left by an agent that died,
    or by a kubelet that finished a checkpoint after its caller timed out. At agent start every
    archive is one of those (``older_than_s=0``); later, anything older than the bound that no
    checkpoint in flight holds (``keep``: the archives a request still packs or pushes). Only
    entries named like the kubelet's archives (``ARCHIVE_NAME``) are touched; symlinks never.
    """
    if not checkpoints_dir.is_dir():
        return []
    kept = {path.name for path in keep}
    removed = []
    cutoff = time.time() - older_than_s
    try:
        entries = sorted(checkpoints_dir.iterdir())
    except OSError as exc:
        log.error("cannot list %s to sweep checkpoint leftovers: %s", checkpoints_dir, exc)
        return []
    for path in entries:
        owner = archive_of(path.name)
        if owner is None or owner in kept:
            continue
        try:
            if path.is_symlink() or path.lstat().st_mtime > cutoff:
                continue
        except OSError:
            continue
        if _remove_entry(path):
            removed.append(path)
    if removed:
        log.warning(
            "swept %d leftover checkpoint archive(s) from %s: %s",
            len(removed), checkpoints_dir, ", ".join(p.name for p in removed),
        )  # fmt: skip
    return removed


def criu_version(*, binary: str = "criu") -> str:
    """``criu --version``'s number, or "unknown" when CRIU is not visible to the agent."""
    found = shutil.which(binary)
    if found is None:
        return "unknown"
    try:
        out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    match = re.search(r"Version:\s*(\S+)", out)
    return match.group(1) if match else "unknown"
