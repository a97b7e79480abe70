"""bench/ceiling.py's pure parts: how a blob is split into parallel streams, and the random file with its digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bench import ceiling


def test_split_ranges_cover_the_blob_without_gaps() -> None:
    assert ceiling.split_ranges(100, 4) == [(0, 25), (25, 25), (50, 25), (75, 25)]
    assert ceiling.split_ranges(10, 4) == [(0, 2), (2, 2), (4, 2), (6, 4)], "the last range takes the remainder"
    assert ceiling.split_ranges(7, 1) == [(0, 7)]
    assert ceiling.split_ranges(0, 2) == [(0, 0), (0, 0)]
    with pytest.raises(ValueError):
        ceiling.split_ranges(10, 0)


def test_write_random_digests_the_whole_and_each_part(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    size = 3 * ceiling.CHUNK + 5  # parts that straddle chunk boundaries
    whole, parts = ceiling.write_random(path, size=size, parts=4)
    data = path.read_bytes()
    assert len(data) == size
    assert whole == "sha256:" + hashlib.sha256(data).hexdigest()
    assert parts == ["sha256:" + hashlib.sha256(data[o : o + n]).hexdigest() for o, n in ceiling.split_ranges(size, 4)]
    again, _ = ceiling.write_random(path, size=size, parts=4)
    assert again != whole, "fresh bytes every time: the registry never has the blob already"


async def test_file_range_streams_exactly_the_range(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 10_000)
    chunks = [c async for c in ceiling._file_range(path, offset=1000, length=ceiling.CHUNK + 10)]
    assert b"".join(chunks) == path.read_bytes()[1000 : 1000 + ceiling.CHUNK + 10]
    assert [len(c) for c in chunks] == [ceiling.CHUNK, 10]
