"""A checkpoint archive's files, read and applied as the hostile input they are.

Why hostile: ``rootfs-diff.tar`` and ``deleted.files`` are whatever the checkpointed pod's own
processes left in their root filesystem, and the whole archive is whatever was pushed to the
registry under the checkpoint image's name. The node applies them as root, so CRI-O's restore
steps are done here with every path confined to the new container's root filesystem
(``ocicheckpoint.safetar``), and a refusal is a restore failure with the reason, never damage
outside the rootfs:

* the dump files (``config.dump``, ``spec.dump``, ``deleted.files``) must be regular files at the
  archive's top, at most ``MAX_DUMP_JSON_BYTES``: an archive whose ``config.dump`` is a symlink to
  ``/etc/shadow`` must not make the node read its own files;
* ``checkpoint/`` must be a real directory of regular files and directories only: CRIU opens its
  image files with symlinks followed, so a ``pages-1.img -> /etc/shadow`` would load a host file
  into the restored process' memory;
* ``rootfs-diff.tar`` is extracted by safetar's rules with no FIFOs or devices and
  ``ROOTFS_DIFF_LIMITS``. Setuid/setgid bits: what the new container's own user could have set
  itself (``setid_rule``). A container running as uid 0 can make any file setuid-root, so the
  bits stay; any other user can only set them on files it owns (setuid) or whose group it is in
  (setgid), so on every other file they are cleared. A non-root pod therefore cannot be handed a
  setuid-root shell by whoever wrote its archive;
* ``deleted.files`` is a JSON list of paths, each normalised (``/../../etc`` is ``/etc``) and
  removed in the root: symlinks in its parents resolve inside the rootfs, the last component is
  removed itself, never what it points to.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ocicheckpoint import names, safetar

# A dump file is a few KiB (a spec with many mounts and env vars, a list of deleted paths). 16 MiB is
# far beyond any real one and still small enough to parse in memory without harm.
MAX_DUMP_JSON_BYTES: Final = 16 << 20
# The container's own changes to its root filesystem. Writing gigabytes there (rather than to a
# volume) is already unusual; more than this is a disk-filling attempt, not state worth restoring.
ROOTFS_DIFF_LIMITS: Final = safetar.Limits(max_file_bytes=2 << 30, max_total_bytes=4 << 30, max_entries=1_000_000)


class CheckpointFileError(RuntimeError):
    """A checkpoint archive's file is missing, malformed, too large or breaks a confinement rule."""


def read_dump_json(archive: Path, name: str, *, max_bytes: int = MAX_DUMP_JSON_BYTES) -> Any:
    """The JSON document in the archive's top-level file ``name`` (a regular file, no symlink, at most ``max_bytes``)."""
    try:
        return json.loads(safetar.read_file_in_root(archive, name, max_bytes=max_bytes))
    except (OSError, ValueError) as exc:  # UnsafeArchiveError is a ValueError
        raise CheckpointFileError(f'failed to read "{name}": {exc}') from None


def check_checkpoint_directory(archive: Path) -> None:
    """``checkpoint/`` is a real directory holding only directories and regular files (CRIU follows symlinks)."""
    try:
        safetar.check_plain_tree(archive, names.CHECKPOINT_DIRECTORY)
    except (OSError, ValueError) as exc:
        raise CheckpointFileError(f'checkpoint images "{names.CHECKPOINT_DIRECTORY}": {exc}') from None


def setid_rule(spec: Mapping[str, Any]) -> safetar.SetIdRule:
    """Whose setuid/setgid bits may survive in a rootfs diff: what the new container's user could set itself.

    ``spec`` is the new container's OCI spec (this node wrote it, from the pod's security context):
    uid 0 keeps all; any other user keeps the setuid bit on its own files and the setgid bit for its
    groups only.
    """
    user = (spec.get("process") or {}).get("user") or {}
    uid = int(user.get("uid", 0))
    if uid == 0:
        return safetar.KEEP_SETID
    gids = {int(user.get("gid", 0)), *(int(g) for g in user.get("additionalGids") or ())}
    return safetar.SetIdRule(uids=frozenset({uid}), gids=frozenset(gids))


def apply_rootfs_diff(
    *, archive: Path, rootfs: Path, setid: safetar.SetIdRule, limits: safetar.Limits = ROOTFS_DIFF_LIMITS
) -> safetar.ExtractStats | None:
    """Extract the archive's ``rootfs-diff.tar`` (if any) into ``rootfs`` by safetar's rules; None without one."""
    try:
        diff = safetar.open_file_in_root(archive, names.ROOTFS_DIFF_TAR)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CheckpointFileError(f'"{names.ROOTFS_DIFF_TAR}": {exc}') from None
    policy = safetar.Policy(limits=limits, setid=setid, what=names.ROOTFS_DIFF_TAR)
    try:
        with diff, tarfile.open(fileobj=diff, mode="r|") as tar:
            return safetar.extract(tar, root=rootfs, policy=policy)
    except safetar.UnsafeArchiveError as exc:
        raise CheckpointFileError(str(exc)) from None
    except (OSError, tarfile.TarError, EOFError, ValueError) as exc:
        raise CheckpointFileError(f'extracting "{names.ROOTFS_DIFF_TAR}": {exc}') from None


def apply_deleted_files(*, archive: Path, rootfs: Path, max_bytes: int = MAX_DUMP_JSON_BYTES) -> int:
    """Remove what the archive's ``deleted.files`` lists from ``rootfs``, confined to it; returns how many existed."""
    try:
        text = safetar.read_file_in_root(archive, names.DELETED_FILES_FILE, max_bytes=max_bytes)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        raise CheckpointFileError(f'failed to read "{names.DELETED_FILES_FILE}": {exc}') from None
    try:
        paths = json.loads(text or b"[]")
    except ValueError as exc:
        raise CheckpointFileError(f'failed to read "{names.DELETED_FILES_FILE}": {exc}') from None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise CheckpointFileError(f'"{names.DELETED_FILES_FILE}" is not a JSON list of paths')
    removed = 0
    for path in paths:
        try:
            removed += safetar.remove_in_root(rootfs, path)
        except (OSError, ValueError) as exc:
            raise CheckpointFileError(f'"{names.DELETED_FILES_FILE}": removing {path!r}: {exc}') from None
    return removed
