"""A migration's trace, derived from its status: resumable across control-service restarts.

Why not keep spans open while the migration runs: the control service may be restarted in the
middle, and an open span dies with its process. Instead the trace id and every phase's span id
are chosen up front and written to ``status`` (with the phase's start and end times), and
spans are *emitted* when a phase ends, with those ids and times. Whichever process finishes a
phase reports it, and the root span goes out last with the id its children already name as
parent. The agent continues the trace from the ``traceparent`` it is sent (the checkpoint
phase's span id), so its spans sit inside the checkpoint phase.
"""

from __future__ import annotations

import contextvars
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from telemetry.w3c import parse_traceparent, traceparent

__all__ = ["StoredIdGenerator", "emit_span", "flush", "new_span_id", "new_trace_id", "parse_traceparent", "traceparent"]

INSTRUMENTATION_NAME = "migrator"
_forced: contextvars.ContextVar[tuple[int | None, int | None]] = contextvars.ContextVar("forced_ids", default=(None, None))


class StoredIdGenerator(IdGenerator):
    """Random ids, except while ``forced_ids`` says which ids the next span must have."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        return _forced.get()[1] or self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        return _forced.get()[0] or self._random.generate_trace_id()


@contextmanager
def forced_ids(*, trace_id: int | None, span_id: int) -> Iterator[None]:
    token = _forced.set((trace_id, span_id))
    try:
        yield
    finally:
        _forced.reset(token)


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1e9)


def emit_span(
    *,
    name: str,
    trace_id: str,
    span_id: str,
    parent_span_id: str | None,
    start: datetime,
    end: datetime,
    attributes: Mapping[str, Any] | None = None,
    error: str | None = None,
    tracer: trace.Tracer | None = None,
) -> None:
    """Report a finished span with the ids and times recorded in status (``tracer``: default the global one)."""
    tracer = tracer or trace.get_tracer(INSTRUMENTATION_NAME)
    ctx = None
    if parent_span_id:
        parent = SpanContext(
            trace_id=int(trace_id, 16),
            span_id=int(parent_span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        ctx = trace.set_span_in_context(NonRecordingSpan(parent))
    with forced_ids(trace_id=None if parent_span_id else int(trace_id, 16), span_id=int(span_id, 16)):
        span = tracer.start_span(
            name, context=ctx, kind=SpanKind.INTERNAL, start_time=_ns(start), attributes=dict(attributes or {})
        )
    if error:
        span.set_status(Status(StatusCode.ERROR, error))
        span.add_event("exception", {"exception.message": error})
    span.end(end_time=_ns(max(end, start)))


_flushing = threading.Lock()


def flush(*, wait: bool = False) -> None:
    """Have the exporter send the spans it holds now; without ``wait``, in a thread of its own.

    Why not wait: ``force_flush`` blocks until the collector answers or the exporter's retries give
    up (seconds when the collector is down), and the reconcilers call this on the event loop, where
    a block that long misses Lease renewals (the replica loses leadership and exits) and admission
    deadlines (the API server fails the webhook call). So a finished object's spans leave at once
    when the collector is up, and nothing waits for them when it is not; one flush in flight is
    enough. ``wait`` is for the end of the process.
    """
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if not force_flush:
        return
    if wait:
        force_flush()
        return
    if not _flushing.acquire(blocking=False):
        return

    def run() -> None:
        try:
            force_flush()
        finally:
            _flushing.release()

    threading.Thread(target=run, name="span-flush", daemon=True).start()
