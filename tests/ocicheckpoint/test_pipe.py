"""``ocicheckpoint.pipe``: bytes from a thread to a coroutine, in order, bounded, and stoppable from either end."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from ocicheckpoint.pipe import Lanes, Pipe, PipeAbandoned, ThreadReader, worker_error


async def test_chunks_arrive_in_order_and_the_writer_waits_for_room() -> None:
    pipe = Pipe(loop=asyncio.get_running_loop(), max_chunks=2)
    put = []

    def write() -> None:
        for i in range(10):
            pipe.put(bytes([i]))
            put.append(i)
        pipe.close()

    writer = asyncio.create_task(asyncio.to_thread(write))
    await asyncio.sleep(0.3)
    assert put == [0, 1], "two chunks fit; the third waits until one is read"
    got = [chunk async for chunk in pipe.chunks()]
    await writer
    assert got == [bytes([i]) for i in range(10)]


async def test_the_writers_error_is_raised_by_the_reader_after_what_came_before() -> None:
    pipe = Pipe(loop=asyncio.get_running_loop())

    def write() -> None:
        pipe.put(b"a")
        pipe.close(ValueError("not a checkpoint archive"))

    await asyncio.to_thread(write)
    got = []
    with pytest.raises(ValueError, match="not a checkpoint archive"):
        async for chunk in pipe.chunks():
            got.append(chunk)
    assert got == [b"a"]


async def test_a_reader_that_gives_up_releases_a_blocked_writer() -> None:
    pipe = Pipe(loop=asyncio.get_running_loop(), max_chunks=1)
    raised = threading.Event()

    def write() -> None:
        try:
            while True:
                pipe.put(b"x")
        except PipeAbandoned:
            raised.set()

    writer = asyncio.create_task(asyncio.to_thread(write))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    pipe.abandon()
    await asyncio.wait_for(writer, 5)
    assert raised.is_set() and time.monotonic() - started < 2


async def test_a_reader_that_stops_iterating_releases_the_writer_too() -> None:
    pipe = Pipe(loop=asyncio.get_running_loop(), max_chunks=1)

    def write() -> None:
        while True:
            pipe.put(b"x")

    writer = asyncio.create_task(asyncio.to_thread(write))
    chunks = pipe.chunks()
    assert await anext(chunks) == b"x"
    await chunks.aclose()  # e.g. the upload failed and its body was closed
    with pytest.raises(PipeAbandoned):
        await asyncio.wait_for(writer, 5)


async def test_a_thread_reads_what_a_coroutine_put_as_a_file() -> None:
    reader = ThreadReader(loop=asyncio.get_running_loop(), max_chunks=2)
    data = os.urandom(5 * 1000 + 3)

    def read() -> list[bytes]:
        return [reader.read(777) for _ in range(8)] + [reader.read()]

    got = asyncio.create_task(asyncio.to_thread(read))
    for i in range(0, len(data), 1000):
        await reader.put(data[i : i + 1000])
    reader.close()
    parts = await got
    assert b"".join(parts) == data
    assert [len(p) for p in parts[:6]] == [777] * 6, "a read gives what it asked for until the end"


async def test_a_writers_error_reaches_the_thread_and_a_thread_that_gives_up_stops_the_writer() -> None:
    reader = ThreadReader(loop=asyncio.get_running_loop(), max_chunks=1)
    await reader.put(b"ab")
    reader.close(ConnectionResetError("the registry closed the connection"))
    assert await asyncio.to_thread(reader.read, 2) == b"ab"
    with pytest.raises(ConnectionResetError):
        await asyncio.to_thread(reader.read, 1)

    other = ThreadReader(loop=asyncio.get_running_loop(), max_chunks=1)
    other.abandon()
    with pytest.raises(PipeAbandoned):
        await other.put(b"x")


async def test_a_workers_own_error_is_raised_instead_of_the_transfers_but_never_instead_of_a_cancellation() -> None:
    async def failing(error: BaseException) -> None:
        raise error

    refused = ValueError("device node in the layer")
    echo = PipeAbandoned("the reader of this stream stopped")
    aborted = ConnectionResetError("the registry closed the connection")

    workers = [asyncio.ensure_future(failing(echo)), asyncio.ensure_future(failing(refused))]
    assert await worker_error(workers, failure=aborted) is refused, "the echo of the abort says nothing"
    workers = [asyncio.ensure_future(failing(aborted)), asyncio.ensure_future(asyncio.sleep(0))]
    assert await worker_error(workers, failure=aborted) is None, "the failure passed on to a worker is the failure"
    workers = [asyncio.ensure_future(failing(refused))]
    assert await worker_error(workers, failure=asyncio.CancelledError()) is None, "a cancellation stays one"


def test_lanes_run_each_lanes_calls_in_order_beside_the_caller() -> None:
    seen: dict[int, list[bytes]] = {0: [], 1: []}
    threads: set[str] = set()

    def record(lane: int):
        def call(chunk: bytes) -> None:
            time.sleep(0.001 * (chunk[0] % 3))  # uneven work: order must not depend on timing
            threads.add(threading.current_thread().name)
            seen[lane].append(chunk)

        return call

    with Lanes(2) as lanes:
        for i in range(30):
            lanes.submit(0, record(0), bytes([i]))
            lanes.submit(1, record(1), bytes([i]))
        lanes.wait()
    assert seen[0] == seen[1] == [bytes([i]) for i in range(30)]
    assert threading.current_thread().name not in threads, "the calls ran in the lanes' threads"


def test_a_lanes_error_comes_back_at_its_next_submit_or_at_wait() -> None:
    def fail(chunk: bytes) -> None:
        raise ValueError(f"refused {chunk!r}")

    lanes = Lanes(2)
    lanes.submit(0, fail, b"a")
    with pytest.raises(ValueError, match="refused b'a'"):
        lanes.submit(0, fail, b"b")
    lanes.submit(1, fail, b"c")
    with pytest.raises(ValueError, match="refused b'c'"):
        lanes.wait()
    lanes.wait()  # nothing pending any more
    lanes.close()
    with pytest.raises(RuntimeError):
        lanes.submit(0, fail, b"d")  # closed: no new work
