"""An event that arrives while an object is being reconciled is never lost."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from migrator.dispatching import Dispatcher, Key


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
            dispatcher.notify(("ns", "name"))
        return None  # "done" as far as this pass could tell

    dispatcher = Dispatcher(fetch=fetch, reconcile=reconcile)
    dispatcher.notify(("ns", "name"))
    for _ in range(50):
        if passes == ["1", "2"] and dispatcher.active() == 0:
            break
        await asyncio.sleep(0.01)
    assert passes == ["1", "2"]
    await dispatcher.stop()
