"""How durations, sizes and times are spelled to people, everywhere (CLI tables, timelines, reports)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

NONE: Final = "-"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def format_duration(seconds: float | None) -> str:
    """A measured duration: ``850ms``, ``2.3s``, ``4m10s``, ``1h2m``."""
    if seconds is None:
        return NONE
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60}s"
    return f"{whole // 3600}h{whole % 3600 // 60}m"


def format_bytes(count: int | None) -> str:
    if count is None:
        return NONE
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def now() -> datetime:
    return datetime.now(UTC)


def iso(when: datetime) -> str:
    """How status timestamps are written: UTC, milliseconds, ``Z``."""
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def status_time(text: str) -> datetime:
    """A timestamp status recorded with ``iso`` (strict: status is ours, a bad one is a bug)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
