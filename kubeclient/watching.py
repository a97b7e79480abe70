"""List-then-watch, resumed forever: the one place that knows about 410 Gone.

A watch from a resourceVersion the API server has compacted away fails with 410 Gone
(as an ``ApiException`` or as an ERROR event carrying a Status with code 410). The only
correct answer is to list again and watch from the fresh list's resourceVersion; callers
see that as a new ``SYNC`` snapshot, so level-triggered code just reconciles everything
it is shown. Connection drops and watch timeouts resume from the last seen version.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 30.0

EventType = Literal["SYNC", "SYNCED", "ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True, kw_only=True)
class Event:
    type: EventType
    object: Any  # a kubernetes_asyncio model, or a dict for custom objects


def _is_gone(raw: dict[str, Any]) -> bool:
    obj = raw.get("object") or raw.get("raw_object") or {}
    code = obj.get("code") if isinstance(obj, dict) else getattr(obj, "code", None)
    return raw.get("type") == "ERROR" and code == 410


def _resource_version(obj: Any) -> str | None:
    if isinstance(obj, dict):
        return (obj.get("metadata") or {}).get("resourceVersion")
    meta = getattr(obj, "metadata", None)
    return getattr(meta, "resource_version", None)


async def _list(list_fn: Callable[..., Awaitable[Any]], /, *, raw: bool, **kwargs: Any) -> Any:
    """One list call: a model, or with ``raw`` the response's JSON (``_preload_content=False`` skips the models)."""
    if not raw:
        return await list_fn(**kwargs)
    response = await list_fn(_preload_content=False, **kwargs)
    try:
        return json.loads(await response.read())
    finally:
        response.release()


async def list_and_watch(
    list_fn: Callable[..., Awaitable[Any]],
    /,
    *,
    retry_delay: float = 1.0,
    timeout_seconds: int = 300,
    raw: bool = False,
    **kwargs: Any,
) -> AsyncIterator[Event]:
    """Yield a SYNC event per object of a fresh list and one SYNCED, then the watch's events, forever.

    ``list_fn`` is a kubernetes_asyncio list method (e.g. ``CoreV1Api.list_pod_for_all_namespaces``)
    and ``kwargs`` its selectors. After any 410 a new list follows, again as SYNC events ending
    with SYNCED: callers that keep state drop whatever that snapshot did not contain.

    ``raw``: objects as the JSON the API server sent (dicts), never built into kubernetes_asyncio
    models. For caches of many objects (``kubeclient.informing``): building a model of each of
    5,000 pods and turning it back into a dict costs seconds of CPU that nothing reads.
    """
    resource_version: str | None = None
    delay = retry_delay  # doubles with each failure in a row (up to MAX_RETRY_DELAY), back to retry_delay on success
    while True:
        if resource_version is None:
            try:
                listing = await _list(list_fn, raw=raw, **kwargs)
            except (TimeoutError, ApiException, OSError, aiohttp.ClientError) as exc:
                log.warning("list failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
                continue
            delay = retry_delay
            items = listing["items"] if isinstance(listing, dict) else listing.items
            for item in items:
                yield Event(type="SYNC", object=item)
            yield Event(type="SYNCED", object=None)
            meta = listing["metadata"] if isinstance(listing, dict) else listing.metadata
            resource_version = meta["resourceVersion"] if isinstance(meta, dict) else meta.resource_version
        stream = watch.Watch(return_type="object") if raw else watch.Watch()
        try:
            events = stream.stream(list_fn, resource_version=resource_version, timeout_seconds=timeout_seconds, **kwargs)
            async for event in events:
                if _is_gone(event):
                    resource_version = None  # compacted: re-list
                    break
                if event.get("type") == "ERROR":
                    log.warning("watch error event: %s", event.get("raw_object"))
                    resource_version = None
                    break
                obj = event["object"]
                delay = retry_delay
                resource_version = _resource_version(obj) or resource_version
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    yield Event(type=event["type"], object=obj)
        except ApiException as exc:
            if exc.status == 410:
                resource_version = None
            else:
                log.warning("watch failed (%s); resuming in %.1fs", exc.reason, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            # Every way a connection ends: timeouts, resets, the server closing it (ServerDisconnectedError),
            # a truncated chunk (ClientPayloadError). The watch resumes from the last resourceVersion seen.
            log.warning("watch connection lost (%r); resuming in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)
        finally:
            await stream.close()
