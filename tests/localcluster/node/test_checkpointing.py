"""The stand-in's checkpoint archive (``localcluster.node.checkpointing.pack_archive``): CRI-O's layout, 0600."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

from localcluster.node import checkpointing


@pytest.mark.parametrize("kernel_copy_min", [1 << 20, 1])
def test_the_archive_holds_every_file_at_its_root_whatever_copies_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_copy_min: int
) -> None:
    monkeypatch.setattr(checkpointing, "KERNEL_COPY_MIN_BYTES", kernel_copy_min)
    work = tmp_path / "work"
    (work / "checkpoint").mkdir(parents=True)
    pages = os.urandom((2 << 20) + 77)  # not a multiple of the tar block: the padding must be right
    (work / "checkpoint" / "pages-1.img").write_bytes(pages)
    (work / "checkpoint" / "core-1.img").write_bytes(b"core")
    (work / "checkpoint" / "empty.img").write_bytes(b"")
    (work / "config.dump").write_text('{"id": "c1"}')
    archive = tmp_path / "checkpoint.tar"

    checkpointing.pack_archive(work, archive)

    assert archive.stat().st_mode & 0o777 == 0o600
    assert archive.stat().st_size % tarfile.RECORDSIZE == 0
    with tarfile.open(archive, "r|") as tar:  # a stream read, as the agent reads it
        got = {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar}  # type: ignore[union-attr]
    assert got == {
        "checkpoint": None,
        "checkpoint/core-1.img": b"core",
        "checkpoint/empty.img": b"",
        "checkpoint/pages-1.img": pages,
        "config.dump": b'{"id": "c1"}',
    }


def test_consuming_frees_each_large_files_blocks_once_archived_on_a_tmpfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the checkpoints tmpfs the images and the archive are never both whole in memory; the archive is the same."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm tmpfs on this machine")
    monkeypatch.setattr(checkpointing, "CONSUME_STEP_BYTES", 1 << 20)
    work = Path(tempfile.mkdtemp(dir=shm, prefix="pm-test-work-"))
    try:
        (work / "checkpoint").mkdir()
        pages = os.urandom((5 << 20) + 4096 + 77)
        (work / "checkpoint" / "pages-1.img").write_bytes(pages)
        (work / "config.dump").write_text("{}")
        archive = work.with_name(work.name + ".tar")  # on the same tmpfs, as the kubelet's archive is
        checkpointing.pack_archive(work, archive, consume=True)
        with tarfile.open(archive, "r|") as tar:
            got = {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar}  # type: ignore[union-attr]
        assert got["checkpoint/pages-1.img"] == pages
        image = work / "checkpoint" / "pages-1.img"
        assert image.stat().st_size == len(pages), "the size is kept"
        assert image.stat().st_blocks * 512 < 64 << 10, "its memory is freed"
    finally:
        shutil.rmtree(work, ignore_errors=True)
        work.with_name(work.name + ".tar").unlink(missing_ok=True)
