"""ocicheckpoint.safetar: hostile tars and paths applied to a root never touch anything outside it.

Each test builds a root and, beside it, an "outside" directory standing for the host, and checks
after the attack that the outside is byte for byte (and inode for inode) what it was.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
import tarfile
from pathlib import Path

import pytest

from ocicheckpoint import safetar

BIG = safetar.Limits(max_file_bytes=1 << 20, max_total_bytes=1 << 22)


def entry(name: str, *, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "", mode: int = 0o644) -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def tar_of(*entries: tuple) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buf.seek(0)
    return buf


def apply(root: Path, *entries: tuple, policy: safetar.Policy | None = None) -> safetar.ExtractStats:
    with tarfile.open(fileobj=tar_of(*entries), mode="r|") as tar:
        return safetar.extract(tar, root=root, policy=policy or safetar.Policy(limits=BIG))


def snapshot(top: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            content = p.read_bytes() if stat.S_ISREG(st.st_mode) else os.readlink(p) if p.is_symlink() else None
            out[str(p.relative_to(top))] = (st.st_mode, st.st_ino, st.st_nlink, content)
    return out


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """The "outside": a canary file and directory the attacks aim at."""
    outside = tmp_path / "host"
    (outside / "etc").mkdir(parents=True)
    (outside / "canary").write_text("host file\n")
    (outside / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return outside


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("container passwd\n")
    return r


def test_split_path_normalises_in_the_root() -> None:
    assert safetar.split_path("/../../../../etc") == ("etc",)
    assert safetar.split_path("./a/./b/../c") == ("a", "c")
    assert safetar.split_path("/..") == ()
    with pytest.raises(safetar.UnsafeArchiveError):
        safetar.split_path("a\0b")


def test_absolute_symlink_then_a_file_through_it_lands_inside(root: Path, host: Path) -> None:
    before = snapshot(host)
    apply(root, entry("x", kind=tarfile.SYMTYPE, link=str(host)), entry("x/canary", data=b"pwned"))
    assert snapshot(host) == before
    assert (root / str(host).lstrip("/") / "canary").read_bytes() == b"pwned"
    assert os.readlink(root / "x") == str(host)  # kept verbatim: a runtime reads it in the root


def test_relative_escaping_symlink_lands_inside(root: Path, host: Path) -> None:
    before = snapshot(host)
    apply(root, entry("a/x", kind=tarfile.SYMTYPE, link="../" * 20 + str(host).lstrip("/")), entry("a/x/canary", data=b"p"))
    assert snapshot(host) == before
    assert (root / str(host).lstrip("/") / "canary").read_bytes() == b"p"


def test_dotdot_and_absolute_names_land_inside(root: Path, host: Path) -> None:
    before = snapshot(host)
    rel = os.path.relpath(host / "canary", root)  # ../host/canary
    apply(root, entry(rel, data=b"p"), entry(str(host / "canary"), data=b"q"))
    assert snapshot(host) == before
    assert (root / "host" / "canary").read_bytes() == b"p"
    assert (root / str(host).lstrip("/") / "canary").read_bytes() == b"q"


def test_a_symlink_already_in_the_base_rootfs_is_resolved_in_the_root(root: Path, host: Path) -> None:
    before = snapshot(host)
    (root / "etc").rename(root / "etc-real")
    (root / "etc").symlink_to(host / "etc")  # the base image's /etc -> /<host>/etc
    apply(root, entry("etc/passwd", data=b"pwned"))
    assert snapshot(host) == before
    assert (root / str(host / "etc" / "passwd").lstrip("/")).read_bytes() == b"pwned"


def test_an_existing_symlink_at_the_entrys_name_is_replaced_not_followed(root: Path, host: Path) -> None:
    before = snapshot(host)
    (root / "f").symlink_to(host / "canary")
    (root / "d").symlink_to(host)
    apply(root, entry("f", data=b"pwned"), entry("d", kind=tarfile.DIRTYPE, mode=0o700))
    assert snapshot(host) == before
    assert (root / "f").read_bytes() == b"pwned" and not (root / "f").is_symlink()
    assert (root / "d").is_dir() and not (root / "d").is_symlink()


def test_hard_links_resolve_in_the_root(root: Path, host: Path) -> None:
    before = snapshot(host)
    apply(root, entry("pw", kind=tarfile.LNKTYPE, link=str(host / "etc" / "passwd").replace(str(host), "")))  # /etc/passwd
    assert snapshot(host) == before
    assert (root / "pw").stat().st_ino == (root / "etc" / "passwd").stat().st_ino
    with pytest.raises(safetar.UnsafeArchiveError, match="hard link target"):
        apply(root, entry("canary", kind=tarfile.LNKTYPE, link=str(host / "canary")))
    with pytest.raises(safetar.UnsafeArchiveError, match="hard link target"):
        apply(root, entry("canary", kind=tarfile.LNKTYPE, link="../" * 10 + str(host / "canary").lstrip("/")))
    assert snapshot(host) == before


def test_a_hard_link_is_replaced_not_written_through(root: Path, host: Path) -> None:
    apply(root, entry("pw", kind=tarfile.LNKTYPE, link="etc/passwd"), entry("pw", data=b"pwned"))
    assert (root / "etc" / "passwd").read_text() == "container passwd\n"
    assert (root / "pw").read_bytes() == b"pwned"


def test_hard_links_to_directories_or_devices_are_refused(root: Path) -> None:
    with pytest.raises(safetar.UnsafeArchiveError, match="not a regular file"):
        apply(root, entry("e", kind=tarfile.LNKTYPE, link="etc"))


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_device_nodes_are_refused(root: Path, kind: bytes) -> None:
    with pytest.raises(safetar.UnsafeArchiveError, match="device node"):
        apply(root, entry("mem", kind=kind))
    assert not (root / "mem").exists()


def test_fifos_only_where_the_policy_allows(root: Path) -> None:
    with pytest.raises(safetar.UnsafeArchiveError, match="FIFO"):
        apply(root, entry("p", kind=tarfile.FIFOTYPE))
    apply(root, entry("p", kind=tarfile.FIFOTYPE), policy=safetar.Policy(limits=BIG, fifos=True))
    assert stat.S_ISFIFO((root / "p").lstat().st_mode)


def test_limits_per_file_in_all_and_entries(root: Path) -> None:
    small = safetar.Limits(max_file_bytes=10, max_total_bytes=15, max_entries=3)
    policy = safetar.Policy(limits=small, what="rootfs-diff.tar")
    with pytest.raises(
        safetar.ArchiveLimitError, match=re.escape("rootfs-diff.tar: 'big' is 11 bytes, more than the 10 allowed per file")
    ):
        apply(root, entry("big", data=b"x" * 11), policy=policy)
    assert not (root / "big").exists()  # refused from the header, before any byte
    with pytest.raises(safetar.ArchiveLimitError, match="15 bytes allowed in all"):
        apply(root, entry("a", data=b"x" * 8), entry("b", data=b"x" * 8), policy=policy)
    with pytest.raises(safetar.ArchiveLimitError, match="more than 3 entries"):
        apply(root, *(entry(f"f{i}") for i in range(4)), policy=policy)


def test_a_gzip_bomb_stops_at_the_limit(tmp_path: Path, root: Path) -> None:
    raw = tar_of(entry("zeros", data=b"\0" * (4 << 20))).getvalue()
    layer = tmp_path / "layer.tar.gz"
    layer.write_bytes(gzip.compress(raw))
    assert layer.stat().st_size < 64 << 10
    policy = safetar.Policy(limits=safetar.Limits(max_file_bytes=1 << 20, max_total_bytes=1 << 20))
    with tarfile.open(layer, "r|gz") as tar, pytest.raises(safetar.ArchiveLimitError):
        safetar.extract(tar, root=root, policy=policy)
    assert not (root / "zeros").exists()


def test_setid_rule_keeps_only_what_the_owner_could_set(root: Path) -> None:
    rule = safetar.SetIdRule(uids=frozenset({1000}), gids=frozenset({1000}))
    own, rootsuid = entry("own", data=b"x", mode=0o6755), entry("rootsuid", data=b"x", mode=0o6755)
    own[0].uid = own[0].gid = 1000
    apply(root, own, rootsuid, policy=safetar.Policy(limits=BIG, setid=rule))
    if os.geteuid() == 0:  # owners are applied only as root
        assert stat.S_IMODE((root / "own").stat().st_mode) == 0o6755
    assert stat.S_IMODE((root / "rootsuid").stat().st_mode) == 0o755
    apply(root, entry("kept", data=b"x", mode=0o4755), policy=safetar.Policy(limits=BIG, setid=safetar.KEEP_SETID))
    assert stat.S_IMODE((root / "kept").stat().st_mode) == 0o4755


def test_whiteouts_are_confined(root: Path, host: Path) -> None:
    before = snapshot(host)
    (root / "up").symlink_to("../" * 10 + str(host).lstrip("/"))
    (root / "abs").symlink_to(host)
    policy = safetar.Policy(limits=BIG, whiteouts=True)
    apply(root, entry("up/.wh.canary"), entry("abs/.wh..wh..opq"), entry("abs/.wh.etc"), policy=policy)
    assert snapshot(host) == before
    for name in (".wh...", "etc/.wh.."):
        with pytest.raises(safetar.UnsafeArchiveError, match="whiteout of no file"):
            apply(root, entry(name), policy=policy)
    assert (root / "etc" / "passwd").exists()


def test_whiteouts_remove_the_entry_itself_never_its_target(root: Path, host: Path) -> None:
    before = snapshot(host)
    (root / "link").symlink_to(host)
    apply(root, entry(".wh.link"), policy=safetar.Policy(limits=BIG, whiteouts=True))
    assert not (root / "link").is_symlink()
    assert snapshot(host) == before


def test_an_opaque_whiteout_keeps_what_its_own_layer_made(root: Path) -> None:
    (root / "d").mkdir()
    (root / "d" / "old").write_text("lower")
    policy = safetar.Policy(limits=BIG, whiteouts=True)
    apply(root, entry("d", kind=tarfile.DIRTYPE, mode=0o755), entry("d/new", data=b"n"), entry("d/.wh..wh..opq"), policy=policy)
    assert sorted(p.name for p in (root / "d").iterdir()) == ["new"]


def test_symlink_loops_are_refused(root: Path) -> None:
    with pytest.raises(safetar.UnsafeArchiveError, match="too many levels"):
        apply(root, entry("a", kind=tarfile.SYMTYPE, link="b"), entry("b", kind=tarfile.SYMTYPE, link="a"), entry("a/f"))


def test_confined_symlinks_policy(root: Path) -> None:
    policy = safetar.Policy(limits=BIG, confined_symlinks=True)
    apply(root, entry("a/ok", kind=tarfile.SYMTYPE, link="../etc/passwd"), policy=policy)
    for target in ("/etc", "../../etc"):
        with pytest.raises(safetar.UnsafeArchiveError, match="leaves the root"):
            apply(root, entry("a/bad", kind=tarfile.SYMTYPE, link=target), policy=policy)


def test_a_read_only_directory_is_filled_then_gets_its_mode(root: Path) -> None:
    apply(root, entry("ro", kind=tarfile.DIRTYPE, mode=0o555), entry("ro/f", data=b"x"))
    assert stat.S_IMODE((root / "ro").stat().st_mode) == 0o555
    assert (root / "ro" / "f").read_bytes() == b"x"


def test_remove_in_root_is_confined(root: Path, host: Path) -> None:
    before = snapshot(host)
    (root / "up").symlink_to("../" * 10 + str(host).lstrip("/"))
    (root / "abs").symlink_to(host)
    mirrored = root / str(host).lstrip("/")
    mirrored.mkdir(parents=True)
    (mirrored / "canary").write_text("inside copy")
    assert safetar.remove_in_root(root, "/../../../../" + str(host / "canary"))
    assert not safetar.remove_in_root(root, "/up/canary")  # already gone: inside, never the host's
    assert not safetar.remove_in_root(root, "/abs/etc/nothing")
    assert safetar.remove_in_root(root, "/abs")  # the symlink itself, not the host directory
    assert not (root / "abs").is_symlink()
    assert snapshot(host) == before
    with pytest.raises(safetar.UnsafeArchiveError, match="root itself"):
        safetar.remove_in_root(root, "/..")
    assert (root / "etc" / "passwd").exists()


def test_read_file_in_root_refuses_symlinks_fifos_and_large_files(root: Path, host: Path) -> None:
    (root / "config.dump").symlink_to(host / "canary")
    with pytest.raises(safetar.UnsafeArchiveError, match="symbolic link"):
        safetar.read_file_in_root(root, "config.dump", max_bytes=100)
    os.mkfifo(root / "fifo")
    with pytest.raises(safetar.UnsafeArchiveError, match="not a regular file"):
        safetar.read_file_in_root(root, "fifo", max_bytes=100)  # and does not block
    (root / "big").write_bytes(b"x" * 101)
    with pytest.raises(safetar.ArchiveLimitError, match="101 bytes"):
        safetar.read_file_in_root(root, "big", max_bytes=100)
    (root / "d").symlink_to(host)
    assert safetar.read_file_in_root(root, "etc/passwd", max_bytes=100) == b"container passwd\n"
    with pytest.raises(FileNotFoundError):
        safetar.read_file_in_root(root, "d/canary", max_bytes=100)  # /<host>/canary in the root: not there


def test_check_plain_tree(root: Path, host: Path) -> None:
    (root / "checkpoint" / "sub").mkdir(parents=True)
    (root / "checkpoint" / "pages-1.img").write_bytes(b"x")
    safetar.check_plain_tree(root, "checkpoint")
    (root / "checkpoint" / "sub" / "pages-2.img").symlink_to(host / "canary")
    with pytest.raises(safetar.UnsafeArchiveError, match=re.escape("sub/pages-2.img")):
        safetar.check_plain_tree(root, "checkpoint")
    (root / "cp2").symlink_to(root / "checkpoint")
    with pytest.raises(safetar.UnsafeArchiveError, match="not a directory"):
        safetar.check_plain_tree(root, "cp2")
