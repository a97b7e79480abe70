"""Applying an untrusted tar (or list of paths) to a directory without touching anything outside it.

Why this exists: a checkpoint archive is written partly by the checkpointed pod's own processes
(``rootfs-diff.tar`` and ``deleted.files`` are what they left in their root filesystem) and an
image layer by whoever can push to the registry, yet both are applied on the node by root. Why
by hand: the Python that runs this may be Debian 12's 3.11.2, which predates ``tarfile``'s
extraction filters (3.11.4), and even the ``data`` filter is wrong for a root filesystem: it
refuses absolute symlinks, which every Debian image has (``/var/run -> /run``), where a runtime
keeps them and reads them *inside* the root.

The rules, for every caller (image layers, a checkpoint's rootfs diff, ``deleted.files``):

* **Paths are resolved in the root**, as ``openat2(RESOLVE_IN_ROOT)`` would: one component at
  a time from a directory file descriptor, a symlink's target read and walked again, an absolute
  target restarting at the root, ``..`` at the root staying there. A symlink in the base image
  or one an earlier entry made can redirect a path, but only to another place in the root.
* **The last component is never followed.** An entry replaces whatever is at its name (the old
  file is unlinked, a directory removed with ``rmtree(dir_fd=...)``, which does not follow
  symlinks either) and is created with ``O_CREAT|O_EXCL|O_NOFOLLOW``: nothing is ever written
  through an existing symlink or hard link.
* **Symlinks are stored verbatim** (absolute ones too): a runtime only ever reads them in the
  root, so they cannot lead out. ``confined_symlinks`` refuses absolute or escaping targets for
  callers whose files are later read by tools that follow symlinks on the host.
* **Hard links** name their target in the root the same way and link the target itself, never
  what it points to; only regular files and symlinks can be linked.
* **No device nodes** (character or block), ever; FIFOs only where the policy allows them.
* **Setuid/setgid** bits on regular files are kept only for the owners ``SetIdRule`` names
  (image layers keep them, as any runtime does; a rootfs diff keeps only what the container's own
  user could have set, see ``localcluster.node.checkpointfiles``). Directories keep theirs
  (setgid on a directory only picks the group of new files). Extended attributes, file
  capabilities among them, are never applied: ``tarfile`` does not extract them.
* **Limits**: bytes per file, bytes in all and number of entries, checked from the headers
  before anything is written, so a bomb (gzip or sparse) fails at once with the reason.
* Owners are numeric and applied only when running as root; modes are applied to directories
  after everything else (as ``tar`` does), so a read-only directory can still be filled.

Every refusal is an ``UnsafeArchiveError`` naming the entry and the rule; the caller turns it
into its own failure (a pull error, a restore error). No concurrent writer is expected in the
root (layers are unpacked into a private directory, a rootfs diff before the container runs),
but every step works from directory file descriptors and ``O_NOFOLLOW`` anyway, so a path
swapped for a symlink halfway still cannot lead out.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final

MAX_SYMLINK_HOPS: Final = 40  # the kernel's own limit (MAXSYMLINKS)
CHUNK: Final = 1 << 20
# Generous: a root filesystem with more entries than this is a denial of service (inodes), not an image.
DEFAULT_MAX_ENTRIES: Final = 2_000_000
WHITEOUT_PREFIX: Final = ".wh."
OPAQUE_WHITEOUT: Final = ".wh..wh..opq"
_MAX_ID: Final = (1 << 32) - 2  # (uid_t)-1 means "unchanged" to chown


class UnsafeArchiveError(ValueError):
    """An entry breaks one of the rules (the message names the entry and the rule)."""


class ArchiveLimitError(UnsafeArchiveError):
    """An entry, or the archive as a whole, is larger than the caller allows."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_file_bytes: int
    max_total_bytes: int
    max_entries: int = DEFAULT_MAX_ENTRIES


@dataclass(frozen=True, kw_only=True)
class SetIdRule:
    """Whose setuid (owner) and setgid (group) bits a regular file keeps; None means anyone's."""

    uids: frozenset[int] | None = None
    gids: frozenset[int] | None = None

    def mode(self, mode: int, *, uid: int, gid: int) -> int:
        if self.uids is not None and uid not in self.uids:
            mode &= ~stat.S_ISUID
        if self.gids is not None and gid not in self.gids:
            mode &= ~stat.S_ISGID
        return mode


KEEP_SETID: Final = SetIdRule()
STRIP_SETID: Final = SetIdRule(uids=frozenset(), gids=frozenset())


@dataclass(frozen=True, kw_only=True)
class Policy:
    limits: Limits
    whiteouts: bool = False  # OCI layer whiteouts (``.wh.<name>``, ``.wh..wh..opq``) remove, not create
    fifos: bool = False
    confined_symlinks: bool = False  # refuse absolute symlinks and ones whose target leaves the root lexically
    setid: SetIdRule = KEEP_SETID
    owners: bool = True  # apply numeric owners (only possible, and only done, as root)
    what: str = "archive"  # how messages name the tar ("layer", "rootfs-diff.tar", ...)


@dataclass(kw_only=True)
class ExtractStats:
    entries: int = 0
    bytes: int = 0
    removed: int = 0  # whiteouts applied


def split_path(name: str) -> tuple[str, ...]:
    """``name``'s components after lexical normalisation in a root: leading ``/`` and ``..`` at the root dropped.

    ``/../../etc/x`` and ``etc/./x`` are both ``("etc", "x")``; ``()`` is the root itself.
    """
    if "\0" in name:
        raise UnsafeArchiveError(f"path {name!r} contains a NUL byte")
    normal = posixpath.normpath("/" + name)
    return tuple(p for p in normal.split("/") if p and p != ".")


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def open_root(root: Path) -> int:
    """A directory fd for ``root`` (the caller's trusted path: symlinks in it are the caller's own)."""
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_dir_in_root(root_fd: int, parts: tuple[str, ...], *, create: bool) -> int:
    """An fd of the directory ``parts`` names, every component resolved in the root (never outside it).

    Missing directories are made (0755) when ``create``, else ``FileNotFoundError``; a component that
    is neither a directory nor a symlink is ``NotADirectoryError``. The caller closes the fd.
    """
    stack = [os.dup(root_fd)]  # the directories walked so far; stack[0] is the root
    pending = list(reversed(parts))  # popped from the end
    hops = 0
    try:
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            cur = stack[-1]
            try:
                st = os.stat(part, dir_fd=cur, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=cur)
                st = os.stat(part, dir_fd=cur, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise UnsafeArchiveError(f"too many levels of symbolic links in {'/'.join(parts)!r}")
                target = os.readlink(part, dir_fd=cur)
                if target.startswith("/"):
                    _close_all(stack[1:])
                    del stack[1:]
                pending.extend(reversed(target.split("/")))
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(f"{part!r} in {'/'.join(parts)!r} is not a directory")
            stack.append(os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur))
        return stack.pop()
    finally:
        _close_all(stack)


def _lstat(name: str, *, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove_entry(name: str, *, dir_fd: int, st: os.stat_result | None = None) -> bool:
    """Remove ``name`` in the directory ``dir_fd`` without following it; False when there was nothing."""
    st = st or _lstat(name, dir_fd=dir_fd)
    if st is None:
        return False
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)  # fd-based: does not follow symlinks (rmtree.avoids_symlink_attacks)
    else:
        os.unlink(name, dir_fd=dir_fd)
    return True


def remove_in_root(root: Path, path: str) -> bool:
    """Remove ``path`` (a file, symlink or whole directory) in ``root``, resolved in the root; False if absent.

    The parents are resolved in the root (a symlink in them cannot lead out); the last component is
    removed itself, never what it points to. ``path`` naming the root itself is refused.
    """
    parts = split_path(path)
    if not parts:
        raise UnsafeArchiveError(f"{path!r} names the root itself")
    root_fd = open_root(root)
    try:
        try:
            parent = open_dir_in_root(root_fd, parts[:-1], create=False)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            return _remove_entry(parts[-1], dir_fd=parent)
        finally:
            os.close(parent)
    finally:
        os.close(root_fd)


def open_file_in_root(root: Path, path: str) -> BinaryIO:
    """``path`` in ``root`` opened for reading, resolved in the root; it must be a regular file (not a symlink)."""
    parts = split_path(path)
    if not parts:
        raise UnsafeArchiveError(f"{path!r} names the root itself")
    root_fd = open_root(root)
    try:
        parent = open_dir_in_root(root_fd, parts[:-1], create=False)
    finally:
        os.close(root_fd)
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the last component is a symlink
                raise UnsafeArchiveError(f"{path!r} is a symbolic link, not a file") from None
            raise
    finally:
        os.close(parent)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeArchiveError(f"{path!r} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_file_in_root(root: Path, path: str, *, max_bytes: int) -> bytes:
    """The content of the regular file ``path`` in ``root`` (see ``open_file_in_root``), at most ``max_bytes``."""
    with open_file_in_root(root, path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > max_bytes:
            raise ArchiveLimitError(f"{path!r} is {size} bytes, more than the {max_bytes} allowed")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ArchiveLimitError(f"{path!r} is more than the {max_bytes} bytes allowed")
    return data


def check_plain_tree(root: Path, path: str) -> None:
    """``path`` in ``root`` is a real directory holding only directories and regular files.

    For a directory another program opens by path with symlinks followed (CRIU reads its image
    files with plain ``openat``): a symlink or device there would make it read the host's files.
    """
    parts = split_path(path)
    root_fd = open_root(root)
    try:
        parent = open_dir_in_root(root_fd, parts[:-1], create=False) if parts else os.dup(root_fd)
    finally:
        os.close(root_fd)
    try:
        if parts:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafeArchiveError(f"{path!r} is not a directory")
            top = os.open(parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        else:
            top = os.dup(parent)
    finally:
        os.close(parent)
    try:
        for dirpath, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for name in [*dirnames, *filenames]:
                mode = os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode
                if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                    where = posixpath.normpath(posixpath.join(path, dirpath, name))
                    raise UnsafeArchiveError(f"{where!r} is not a regular file or directory")
    finally:
        os.close(top)


def _valid_id(value: int, *, what: str, name: str) -> int:
    if not 0 <= value <= _MAX_ID:
        raise UnsafeArchiveError(f"{name!r}: {what} {value} is out of range")
    return value


@dataclass(kw_only=True)
class _Extraction:
    tar: tarfile.TarFile
    root_fd: int
    policy: Policy
    stats: ExtractStats = field(default_factory=ExtractStats)
    created: set[tuple[str, ...]] = field(default_factory=set)
    directories: list[tuple[tuple[str, ...], tarfile.TarInfo]] = field(default_factory=list)
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)

    def refuse(self, member: tarfile.TarInfo, why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{self.policy.what}: entry {member.name!r} refused: {why}")

    def run(self) -> ExtractStats:
        for member in self.tar:
            self.member(member)
        self.finish_directories()
        return self.stats

    def member(self, member: tarfile.TarInfo) -> None:
        limits = self.policy.limits
        self.stats.entries += 1
        if self.stats.entries > limits.max_entries:
            raise ArchiveLimitError(f"{self.policy.what}: more than {limits.max_entries} entries")
        parts = split_path(member.name)
        if not parts:
            return  # the root itself ("./"): its attributes stay the caller's
        name = parts[-1]
        if self.policy.whiteouts and name.startswith(WHITEOUT_PREFIX):
            self.whiteout(member, parts)
            return
        if member.ischr() or member.isblk():
            raise self.refuse(member, "device node")
        if member.isfifo() and not self.policy.fifos:
            raise self.refuse(member, "FIFO")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk() or member.isfifo()):
            raise self.refuse(member, f"unsupported entry type {member.type!r}")
        if member.isreg():
            if member.size > limits.max_file_bytes:
                what, size, most = self.policy.what, member.size, limits.max_file_bytes
                raise ArchiveLimitError(f"{what}: {member.name!r} is {size} bytes, more than the {most} allowed per file")
            if self.stats.bytes + member.size > limits.max_total_bytes:
                raise ArchiveLimitError(f"{self.policy.what}: more than the {limits.max_total_bytes} bytes allowed in all")
        if member.issym() and self.policy.confined_symlinks:
            target = member.linkname
            if target.startswith("/") or posixpath.normpath(posixpath.join(*parts[:-1], target)).split("/")[0] == "..":
                raise self.refuse(member, f"symlink to {target!r} leaves the root")
        uid = _valid_id(member.uid, what="uid", name=member.name)
        gid = _valid_id(member.gid, what="gid", name=member.name)
        try:
            parent = open_dir_in_root(self.root_fd, parts[:-1], create=True)
        except NotADirectoryError as exc:
            raise self.refuse(member, str(exc)) from None
        try:
            existing = _lstat(name, dir_fd=parent)
            if member.isdir():
                if existing is None or not stat.S_ISDIR(existing.st_mode):
                    _remove_entry(name, dir_fd=parent, st=existing)
                    os.mkdir(name, 0o700, dir_fd=parent)
                self.directories.append((parts, member))
            elif member.islnk():
                self.hardlink(member, parent=parent, name=name, existing=existing)
            else:
                _remove_entry(name, dir_fd=parent, st=existing)
                if member.isreg():
                    self.regular(member, parent=parent, name=name, uid=uid, gid=gid)
                elif member.issym():
                    os.symlink(member.linkname, name, dir_fd=parent)
                    self.owner(name, parent=parent, uid=uid, gid=gid)
                    self.mtime(name, parent=parent, member=member)
                else:  # FIFO, allowed by the policy
                    os.mkfifo(name, 0o600, dir_fd=parent)
                    self.owner(name, parent=parent, uid=uid, gid=gid)
                    os.chmod(name, member.mode & 0o777, dir_fd=parent)  # just made by us: no symlink to follow
                    self.mtime(name, parent=parent, member=member)
        finally:
            os.close(parent)
        self.created.add(parts)

    def regular(self, member: tarfile.TarInfo, *, parent: int, name: str, uid: int, gid: int) -> None:
        source = self.tar.extractfile(member)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
        with os.fdopen(fd, "wb") as out:
            written = 0
            while source is not None and (chunk := source.read(CHUNK)):
                written += len(chunk)
                if written > member.size:  # tarfile never gives more; the limit check above relies on it
                    raise ArchiveLimitError(f"{self.policy.what}: {member.name!r} is longer than its header says")
                out.write(chunk)
            out.flush()
            self.stats.bytes += written
            if self.policy.owners and self.as_root:
                os.fchown(fd, uid, gid)  # before the mode: chown clears setuid/setgid
            os.fchmod(fd, self.policy.setid.mode(member.mode & 0o7777, uid=uid, gid=gid))
            with contextlib.suppress(OSError, OverflowError, ValueError):
                os.utime(fd, ns=(int(member.mtime * 1e9),) * 2)

    def hardlink(self, member: tarfile.TarInfo, *, parent: int, name: str, existing: os.stat_result | None) -> None:
        target = split_path(member.linkname)
        if not target:
            raise self.refuse(member, "hard link to the root directory")
        try:
            source_dir = open_dir_in_root(self.root_fd, target[:-1], create=False)
        except (FileNotFoundError, NotADirectoryError):
            raise self.refuse(member, f"hard link target {member.linkname!r} does not exist") from None
        try:
            st = _lstat(target[-1], dir_fd=source_dir)
            if st is None:
                raise self.refuse(member, f"hard link target {member.linkname!r} does not exist")
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise self.refuse(member, f"hard link to {member.linkname!r}, which is not a regular file")
            if existing is not None and (existing.st_dev, existing.st_ino) == (st.st_dev, st.st_ino):
                return
            _remove_entry(name, dir_fd=parent, st=existing)
            os.link(target[-1], name, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(source_dir)

    def owner(self, name: str, *, parent: int, uid: int, gid: int) -> None:
        if self.policy.owners and self.as_root:
            os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)

    def mtime(self, name: str, *, parent: int, member: tarfile.TarInfo) -> None:
        with contextlib.suppress(OSError, OverflowError, ValueError):
            os.utime(name, ns=(int(member.mtime * 1e9),) * 2, dir_fd=parent, follow_symlinks=False)

    def whiteout(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        """An OCI whiteout: remove what lower layers had (never anything this layer made, never outside)."""
        try:
            parent = open_dir_in_root(self.root_fd, parts[:-1], create=False)
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing below to hide
        try:
            if parts[-1] == OPAQUE_WHITEOUT:
                for child in os.listdir(parent):
                    if (*parts[:-1], child) not in self.created:
                        self.stats.removed += _remove_entry(child, dir_fd=parent)
                return
            hidden = parts[-1][len(WHITEOUT_PREFIX) :]
            if hidden in ("", ".", ".."):
                raise self.refuse(member, "whiteout of no file")
            self.stats.removed += _remove_entry(hidden, dir_fd=parent)
        finally:
            os.close(parent)

    def finish_directories(self) -> None:
        """Directory owners, modes and times, deepest first, once nothing more is written into them."""
        for parts, member in sorted(self.directories, key=lambda d: len(d[0]), reverse=True):
            try:
                parent = open_dir_in_root(self.root_fd, parts[:-1], create=False)
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            except OSError:
                continue  # replaced by a later entry
            finally:
                os.close(parent)
            try:
                if self.policy.owners and self.as_root:
                    os.fchown(fd, member.uid, member.gid)
                os.fchmod(fd, member.mode & 0o7777)
                with contextlib.suppress(OSError, OverflowError, ValueError):
                    os.utime(fd, ns=(int(member.mtime * 1e9),) * 2)
            finally:
                os.close(fd)


def extract(tar: tarfile.TarFile, *, root: Path, policy: Policy) -> ExtractStats:
    """Apply every entry of ``tar`` to the existing directory ``root`` by the rules above.

    Streams (a ``r|`` tar works). On a refusal the entries before it stay applied: callers extract
    into a directory they throw away on failure (a pull's temporary directory, a container's bundle).
    Raises ``UnsafeArchiveError`` (``ArchiveLimitError`` for limits), ``tarfile.TarError`` or
    ``OSError``.
    """
    root_fd = open_root(root)
    try:
        return _Extraction(tar=tar, root_fd=root_fd, policy=policy).run()
    finally:
        os.close(root_fd)
