"""Reading one object: absence is an answer, not an error.

Reconcilers constantly ask "does this pod (node, migration) exist, and what does it say?".
The API answers absence with 404; everything else that fails is a real error for the caller's
retry. Objects come back as plain dicts (the JSON the API server sent, camelCase keys), so
code reads pods and custom objects alike and tests can hand it plain data.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from kubernetes_asyncio import client

T = TypeVar("T")

_SERIALIZER = client.ApiClient.__new__(client.ApiClient)  # sanitize_for_serialization needs no configuration


def plain(obj: Any) -> Any:
    """A kubernetes_asyncio model as the JSON the API server sent (dicts pass through unchanged)."""
    return _SERIALIZER.sanitize_for_serialization(obj)


async def read_or_none(call: Awaitable[T]) -> T | None:
    """Await a read; None if the object does not exist (404)."""
    try:
        return await call
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def read_plain(call: Awaitable[Any]) -> dict[str, Any] | None:
    """``read_or_none`` for typed reads (pods, nodes), as a plain dict."""
    obj = await read_or_none(call)
    return None if obj is None else plain(obj)
