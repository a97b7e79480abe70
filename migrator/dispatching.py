"""From watch events to reconcile calls: one worker per object, never two at once.

Events only say "look at this object again"; the worker always re-reads the object before it
reconciles (level-triggered), so a burst of events costs one pass, and a requeue (a step that
waits for the world) is just a timed look. A reconcile that raises is retried with back-off,
capped, forever: the object's status says where it stands, so retrying is always safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name


class Dispatcher:
    def __init__(
        self,
        *,
        fetch: Callable[[Key], Awaitable[Mapping[str, Any] | None]],
        reconcile: Callable[[Mapping[str, Any]], Awaitable[float | None]],
        max_backoff: float = 30.0,
    ) -> None:
        self._fetch = fetch
        self._reconcile = reconcile
        self._max_backoff = max_backoff
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._pokes: dict[Key, asyncio.Event] = {}

    def notify(self, key: Key) -> None:
        task = self._tasks.get(key)
        if task is not None and not task.done():
            self._pokes[key].set()
            return
        self._pokes[key] = asyncio.Event()
        self._tasks[key] = asyncio.create_task(self._worker(key), name=f"reconcile {key[0]}/{key[1]}")

    async def _worker(self, key: Key) -> None:
        backoff = 1.0
        poke = self._pokes[key]
        while True:
            poke.clear()
            try:
                obj = await self._fetch(key)
                if obj is None:
                    return
                delay = await self._reconcile(obj)
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile of %s/%s failed; retrying in %.0fs", *key, backoff)
                delay, backoff = backoff, min(backoff * 2, self._max_backoff)
            if delay is None:
                if poke.is_set():
                    continue  # an event arrived while we worked: it may need another look (e.g. a deletion)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poke.wait(), delay)

    def active(self) -> int:
        """Objects being reconciled now (a worker is running for them)."""
        return sum(1 for task in self._tasks.values() if not task.done())

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
