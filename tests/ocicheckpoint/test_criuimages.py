"""The CRIU image reader: against a real ``criu dump`` (and checkpointctl's reading of it), and against hand-made bytes
for what a small dump does not have (older CRIU's per-kind images, mounts, zombies, threads, big-endian addresses) and
for everything malformed."""

from __future__ import annotations

import json
import random
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster import cluster as lc
from ocicheckpoint import criuimages
from ocicheckpoint.criuimages import (
    IMG_COMMON_MAGIC,
    IMG_SERVICE_MAGIC,
    CriuImageError,
    Inspection,
    Message,
    inspect_directory,
    inspect_images,
    read_image,
    render_tree,
)
from tests.ocicheckpoint import criudump

# --- A protobuf writer for hand-made images --------------------------------------------------
MAGIC = {name: value for value, name in criuimages.MAGICS.items()}


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def f(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def image(kind: str, *entries: bytes, head: int | None = IMG_COMMON_MAGIC) -> bytes:
    out = (struct.pack("<I", head) if head is not None else b"") + struct.pack("<I", MAGIC[kind])
    return out + b"".join(struct.pack("<I", len(e)) + e for e in entries)


def pstree(*processes: tuple[int, int, list[int]]) -> bytes:
    return image("PSTREE", *(f(1, pid) + f(2, ppid) + f(3, pid) + f(4, 1) + b"".join(f(5, t) for t in threads)
                             for pid, ppid, threads in processes))  # fmt: skip


def core(comm: str, *, state: int = 1, mtype: int = 1) -> bytes:
    return image("CORE", f(1, mtype) + f(3, f(1, state) + f(2, 0) + f(3, 0) + f(4, 0) + f(5, 0) + f(6, comm)))


def ids(*, files_id: int, mnt_ns_id: int | None = None) -> bytes:
    return image("IDS", f(1, 1) + f(2, files_id) + f(3, 1) + f(4, 1) + (f(9, mnt_ns_id) if mnt_ns_id is not None else b""))


def fdinfo(*fds: tuple[int, int, int]) -> bytes:
    """(fd, fd type, file id) each."""
    return image("FDINFO", *(f(1, file_id) + f(2, 0) + f(3, kind) + f(4, fd) for fd, kind, file_id in fds))


FOWN = f(1, 0) + f(2, 0) + f(3, 0) + f(4, 0)


def reg(file_id: int, name: str) -> bytes:
    return f(1, file_id) + f(2, 0) + f(3, 0) + f(5, FOWN) + f(6, name)


def inet(file_id: int, *, family: int, proto: int, kind: int, state: int, src: list[int], port: int, dst: list[int],
         dport: int) -> bytes:  # fmt: skip
    return (f(1, file_id) + f(2, 99) + f(3, family) + f(4, kind) + f(5, proto) + f(6, state) + f(7, port) + f(8, dport)
            + f(9, 0) + f(10, 0) + b"".join(f(11, a) for a in src) + b"".join(f(12, a) for a in dst) + f(13, FOWN))  # fmt: skip


def unix(file_id: int, name: bytes, *, state: int = 10, name_dir: str = "") -> bytes:
    out = f(1, file_id) + f(2, 7) + f(3, 1) + f(4, state) + f(5, 0) + f(6, 0) + f(7, 0) + f(8, 0) + f(9, FOWN) + f(11, name)
    return out + (f(14, name_dir) if name_dir else b"")


def mnt(mnt_id: int, mountpoint: str, source: str, *, fstype: int = 0, root: str = "/", extra: bytes = b"") -> bytes:
    fields = (f(1, fstype), f(2, mnt_id), f(3, 0), f(4, 1), f(5, 0), f(6, root), f(7, mountpoint), f(8, source), f(9, ""))
    return b"".join(fields) + extra


def le(*octets: int) -> int:
    """An address word as CRIU stores it: the kernel's bytes read as a little-endian u32."""
    return struct.unpack("<I", bytes(octets))[0]


# --- A real dump -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dump() -> Iterator[criudump.Dump]:
    with criudump.dumped_tree() as made:
        yield made


def test_a_real_dump_is_read_as_criu_wrote_it(dump: criudump.Dump) -> None:
    inspection = inspect_directory(dump.images)
    assert inspection.problems == () and inspection.skipped == () and inspection.truncated == {}
    procs = {p.pid: p for p in inspection.processes}
    assert set(procs) == {dump.shell, dump.sleep, dump.python}
    shell, sleep, python = procs[dump.shell], procs[dump.sleep], procs[dump.python]
    assert inspection.processes[0] == shell, "pstree.img lists parents first"
    assert (shell.comm, shell.ppid) == ("sh", 0)
    assert (sleep.comm, sleep.ppid) == ("sleep", dump.shell)
    assert python.comm.startswith("python") and python.ppid == dump.shell
    for p in procs.values():
        assert (p.pgid, p.sid, p.threads, p.state) == (dump.shell, dump.shell, 1, "alive")
        assert p.vma_bytes > p.pages_bytes > 0
        assert p.cwd == str(dump.workdir)
        assert p.exe.startswith("/")
    assert Path(sleep.exe).name == "sleep"
    # Every present page is in pages-*.img: the dumped bytes are exactly those files' sizes.
    pages = sum(p.stat().st_size for p in dump.images.glob("pages-*.img"))
    assert inspection.totals.pages_bytes == pages
    assert inspection.totals.vma_bytes == sum(p.vma_bytes for p in procs.values())
    assert (inspection.totals.processes, inspection.totals.threads) == (3, 3)

    files = {(f.pid, f.fd): f for f in inspection.files}
    for pid in procs:
        assert [(files[pid, fd].type, files[pid, fd].path) for fd in (0, 1, 2)] == [("REG", "/dev/null")] * 3
    assert {fd for pid, fd in files if pid != dump.python} == {0, 1, 2}, "no descriptor leaked into the tree"
    app = dump.app
    assert (files[dump.python, app["log"][0]].type, files[dump.python, app["log"][0]].path) == ("REG", app["log"][1])
    assert files[dump.python, app["tcp"][0]].path == f"socket: TCP 127.0.0.1:{app['tcp'][1]} LISTEN"
    assert files[dump.python, app["unix"][0]].path == f"socket: UNIX STREAM {app['unix'][1]} LISTEN"
    assert inspection.totals.files == len(inspection.files)

    sockets = {s.fd: s for s in inspection.sockets}
    assert all(s.pid == dump.python for s in inspection.sockets)
    tcp = sockets[app["tcp"][0]]
    assert (tcp.family, tcp.type, tcp.protocol, tcp.state, tcp.local, tcp.remote) == (
        "IPv4", "STREAM", "TCP", "LISTEN", f"127.0.0.1:{app['tcp'][1]}", ""
    )  # fmt: skip
    listener = sockets[app["unix"][0]]
    assert (listener.family, listener.type, listener.state, listener.local) == ("UNIX", "STREAM", "LISTEN", app["unix"][1])
    for fd in app["pair"]:
        assert (sockets[fd].family, sockets[fd].local, sockets[fd].state) == ("UNIX", "", "ESTABLISHED")
    expected = {app["tcp"][0], app["unix"][0], *app["pair"]}
    if app["udp6"] is not None:
        udp = sockets[app["udp6"][0]]
        assert (udp.family, udp.type, udp.protocol, udp.local, udp.remote) == (
            "IPv6", "DGRAM", "UDP", f"[::1]:{app['udp6'][1]}", ""
        )  # fmt: skip
        expected.add(app["udp6"][0])
    assert set(sockets) == expected
    assert inspection.mounts == (), "a dump outside a mount namespace has no mountpoints image"


def test_a_real_dump_round_trips_through_json_and_renders_as_a_tree(dump: criudump.Dump) -> None:
    inspection = inspect_directory(dump.images)
    wire = json.loads(json.dumps(inspection.to_json()))
    assert Inspection.from_json(wire) == inspection
    assert set(wire) == {"version", "processes", "files", "sockets", "mounts", "totals", "truncated", "skipped", "problems"}

    text = render_tree(inspection)
    print(text)  # shown with -s: what an operator sees
    lines = text.splitlines()
    tree = lines[lines.index("Process tree") + 1 : lines.index("Open files")]
    python = next(p for p in inspection.processes if p.pid == dump.python)
    first, second = sorted([(dump.sleep, "sleep"), (dump.python, python.comm)])
    assert [line.split("  [")[0] for line in tree] == [
        f"└── {dump.shell} sh",
        f"    ├── {first[0]} {first[1]}",
        f"    └── {second[0]} {second[1]}",
    ]
    assert all("mapped" in line and "dumped" in line for line in tree)
    assert lines[0].startswith("3 process(es), 3 thread(s); memory ")
    assert "0   REG       /dev/null" in text
    assert f"{dump.python} {python.comm} fd {dump.app['tcp'][0]}: TCP 127.0.0.1:{dump.app['tcp'][1]} LISTEN" in text
    assert "Mounts" in lines and "Problems" not in lines


def test_it_agrees_with_checkpointctl(dump: criudump.Dump, tmp_path: Path) -> None:
    """checkpointctl (go-criu's crit) reads the same archive: the same tree, descriptors, sockets and memory."""
    try:
        checkpointctl = lc.tool("checkpointctl")
    except lc.ClusterError as exc:  # install-deps.sh installs it beside CRIU: CI has it
        if criudump.running_in_ci():
            pytest.fail(f"CI must compare with checkpointctl: {exc}", pytrace=False)
        pytest.skip(str(exc))
    archive = criudump.archive_of(dump, tmp_path / "checkpoint.tar")
    run = subprocess.run(
        [str(checkpointctl), "inspect", str(archive), "--ps-tree", "--files", "--sockets", "--format", "json"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    (theirs,) = json.loads(run.stdout)
    ours = inspect_directory(dump.images)

    def tree(node: dict) -> list:
        return [node["pid"], node["command"], sorted(tree(child) for child in node.get("children") or [])]

    procs = {p.pid: p for p in ours.processes}

    def our_tree(pid: int) -> list:
        return [pid, procs[pid].comm, sorted(our_tree(p.pid) for p in ours.processes if p.ppid == pid)]

    assert tree(theirs["process_tree"]) == our_tree(dump.shell)
    assert theirs["checkpoint_size"]["memory_pages_size"] == ours.totals.pages_bytes

    their_files = {
        (entry["pid"], int(f["fd"].split()[-1])): (f["type"], f["path"])
        for entry in theirs["file_descriptors"]
        for f in entry["open_files"]
        if f["type"]  # cwd and root, which we keep on the process
    }
    our_files = {(f.pid, f.fd): f for f in ours.files}
    assert set(their_files) == set(our_files)
    for key, (kind, path) in their_files.items():
        assert our_files[key].type == kind
        if kind == "REG":
            assert our_files[key].path == path
        elif kind == "PIPE":
            assert our_files[key].path == path.replace("pipe[", "pipe:[")
    their_cwd = {e["pid"]: f["path"] for e in theirs["file_descriptors"] for f in e["open_files"] if f["fd"] == "cwd"}
    assert their_cwd == {p.pid: p.cwd for p in ours.processes}

    (their_sockets,) = theirs["sockets"]  # one process has sockets
    assert their_sockets["pid"] == dump.python
    tcp = next(s["data"] for s in their_sockets["open_sockets"] if s.get("protocol") == "TCP")
    ours_tcp = next(s for s in ours.sockets if s.protocol == "TCP")
    assert (f"{tcp['src']}:{tcp['src_port']}", tcp["state"]) == (ours_tcp.local, ours_tcp.state)
    # checkpointctl keeps the name's trailing NUL (and 1.3 prints IPv6 addresses wrongly: "0:1::" for ::1).
    their_unix = sorted(
        s["data"].get("address", "").rstrip("\0") for s in their_sockets["open_sockets"] if s["data"]["type"] == "UNIX"
    )
    assert their_unix == sorted(s.local for s in ours.sockets if s.family == "UNIX")


def test_mutated_real_images_fail_only_with_the_one_error(dump: criudump.Dump) -> None:
    """Cut, flipped and garbled images: an inspection or a CriuImageError, and never one the reader did not foresee."""
    originals = {p.name: p.read_bytes() for p in dump.images.iterdir() if criuimages.inspected_image(f"checkpoint/{p.name}")}
    rng = random.Random(20261130)
    outcomes = {"inspected": 0, "refused": 0}
    for _ in range(1500):
        images = dict(originals)
        name = rng.choice(sorted(images))
        data = bytearray(images[name])
        how = rng.randrange(4)
        if how == 0:
            del data[rng.randrange(len(data)) :]
        elif how == 1:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif how == 2:
            start = rng.randrange(len(data))
            data[start : start + 16] = rng.randbytes(16)
        else:
            data = bytearray(data[:8] + rng.randbytes(rng.randrange(64)))
        images[name] = bytes(data)
        try:
            result = inspect_images(images)
        except CriuImageError as exc:
            assert exc.__cause__ is None, f"{name}: an error the reader did not foresee: {exc!r}"
            outcomes["refused"] += 1
            continue
        json.dumps(result.to_json())
        render_tree(result)
        outcomes["inspected"] += 1
    assert outcomes["inspected"] > 100 and outcomes["refused"] > 10, outcomes


# --- Hand-made images ------------------------------------------------------------------------
def test_image_heads_and_entries() -> None:
    entry = f(1, 5) + f(2, 0) + f(3, 5) + f(4, 5)
    assert read_image(image("PSTREE", entry)).entries == (entry,)
    assert read_image(image("PSTREE", entry, head=IMG_SERVICE_MAGIC)).magic == "PSTREE"
    assert read_image(image("INVENTORY", f(1, 2), head=None), expect="INVENTORY").magic == "INVENTORY"
    assert read_image(image("PSTREE")).entries == ()
    for bad, why in (
        (b"", "shorter than its magic"),
        (struct.pack("<I", IMG_COMMON_MAGIC), "no magic after its head"),
        (struct.pack("<II", IMG_COMMON_MAGIC, 0x12345678), "unknown magic 0x12345678"),
        (image("PSTREE", entry)[:-1], "entry 0 is 8 bytes, past the end"),
        (image("PSTREE", entry) + b"\x01\x00", "ends inside the length of entry 1"),
        (image("PSTREE", entry) + struct.pack("<I", 0xFFFFFFFF), "entry 1 is 4294967295 bytes"),
    ):
        with pytest.raises(CriuImageError, match=why):
            read_image(bad, name="pstree.img")
    with pytest.raises(CriuImageError, match=r"core-1\.img is a PSTREE image, expected CORE"):
        read_image(image("PSTREE", entry), name="core-1.img", expect="CORE")


def test_the_protobuf_wire_reader() -> None:
    fixed = varint(7 << 3 | 5) + struct.pack("<I", 0xDEADBEEF) + varint(8 << 3 | 1) + struct.pack("<Q", 1 << 40)
    packed = f(5, varint(1) + varint(300) + varint(1 << 35))
    msg = Message(f(1, 300) + f(1, 7) + f(2, "päth") + f(3, f(1, 9)) + f(3, f(1, 10)) + fixed + packed + f(5, 4) + f(99, b"new"))
    assert msg.uint(1) == 7, "the last value wins"
    assert (msg.text(2), msg.raw(2)) == ("päth", "päth".encode())
    assert [m.uint(1) for m in msg.messages(3)] == [9, 10] and msg.message(3).uint(1) == 10
    assert (msg.uint(7), msg.uint(8)) == (0xDEADBEEF, 1 << 40)
    assert msg.uints(5) == [1, 300, 1 << 35, 4], "packed and unpacked alike"
    assert (msg.uint(42, 3), msg.text(42), msg.message(42), msg.has(99), msg.flag(1)) == (3, "", None, True, True)
    assert Message(f(1, (1 << 64) - 1)).uint(1) == (1 << 64) - 1
    for bad, why in (
        (b"\x08", "truncated varint"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x00\x01", "field number 0"),
        (b"\x0b", "wire type 3"),
        (b"\x12\x05ab", "5 bytes, past the end"),
        (b"\x0d\x01\x02", "cut short"),
    ):
        with pytest.raises(CriuImageError, match=why):
            Message(bad)
    lazy = Message(f(1, 1) + f(2, b"\x0b"))  # a sub-message nobody reads never fails
    with pytest.raises(CriuImageError):
        lazy.message(2)


def test_older_criu_images_zombies_threads_mounts_and_memory_accounting() -> None:
    """Per-kind file images (no files.img), a zombie, a threaded process, mounts, parent and lazy pages."""
    images = {
        "pstree.img": pstree((10, 0, [10, 11, 12]), (20, 10, [20]), (30, 10, [30])),
        "core-10.img": core("server"),
        "core-20.img": core("defunct", state=6),  # a zombie: nothing else dumped for it
        "core-30.img": core("worker", state=3),  # stopped
        "ids-10.img": ids(files_id=1, mnt_ns_id=7),
        "ids-30.img": ids(files_id=1, mnt_ns_id=7),  # shares the files table
        "fs-10.img": image("FS", f(1, 1) + f(2, 1)),
        "fs-30.img": image("FS", f(1, 1) + f(2, 1)),
        "mm-10.img": image("MM", f(12, 2) + f(14, f(1, 0x1000) + f(2, 0x5000)) + f(14, f(1, 0x10000) + f(2, 0x11000))),
        "mm-30.img": image("MM", f(14, f(1, 0x1000) + f(2, 0x3000))),
        "pagemap-10.img": image(
            "PAGEMAP",
            f(1, 1),  # the head
            f(1, 0x1000) + f(2, 2),  # an old entry (no flags): present
            f(1, 0x3000) + f(2, 1) + f(3, 1),  # old, in the parent checkpoint
            f(1, 0x10000) + f(2, 0) + f(4, 4 | 2) + f(5, 1),  # nr_pages in field 5, present and lazy
            f(1, 0x20000) + f(2, 9) + f(4, 1),  # in the parent
        ),
        "pagemap-30.img": image("PAGEMAP", f(1, 2), f(1, 0x1000) + f(2, 2) + f(4, 4)),
        "fdinfo-1.img": fdinfo((0, 1, 1), (3, 4, 3), (4, 5, 4), (5, 2, 5), (6, 4, 6), (7, 5, 8), (8, 9, 9), (9, 1, 404)),
        "reg-files.img": image("REG_FILES", reg(1, "/srv"), reg(2, "/usr/bin/server")),
        "inetsk.img": image(
            "INETSK",
            inet(3, family=2, proto=6, kind=1, state=1, src=[le(10, 0, 0, 5)], port=8080, dst=[le(10, 0, 0, 9)], dport=51000),
            inet(6, family=10, proto=17, kind=2, state=7, src=[0, 0, 0, le(0, 0, 0, 1)], port=53, dst=[0, 0, 0, 0], dport=0),
        ),
        "unixsk.img": image("UNIXSK", unix(4, b"\0hidden\0name"), unix(8, b"app.sock\0", state=7, name_dir="/run/app")),
        "pipes.img": image("PIPES", f(1, 5) + f(2, 4242) + f(3, 0) + f(4, FOWN)),
        "mountpoints-7.img": image(
            "MNTS",
            mnt(1, "/", "overlay", fstype=17),
            mnt(2, "/data", "/dev/sdb1", extra=f(14, "xfs")),  # fsname: what CRIU has no number for
            mnt(3, "/proc", "proc", fstype=1),
            # An external bind mount (a kubelet volume): CRIU keeps no fstype for it, only the key to bind it again.
            mnt(4, "/etc/hosts", "/dev/vda", root="/var/lib/kubelet/pods/u/etc-hosts", extra=f(18, "/etc/hosts")),
        ),
    }
    result = inspect_images(images)
    procs = {p.pid: p for p in result.processes}
    assert [(p.pid, p.comm, p.state, p.threads) for p in result.processes] == [
        (10, "server", "alive", 3), (20, "defunct", "zombie", 1), (30, "worker", "stopped", 1)
    ]  # fmt: skip
    assert (procs[10].vma_bytes, procs[10].pages_bytes) == (0x4000 + 0x1000, 3 * 4096)
    assert (procs[10].exe, procs[10].cwd) == ("/usr/bin/server", "/srv")
    assert (procs[20].vma_bytes, procs[20].pages_bytes, procs[20].cwd) == (0, 0, "")
    assert (procs[30].vma_bytes, procs[30].pages_bytes) == (0x2000, 2 * 4096)
    assert result.totals == criuimages.Totals(processes=3, threads=5, vma_bytes=0x7000, pages_bytes=5 * 4096, files=16,
                                              sockets=8, mounts=4)  # fmt: skip

    files = {f.fd: (f.type, f.path) for f in result.files if f.pid == 10}
    assert files == {
        0: ("REG", "/srv"),
        3: ("INETSK", "socket: TCP 10.0.0.5:8080 -> 10.0.0.9:51000 ESTABLISHED"),
        4: ("UNIXSK", "socket: UNIX STREAM @hidden@name LISTEN"),
        5: ("PIPE", "pipe:[4242]"),
        6: ("INETSK", "socket: UDP [::1]:53"),
        7: ("UNIXSK", "socket: UNIX STREAM /run/app/app.sock"),
        8: ("SIGNALFD", "anon_inode:[signalfd]"),
        9: ("REG", "?"),  # its file is in no image
    }
    assert [(s.pid, s.fd) for s in result.sockets] == [(10, 3), (10, 4), (10, 6), (10, 7), (30, 3), (30, 4), (30, 6), (30, 7)]
    assert [(m.mountpoint, m.fstype, m.source) for m in result.mounts] == [
        ("/", "overlay", "overlay"), ("/data", "xfs", "/dev/sdb1"), ("/proc", "proc", "proc"),
        ("/etc/hosts", "bind", "/dev/vda[/var/lib/kubelet/pods/u/etc-hosts]"),
    ]  # fmt: skip
    assert result.problems == ()


def test_s390x_addresses_are_big_endian() -> None:
    sock = inet(3, family=2, proto=6, kind=1, state=10, src=[int.from_bytes(bytes([192, 0, 2, 1]), "big")], port=80, dst=[0],
                dport=0)  # fmt: skip
    images = {
        "pstree.img": pstree((1, 0, [1])),
        "core-1.img": core("httpd", mtype=5),
        "ids-1.img": ids(files_id=1),
        "fdinfo-1.img": fdinfo((3, 4, 3)),
        "files.img": image("FILES", f(1, 4) + f(2, 3) + f(4, sock)),
    }
    (sock_seen,) = inspect_images(images).sockets
    assert (sock_seen.local, sock_seen.remote, sock_seen.state) == ("192.0.2.1:80", "", "LISTEN")


def test_missing_or_broken_images_leave_gaps_and_say_so() -> None:
    images = {
        "pstree.img": pstree((1, 0, [1]), (2, 1, [2])),
        "core-1.img": core("app"),
        "core-2.img": b"garbage!",
        "ids-1.img": ids(files_id=1),
        "fdinfo-1.img": fdinfo((0, 1, 1)),
        "files.img": image("FILES", f(1, 1) + f(2, 1) + f(3, b"\x0b")),  # its reg_file_entry is not protobuf
        "mm-1.img": image("PSTREE"),  # the wrong kind
    }
    result = inspect_images(images, skipped={"pagemap-1.img": 9000000})
    assert [(p.pid, p.comm, p.state) for p in result.processes] == [(1, "app", "alive"), (2, "?", "unknown")]
    assert result.files == (criuimages.OpenFile(pid=1, fd=0, type="REG", path="?"),)
    assert result.skipped == ("pagemap-1.img (9000000 bytes)",)
    assert result.problems == (
        "core-2.img has an unknown magic 0x62726167",
        "mm-1.img is a PSTREE image, expected MM",
        "fs-1.img missing",
        "files.img: file 1: field 1 has wire type 3: not a CRIU protobuf message",
    )
    text = render_tree(result)
    assert "Not read (over the size caps): pagemap-1.img (9000000 bytes)" in text and "└── 2 (unknown) ?" in text


def test_without_a_process_tree_there_is_no_inspection() -> None:
    for images, why in (
        ({}, "no pstree.img"),
        ({"pstree.img": image("PSTREE")}, "lists no process"),
        ({"pstree.img": image("PSTREE", b"\xff")}, "truncated varint"),
        ({"pstree.img": image("CORE", b"")}, "is a CORE image"),
    ):
        with pytest.raises(CriuImageError, match=why):
            inspect_images(images)
    empty = Path("/nonexistent-criu-dir")
    with pytest.raises(CriuImageError, match="reading /nonexistent-criu-dir"):
        inspect_directory(empty)


def test_lists_are_capped_and_say_by_how_much() -> None:
    many = 260
    images = {"pstree.img": pstree((1, 0, [1]), *((pid, 1, [pid]) for pid in range(2, many + 1)))}
    for pid in range(1, many + 1):
        images[f"core-{pid}.img"] = core(f"p{pid}")
        images[f"ids-{pid}.img"] = ids(files_id=1)
        images[f"mm-{pid}.img"] = image("MM", f(14, f(1, 0) + f(2, 4096)))
        images[f"pagemap-{pid}.img"] = image("PAGEMAP", f(1, 1))
        images[f"fs-{pid}.img"] = image("FS", f(1, 1) + f(2, 1))
    images["fdinfo-1.img"] = fdinfo((0, 1, 1), (1, 1, 1), (2, 5, 2))
    images["files.img"] = image(
        "FILES", f(1, 1) + f(2, 1) + f(3, reg(1, "/" + "x" * 1000)), f(1, 5) + f(2, 2) + f(16, unix(2, b""))
    )
    result = inspect_images(images)
    assert len(result.processes) == criuimages.MAX_PROCESSES and len(result.files) == criuimages.MAX_FILES
    assert len(result.sockets) == criuimages.MAX_SOCKETS
    assert result.truncated == {"files": 3 * many - 500, "processes": many - 200, "sockets": many - 100}
    assert result.totals.processes == many and result.totals.files == 3 * many and result.totals.sockets == many
    assert result.totals.vma_bytes == many * 4096
    assert len(result.files[0].path) == criuimages.MAX_TEXT and result.files[0].path.endswith("…")
    assert "(60 more processes not listed)" in render_tree(result)
    assert Inspection.from_json(result.to_json()) == result


def test_a_full_inspection_stays_under_its_json_bound() -> None:
    x = "x" * criuimages.MAX_TEXT
    big = 1 << 47
    full = Inspection(
        processes=tuple(
            criuimages.Process(pid=big, ppid=big, pgid=big, sid=big, comm=x, threads=big, state="stopped", vma_bytes=big,
                               pages_bytes=big, exe=x, cwd=x)
            for _ in range(criuimages.MAX_PROCESSES)
        ),
        files=(criuimages.OpenFile(pid=big, fd=big, type="NETLINKSK", path=x),) * criuimages.MAX_FILES,
        sockets=(criuimages.Socket(pid=big, fd=big, family="NETLINK", type="SEQPACKET", protocol=x, state="ESTABLISHED",
                                   local=x, remote=x),) * criuimages.MAX_SOCKETS,
        mounts=(criuimages.Mount(mountpoint=x, fstype=x, source=x),) * criuimages.MAX_MOUNTS,
        totals=criuimages.Totals(processes=big, threads=big, vma_bytes=big, pages_bytes=big, files=big, sockets=big, mounts=big),
        truncated={"processes": big, "files": big, "sockets": big, "mounts": big},
        skipped=(x,) * criuimages.MAX_NOTES,
        problems=(x,) * criuimages.MAX_NOTES,
    )  # fmt: skip
    wire = json.dumps(full.to_json())
    assert 500 << 10 < len(wire) < 600 << 10
    assert Inspection.from_json(json.loads(wire)) == full


def test_from_json_is_strict_about_types_and_bounds_what_it_keeps() -> None:
    good = {"version": 1, "processes": [{"pid": 1, "comm": "a"}], "totals": {"processes": 1}, "future": "ignored"}
    parsed = Inspection.from_json(good)
    assert parsed.processes[0].pid == 1 and parsed.totals.processes == 1 and parsed.files == ()
    big = {"files": [{"pid": 1, "fd": n, "type": "REG", "path": "/x"} for n in range(900)], "problems": ["p"] * 80}
    parsed = Inspection.from_json(big)
    assert len(parsed.files) == criuimages.MAX_FILES and len(parsed.problems) == criuimages.MAX_NOTES
    for bad in (
        [],
        {"processes": {}},
        {"processes": [1]},
        {"processes": [{"pid": "1"}]},
        {"processes": [{"pid": True}]},
        {"files": [{"path": 3}]},
        {"totals": []},
        {"truncated": {"files": "many"}},
        {"problems": [1]},
    ):
        with pytest.raises(CriuImageError):
            Inspection.from_json(bad)


def test_a_tree_with_a_parent_cycle_still_renders_every_process_once() -> None:
    procs = tuple(
        criuimages.Process(
            pid=pid, ppid=ppid, pgid=1, sid=1, comm=f"c{pid}", threads=1, state="alive", vma_bytes=0, pages_bytes=0
        )
        for pid, ppid in ((1, 0), (5, 6), (6, 5), (7, 6), (8, 8))
    )
    text = render_tree(Inspection(processes=procs))
    for pid in (1, 5, 6, 7, 8):
        assert sum(line.split("── ")[-1].startswith(f"{pid} c{pid}") for line in text.splitlines()) == 1, text


@pytest.mark.parametrize(
    ("member", "name"),
    [
        ("checkpoint/pstree.img", "pstree.img"),
        ("./checkpoint/core-17.img", "core-17.img"),
        ("checkpoint/fdinfo-2.img", "fdinfo-2.img"),
        ("checkpoint/mountpoints-13.img", "mountpoints-13.img"),
        ("checkpoint/files.img", "files.img"),
        ("checkpoint/pages-1.img", None),
        ("checkpoint/pagemap-shmem-9.img", None),
        ("checkpoint/core-x.img", None),
        ("checkpoint/sub/pstree.img", None),
        ("pstree.img", None),
        ("rootfs/checkpoint/pstree.img", None),
        ("checkpoint/tcp-stream-1a.img", None),
    ],
)
def test_which_archive_members_an_inspection_reads(member: str, name: str | None) -> None:
    assert criuimages.inspected_image(member) == name
