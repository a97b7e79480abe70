"""Checkpoint archives, written the way CRI-O writes them for ``POST /checkpoint``.

The archive is an uncompressed tar whose entries sit at its root (``checkpoint/``,
``config.dump``, ``spec.dump``, ``rootfs-diff.tar``, ``deleted.files``, ...; names in
``ocicheckpoint.names``), named ``checkpoint-<pod>_<namespace>-<container>-<time>.tar``
under the kubelet's checkpoints directory, root-owned 0600. The container keeps running,
as with the real kubelet: anything it does afterwards is not in the archive.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localcluster.node.containers import Container, ContainerError
from localcluster.node.runc import Runc, RuncError
from ocicheckpoint import names


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

        def pack() -> None:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w") as tar:
                for entry in sorted(work.iterdir()):
                    tar.add(entry, arcname=entry.name)

        await asyncio.to_thread(pack)
        partial.rename(final)
    return final
