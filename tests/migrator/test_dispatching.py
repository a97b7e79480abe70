"""One worker per object; an event that arrives while an object is being reconciled is never lost;
failures back off exponentially (capped), events cut waits short, and finished objects are forgotten."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from migrator.dispatching import Dispatcher, Key

KEY: Key = ("ns", "name")


async def until(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def forgotten(dispatcher: Dispatcher) -> bool:
    """Nothing is kept for objects whose worker has returned."""
    return not dispatcher._tasks and not dispatcher._pokes


async def test_a_notification_during_a_final_pass_causes_another_pass() -> None:
    passes: list[str] = []
    state = {"version": "1"}

    async def fetch(key: Key) -> Mapping[str, Any] | None:
        return dict(state)

    dispatcher: Dispatcher

    async def reconcile(obj: Mapping[str, Any]) -> float | None:
        passes.append(obj["version"])
        if obj["version"] == "1":
            state["version"] = "2"  # the world changes while we work, and a watch event says so
            dispatcher.notify(KEY)
        return None  # "done" as far as this pass could tell

    dispatcher = Dispatcher(fetch=fetch, reconcile=reconcile)
    dispatcher.notify(KEY)
    await until(lambda: passes == ["1", "2"] and dispatcher.active() == 0)
    assert passes == ["1", "2"]
    assert forgotten(dispatcher)
    await dispatcher.stop()


async def test_one_worker_per_object_and_a_burst_of_events_costs_one_more_pass() -> None:
    release = asyncio.Event()
    running, most, passes = 0, 0, 0

    async def fetch(key: Key) -> Mapping[str, Any] | None:
        return {"key": key}

    async def reconcile(obj: Mapping[str, Any]) -> float | None:
        nonlocal running, most, passes
        passes += 1
        running += 1
        most = max(most, running)
        try:
            await release.wait()
        finally:
            running -= 1
        return None

    dispatcher = Dispatcher(fetch=fetch, reconcile=reconcile)
    dispatcher.notify(KEY)
    dispatcher.notify(("ns", "other"))
    await until(lambda: passes == 2)
    for _ in range(5):
        dispatcher.notify(KEY)
    assert dispatcher.active() == 2
    release.set()
    await until(lambda: dispatcher.active() == 0)
    assert (passes, most) == (3, 2), "the burst for KEY cost one more pass; never two passes of one object at once"
    assert forgotten(dispatcher)


async def test_a_notification_right_after_the_worker_returned_starts_a_new_worker() -> None:
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    running, most, passes = 0, 0, 0

    async def fetch(key: Key) -> Mapping[str, Any] | None:
        return {}

    dispatcher: Dispatcher

    async def reconcile(obj: Mapping[str, Any]) -> float | None:
        nonlocal running, most, passes
        passes += 1
        running += 1
        most = max(most, running)
        try:
            if passes == 1:
                # Runs once this worker has returned, before anything its ending scheduled (done callbacks).
                loop.call_soon(dispatcher.notify, KEY)
                return None
            await release.wait()
            return None
        finally:
            running -= 1

    dispatcher = Dispatcher(fetch=fetch, reconcile=reconcile)
    dispatcher.notify(KEY)
    await until(lambda: passes == 2)
    assert dispatcher.active() == 1, "the new worker is known..."
    dispatcher.notify(KEY)  # ...so this is a poke for it, not a second worker
    await asyncio.sleep(0.02)
    assert (passes, most) == (2, 1)
    release.set()
    await until(lambda: dispatcher.active() == 0)
    assert (passes, most) == (3, 1), "the poke during pass 2 caused pass 3"
    assert forgotten(dispatcher)

    dispatcher.notify(KEY)  # and long after, an event starts a worker again
    await until(lambda: passes == 4 and dispatcher.active() == 0)
    assert forgotten(dispatcher)


async def test_a_deleted_object_ends_its_worker_unless_an_event_came_meanwhile() -> None:
    exists = [False]
    fetched, reconciled = 0, 0
    dispatcher: Dispatcher

    async def fetch(key: Key) -> Mapping[str, Any] | None:
        nonlocal fetched
        fetched += 1
        if fetched == 1:
            exists[0] = True  # re-created while we were reading it as gone, and the watch says so
            dispatcher.notify(KEY)
            return None
        return {} if exists[0] else None

    async def reconcile(obj: Mapping[str, Any]) -> float | None:
        nonlocal reconciled
        reconciled += 1
        return None

    dispatcher = Dispatcher(fetch=fetch, reconcile=reconcile)
    dispatcher.notify(KEY)
    await until(lambda: dispatcher.active() == 0)
    assert (fetched, reconciled) == (2, 1)
    assert forgotten(dispatcher)


async def test_a_requeue_is_a_timed_look_that_an_event_cuts_short() -> None:
    loop = asyncio.get_running_loop()
    looks: list[float] = []

    async def fetch(key: Key) -> Mapping[str, Any] | None:
        return {}

    async def reconcile(obj: Mapping[str, Any]) -> float | None:
        looks.append(loop.time())
        return {1: 0.05, 2: 3600.0}.get(len(looks))

    dispatcher = Dispatcher(fetch=fetch, reconcile=reconcile)
    dispatcher.notify(KEY)
    await until(lambda: len(looks) == 2)
    assert looks[1] - looks[0] >= 0.045, "requeued after its delay"
    dispatcher.notify(KEY)  # instead of an hour
    await until(lambda: len(looks) == 3 and dispatcher.active() == 0, timeout=2)
    assert forgotten(dispatcher)


def backoffs(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [float(r.args[2]) for r in caplog.records if r.name == "migrator.dispatching" and r.args]  # type: ignore[index]


async def test_failures_back_off_exponentially_up_to_the_cap_and_success_resets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="migrator.dispatching")
    loop = asyncio.get_running_loop()
    script = ["fail", "fail", "fail", "fail", "fail", 0.001, "fail", "fail", None]
    attempts: list[float] = []

    async def fetch(key: Key) -> Mapping[str, Any] | None:
        return {}

    async def reconcile(obj: Mapping[str, Any]) -> float | None:
        attempts.append(loop.time())
        step = script[len(attempts) - 1]
        if step == "fail":
            raise RuntimeError("the API server said no")
        return step  # type: ignore[return-value]

    dispatcher = Dispatcher(fetch=fetch, reconcile=reconcile, initial_backoff=0.01, max_backoff=0.04)
    dispatcher.notify(KEY)
    await until(lambda: len(attempts) == len(script) and dispatcher.active() == 0)
    assert backoffs(caplog) == pytest.approx([0.01, 0.02, 0.04, 0.04, 0.04, 0.01, 0.02])
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    for gap, expected in zip(gaps, [0.01, 0.02, 0.04, 0.04, 0.04], strict=False):
        assert gap >= expected * 0.9, (gaps, "the worker really waited")
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records)
    assert forgotten(dispatcher)


async def test_an_event_cuts_a_back_off_short_without_resetting_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="migrator.dispatching")
    attempts = 0

    async def fetch(key: Key) -> Mapping[str, Any] | None:
        return {}

    async def reconcile(obj: Mapping[str, Any]) -> float | None:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            raise RuntimeError("not yet")
        return None

    dispatcher = Dispatcher(fetch=fetch, reconcile=reconcile, initial_backoff=3600.0, max_backoff=7200.0)
    dispatcher.notify(KEY)
    await until(lambda: attempts == 1)
    dispatcher.notify(KEY)  # instead of an hour
    await until(lambda: attempts == 2, timeout=2)
    await until(lambda: len(backoffs(caplog)) == 2)
    assert backoffs(caplog) == [3600.0, 7200.0], "the next failure still backs off further"
    dispatcher.notify(KEY)
    await until(lambda: attempts == 3 and dispatcher.active() == 0, timeout=2)
    assert forgotten(dispatcher)


async def test_stop_cancels_workers_without_retrying_and_forgets_them() -> None:
    started = asyncio.Event()
    cancelled: list[Key] = []

    async def fetch(key: Key) -> Mapping[str, Any] | None:
        return {"key": key}

    async def reconcile(obj: Mapping[str, Any]) -> float | None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(obj["key"])
            raise
        return None

    dispatcher = Dispatcher(fetch=fetch, reconcile=reconcile)
    dispatcher.notify(KEY)
    await started.wait()
    dispatcher.notify(("ns", "not-started-yet"))  # cancelled before its first step
    assert dispatcher.active() == 2
    await dispatcher.stop()  # directly: the second worker must not get to run first
    assert cancelled == [KEY]
    assert dispatcher.active() == 0
    assert forgotten(dispatcher)
