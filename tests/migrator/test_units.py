"""Durations and sizes are spelled one way everywhere."""

from __future__ import annotations

import pytest

from migrator.units import format_bytes, format_duration, parse_time


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0ms"), (0.0421, "42ms"), (2.304, "2.3s"), (59.94, "59.9s"), (250, "4m10s"), (3720, "1h2m"), (-1, "0ms")],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("size", "text"), [(None, "-"), (512, "512B"), (1536, "1.5KiB"), (48 * 1024**2, "48.0MiB")])
def test_sizes(size: int | None, text: str) -> None:
    assert format_bytes(size) == text


def test_times() -> None:
    assert parse_time("2026-11-26T10:00:00.500Z").microsecond == 500000
    assert parse_time(None) is None and parse_time("not a time") is None
