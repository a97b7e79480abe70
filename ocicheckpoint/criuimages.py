"""What a checkpoint holds, read from its CRIU image files: processes, memory, open files, sockets, mounts.

Why: a checkpoint is opaque until it fails to restore. ``checkpointctl inspect`` shows what is in
one (the process tree, each process's files and sockets), but it is a Go program the agent does not
ship, it wants the archive unpacked on disk, and the agent must not read the archive twice (it is
the process's memory, streamed once to the registry: ``node_agent.archives``). So the agent keeps
the few small image files while that one pass streams by (never the memory pages,
``names.CRIU_PAGES_IMAGE``) and this module describes them: which processes were dumped (pid,
parent, comm, threads), how much memory each maps and how much of it was written, what each has
open (paths, pipes, sockets with their addresses) and the container's mounts. The answer is an
``Inspection``, bounded (lists capped, strings cut, and it says so) so that it fits in the agent's
answer beside the image, and ``render_tree`` prints it the way checkpointctl does.

The format, from CRIU's sources (``criu/image.c``, ``criu/include/magic.h``, ``images/*.proto``) and
go-criu's ``crit`` (which checkpointctl uses), for CRIU's images version 1.1 (every CRIU since 1.6, 2015):

* a file starts with ``IMG_COMMON_MAGIC`` (or ``IMG_SERVICE_MAGIC`` for CRIU's own service files),
  then the image's own magic; ``inventory.img`` alone has no common head, only its own magic;
* then entries, each a little-endian u32 length and a protobuf (proto2) message of that length;
  ``pagemap-*.img`` starts with one ``pagemap_head`` entry before its ``pagemap_entry`` ones;
* ``pstree.img`` lists the processes (in tree order, parents first); per process ``core-<pid>``
  (comm, state), ``ids-<pid>`` (which files table and mount namespace it uses), ``mm-<pid>`` (its
  memory areas), ``pagemap-<pid>`` (the pages written to ``pages-*.img``), ``fs-<pid>`` (cwd);
  per files table ``fdinfo-<files_id>`` maps each fd to a file id, which ``files.img`` describes
  (CRIU >= 3.4; older ones kept ``reg-files``, ``inetsk``, ``unixsk`` and ``pipes`` images instead,
  read as well); per mount namespace ``mountpoints-<id>`` (only in a dump of a mount namespace:
  a container's, not a host process's).

Where the images come from: ``inspect_tar`` picks them out of a checkpoint archive's tar stream as it
goes by, keeping only the small ones (``MAX_IMAGE_FILE_BYTES`` each, ``MAX_IMAGE_FILES_BYTES`` in all;
one over a cap is named in ``skipped``, never read). The node agent runs it on its one pass over the
kubelet's archive (``node_agent.archives``, which picks ``config.dump`` out of the same pass through its
``other`` hook), and ``kubectl migrate inspect --from-registry`` on the layer it decrypts as it downloads
it: one reader, so the two can only differ if the images do.

The decoder is a minimal protobuf wire reader (varints, length-delimited, fixed32/64): the project
has no protobuf dependency and needs a dozen fields. Unknown fields are skipped (newer CRIU adds
fields). Anything malformed -- truncated, a length past the end, a wrong magic, a message that is
not protobuf -- is a ``CriuImageError``, the only exception this module raises: much of what the
images say (file names, socket names, comm) is the checkpointed pod's to choose, and a bad image
must never take down the agent that reads it. ``inspect_images`` raises it only when there is no
readable process tree; any other image missing or malformed leaves its fields empty and a line in
the inspection's ``problems``.

Addresses in socket images are the kernel's bytes read as host-order u32s: little-endian on every
architecture but s390x (``core_entry.mtype``), which is handled. Memory is counted in 4 KiB pages
(``PAGE_SIZE``: x86-64's and the usual arm64 kernel's; on a 64 KiB-page kernel the dumped bytes
would be undercounted).
"""

from __future__ import annotations

import ipaddress
import re
import struct
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from ocicheckpoint import names
from ocicheckpoint.image import CHUNK

PAGE_SIZE: Final = 4096
FORMAT_VERSION: Final = 1  # of ``Inspection.to_json``
# Bounds of an inspection (its JSON travels in the agent's answer): what is cut is counted in ``truncated``.
# With every list full and every string at MAX_TEXT its JSON is under 600 KiB (ASCII text; the tests check).
MAX_PROCESSES: Final = 200
MAX_FILES: Final = 500
MAX_SOCKETS: Final = 100
MAX_MOUNTS: Final = 100
MAX_NOTES: Final = 20  # of ``skipped`` and of ``problems`` each
MAX_TEXT: Final = 256  # characters of any one path, name or note
# What ``inspect_tar`` keeps in memory from one archive: an image file over either cap is skipped (named in ``skipped``).
MAX_IMAGE_FILE_BYTES: Final = 8 << 20
MAX_IMAGE_FILES_BYTES: Final = 32 << 20

# criu/include/magic.h
IMG_COMMON_MAGIC: Final = 0x54564319
IMG_SERVICE_MAGIC: Final = 0x55105940
MAGICS: Final[Mapping[int, str]] = {
    0x58313116: "INVENTORY",
    0x50273030: "PSTREE",
    0x55053847: "CORE",
    0x54432030: "IDS",
    0x57492820: "MM",
    0x56084025: "PAGEMAP",
    0x51403912: "FS",
    0x56213732: "FDINFO",
    0x56303138: "FILES",
    0x50363636: "REG_FILES",
    0x56443851: "INETSK",
    0x54373943: "UNIXSK",
    0x56513555: "PIPES",
    0x55563928: "MNTS",
}


class CriuImageError(ValueError):
    """A CRIU image (or an inspection's JSON) that cannot be read: truncated, wrong magic, not protobuf."""


# --- The protobuf wire format ------------------------------------------------------------------
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise CriuImageError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise CriuImageError("varint longer than 10 bytes")


class Message:
    """One protobuf message's fields by number (the last one wins for a singular field, as protobuf says).

    Only the top level is decoded at once; a sub-message is decoded when asked for (``message``),
    so a field nobody reads can never fail a read.
    """

    __slots__ = ("_fields",)

    def __init__(self, data: bytes) -> None:
        fields: dict[int, list[tuple[int, int | bytes]]] = {}
        pos, end = 0, len(data)
        while pos < end:
            key = data[pos]  # one-byte keys and values (most of them) without a call: images can hold 100k entries
            if key < 0x80:
                pos += 1
            else:
                key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            value: int | bytes
            if number == 0:
                raise CriuImageError("protobuf field number 0")
            if wire in (_VARINT, _LENGTH):
                if pos < end and data[pos] < 0x80:
                    scalar, pos = data[pos], pos + 1
                else:
                    scalar, pos = _varint(data, pos)
                if wire == _VARINT:
                    value = scalar
                elif scalar > end - pos:
                    raise CriuImageError(f"field {number} is {scalar} bytes, past the end of its message")
                else:
                    value, pos = data[pos : pos + scalar], pos + scalar
            elif wire in (_FIXED64, _FIXED32):
                width = 8 if wire == _FIXED64 else 4
                if width > end - pos:
                    raise CriuImageError(f"field {number} is cut short")
                value, pos = int.from_bytes(data[pos : pos + width], "little"), pos + width
            else:  # 3 and 4 (groups) are not in any CRIU image; 6 and 7 do not exist
                raise CriuImageError(f"field {number} has wire type {wire}: not a CRIU protobuf message")
            if number in fields:
                fields[number].append((wire, value))
            else:
                fields[number] = [(wire, value)]
        self._fields = fields

    def has(self, number: int) -> bool:
        return number in self._fields

    def _last(self, number: int, wire: int) -> int | bytes | None:
        for kind, value in reversed(self._fields.get(number, ())):
            if kind == wire:
                return value
        return None

    def uint(self, number: int, default: int = 0) -> int:
        """A scalar field (varint, or fixed32/64): its last value, ``default`` when absent."""
        for _kind, value in reversed(self._fields.get(number, ())):
            if isinstance(value, int):
                return value
        return default

    def flag(self, number: int) -> bool:
        return bool(self.uint(number))

    def raw(self, number: int) -> bytes:
        value = self._last(number, _LENGTH)
        return value if isinstance(value, bytes) else b""

    def text(self, number: int) -> str:
        return self.raw(number).decode("utf-8", "replace")

    def message(self, number: int) -> Message | None:
        value = self._last(number, _LENGTH)
        return Message(value) if isinstance(value, bytes) else None

    def messages(self, number: int) -> Iterator[Message]:
        for kind, value in self._fields.get(number, ()):
            if kind == _LENGTH and isinstance(value, bytes):
                yield Message(value)

    def uints(self, number: int) -> list[int]:
        """A repeated scalar, packed or not (proto2 writes them unpacked; a packed one is accepted too)."""
        out: list[int] = []
        for kind, value in self._fields.get(number, ()):
            if isinstance(value, int):
                out.append(value)
            elif kind == _LENGTH:
                pos = 0
                while pos < len(value):
                    item, pos = _varint(value, pos)
                    out.append(item)
        return out


# --- Image files ----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Image:
    """An image file: its magic's name and its entries, each a protobuf message's bytes."""

    magic: str
    entries: tuple[bytes, ...]

    def messages(self) -> list[Message]:
        return [Message(entry) for entry in self.entries]


def read_image(data: bytes, *, name: str = "image", expect: str | None = None) -> Image:
    """Split one image file into its entries; ``expect``: the magic it must have (``MAGICS``' names)."""
    try:
        if len(data) < 4:
            raise CriuImageError("shorter than its magic")
        (magic,) = struct.unpack_from("<I", data, 0)
        pos = 4
        if magic in (IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC):
            if len(data) < 8:
                raise CriuImageError("has no magic after its head")
            (magic,) = struct.unpack_from("<I", data, 4)
            pos = 8
        kind = MAGICS.get(magic)
        if kind is None:
            raise CriuImageError(f"has an unknown magic 0x{magic:08x}")
        if expect is not None and kind != expect:
            raise CriuImageError(f"is a {kind} image, expected {expect}")
        entries = []
        while pos < len(data):
            if len(data) - pos < 4:
                raise CriuImageError(f"ends inside the length of entry {len(entries)}")
            (size,) = struct.unpack_from("<I", data, pos)
            pos += 4
            if size > len(data) - pos:
                raise CriuImageError(f"entry {len(entries)} is {size} bytes, past the end of the file")
            entries.append(data[pos : pos + size])
            pos += size
    except CriuImageError as exc:
        raise CriuImageError(f"{name} {exc}") from None
    return Image(magic=kind, entries=tuple(entries))


def _pattern(template: str) -> str:
    return "".join(r"(\d+)" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[a-z_]+\})", template) if part)


# The images an inspection reads (never the memory pages): an archive reader keeps only these.
INSPECTED_IMAGES: Final = (
    names.CRIU_PSTREE_IMAGE,
    names.CRIU_CORE_IMAGE,
    names.CRIU_IDS_IMAGE,
    names.CRIU_MM_IMAGE,
    names.CRIU_PAGEMAP_IMAGE,
    names.CRIU_FS_IMAGE,
    names.CRIU_FDINFO_IMAGE,
    names.CRIU_FILES_IMAGE,
    names.CRIU_REG_FILES_IMAGE,
    names.CRIU_INETSK_IMAGE,
    names.CRIU_UNIXSK_IMAGE,
    names.CRIU_PIPES_IMAGE,
    names.CRIU_MOUNTPOINTS_IMAGE,
)
_INSPECTED = re.compile("|".join(_pattern(t) for t in INSPECTED_IMAGES))
_MOUNTPOINTS = re.compile(_pattern(names.CRIU_MOUNTPOINTS_IMAGE))


def inspected_image(member: str) -> str | None:
    """The image's file name when an archive member is one an inspection reads (``checkpoint/pstree.img``), else None."""
    directory, _, name = member.removeprefix("./").rpartition("/")
    return name if directory == names.CHECKPOINT_DIRECTORY and _INSPECTED.fullmatch(name) else None


# --- The inspection ---------------------------------------------------------------------------
def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CriuImageError(f"{key!r} must be an integer, got {value!r}")
    return value


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise CriuImageError(f"{key!r} must be a string, got {value!r}")
    return _cut(value)


@dataclass(frozen=True, kw_only=True)
class Process:
    """One dumped process: ``vma_bytes`` it mapped (``mm``), ``pages_bytes`` of it written to the checkpoint (``pagemap``)."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    comm: str
    threads: int
    state: str  # alive, stopped, zombie, dead (CRIU's task state)
    vma_bytes: int
    pages_bytes: int
    exe: str = ""
    cwd: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid, "ppid": self.ppid, "pgid": self.pgid, "sid": self.sid, "comm": self.comm,
            "threads": self.threads, "state": self.state, "vma_bytes": self.vma_bytes, "pages_bytes": self.pages_bytes,
            "exe": self.exe, "cwd": self.cwd,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Process:
        return cls(
            pid=_int(data, "pid"), ppid=_int(data, "ppid"), pgid=_int(data, "pgid"), sid=_int(data, "sid"),
            comm=_str(data, "comm"), threads=_int(data, "threads"), state=_str(data, "state"),
            vma_bytes=_int(data, "vma_bytes"), pages_bytes=_int(data, "pages_bytes"), exe=_str(data, "exe"),
            cwd=_str(data, "cwd"),
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class OpenFile:
    """An open descriptor: ``type`` is CRIU's (REG, PIPE, INETSK, UNIXSK, TTY...), ``path`` what it names."""

    pid: int
    fd: int
    type: str
    path: str

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "fd": self.fd, "type": self.type, "path": self.path}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OpenFile:
        return cls(pid=_int(data, "pid"), fd=_int(data, "fd"), type=_str(data, "type"), path=_str(data, "path"))


@dataclass(frozen=True, kw_only=True)
class Socket:
    """A socket a process has open: inet ones with ``local``/``remote`` ``addr:port``, unix ones with ``local`` its name."""

    pid: int
    fd: int
    family: str  # IPv4, IPv6, UNIX, PACKET, NETLINK
    type: str  # STREAM, DGRAM, SEQPACKET, RAW...
    protocol: str  # TCP, UDP... ("" for unix sockets)
    state: str  # TCP's states (LISTEN, ESTABLISHED...), for unix ones too
    local: str
    remote: str  # "" when not connected

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid, "fd": self.fd, "family": self.family, "type": self.type, "protocol": self.protocol,
            "state": self.state, "local": self.local, "remote": self.remote,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Socket:
        return cls(
            pid=_int(data, "pid"), fd=_int(data, "fd"), family=_str(data, "family"), type=_str(data, "type"),
            protocol=_str(data, "protocol"), state=_str(data, "state"), local=_str(data, "local"),
            remote=_str(data, "remote"),
        )  # fmt: skip

    @property
    def description(self) -> str:
        """One line, like ``ss`` would say it: ``TCP 127.0.0.1:8080 LISTEN``, ``UNIX STREAM /run/app.sock``."""
        if self.family in ("IPv4", "IPv6"):
            text = f"{self.protocol or self.type} {self.local}"
            if self.remote:
                text += f" -> {self.remote}"
            return text + (f" {self.state}" if self.protocol == "TCP" and self.state else "")
        if self.family == "UNIX":
            text = f"UNIX {self.type} {self.local or '(unnamed)'}"
            return text + (" LISTEN" if self.state == "LISTEN" else "")
        return " ".join(part for part in (self.family, self.type, self.protocol) if part)


@dataclass(frozen=True, kw_only=True)
class Mount:
    mountpoint: str
    fstype: str
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"mountpoint": self.mountpoint, "fstype": self.fstype, "source": self.source}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Mount:
        return cls(mountpoint=_str(data, "mountpoint"), fstype=_str(data, "fstype"), source=_str(data, "source"))


@dataclass(frozen=True, kw_only=True)
class Totals:
    """Counts over everything read, before any list was cut."""

    processes: int = 0
    threads: int = 0
    vma_bytes: int = 0
    pages_bytes: int = 0
    files: int = 0
    sockets: int = 0
    mounts: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "processes": self.processes, "threads": self.threads, "vma_bytes": self.vma_bytes,
            "pages_bytes": self.pages_bytes, "files": self.files, "sockets": self.sockets, "mounts": self.mounts,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Totals:
        keys = ("processes", "threads", "vma_bytes", "pages_bytes", "files", "sockets", "mounts")
        return cls(**{key: _int(data, key) for key in keys})


_LISTS: Final = {"processes": MAX_PROCESSES, "files": MAX_FILES, "sockets": MAX_SOCKETS, "mounts": MAX_MOUNTS}


@dataclass(frozen=True, kw_only=True)
class Inspection:
    """A checkpoint's processes, memory, files, sockets and mounts (lists capped; ``truncated``: how many were left out).

    ``skipped``: images not read (over the reader's size caps, with their size); ``problems``: what could not be
    derived (an image missing or malformed) -- both say why a field is empty.
    """

    processes: tuple[Process, ...] = ()
    files: tuple[OpenFile, ...] = ()
    sockets: tuple[Socket, ...] = ()
    mounts: tuple[Mount, ...] = ()
    totals: Totals = field(default_factory=Totals)
    truncated: Mapping[str, int] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "processes": [p.to_json() for p in self.processes],
            "files": [f.to_json() for f in self.files],
            "sockets": [s.to_json() for s in self.sockets],
            "mounts": [m.to_json() for m in self.mounts],
            "totals": self.totals.to_json(),
            "truncated": dict(self.truncated),
            "skipped": list(self.skipped),
            "problems": list(self.problems),
        }

    @classmethod
    def from_json(cls, data: Any) -> Inspection:
        """Parse ``to_json``'s output (unknown keys ignored; lists over the caps are cut again)."""
        if not isinstance(data, Mapping):
            raise CriuImageError("an inspection must be a JSON object")

        def items(key: str, limit: int) -> list[Mapping[str, Any]]:
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
                raise CriuImageError(f"{key!r} must be a list of objects")
            return value[:limit]

        def texts(key: str) -> tuple[str, ...]:
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise CriuImageError(f"{key!r} must be a list of strings")
            return tuple(_cut(item) for item in value[:MAX_NOTES])

        truncated = data.get("truncated", {})
        if not isinstance(truncated, Mapping):
            raise CriuImageError("'truncated' must be an object")
        totals = data.get("totals", {})
        if not isinstance(totals, Mapping):
            raise CriuImageError("'totals' must be an object")
        return cls(
            processes=tuple(Process.from_json(p) for p in items("processes", MAX_PROCESSES)),
            files=tuple(OpenFile.from_json(f) for f in items("files", MAX_FILES)),
            sockets=tuple(Socket.from_json(s) for s in items("sockets", MAX_SOCKETS)),
            mounts=tuple(Mount.from_json(m) for m in items("mounts", MAX_MOUNTS)),
            totals=Totals.from_json(totals),
            truncated={key: _int(truncated, key) for key in _LISTS if key in truncated},
            skipped=texts("skipped"),
            problems=texts("problems"),
        )


# --- From images to an inspection -------------------------------------------------------------
# compel/include/uapi/task-state.h
_TASK_STATES: Final = {1: "alive", 2: "dead", 3: "stopped", 6: "zombie"}
# images/fdinfo.proto: fd_types, and which field of file_entry holds each kind.
_FD_TYPES: Final = {
    0: "UND", 1: "REG", 2: "PIPE", 3: "FIFO", 4: "INETSK", 5: "UNIXSK", 6: "EVENTFD", 7: "EVENTPOLL", 8: "INOTIFY",
    9: "SIGNALFD", 10: "PACKETSK", 11: "TTY", 12: "FANOTIFY", 13: "NETLINKSK", 14: "NS", 15: "TUNF", 16: "EXT",
    17: "TIMERFD", 18: "MEMFD", 19: "BPFMAP",
}  # fmt: skip
_FILE_ENTRY_FIELD: Final = {
    "REG": 3, "INETSK": 4, "NS": 5, "PACKETSK": 6, "NETLINKSK": 7, "EVENTFD": 8, "EVENTPOLL": 9, "SIGNALFD": 10,
    "TUNF": 11, "TIMERFD": 12, "INOTIFY": 13, "FANOTIFY": 14, "EXT": 15, "UNIXSK": 16, "FIFO": 17, "PIPE": 18,
    "TTY": 19, "MEMFD": 20, "BPFMAP": 21,
}  # fmt: skip
# What /proc/<pid>/fd would show for the kinds that have no path of their own.
_ANON: Final = {
    "EVENTFD": "anon_inode:[eventfd]", "EVENTPOLL": "anon_inode:[eventpoll]", "INOTIFY": "anon_inode:inotify",
    "SIGNALFD": "anon_inode:[signalfd]", "FANOTIFY": "anon_inode:[fanotify]", "TIMERFD": "anon_inode:[timerfd]",
    "BPFMAP": "anon_inode:bpf-map", "TUNF": "/dev/net/tun", "MEMFD": "memfd:", "EXT": "(external)",
}  # fmt: skip
_FAMILIES: Final = {1: "UNIX", 2: "IPv4", 10: "IPv6", 16: "NETLINK", 17: "PACKET"}
_SOCK_TYPES: Final = {1: "STREAM", 2: "DGRAM", 3: "RAW", 4: "RDM", 5: "SEQPACKET", 10: "PACKET"}
_PROTOCOLS: Final = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 136: "UDPLITE", 255: "RAW"}
# include/net/tcp_states.h (CRIU keeps the kernel's numbers, for unix sockets too)
_TCP_STATES: Final = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE",
    8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV",
}  # fmt: skip
# images/mnt.proto: fstype, as the kernel names them (``fsname`` wins when CRIU recorded it).
_FSTYPES: Final = {
    1: "proc", 2: "sysfs", 3: "devtmpfs", 4: "binfmt_misc", 5: "tmpfs", 6: "devpts", 7: "simfs", 8: "pstore",
    9: "securityfs", 10: "fusectl", 11: "debugfs", 12: "cgroup", 13: "aufs", 14: "mqueue", 15: "fuse", 16: "auto",
    17: "overlay", 18: "autofs", 19: "tracefs", 23: "cgroup2",
}  # fmt: skip
_SOCKET_TYPES: Final = frozenset({"INETSK", "UNIXSK", "PACKETSK", "NETLINKSK"})
_MTYPE_S390: Final = 5  # core_entry.march: the one big-endian architecture CRIU dumps


class _Reader:
    """Everything read from one set of images; problems collected rather than raised (except for pstree.img)."""

    def __init__(self, images: Mapping[str, bytes], *, skipped: Mapping[str, int]) -> None:
        self.images = images
        self.skipped = skipped  # not read (too large): not "missing" either
        self.problems: list[str] = []
        self.big_endian = False
        self._read: dict[str, list[Message] | None] = {}
        # file id -> (fd type, the entry describing it, or the file_entry field that holds it: decoded when asked for)
        self.files: dict[int, tuple[str, Message | None, int]] = {}

    def note(self, problem: str) -> None:
        if problem not in self.problems:
            self.problems.append(problem)

    def messages(self, name: str, *, expect: str, missing_ok: bool = False) -> list[Message] | None:
        """An image's entries (read once: processes sharing a files table share its ``fdinfo``), None if unreadable."""
        if name in self._read:
            return self._read[name]
        data = self.images.get(name)
        found = None
        if data is None:
            if not missing_ok and name not in self.skipped:
                self.note(f"{name} missing")
        else:
            try:
                found = read_image(data, name=name, expect=expect).messages()
            except CriuImageError as exc:
                self.note(str(exc))
        self._read[name] = found
        return found

    def first(self, name: str, *, expect: str) -> Message | None:
        found = self.messages(name, expect=expect)
        if found == []:
            self.note(f"{name} has no entry")
        return found[0] if found else None

    def index_files(self) -> None:
        """Every file id -> its kind and entry: ``files.img`` (newer CRIU) and the per-kind images of older ones."""
        for entry in self.messages(names.CRIU_FILES_IMAGE, expect="FILES", missing_ok=True) or ():
            kind = _FD_TYPES.get(entry.uint(1), "UND")
            self.files[entry.uint(2)] = (kind, entry, _FILE_ENTRY_FIELD.get(kind, 0))
        for name, magic, kind in (
            (names.CRIU_REG_FILES_IMAGE, "REG_FILES", "REG"),
            (names.CRIU_INETSK_IMAGE, "INETSK", "INETSK"),
            (names.CRIU_UNIXSK_IMAGE, "UNIXSK", "UNIXSK"),
            (names.CRIU_PIPES_IMAGE, "PIPES", "PIPE"),
        ):
            for entry in self.messages(name, expect=magic, missing_ok=True) or ():
                self.files.setdefault(entry.uint(1), (kind, entry, 0))

    def file(self, file_id: int, *, fd_type: str = "") -> tuple[str, Message | None]:
        """A file's kind and the entry that describes it (``reg_file_entry``, ``inet_sk_entry``...), if any."""
        kind, entry, number = self.files.get(file_id, (fd_type, None, 0))
        if entry is not None and number:
            try:
                entry = entry.message(number)
            except CriuImageError as exc:
                self.note(f"{names.CRIU_FILES_IMAGE}: file {file_id}: {exc}")
                entry = None
        return kind, entry

    def path(self, file_id: int) -> str:
        kind, entry = self.file(file_id)
        return entry.text(6) if kind == "REG" and entry is not None else ""

    def address(self, parts: list[int], port: int, *, family: str) -> str:
        order = "big" if self.big_endian else "little"
        raw = b"".join((part & 0xFFFFFFFF).to_bytes(4, order) for part in parts)
        if family == "IPv4" and len(raw) == 4:
            return f"{ipaddress.IPv4Address(raw)}:{port}"
        if family == "IPv6" and len(raw) == 16:
            return f"[{ipaddress.IPv6Address(raw)}]:{port}"
        return f"?:{port}"

    def socket(self, *, pid: int, fd: int, kind: str, entry: Message) -> Socket:
        if kind == "INETSK":
            family = _FAMILIES.get(entry.uint(3), str(entry.uint(3)))
            remote = entry.uints(12)  # all zeros and port 0: not connected
            return Socket(
                pid=pid, fd=fd, family=family,
                type=_SOCK_TYPES.get(entry.uint(4), str(entry.uint(4))),
                protocol=_PROTOCOLS.get(entry.uint(5), str(entry.uint(5))),
                state=_TCP_STATES.get(entry.uint(6), ""),
                local=self.address(entry.uints(11), entry.uint(7), family=family),
                remote=self.address(remote, entry.uint(8), family=family) if any(remote) or entry.uint(8) else "",
            )  # fmt: skip
        if kind == "UNIXSK":
            raw = entry.raw(11)
            if raw.startswith(b"\0"):  # abstract: any bytes, shown as ss does
                name = "@" + raw[1:].decode("utf-8", "backslashreplace").replace("\0", "@")
            else:
                name = raw.rstrip(b"\0").decode("utf-8", "backslashreplace")
                if name and not name.startswith("/") and entry.text(14):
                    name = f"{entry.text(14).rstrip('/')}/{name}"
            return Socket(
                pid=pid, fd=fd, family="UNIX", type=_SOCK_TYPES.get(entry.uint(3), str(entry.uint(3))), protocol="",
                state=_TCP_STATES.get(entry.uint(4), ""), local=_cut(name), remote="",
            )  # fmt: skip
        if kind == "PACKETSK":
            return Socket(pid=pid, fd=fd, family="PACKET", type=_SOCK_TYPES.get(entry.uint(2), ""), protocol="",
                          state="", local="", remote="")  # fmt: skip
        return Socket(pid=pid, fd=fd, family="NETLINK", type="", protocol=str(entry.uint(3)), state="", local="", remote="")

    def describe(self, *, pid: int, fd: int, file_id: int, fd_type: str) -> tuple[str, Socket | None]:
        """What an fd names (a path, ``pipe:[id]``, a socket's one-line description) and the socket if it is one."""
        kind, entry = self.file(file_id, fd_type=fd_type)
        if entry is None:
            return _ANON.get(kind, "?"), None
        if kind == "REG":
            return entry.text(6), None
        if kind == "PIPE":
            return f"pipe:[{entry.uint(2)}]", None
        if kind == "FIFO":
            return self.path(entry.uint(3) if entry.has(3) else entry.uint(1)) or f"fifo:[{entry.uint(2)}]", None
        if kind == "TTY":
            return self.path(entry.uint(6)) or "tty", None
        if kind == "NS":
            return f"ns:[{entry.uint(2)}]", None
        if kind in ("INETSK", "UNIXSK", "PACKETSK", "NETLINKSK"):
            sock = self.socket(pid=pid, fd=fd, kind=kind, entry=entry)
            return f"socket: {sock.description}", sock
        return _ANON.get(kind, kind.lower()), None


def _memory(reader: _Reader, pid: int) -> tuple[int, int, str]:
    """(bytes of its memory areas, bytes of its pages in this checkpoint, its executable)."""
    vma_bytes, exe = 0, ""
    mm = reader.first(names.CRIU_MM_IMAGE.format(pid=pid), expect="MM")
    if mm is not None:
        for vma in mm.messages(14):
            vma_bytes += max(0, vma.uint(2) - vma.uint(1))
        exe = reader.path(mm.uint(12))
    pages = 0
    entries = reader.messages(names.CRIU_PAGEMAP_IMAGE.format(pid=pid), expect="PAGEMAP") or []
    for entry in entries[1:]:  # the first is the pagemap_head
        count = entry.uint(5) if entry.has(5) else entry.uint(2)
        flags = entry.uint(4) if entry.has(4) else (1 if entry.flag(3) else 4)  # criu/pagemap.c: compat entries
        if flags & 4:  # PE_PRESENT: in this checkpoint's pages-*.img (not in a parent's, not a hole)
            pages += count
    return vma_bytes, pages * PAGE_SIZE, exe


def _capped(items: list[Any], limit: int, key: str, truncated: dict[str, int]) -> tuple[Any, ...]:
    if len(items) > limit:
        truncated[key] = len(items) - limit
    return tuple(items[:limit])


def inspect_images(images: Mapping[str, bytes], *, skipped: Mapping[str, int] | None = None) -> Inspection:
    """Describe a checkpoint from its image files (file name -> bytes, e.g. ``{"pstree.img": ...}``).

    ``skipped``: images that exist but were not read (the reader's caps), by name with their size:
    named in the answer (``"mm-7.img (9437184 bytes)"``), and not reported missing.
    Raises ``CriuImageError`` only when there is no readable process tree at all; every other
    image missing or malformed leaves its fields empty and a line in ``problems``.
    """
    try:
        return _inspect(images, skipped=dict(skipped or {}))
    except CriuImageError:
        raise
    except Exception as exc:  # a case the reader did not foresee: still the one error callers handle
        raise CriuImageError(f"reading the CRIU images failed: {type(exc).__name__}: {exc}") from exc


def _inspect(images: Mapping[str, bytes], *, skipped: dict[str, int]) -> Inspection:
    if names.CRIU_PSTREE_IMAGE not in images:
        raise CriuImageError(f"no {names.CRIU_PSTREE_IMAGE}: not a CRIU checkpoint")
    tree = read_image(images[names.CRIU_PSTREE_IMAGE], name=names.CRIU_PSTREE_IMAGE, expect="PSTREE").messages()
    if not tree:
        raise CriuImageError(f"{names.CRIU_PSTREE_IMAGE} lists no process")
    reader = _Reader(images, skipped=skipped)
    cores = {entry.uint(1): reader.first(names.CRIU_CORE_IMAGE.format(pid=entry.uint(1)), expect="CORE") for entry in tree}
    reader.big_endian = any(core is not None and core.uint(1) == _MTYPE_S390 for core in cores.values())
    reader.index_files()

    processes: list[Process] = []
    files: list[OpenFile] = []
    sockets: list[Socket] = []
    files_total = 0
    mount_namespaces: list[int] = []
    for entry in tree:
        pid = entry.uint(1)
        core = cores[pid]
        task = core.message(3) if core is not None else None
        state = _TASK_STATES.get(task.uint(1), "unknown") if task is not None else "unknown"
        vma_bytes = pages_bytes = 0
        exe = cwd = ""
        if state in ("alive", "stopped"):  # a zombie has no memory, files or namespaces left to dump
            vma_bytes, pages_bytes, exe = _memory(reader, pid)
            fs = reader.first(names.CRIU_FS_IMAGE.format(pid=pid), expect="FS")
            cwd = reader.path(fs.uint(1)) if fs is not None else ""
            ids = reader.first(names.CRIU_IDS_IMAGE.format(pid=pid), expect="IDS")
            if ids is None and core is not None:
                ids = core.message(4)
            if ids is not None:
                if ids.has(9) and ids.uint(9) not in mount_namespaces:
                    mount_namespaces.append(ids.uint(9))
                fdinfo = reader.messages(names.CRIU_FDINFO_IMAGE.format(files_id=ids.uint(2)), expect="FDINFO") or []
                for fd_entry in sorted(fdinfo, key=lambda e: e.uint(4)):
                    fd, fd_type = fd_entry.uint(4), _FD_TYPES.get(fd_entry.uint(3), str(fd_entry.uint(3)))
                    files_total += 1
                    if len(files) >= MAX_FILES and fd_type not in _SOCKET_TYPES:
                        continue  # only counted: describing 100k files nobody will see would cost seconds
                    path, sock = reader.describe(pid=pid, fd=fd, file_id=fd_entry.uint(1), fd_type=fd_type)
                    if len(files) < MAX_FILES:
                        files.append(OpenFile(pid=pid, fd=fd, type=fd_type, path=_cut(path)))
                    if sock is not None:
                        sockets.append(sock)
        processes.append(
            Process(
                pid=pid, ppid=entry.uint(2), pgid=entry.uint(3), sid=entry.uint(4),
                comm=_cut(task.text(6)) if task is not None else "?", threads=max(1, len(entry.uints(5))), state=state,
                vma_bytes=vma_bytes, pages_bytes=pages_bytes, exe=_cut(exe), cwd=_cut(cwd),
            )
        )  # fmt: skip

    mounts: list[Mount] = []
    namespaces = sorted(
        {int(m.group(1)) for name in images if (m := _MOUNTPOINTS.fullmatch(name))} | set(mount_namespaces),
        key=lambda ns: (ns not in mount_namespaces, ns),
    )
    for ns in namespaces:
        name = names.CRIU_MOUNTPOINTS_IMAGE.format(mnt_ns_id=ns)
        for mnt in reader.messages(name, expect="MNTS", missing_ok=name not in images) or ():
            fstype, source = mnt.text(14) or _FSTYPES.get(mnt.uint(1), ""), mnt.text(8)
            if mnt.has(18) or mnt.flag(13):  # external: bound in from the host (a volume, /etc/hosts...)
                fstype, source = fstype or "bind", f"{source}[{mnt.text(6)}]"  # as findmnt shows a bind mount
            mounts.append(Mount(mountpoint=_cut(mnt.text(7)), fstype=_cut(fstype or "unsupported"), source=_cut(source)))

    truncated: dict[str, int] = {"files": files_total - len(files)} if files_total > len(files) else {}
    return Inspection(
        processes=_capped(processes, MAX_PROCESSES, "processes", truncated),
        files=tuple(files),
        sockets=_capped(sockets, MAX_SOCKETS, "sockets", truncated),
        mounts=_capped(mounts, MAX_MOUNTS, "mounts", truncated),
        totals=Totals(
            processes=len(processes),
            threads=sum(p.threads for p in processes),
            vma_bytes=sum(p.vma_bytes for p in processes),
            pages_bytes=sum(p.pages_bytes for p in processes),
            files=files_total,
            sockets=len(sockets),
            mounts=len(mounts),
        ),
        truncated=truncated,
        skipped=tuple(_cut(f"{name} ({size} bytes)") for name, size in list(skipped.items())[:MAX_NOTES]),
        problems=tuple(_cut(problem) for problem in reader.problems[:MAX_NOTES]),
    )


class Readable(Protocol):
    """What ``inspect_tar`` reads: a file opened for reading, or a stream that only has ``read``."""

    def read(self, n: int = -1, /) -> bytes: ...


def inspect_tar(
    stream: Readable,
    *,
    max_image_bytes: int = MAX_IMAGE_FILE_BYTES,
    max_total_bytes: int = MAX_IMAGE_FILES_BYTES,
    other: Callable[[tarfile.TarInfo, tarfile.TarFile], object] | None = None,
) -> Inspection:
    """Describe the CRIU images of a checkpoint archive read as one sequential tar stream (``r|``: never a seek).

    Keeps the image files an inspection reads (``inspected_image``: never the memory pages) up to
    ``max_image_bytes`` each and ``max_total_bytes`` in all, in the order they come; one over a cap
    is skipped and named in the answer's ``skipped``. Every other regular file is handed to
    ``other`` with the tar, while it is the current member (``tar.extractfile(member)`` reads it):
    the caller's way to pick something else out of the same pass. The stream is read up to the tar's
    end-of-archive marker, not its padding: a caller that hashes the stream reads the rest itself.

    Raises ``CriuImageError`` (once the whole archive was read) when it holds no readable process
    tree; the tar's own errors (``tarfile.TarError``, ``OSError``) and whatever ``other`` raises
    pass through as they are.
    """
    images: dict[str, bytes] = {}
    skipped: dict[str, int] = {}
    kept = 0
    with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar:  # type: ignore[call-overload]
        for member in tar:
            if not member.isfile():
                continue
            image = inspected_image(member.name)
            if image is None:
                if other is not None:
                    other(member, tar)
                continue
            if member.size > max_image_bytes or kept + member.size > max_total_bytes:
                skipped[image] = member.size
                continue
            fh = tar.extractfile(member)
            if fh is not None:
                images[image] = fh.read()
                kept += member.size
    return inspect_images(images, skipped=skipped)


def inspect_directory(directory: Path) -> Inspection:
    """Describe the CRIU images in ``directory`` (a ``criu dump -D`` directory, or an archive's ``checkpoint/``)."""
    images: dict[str, bytes] = {}
    try:
        for path in sorted(directory.iterdir()):
            if _INSPECTED.fullmatch(path.name) and path.is_file():
                images[path.name] = path.read_bytes()
    except OSError as exc:
        raise CriuImageError(f"reading {directory}: {exc}") from None
    return inspect_images(images)


# --- Text ------------------------------------------------------------------------------------
def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # not reached


def _branches(lines: list[str], items: list[tuple[str, list[str]]], prefix: str = "") -> None:
    if not items:
        lines.append(f"{prefix}└── (none)")
    for index, (text, children) in enumerate(items):
        last = index == len(items) - 1
        lines.append(f"{prefix}{'└── ' if last else '├── '}{text}")
        for child_index, child in enumerate(children):
            lines.append(f"{prefix}{'    ' if last else '│   '}{'└── ' if child_index == len(children) - 1 else '├── '}{child}")


def _reaches_root(process: Process, by_pid: Mapping[int, Process]) -> bool:
    visited: set[int] = set()
    while process.ppid in by_pid and process.ppid != process.pid:
        if process.pid in visited:
            return False
        visited.add(process.pid)
        process = by_pid[process.ppid]
    return True


def render_tree(inspection: Inspection) -> str:
    """The inspection as text: the process tree (pid, comm, memory) as checkpointctl draws it, then files, sockets, mounts."""
    t = inspection.totals
    lines = [
        f"{t.processes} process(es), {t.threads} thread(s); memory {_size(t.vma_bytes)} mapped, {_size(t.pages_bytes)} dumped;"
        f" {t.files} open file(s), {t.sockets} socket(s), {t.mounts} mount(s)",
        "Process tree",
    ]
    by_pid = {p.pid: p for p in inspection.processes}
    children: dict[int, list[Process]] = {}
    roots: list[Process] = []
    for process in inspection.processes:
        if process.ppid in by_pid and process.ppid != process.pid:
            children.setdefault(process.ppid, []).append(process)
        else:
            roots.append(process)

    def label(p: Process) -> str:
        state = "" if p.state in ("alive", "") else f" ({p.state})"
        threads = f", {p.threads} threads" if p.threads > 1 else ""
        return f"{p.pid}{state} {p.comm}  [{_size(p.vma_bytes)} mapped, {_size(p.pages_bytes)} dumped{threads}]"

    # Processes in a parent cycle (only in a hostile tree) have no root: drawn as roots of their own after the rest.
    roots += [p for p in inspection.processes if p not in roots and not _reaches_root(p, by_pid)]
    seen: set[int] = set()
    stack: list[tuple[Process, str, bool]] = [(root, "", i == len(roots) - 1) for i, root in reversed(list(enumerate(roots)))]
    while stack:  # depth first, without recursion (a hostile tree can be deep)
        process, prefix, last = stack.pop()
        if process.pid in seen:
            continue
        seen.add(process.pid)
        lines.append(f"{prefix}{'└── ' if last else '├── '}{label(process)}")
        kids = sorted((c for c in children.get(process.pid, ()) if c.pid not in seen), key=lambda c: c.pid)
        inner = prefix + ("    " if last else "│   ")
        stack.extend((kid, inner, i == len(kids) - 1) for i, kid in reversed(list(enumerate(kids))))

    comms = {p.pid: p.comm for p in inspection.processes}
    per_process: dict[int, list[str]] = {}
    for f in inspection.files:
        per_process.setdefault(f.pid, []).append(f"{f.fd:<3} {f.type:<9} {f.path}")
    lines.append("Open files")
    _branches(lines, [(f"{pid} {comms.get(pid, '?')}", rows) for pid, rows in per_process.items()])
    lines.append("Sockets")
    _branches(lines, [(f"{s.pid} {comms.get(s.pid, '?')} fd {s.fd}: {s.description}", []) for s in inspection.sockets])
    lines.append("Mounts")
    _branches(lines, [(f"{m.mountpoint} {m.fstype} ({m.source})", []) for m in inspection.mounts])
    for key, count in inspection.truncated.items():
        lines.append(f"({count} more {key} not listed)")
    if inspection.skipped:
        lines.append(f"Not read (over the size caps): {', '.join(inspection.skipped)}")
    if inspection.problems:
        lines.append("Problems")
        _branches(lines, [(problem, []) for problem in inspection.problems])
    return "\n".join(lines) + "\n"
