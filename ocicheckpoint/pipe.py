"""Bytes handed between a worker thread and a coroutine, a bounded number of chunks at a time.

Why: a checkpoint archive is read, hashed and encrypted in a thread (those are blocking calls
that release the GIL, so they run beside the event loop on another core), while the event
loop uploads what comes out. The two run at the same time, so reading the archive and pushing
it cost one pass instead of two. The bound (``max_chunks`` of ``image.CHUNK`` each) keeps the
agent's memory flat whatever the archive's size: a slow registry makes the reader wait, it never
makes the agent buffer the archive.

``Pipe`` carries bytes from a thread to a coroutine (an upload reads what a thread produced);
``ThreadReader`` the other way, as a file object a thread reads (a pull's download unpacked by
``tarfile`` in a thread as it arrives, ``registry.RegistryClient.read_layer``).

Either end may stop: the writer ``close``s (with the error that stopped it, if any, which the
reader then raises), the reader ``abandon``s (an upload that failed or was cancelled), after
which the writer's next ``put`` raises ``PipeAbandoned`` so its thread ends instead of waiting
forever for room.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

DEFAULT_MAX_CHUNKS: Final = 8
_WAIT_SLICE_S: Final = 0.2  # how often a blocked writer looks whether the reader gave up


class PipeAbandoned(RuntimeError):
    """The reading side is gone: stop producing."""


class _End:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class Pipe:
    def __init__(self, *, loop: asyncio.AbstractEventLoop, max_chunks: int = DEFAULT_MAX_CHUNKS) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | _End] = asyncio.Queue()
        self._room = threading.Semaphore(max_chunks)
        self._abandoned = threading.Event()
        self._closed = False

    # --- the writer's side (a worker thread) ------------------------------------------------------
    def put(self, chunk: bytes) -> None:
        """Hand one chunk over; blocks while ``max_chunks`` are waiting to be read."""
        if not chunk:
            return
        while not self._room.acquire(timeout=_WAIT_SLICE_S):
            if self._abandoned.is_set():
                raise PipeAbandoned("the upload reading this stream stopped")
        if self._abandoned.is_set():
            raise PipeAbandoned("the upload reading this stream stopped")
        self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)

    def close(self, error: BaseException | None = None) -> None:
        """No more chunks: the reader ends (raising ``error`` if given) once it has read the rest."""
        if self._closed:
            return
        self._closed = True
        self._loop.call_soon_threadsafe(self._queue.put_nowait, _End(error))

    # --- the reader's side (the event loop) -------------------------------------------------------
    def abandon(self) -> None:
        """The reader stops: a writer blocked in ``put`` (or its next ``put``) raises ``PipeAbandoned``."""
        self._abandoned.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                self._room.release()
                yield item
        finally:
            self._abandoned.set()  # ended, failed or cancelled: a writer still putting stops too


class ThreadReader:
    """Bytes from a coroutine (``put``, ``close``) to a worker thread's ``read``, like a file.

    ``read(n)`` blocks until it has ``n`` bytes or the writer closed; a writer's error is raised
    by the ``read`` that reaches it. ``abandon`` (the thread gave up: the archive was refused)
    makes the writer's next ``put`` raise ``PipeAbandoned``.
    """

    def __init__(self, *, loop: asyncio.AbstractEventLoop, max_chunks: int = DEFAULT_MAX_CHUNKS) -> None:
        self._loop = loop
        self._chunks: queue.SimpleQueue[bytes | _End] = queue.SimpleQueue()
        self._room = asyncio.Semaphore(max_chunks)
        self._abandoned = threading.Event()
        self._buffer = b""
        self._offset = 0
        self._end: _End | None = None

    # --- the writer's side (the event loop) -------------------------------------------------------
    async def put(self, chunk: bytes) -> None:
        if self._abandoned.is_set():
            raise PipeAbandoned("the reader of this stream stopped")
        if chunk:
            await self._room.acquire()
            if self._abandoned.is_set():
                raise PipeAbandoned("the reader of this stream stopped")
            self._chunks.put(chunk)

    def close(self, error: BaseException | None = None) -> None:
        self._chunks.put(_End(error))

    # --- the reader's side (a worker thread) ------------------------------------------------------
    def abandon(self) -> None:
        self._abandoned.set()
        self._loop.call_soon_threadsafe(self._room.release)  # a writer waiting for room wakes, and stops

    def _next(self) -> bytes | None:
        if self._end is not None:
            return None
        item = self._chunks.get()
        if isinstance(item, _End):
            self._end = item
            if item.error is not None:
                raise item.error
            return None
        self._loop.call_soon_threadsafe(self._room.release)
        return item

    def read(self, n: int = -1) -> bytes:
        parts: list[bytes] = []
        have = 0
        while n < 0 or have < n:
            if self._offset >= len(self._buffer):
                chunk = self._next()
                if chunk is None:
                    break
                self._buffer, self._offset = chunk, 0
            take = len(self._buffer) - self._offset if n < 0 else min(n - have, len(self._buffer) - self._offset)
            if self._offset == 0 and take == len(self._buffer):
                parts.append(self._buffer)  # a whole chunk: no copy
            else:
                parts.append(self._buffer[self._offset : self._offset + take])
            self._offset += take
            have += take
        return parts[0] if len(parts) == 1 else b"".join(parts)


async def worker_error(workers: Sequence[asyncio.Future[Any]], *, failure: BaseException) -> BaseException | None:
    """Once ``failure`` ended a transfer: wait for its worker threads, and say which error to raise.

    A worker's own error (a refused archive, an unpacker's refusal: the first one in ``workers``
    order that has one) says more than the aborted transfer, so it is returned to be raised
    instead; None means raise ``failure`` itself: when no worker failed on its own, when a worker
    only stopped because the transfer did (``PipeAbandoned``, or ``failure`` passed on to it),
    and always for a cancellation, which must stay one. Every worker's outcome is read, so none
    is left unretrieved.
    """
    await asyncio.wait(workers)
    errors = [w.exception() for w in workers if not w.cancelled()]
    if not isinstance(failure, Exception):
        return None
    return next((e for e in errors if e is not None and not isinstance(e, PipeAbandoned) and e is not failure), None)


class Lanes:
    """Calls that run beside the caller's thread, one lane per worker, each lane's calls in the order given.

    Why: every byte of a layer goes through several hashes (and a cipher) that do not depend on each other,
    but each must see the chunks in order. ``hashlib``, ``hmac`` and OpenSSL's ciphers release the GIL on
    large buffers, so giving each hash its own thread lets one layer use several cores: on this project's
    2-core bench machine a layer is hashed and encrypted ~1.4x as fast as by one thread (bench/README.md).
    ``submit`` first waits for the lane's previous call, so a lane has at most one call in flight, in order,
    and memory stays one chunk per lane. A call's error is raised by the next ``submit`` to its lane, or by
    ``wait``. ``close`` (or leaving the ``with`` block) ends the workers; calls not yet run are dropped.
    """

    def __init__(self, count: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="lane")
        self._last: list[Future[Any] | None] = [None] * count

    def submit(self, lane: int, call: Callable[[bytes], object], chunk: bytes) -> None:
        previous, self._last[lane] = self._last[lane], None
        if previous is not None:
            previous.result()  # its error is raised once, here; this chunk is then not submitted
        self._last[lane] = self._pool.submit(call, chunk)

    def wait(self) -> None:
        """Every call submitted so far has run (raising the first error among them)."""
        pending, self._last = self._last, [None] * len(self._last)
        errors = [f.exception() for f in pending if f is not None]
        if first := next((e for e in errors if e is not None), None):
            raise first

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Lanes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
