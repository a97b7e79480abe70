"""The cluster's pods and nodes in memory, kept current by one watch each: what placement reads.

Why: choosing a node for a pod (a migration's target, a PodRestore's, a warm start's, a drain's
plan) needs every node and the pods on each. Read through the API, that is a list of every pod
in the cluster per decision: at 5,000 pods, megabytes of JSON and seconds of the control
service's CPU for each migrated pod, and more the larger the cluster. An informer lists once,
then follows a watch (``kubeclient.watching.list_and_watch``: 410 Gone and dropped connections
are handled there), so a decision costs no request at all and the same CPU in a cluster of any
size. This is client-go's informer and controller-runtime's cached client, in the few lines this
service needs.

What it gives up, and where that is fine: the cache trails the API server by the watch's delay
(milliseconds). The scheduler decides from such a cache too; the kubelet's admission is the last
word on fit. Decisions that must see the latest state (does this pod still exist, with this UID?)
read it directly (``kubeclient.reading``), as controller-runtime's uncached reader does.

Objects are kept as the API server's JSON (camelCase dicts, as ``kubeclient.reading.plain``
gives) without ``metadata.managedFields``, which no reader here looks at and which is often the
largest part of a pod. They are shared, not copied: readers must not change them.

``PodsAndNodes`` is what readers ask for; ``Informers`` answers from the caches and
``Listing`` through the API (one-shot tools, tests, and a service whose caches are off).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from kubernetes_asyncio import client

from kubeclient.reading import plain
from kubeclient.watching import list_and_watch

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace or "", name)
Obj = dict[str, Any]
P = TypeVar("P", bound=Mapping[str, Any])


def _key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


def slim(obj: Obj) -> Obj:
    """The object without ``metadata.managedFields`` (server-side apply's bookkeeping)."""
    obj.get("metadata", {}).pop("managedFields", None)
    return obj


def node_of(pod: Mapping[str, Any]) -> str | None:
    """The node a pod is bound to (the pods' index)."""
    return (pod.get("spec") or {}).get("nodeName") or None


def group_by_node(pods: Iterable[P]) -> dict[str, list[P]]:
    """Bound pods by their node, from a list (what the pods' cache keeps as its index)."""
    by_node: dict[str, list[P]] = {}
    for pod in pods:
        if node := node_of(pod):
            by_node.setdefault(node, []).append(pod)
    return by_node


class Informer:
    """One kind's objects, listed once and then followed by a watch, with an optional index.

    ``run()`` keeps it current until cancelled. Readers wait for the first list (``synced``),
    then read without a request. A re-list (after 410 Gone) is built beside the current store
    and replaces it whole when complete, so a reader never sees half a list.
    """

    def __init__(
        self,
        list_fn: Callable[..., Awaitable[Any]],
        *,
        resource: str,
        index: Callable[[Obj], str | None] | None = None,
        **selectors: Any,
    ) -> None:
        self.resource = resource
        self._list_fn = list_fn
        self._selectors = selectors
        self._index_of = index
        self._store: dict[Key, Obj] = {}
        self._index: dict[str, dict[Key, Obj]] = {}
        self._synced = asyncio.Event()

    def __len__(self) -> int:
        return len(self._store)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def run(self) -> None:
        """Follow the kind until cancelled."""
        snapshot: dict[Key, Obj] | None = None
        async for event in list_and_watch(self._list_fn, raw=True, **self._selectors):
            if event.type == "SYNC":
                if snapshot is None:
                    snapshot = {}
                obj = slim(event.object)
                snapshot[_key(obj)] = obj
            elif event.type == "SYNCED":
                self._replace(snapshot or {})
                snapshot = None
                self._synced.set()
                # The cache's many small, long-lived objects out of the cyclic collector's way: without this,
                # every full collection walks all of them (~50 ms at 5,000 pods), which a drain pays several
                # times over in a large cluster. They are still freed by reference counting when replaced.
                gc.freeze()
            elif event.type == "DELETED":
                self._remove(_key(event.object))
            else:  # ADDED, MODIFIED
                self._put(slim(event.object))

    def _replace(self, objects: dict[Key, Obj]) -> None:
        self._store = objects
        self._index = {}
        if self._index_of is not None:
            for key, obj in objects.items():
                if (value := self._index_of(obj)) is not None:
                    self._index.setdefault(value, {})[key] = obj
        log.info("%s cached: %d", self.resource, len(objects))

    def _put(self, obj: Obj) -> None:
        key = _key(obj)
        self._remove(key)
        self._store[key] = obj
        if self._index_of is not None and (value := self._index_of(obj)) is not None:
            self._index.setdefault(value, {})[key] = obj

    def _remove(self, key: Key) -> None:
        old = self._store.pop(key, None)
        if old is None or self._index_of is None:
            return
        value = self._index_of(old)
        bucket = self._index.get(value) if value is not None else None
        if bucket is not None:
            bucket.pop(key, None)
            if not bucket:
                del self._index[value]  # type: ignore[arg-type]

    def items(self, *, namespace: str | None = None) -> list[Obj]:
        if namespace is None:
            return list(self._store.values())
        return [obj for (ns, _), obj in self._store.items() if ns == namespace]

    def indexed(self, value: str) -> list[Obj]:
        return list((self._index.get(value) or {}).values())

    def by_index(self) -> Mapping[str, Sequence[Obj]]:
        """Every index value's objects, read when asked for: no pass over the whole store to group them."""
        return _Grouped(dict(self._index))

    def by_key(self) -> Mapping[Key, Obj]:
        """(namespace, name) -> object, read-only, as the store is now."""
        return MappingProxyType(self._store)


class _Grouped(Mapping[str, Sequence[Obj]]):
    def __init__(self, index: dict[str, dict[Key, Obj]]) -> None:
        self._index = index

    def __getitem__(self, value: str) -> Sequence[Obj]:
        return list(self._index[value].values())

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


class NotSynced(RuntimeError):
    """A cache has not listed its kind yet (at start, or while the API server refuses the list): ask again later."""


class PodsAndNodes(Protocol):
    """The cluster's nodes and pods (plain dicts, read-only) for decisions that may trail by a watch's delay."""

    async def nodes(self) -> list[Obj]: ...

    async def pods(self, *, node: str | None = None, namespace: str | None = None) -> list[Obj]: ...

    async def pods_by_node(self) -> tuple[Mapping[str, Sequence[Obj]], Mapping[Key, Obj]]:
        """Every bound pod grouped by node, and every pod by (namespace, name): what a drain pass judges with."""
        ...


class Informers:
    """Every pod and node of the cluster in memory (``PodsAndNodes`` from caches).

    A reader waits for the first list at most ``sync_wait`` seconds, then gets ``NotSynced``: a
    reconcile pass is retried with its backoff, and the restore webhook (5 s to answer) lets the pod
    start cold, rather than either waiting without end on a list the API server keeps refusing.
    """

    def __init__(self, core: client.CoreV1Api, *, sync_wait: float = 2.0) -> None:
        self.pods_cache = Informer(core.list_pod_for_all_namespaces, resource="pods", index=node_of)
        self.nodes_cache = Informer(core.list_node, resource="nodes")
        self._sync_wait = sync_wait

    async def _synced(self, cache: Informer) -> None:
        try:
            await asyncio.wait_for(cache.wait_synced(), self._sync_wait)
        except TimeoutError:
            raise NotSynced(f"the control service's {cache.resource} cache has not listed them yet") from None

    @property
    def caches(self) -> Iterable[Informer]:
        return (self.pods_cache, self.nodes_cache)

    async def run(self) -> None:
        """Keep both caches current until cancelled."""
        await asyncio.gather(*(cache.run() for cache in self.caches))

    async def nodes(self) -> list[Obj]:
        await self._synced(self.nodes_cache)
        return self.nodes_cache.items()

    async def pods(self, *, node: str | None = None, namespace: str | None = None) -> list[Obj]:
        await self._synced(self.pods_cache)
        if node is not None:
            found = self.pods_cache.indexed(node)
            return found if namespace is None else [p for p in found if p["metadata"].get("namespace") == namespace]
        return self.pods_cache.items(namespace=namespace)

    async def pods_by_node(self) -> tuple[Mapping[str, Sequence[Obj]], Mapping[Key, Obj]]:
        await self._synced(self.pods_cache)
        return self.pods_cache.by_index(), self.pods_cache.by_key()


class Listing:
    """``PodsAndNodes`` read through the API on every call: no cache to keep, a list per question."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self._core = core

    async def nodes(self) -> list[Obj]:
        return [plain(n) for n in (await self._core.list_node()).items]

    async def pods(self, *, node: str | None = None, namespace: str | None = None) -> list[Obj]:
        selector = {"field_selector": f"spec.nodeName={node}"} if node is not None else {}
        if namespace is not None:
            listing = await self._core.list_namespaced_pod(namespace, **selector)
        else:
            listing = await self._core.list_pod_for_all_namespaces(**selector)
        return [plain(p) for p in listing.items]

    async def pods_by_node(self) -> tuple[Mapping[str, Sequence[Obj]], Mapping[Key, Obj]]:
        pods = await self.pods()
        return group_by_node(pods), {_key(pod): pod for pod in pods}
