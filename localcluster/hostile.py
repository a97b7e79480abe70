"""Malicious checkpoint archives, for testing that a node restores them without harm to the host.

Why: a checkpoint archive is written partly by the checkpointed pod's own processes (its
``rootfs-diff.tar`` and ``deleted.files``) and a checkpoint image by whoever can push to the
registry; a node applies both as root. Each ``Attack`` turns a genuine archive into one that
tries one way out of the container's root filesystem (or one way to exhaust the node), aimed at
a *canary*: a host file the test creates and checks afterwards.

How an end-to-end test uses it (a stand-in node restores by ``localcluster.node.checkpointfiles``)::

    canary = tmp_path / "canary"; canary.write_text("host file\\n")        # on the host
    before = canary_state(canary)
    archive = kubelet_checkpoint(...)                                     # a genuine archive
    hostile = make_hostile_archive(archive=archive, dest=tmp_path / "h.tar", attack=Attack.DIFF_DEVICE, canary=canary)
    image = await push_hostile(hostile, registry=cluster.registry, repository=f"{registryauth.CHECKPOINT_REPOSITORY}/{ns}",
                               tag=str(hostile.attack), container="counter", pod="counter", namespace=ns,
                               credentials=cluster.registry_credentials(registryauth.PUSH_USER).for_registry(cluster.registry))
    # create the pod with that image (and an imagePullSecret of registryauth.PULL_USER's
    # cluster.registry_credentials_file) on a node that already has the base image, then:
    #   hostile.expected.fails: the container waits with reason hostile.expected.reason and a
    #     message containing hostile.expected.message;
    #   otherwise it runs, and whatever the archive wrote "outside" is in the container at
    #     hostile.inside_path: on a stand-in node (no exec) under the container's upper directory,
    #     <state dir>/nodes/<node>/crio/containers/<container id>/upper<inside_path>;
    #   always: canary_intact(canary, before) is True.

``push_hostile`` puts the *genuine* archive's base image in the image's annotations (as the
checkpointing node would), so ``Attack.OTHER_BASE_IMAGE`` is the archive lying about its base.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from localcluster import testimages
from ocicheckpoint import image as oci
from ocicheckpoint import names
from ocicheckpoint.credentials import Credentials

# Large enough to pass any root: "../" this many times is above every real path's depth.
UP: Final = "../" * 32
OTHER_IMAGE: Final = "registry.invalid/not-the-base:1"


class Attack(StrEnum):
    DELETED_TRAVERSAL = "deleted-traversal"  # deleted.files: "/../../<canary>" and a path through a symlink to "../../.."
    DELETED_ROOT = "deleted-root"  # deleted.files: "/.." (the whole rootfs)
    DIFF_ABSOLUTE_SYMLINK = "diff-absolute-symlink"  # rootfs-diff: x -> /<canary's dir>, then x/<canary's name>
    DIFF_RELATIVE_SYMLINK = "diff-relative-symlink"  # the same through ../../../<canary's dir>
    DIFF_HARDLINK = "diff-hardlink"  # rootfs-diff: a hard link to the canary's absolute path
    DIFF_DEVICE = "diff-device"  # rootfs-diff: /dev/mem as a character device
    DIFF_FIFO = "diff-fifo"
    DIFF_SETUID = "diff-setuid"  # rootfs-diff: a setuid-root executable
    DIFF_OVERSIZED = "diff-oversized"  # rootfs-diff: a member whose header says 5 GiB (no data follows)
    DUMP_SYMLINK = "dump-symlink"  # config.dump -> the canary
    DUMP_OVERSIZED = "dump-oversized"  # spec.dump of 17 MiB
    CHECKPOINT_SYMLINK = "checkpoint-symlink"  # checkpoint/pm-hostile.img -> the canary (CRIU would read it)
    OTHER_BASE_IMAGE = "other-base-image"  # config.dump names another base image than the image's annotations
    LAYER_ESCAPE = "layer-escape"  # the archive (= the image's layer): ../../<canary>, and a file through x -> /<dir>
    LAYER_DEVICE = "layer-device"  # the archive (= the image's layer): a character device


@dataclass(frozen=True, kw_only=True)
class Expectation:
    fails: bool
    reason: str = ""  # the container's waiting reason when it fails
    message: str = ""  # a substring of its waiting message


EXPECTED: Final[Mapping[Attack, Expectation]] = {
    Attack.DELETED_TRAVERSAL: Expectation(fails=False),
    Attack.DELETED_ROOT: Expectation(fails=True, reason="CreateContainerError", message="names the root itself"),
    Attack.DIFF_ABSOLUTE_SYMLINK: Expectation(fails=False),
    Attack.DIFF_RELATIVE_SYMLINK: Expectation(fails=False),
    Attack.DIFF_HARDLINK: Expectation(fails=True, reason="CreateContainerError", message="hard link target"),
    Attack.DIFF_DEVICE: Expectation(fails=True, reason="CreateContainerError", message="device node"),
    Attack.DIFF_FIFO: Expectation(fails=True, reason="CreateContainerError", message="FIFO"),
    Attack.DIFF_SETUID: Expectation(fails=False),
    Attack.DIFF_OVERSIZED: Expectation(fails=True, reason="CreateContainerError", message="allowed per file"),
    Attack.DUMP_SYMLINK: Expectation(fails=True, reason="CreateContainerError", message="symbolic link"),
    Attack.DUMP_OVERSIZED: Expectation(fails=True, reason="CreateContainerError", message="bytes"),
    Attack.CHECKPOINT_SYMLINK: Expectation(fails=True, reason="CreateContainerError", message="not a regular file"),
    Attack.OTHER_BASE_IMAGE: Expectation(fails=True, reason="CreateContainerError", message="annotation"),
    Attack.LAYER_ESCAPE: Expectation(fails=False),
    Attack.LAYER_DEVICE: Expectation(fails=True, reason="ErrImagePull", message="device node"),
}


@dataclass(frozen=True, kw_only=True)
class HostileArchive:
    path: Path
    attack: Attack
    base_image_name: str  # the genuine archive's base image: what the image's annotations must say
    base_image_ref: str
    inside_path: str = ""  # where, inside the container's rootfs, a confined write of the attack lands

    @property
    def expected(self) -> Expectation:
        return EXPECTED[self.attack]

    def checkpoint_info(self, *, container: str, pod: str, namespace: str) -> oci.CheckpointInfo:
        """The image annotations a checkpointing node would write for the genuine archive."""
        return oci.CheckpointInfo(
            container=container,
            pod=pod,
            namespace=namespace,
            rootfs_image_name=self.base_image_name,
            rootfs_image_ref=self.base_image_ref,
            runtime="runc",
            criu_version="4.1.1",
        )


def _info(name: str, *, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    return info


def _add(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes = b"") -> None:
    info.size = len(data) if info.isreg() else 0
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def _canary_parts(canary: Path) -> tuple[str, str]:
    """The canary's directory and name, as paths relative to ``/``."""
    if not canary.is_absolute():
        raise ValueError(f"the canary must be an absolute host path, not {canary}")
    return str(canary.parent).lstrip("/"), canary.name


def _diff_entries(attack: Attack, *, canary: Path) -> tuple[list[tuple[tarfile.TarInfo, bytes]], str]:
    """Entries to append to rootfs-diff.tar, and where in the rootfs a confined write lands."""
    directory, name = _canary_parts(canary)
    payload = b"written by a hostile checkpoint archive\n"
    if attack is Attack.DIFF_ABSOLUTE_SYMLINK:
        link = _info("pm-hostile-abs", kind=tarfile.SYMTYPE, link="/" + directory)
        return [(link, b""), (_info(f"pm-hostile-abs/{name}"), payload)], str(canary)
    if attack is Attack.DIFF_RELATIVE_SYMLINK:
        link = _info("pm-hostile-rel", kind=tarfile.SYMTYPE, link=UP + directory)
        return [(link, b""), (_info(f"pm-hostile-rel/{name}"), payload)], str(canary)
    if attack is Attack.DIFF_HARDLINK:
        return [(_info("pm-hostile-link", kind=tarfile.LNKTYPE, link=str(canary)), b"")], ""
    if attack is Attack.DIFF_DEVICE:
        dev = _info("pm-hostile-mem", kind=tarfile.CHRTYPE, mode=0o666)
        dev.devmajor, dev.devminor = 1, 1  # /dev/mem
        return [(dev, b"")], ""
    if attack is Attack.DIFF_FIFO:
        return [(_info("pm-hostile-fifo", kind=tarfile.FIFOTYPE), b"")], ""
    if attack is Attack.DIFF_SETUID:
        return [(_info("pm-hostile-suid", mode=0o4755), b"#!/bin/sh\nid\n")], "/pm-hostile-suid"
    if attack is Attack.DELETED_TRAVERSAL:
        return [(_info("pm-hostile-up", kind=tarfile.SYMTYPE, link=UP), b"")], ""
    return [], ""


def _rewrite_diff(src: tarfile.TarFile, *, extra: Iterable[tuple[tarfile.TarInfo, bytes]], oversized: bool, dest: Path) -> None:
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
        member = next((m for m in src.getmembers() if m.name.removeprefix("./") == names.ROOTFS_DIFF_TAR), None)
        source = src.extractfile(member) if member is not None and member.isreg() else None
        if source is not None:
            with tarfile.open(fileobj=source, mode="r|") as genuine:
                for m in genuine:
                    out.addfile(m, genuine.extractfile(m) if m.isreg() else None)
        for info, data in extra:
            _add(out, info, data)
        if oversized:
            # A header only: the limit must refuse it before reading 5 GiB that are not there.
            header = _info("pm-hostile-huge", size=5 << 30).tobuf(tarfile.PAX_FORMAT)
            out.fileobj.write(header)
            out.offset += len(header)  # tarfile's bookkeeping, for the end-of-archive blocks close() writes


def make_hostile_archive(
    *, archive: Path, dest: Path, attack: Attack, canary: Path, other_image: str = OTHER_IMAGE
) -> HostileArchive:
    """A copy of the genuine checkpoint ``archive`` at ``dest``, changed by ``attack`` (aimed at the host file ``canary``)."""
    directory, name = _canary_parts(canary)
    with tarfile.open(archive) as src:
        config_member = src.extractfile(names.CONFIG_DUMP_FILE)
        genuine: dict[str, Any] = json.loads(config_member.read()) if config_member else {}
        deleted_member = next((m for m in src.getmembers() if m.name == names.DELETED_FILES_FILE), None)
        deleted_file = src.extractfile(deleted_member) if deleted_member is not None else None
        deleted: list[str] = json.loads(deleted_file.read() or b"[]") if deleted_file else []
        extra_diff, inside = _diff_entries(attack, canary=canary)
        replaced: set[str] = set()
        top: list[tuple[tarfile.TarInfo, bytes]] = []
        if extra_diff or attack is Attack.DIFF_OVERSIZED:
            replaced.add(names.ROOTFS_DIFF_TAR)
        if attack is Attack.DELETED_TRAVERSAL:
            deleted += [f"/{UP}{directory}/{name}", f"/pm-hostile-up/{directory}/{name}"]
        if attack is Attack.DELETED_ROOT:
            deleted.append("/..")
        if attack in (Attack.DELETED_TRAVERSAL, Attack.DELETED_ROOT):
            replaced.add(names.DELETED_FILES_FILE)
            top.append((_info(names.DELETED_FILES_FILE), json.dumps(deleted).encode()))
        if attack is Attack.DUMP_SYMLINK:
            replaced.add(names.CONFIG_DUMP_FILE)
            top.append((_info(names.CONFIG_DUMP_FILE, kind=tarfile.SYMTYPE, link=str(canary)), b""))
        if attack is Attack.DUMP_OVERSIZED:
            spec_member = src.extractfile(names.SPEC_DUMP_FILE)
            spec = spec_member.read() if spec_member else b"{}"
            replaced.add(names.SPEC_DUMP_FILE)
            top.append((_info(names.SPEC_DUMP_FILE), spec + b" " * (17 << 20)))
        if attack is Attack.CHECKPOINT_SYMLINK:
            link = f"{names.CHECKPOINT_DIRECTORY}/pm-hostile.img"
            top.append((_info(link, kind=tarfile.SYMTYPE, link=str(canary)), b""))
        if attack is Attack.OTHER_BASE_IMAGE:
            lying = dict(genuine, rootfsImage=other_image, rootfsImageName=other_image, rootfsImageRef="")
            replaced.add(names.CONFIG_DUMP_FILE)
            top.append((_info(names.CONFIG_DUMP_FILE), json.dumps(lying, indent=1).encode()))
        if attack is Attack.LAYER_ESCAPE:
            payload = b"written by a hostile checkpoint layer\n"
            top += [
                (_info(f"{UP}{directory}/{name}"), payload),
                (_info("pm-hostile-layer", kind=tarfile.SYMTYPE, link="/" + directory), b""),
                (_info(f"pm-hostile-layer/{name}"), payload),
            ]
        if attack is Attack.LAYER_DEVICE:
            dev = _info("pm-hostile-mem", kind=tarfile.CHRTYPE, mode=0o666)
            dev.devmajor, dev.devminor = 1, 1
            top.append((dev, b""))
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as out:
            for member in src.getmembers():
                if member.name.removeprefix("./") in replaced:
                    continue
                out.addfile(member, src.extractfile(member) if member.isreg() else None)
            if names.ROOTFS_DIFF_TAR in replaced:
                diff = Path(tmp) / names.ROOTFS_DIFF_TAR
                _rewrite_diff(src, extra=extra_diff, oversized=attack is Attack.DIFF_OVERSIZED, dest=diff)
                out.add(diff, arcname=names.ROOTFS_DIFF_TAR)
            for info, data in top:
                _add(out, info, data)
    return HostileArchive(
        path=dest,
        attack=attack,
        base_image_name=str(genuine.get("rootfsImageName") or genuine.get("rootfsImage") or ""),
        base_image_ref=str(genuine.get("rootfsImageRef") or ""),
        inside_path=inside,
    )


async def push_hostile(
    hostile: HostileArchive,
    *,
    registry: str,
    repository: str,
    tag: str,
    container: str,
    pod: str,
    namespace: str,
    credentials: Credentials | None = None,
) -> str:
    """Push ``hostile`` as a checkpoint image (plain HTTP, the local cluster's registry); returns ``registry/repo:tag@digest``.

    ``credentials``: a user allowed to push there, e.g. ``cluster.registry_credentials(registryauth.PUSH_USER)
    .for_registry(cluster.registry)`` with ``repository`` under ``registryauth.CHECKPOINT_REPOSITORY``
    (the pod restoring it then needs an ``imagePullSecret`` for ``registryauth.PULL_USER``).
    """
    info = hostile.checkpoint_info(container=container, pod=pod, namespace=namespace)
    digest = await testimages.push_checkpoint(
        archive=hostile.path, info=info, registry=registry, repository=repository, tag=tag, credentials=credentials
    )
    return f"{registry}/{repository}:{tag}@{digest}"


def canary_state(canary: Path) -> tuple[bytes, int, int] | None:
    """What a test compares before and after: the canary's content, mode and inode (None if it is gone)."""
    try:
        st = canary.lstat()
        return canary.read_bytes(), st.st_mode, st.st_ino
    except FileNotFoundError:
        return None


def canary_intact(canary: Path, before: tuple[bytes, int, int] | None) -> bool:
    """The canary is as it was, and nothing appeared beside it with the attacks' names."""
    strays = [p for p in canary.parent.iterdir() if p.name.startswith("pm-hostile")] if canary.parent.exists() else []
    return before is not None and canary_state(canary) == before and not strays
