"""W3C trace context headers: the one place that spells ``traceparent``."""

from __future__ import annotations


def traceparent(*, trace_id: str, span_id: str) -> str:
    """The W3C header that makes a callee's spans children of ``span_id``."""
    return f"00-{trace_id}-{span_id}-01"


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, span id) of a W3C traceparent header, or None if it is not one."""
    parts = (value or "").strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None
    return (parts[1], parts[2]) if int(parts[1], 16) and int(parts[2], 16) else None
