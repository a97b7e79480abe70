"""Checkpoint archives, written the way CRI-O writes them for ``POST /checkpoint``.

The archive is an uncompressed tar whose entries sit at its root (``checkpoint/``,
``config.dump``, ``spec.dump``, ``rootfs-diff.tar``, ``deleted.files``, ...; names in
``ocicheckpoint.names``), named ``checkpoint-<pod>_<namespace>-<container>-<time>.tar``
under the kubelet's checkpoints directory, root-owned 0600. The container keeps running,
as with the real kubelet: anything it does afterwards is not in the archive.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localcluster.node.containers import Container, ContainerError
from localcluster.node.runc import Runc, RuncError
from ocicheckpoint import names

log = logging.getLogger(__name__)


def _rootfs_diff(upper: Path, tar_path: Path, *, mountpoints: set[str]) -> list[str]:
    """Tar the overlay upper dir (what the container changed); return what it deleted.

    Overlay records deletions as 0:0 character devices ("whiteouts"): they become
    ``deleted.files``. Mount points the runtime created for bind mounts are left out, as
    containers/storage does.
    """
    deleted: list[str] = []
    with tarfile.open(tar_path, "w") as tar:
        for dirpath, dirnames, filenames in os.walk(upper):
            rel_dir = os.path.relpath(dirpath, upper)
            for name in sorted(dirnames + filenames):
                full = Path(dirpath, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                st = full.lstat()
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    deleted.append("/" + rel)
                    continue
                if "/" + rel in mountpoints:
                    continue
                tar.add(full, arcname=rel, recursive=False)
    return deleted


# Files at least this large are copied into the archive by the kernel (``copy_file_range``) instead of
# through Python's 16 KiB ``copyfileobj``: CRIU's page images are the container's memory.
KERNEL_COPY_MIN_BYTES = 1 << 20
CONSUME_STEP_BYTES = 64 << 20  # with ``consume``: copied, then freed, this much at a time
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)


def _punch_hole(fd: int, *, offset: int, length: int) -> None:
    """Free a range of a file's blocks (on a tmpfs: its memory), keeping the file's size."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def pack_archive(work: Path, archive: Path, *, consume: bool = False) -> None:
    """Tar ``work``'s entries at the archive's root into ``archive`` (0600), as CRI-O's ``TarWithOptions`` does.

    Large regular files (the page images) go through ``os.copy_file_range`` between the two
    files, so the archive costs one in-kernel copy of the memory rather than a read and a
    write through Python; a Go runtime's ``io.Copy`` of the same files ends in the same
    ``copy_file_range`` on Linux, so this keeps the stand-in's checkpoint as fast as CRI-O's.

    ``consume``: ``work`` is thrown away afterwards, so each large file's blocks are freed (a hole
    punched) as soon as they are in the archive. With both on the checkpoints tmpfs, the memory
    then holds the archive and one step of the images, not both whole: CRI-O keeps CRIU's images
    on the disk under its own container directory and only the archive on the kubelet's, and
    measured at 4 GiB (docs/facts.md) the two copies in memory at once slowed the dump threefold.
    """
    fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for top in sorted(work.iterdir()):
            paths = [top]
            if top.is_dir() and not top.is_symlink():
                for dirpath, dirnames, filenames in os.walk(top):
                    dirnames.sort()
                    paths += [Path(dirpath, name) for name in sorted(dirnames + filenames)]
            for path in paths:
                arcname = str(path.relative_to(work))
                info = tar.gettarinfo(str(path), arcname=arcname)
                if not info.isreg() or info.size < KERNEL_COPY_MIN_BYTES:
                    tar.add(path, arcname=arcname, recursive=False)
                    continue
                header = info.tobuf(tar.format, tar.encoding, tar.errors)
                fh.write(header)
                fh.flush()
                with path.open("r+b" if consume else "rb") as src:
                    done = 0
                    while done < info.size:
                        step = min(info.size - done, CONSUME_STEP_BYTES if consume else info.size)
                        end = done + step
                        while done < end:
                            copied = os.copy_file_range(src.fileno(), fh.fileno(), end - done)
                            if copied == 0:
                                raise OSError(f"{path} shrank while it was archived")
                            done += copied
                        if consume:
                            _punch_hole(src.fileno(), offset=done - step, length=step)
                padding = -info.size % tarfile.BLOCKSIZE
                fh.write(tarfile.NUL * padding)
                tar.offset += len(header) + info.size + padding
                tar.members.append(info)


def _config_dump(container: Container, *, checkpointed_at: datetime) -> dict[str, Any]:
    image = container.request.image
    return {
        "id": container.id,
        "name": container.request.name,
        # As the runtimes write them: the name the pod asked for, and the pinned reference it resolved to
        # (containerd's is repo@sha256 of the manifest, which this node's store answers to as well).
        "rootfsImage": container.request.image_name,
        "rootfsImageName": container.request.image_name,
        "rootfsImageRef": image.image_id,
        "runtime": "runc",
        "createdTime": container.created_at.isoformat().replace("+00:00", "Z"),
        "checkpointedTime": checkpointed_at.isoformat().replace("+00:00", "Z"),
        "restored": container.restored,
    }


def archive_name(*, pod: str, namespace: str, container: str, when: datetime) -> str:
    return names.KUBELET_ARCHIVE_PATTERN.format(
        pod=pod, namespace=namespace, container=container, timestamp=when.strftime("%Y-%m-%dT%H:%M:%SZ")
    )


async def checkpoint_container(*, runc: Runc, container: Container, checkpoints_dir: Path) -> Path:
    """Checkpoint a running container (leaving it running) into a CRI-O layout archive."""
    if not container.running:
        raise ContainerError(f"container {container.request.name} is not running")
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    when = datetime.now(UTC)
    with tempfile.TemporaryDirectory(dir=checkpoints_dir, prefix=".work-") as tmp:
        work = Path(tmp)
        images = work / names.CHECKPOINT_DIRECTORY
        images.mkdir()
        t0 = time.monotonic()
        try:
            await runc.checkpoint(container_id=container.id, image_path=images, work_path=work, leave_running=True)
        except RuncError as exc:
            raise ContainerError(f"failed to checkpoint container {container.id}: {exc}") from None  # CRIU's lines included
        spec = json.loads((container.bundle / "config.json").read_text())
        bind_mounts = [m for m in spec["mounts"] if m.get("type") == "bind"]
        (work / names.SPEC_DUMP_FILE).write_text(json.dumps(spec, indent=1))
        (work / names.CONFIG_DUMP_FILE).write_text(json.dumps(_config_dump(container, checkpointed_at=when), indent=1))
        (work / names.BIND_MOUNTS_FILE).write_text(json.dumps(bind_mounts, indent=1))
        deleted = await asyncio.to_thread(
            _rootfs_diff,
            container.upper,
            work / names.ROOTFS_DIFF_TAR,
            mountpoints={m["destination"] for m in bind_mounts},
        )
        if deleted:
            (work / names.DELETED_FILES_FILE).write_text(json.dumps(deleted))
        if (images / names.STATS_DUMP_FILE).exists():
            shutil.copy(images / names.STATS_DUMP_FILE, work / names.STATS_DUMP_FILE)
        if container.request.log_path.exists():
            shutil.copy(container.request.log_path, work / names.CONTAINER_LOG_FILE)
        final = checkpoints_dir / archive_name(
            pod=container.sandbox.name, namespace=container.sandbox.namespace, container=container.request.name, when=when
        )
        partial = final.with_name("." + final.name + ".partial")

        t1 = time.monotonic()
        await asyncio.to_thread(pack_archive, work, partial, consume=True)
        partial.rename(final)
        log.info(
            "checkpointed %s: runc/CRIU dump %.3fs, archive %.3fs (%d bytes)",
            container.id, t1 - t0, time.monotonic() - t1, final.stat().st_size,
        )  # fmt: skip
    return final
