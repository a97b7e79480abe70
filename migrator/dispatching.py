"""From watch events to reconcile calls: one worker per object, never two at once.

Events only say "look at this object again"; the worker always re-reads the object before it
reconciles (level-triggered), so a burst of events costs one pass, and a requeue (a step that
waits for the world) is just a timed look. A reconcile that raises is retried with capped
exponential back-off (tenacity's ``wait_exponential``), forever: the object's status says where
it stands, so retrying is always safe. An event cuts a requeue or a back-off short.

A worker exists only while there is something to do: when it has nothing left to look at, it
forgets its object (``_tasks``/``_pokes`` do not grow with every object ever seen), and the next
event for that object starts a new worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

log = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name


class Dispatcher:
    def __init__(
        self,
        *,
        fetch: Callable[[Key], Awaitable[Mapping[str, Any] | None]],
        reconcile: Callable[[Mapping[str, Any]], Awaitable[float | None]],
        max_backoff: float = 30.0,
        initial_backoff: float = 1.0,
    ) -> None:
        self._fetch = fetch
        self._reconcile = reconcile
        # initial_backoff, twice that, four times, ... up to max_backoff.
        self._backoff = wait_exponential(multiplier=initial_backoff, max=max_backoff)
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._pokes: dict[Key, asyncio.Event] = {}

    def notify(self, key: Key) -> None:
        task = self._tasks.get(key)
        # A worker unregisters itself in the same step in which it decides to return (no await in
        # between), so a registered worker that is not done will look at the object again. The
        # done() check covers a worker cancelled before it ever ran (stop() cleans those up).
        if task is not None and not task.done():
            self._pokes[key].set()
            return
        poke = asyncio.Event()
        self._pokes[key] = poke
        self._tasks[key] = asyncio.create_task(self._worker(key, poke), name=f"reconcile {key[0]}/{key[1]}")

    async def _worker(self, key: Key, poke: asyncio.Event) -> None:
        async def look_again_in(seconds: float) -> None:
            """A timed look (a requeue, a back-off), cut short by an event for the object."""
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poke.wait(), seconds)

        async def one_pass() -> float | None:
            poke.clear()
            obj = await self._fetch(key)
            return None if obj is None else await self._reconcile(obj)

        def log_failure(state: RetryCallState) -> None:
            delay = state.next_action.sleep if state.next_action else 0.0
            exc = state.outcome.exception() if state.outcome else None
            log.error("reconcile of %s/%s failed; retrying in %.0fs", *key, delay, exc_info=exc)

        # Each call starts at the first back-off: a pass that succeeds (requeue or not) resets it.
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception),  # not CancelledError: stop() ends the worker
            wait=self._backoff,
            sleep=look_again_in,
            before_sleep=log_failure,
        )
        try:
            while True:
                delay = await retrying(one_pass)
                if delay is None:
                    # Done (or the object is gone), as far as this pass could tell. An event that
                    # arrived while we worked may need another look (e.g. a deletion, a re-creation).
                    if poke.is_set():
                        continue
                    return
                await look_again_in(delay)
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]
                del self._pokes[key]

    def active(self) -> int:
        """Objects being reconciled now (a worker is running for them)."""
        return sum(1 for task in self._tasks.values() if not task.done())

    async def stop(self) -> None:
        stopping = dict(self._tasks)
        for task in stopping.values():
            task.cancel()
        await asyncio.gather(*stopping.values(), return_exceptions=True)
        for key, task in stopping.items():  # workers cancelled before they ran never unregistered
            if self._tasks.get(key) is task:
                del self._tasks[key]
                del self._pokes[key]
