"""list_and_watch (``kubeclient.watching``): every way a watch connection ends resumes it, with backoff."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kubeclient import watching


class Done(Exception):
    pass


def obj(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


async def test_a_server_disconnect_or_a_truncated_stream_resumes_the_watch_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    streams: list[list[Any]] = [
        [{"type": "ADDED", "object": obj("a", "11")}, aiohttp.ServerDisconnectedError()],
        [aiohttp.ClientPayloadError("truncated")],
        [OSError("reset")],
        [{"type": "MODIFIED", "object": obj("a", "12")}],
    ]
    resumed_from: list[str | None] = []
    sleeps: list[float] = []

    class FakeWatch:
        async def stream(self, fn: Any, *, resource_version: str | None = None, **_: Any) -> AsyncIterator[dict[str, Any]]:
            resumed_from.append(resource_version)
            if not streams:
                raise Done  # end the test's endless watch
            for item in streams.pop(0):
                if isinstance(item, BaseException):
                    raise item
                yield item

        async def close(self) -> None:
            pass

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def listing(**_: Any) -> dict[str, Any]:
        return {"items": [obj("a", "10")], "metadata": {"resourceVersion": "10"}}

    monkeypatch.setattr(watching.watch, "Watch", FakeWatch)
    monkeypatch.setattr(watching.asyncio, "sleep", sleep)
    events = []
    with pytest.raises(Done):
        async for event in watching.list_and_watch(listing, retry_delay=1.0):
            events.append((event.type, event.object and event.object["metadata"]["resourceVersion"]))
    assert events == [("SYNC", "10"), ("SYNCED", None), ("ADDED", "11"), ("MODIFIED", "12")]
    assert resumed_from[:4] == ["10", "11", "11", "11"], "resumed from the last version seen, no re-list"
    assert sleeps[:3] == [1.0, 2.0, 4.0], "backing off while the failures go on"


async def test_raw_lists_without_models_and_watches_plain_dicts(monkeypatch: pytest.MonkeyPatch) -> None:
    """``raw=True``: the list's JSON as sent (``_preload_content=False``) and a Watch that builds no models."""
    watches: list[str | None] = []

    class FakeWatch:
        def __init__(self, return_type: str | None = None) -> None:
            watches.append(return_type)

        async def stream(self, fn: Any, **_: Any) -> AsyncIterator[dict[str, Any]]:
            yield {"type": "DELETED", "object": obj("a", "11")}
            raise Done

        async def close(self) -> None:
            pass

    class Response:
        released = False

        async def read(self) -> bytes:
            return b'{"items": [{"metadata": {"name": "a", "resourceVersion": "10"}}], "metadata": {"resourceVersion": "10"}}'

        def release(self) -> None:
            Response.released = True

    calls: list[dict[str, Any]] = []

    async def listing(**kwargs: Any) -> Response:
        calls.append(kwargs)
        return Response()

    monkeypatch.setattr(watching.watch, "Watch", FakeWatch)
    events = []
    with pytest.raises(Done):
        async for event in watching.list_and_watch(listing, raw=True, label_selector="x"):
            events.append((event.type, event.object))
    assert calls == [{"_preload_content": False, "label_selector": "x"}]
    assert Response.released
    assert watches == ["object"], "the watch hands back the JSON objects, not models"
    assert events == [("SYNC", obj("a", "10")), ("SYNCED", None), ("DELETED", obj("a", "11"))]
