"""Informers (``kubeclient.informing``): a list, then a watch, kept in memory with the pods' node index."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kubeclient import informing
from kubeclient.watching import Event


def pod(name: str, node: str | None, *, namespace: str = "ns", version: str = "1") -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "resourceVersion": version, "managedFields": [{"manager": "kubectl"}]}
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}}


def feed(monkeypatch: pytest.MonkeyPatch, events: list[Event], selectors: list[dict[str, Any]]) -> asyncio.Event:
    """Replace list_and_watch with ``events``, then hang (as a watch with nothing new does); set when all were given."""
    drained = asyncio.Event()

    async def fake(list_fn: Any, /, **kwargs: Any) -> AsyncIterator[Event]:
        selectors.append(kwargs)
        for event in events:
            yield event
        drained.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(informing, "list_and_watch", fake)
    return drained


class Core:
    """What Informers reads from CoreV1Api: its two list methods, named so the fake list_and_watch tells them apart."""

    list_node = "nodes"
    list_pod_for_all_namespaces = "pods"


def serve(
    monkeypatch: pytest.MonkeyPatch,
    listings: dict[str, list[dict[str, Any]]],
    *,
    gate: asyncio.Event | None = None,
    lists: list[Any] | None = None,
    sync_wait: float = 2.0,
) -> informing.Informers:
    """Informers over a fake list_and_watch: each kind's list (after ``gate``), then a watch with nothing new."""

    async def fake(list_fn: Any, /, **kwargs: Any) -> AsyncIterator[Event]:
        if lists is not None:
            lists.append(list_fn)
        if gate is not None:
            await gate.wait()
        for obj in listings.get(list_fn, []):
            yield Event(type="SYNC", object=obj)
        yield Event(type="SYNCED", object=None)
        await asyncio.Event().wait()

    monkeypatch.setattr(informing, "list_and_watch", fake)
    return informing.Informers(Core(), sync_wait=sync_wait)  # type: ignore[arg-type]


async def run_until(drained: asyncio.Event, informer: informing.Informer) -> asyncio.Task[None]:
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(drained.wait(), 5)
    return task


async def test_an_informer_follows_the_watch_and_indexes_pods_by_node(monkeypatch: pytest.MonkeyPatch) -> None:
    selectors: list[dict[str, Any]] = []
    drained = feed(
        monkeypatch,
        [
            Event(type="SYNC", object=pod("a", "node-1")),
            Event(type="SYNC", object=pod("b", None)),
            Event(type="SYNCED", object=None),
            Event(type="MODIFIED", object=pod("b", "node-2", version="2")),  # bound by the scheduler
            Event(type="ADDED", object=pod("c", "node-1", namespace="other")),
            Event(type="DELETED", object=pod("a", "node-1")),
        ],
        selectors,
    )
    informer = informing.Informer(object(), resource="pods", index=informing.node_of)  # type: ignore[arg-type]
    assert not informer.synced
    task = await run_until(drained, informer)
    try:
        assert informer.synced and len(informer) == 2
        assert selectors == [{"raw": True}], "JSON as sent: no models built for thousands of pods"
        assert [p["metadata"]["name"] for p in informer.indexed("node-1")] == ["c"]
        assert [p["metadata"]["name"] for p in informer.indexed("node-2")] == ["b"]
        assert informer.indexed("node-3") == []
        assert informer.by_key()[("ns", "b")]["metadata"]["resourceVersion"] == "2"
        assert [p["metadata"]["name"] for p in informer.items(namespace="other")] == ["c"]
        assert all("managedFields" not in p["metadata"] for p in informer.items()), "kept slim"
    finally:
        task.cancel()


async def test_a_relist_replaces_the_store_whole_and_drops_what_it_did_not_contain(monkeypatch: pytest.MonkeyPatch) -> None:
    drained = feed(
        monkeypatch,
        [
            Event(type="SYNC", object=pod("a", "node-1")),
            Event(type="SYNC", object=pod("b", "node-1")),
            Event(type="SYNCED", object=None),
            # 410 Gone: list_and_watch lists again; "a" was deleted while the watch was away
            Event(type="SYNC", object=pod("b", "node-2", version="5")),
            Event(type="SYNCED", object=None),
        ],
        [],
    )
    informer = informing.Informer(object(), resource="pods", index=informing.node_of)  # type: ignore[arg-type]
    task = await run_until(drained, informer)
    try:
        assert [p["metadata"]["name"] for p in informer.items()] == ["b"]
        assert informer.indexed("node-1") == [] and len(informer.indexed("node-2")) == 1
    finally:
        task.cancel()


async def test_readers_wait_for_the_first_list_and_then_ask_nothing_of_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = asyncio.Event()
    lists: list[Any] = []
    informers = serve(monkeypatch, {"nodes": [pod("n1", "n1", namespace="")], "pods": [pod("p1", "n1")]}, gate=gate, lists=lists)
    task = asyncio.create_task(informers.run())
    try:
        reader = asyncio.create_task(informers.pods(node="n1"))
        await asyncio.sleep(0.01)
        assert not reader.done(), "no answer before the first list"
        gate.set()
        assert [p["metadata"]["name"] for p in await asyncio.wait_for(reader, 5)] == ["p1"]
        assert [n["metadata"]["name"] for n in await informers.nodes()] == ["n1"]
        assert await informers.pods(node="n1", namespace="elsewhere") == []
        assert sorted(lists) == ["nodes", "pods"], "one list each, then only the watches"
        assert {c.resource: len(c) for c in informers.caches} == {"pods": 1, "nodes": 1}
    finally:
        task.cancel()


async def test_listing_reads_through_the_api_with_the_node_as_a_field_selector() -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    class Listed:
        def __init__(self, items: list[Any]) -> None:
            self.items = items

    class Core:
        async def list_node(self) -> Listed:
            calls.append(("list_node", (), {}))
            return Listed([{"metadata": {"name": "n1"}}])

        async def list_pod_for_all_namespaces(self, **kwargs: Any) -> Listed:
            calls.append(("all", (), kwargs))
            return Listed([pod("a", "n1")])

        async def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Listed:
            calls.append(("ns", (namespace,), kwargs))
            return Listed([])

    listing = informing.Listing(Core())  # type: ignore[arg-type]
    assert (await listing.nodes())[0]["metadata"]["name"] == "n1"
    assert (await listing.pods(node="n1"))[0]["metadata"]["name"] == "a"
    assert await listing.pods(namespace="x", node="n1") == []
    assert calls[1:] == [
        ("all", (), {"field_selector": "spec.nodeName=n1"}),
        ("ns", ("x",), {"field_selector": "spec.nodeName=n1"}),
    ]


async def test_a_reader_gives_up_on_a_cache_that_never_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API server refusing the list: readers get NotSynced after sync_wait, never wait without end."""

    informers = serve(monkeypatch, {}, gate=asyncio.Event(), sync_wait=0.01)  # the gate never opens
    task = asyncio.create_task(informers.run())
    try:
        with pytest.raises(informing.NotSynced, match="pods cache has not listed"):
            await informers.pods(node="n1")
        with pytest.raises(informing.NotSynced, match="nodes cache"):
            await informers.nodes()
    finally:
        task.cancel()


async def test_pods_grouped_by_node_and_by_name_come_from_the_index_and_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """A drain pass's view of every pod, without a pass over them; the cache frozen out of the cyclic GC's way."""
    frozen: list[bool] = []
    monkeypatch.setattr(informing.gc, "freeze", lambda: frozen.append(True))

    pods = [pod("a", "n1"), pod("b", "n1"), pod("c", "n2"), pod("d", None)]
    informers = serve(monkeypatch, {"pods": pods})
    task = asyncio.create_task(informers.run())
    try:
        by_node, by_key = await informers.pods_by_node()
        assert sorted(by_node) == ["n1", "n2"] and len(by_node) == 2
        assert [p["metadata"]["name"] for p in by_node["n1"]] == ["a", "b"]
        assert by_node.get("n3", []) == [] and "n3" not in by_node
        assert by_key[("ns", "d")]["metadata"]["name"] == "d" and ("ns", "x") not in by_key
        with pytest.raises(TypeError):
            by_key[("ns", "e")] = pod("e", None)  # type: ignore[index]
        assert frozen == [True, True], "frozen after each cache's first list"
    finally:
        task.cancel()


async def test_listing_groups_pods_by_node_from_one_list() -> None:
    class Listed:
        def __init__(self, items: list[Any]) -> None:
            self.items = items

    class Core:
        async def list_pod_for_all_namespaces(self, **_: Any) -> Listed:
            return Listed([pod("a", "n1"), pod("b", None), pod("c", "n1")])

    by_node, by_key = await informing.Listing(Core()).pods_by_node()  # type: ignore[arg-type]
    assert {n: [p["metadata"]["name"] for p in ps] for n, ps in by_node.items()} == {"n1": ["a", "c"]}
    assert sorted(by_key) == [("ns", "a"), ("ns", "b"), ("ns", "c")]
