"""Restore slots in the PodMigration's status (``migrator.slots``): opened by the controller, claimed once by the webhook."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from migrator import slots
from migrator.slots import Slot
from migrator.units import iso
from tests.fakekube import FakeClock, FakeKube, use_clock
from tests.migrator.test_webhook import new_pod, open_in, slot

NS = "shop"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    use_clock(monkeypatch, clock)
    return clock


@pytest.fixture
def kube(clock: FakeClock) -> FakeKube:
    return FakeKube(clock=clock)


def status_of(kube: FakeKube, name: str = "move-web") -> dict[str, Any]:
    return kube.migrations[(NS, name)]["status"]


async def claim(kube: FakeKube, pod_name: str, **kw: Any) -> Slot | None:
    return await slots.claim(kube, new_pod(pod_name, **kw), namespace=NS)  # type: ignore[arg-type]


async def test_a_slot_is_claimed_by_exactly_one_pod_creation(kube: FakeKube) -> None:
    open_in(kube, slot())
    claimed = await claim(kube, "web-7d9-aaaaa")
    assert claimed is not None and claimed.migration == "shop/move-web" and claimed.node == "node-2"
    assert status_of(kube)[slots.STATUS_KEY]["claimedGeneration"] == 1, "the claim is in the API, for every replica"
    assert await claim(kube, "web-7d9-bbbbb") is None, "a scale-up's pod starts cold"


async def test_two_creations_racing_for_one_slot_cannot_both_win(kube: FakeKube) -> None:
    """The claim is a write with a resourceVersion precondition: the loser re-reads and finds it claimed."""
    open_in(kube, slot())
    listing = {"items": [copy.deepcopy(kube.migrations[(NS, "move-web")])]}  # what both listed before either wrote
    first = await claim(kube, "web-7d9-aaaaa")
    original = kube.list_namespaced_custom_object

    async def stale_list(*args: Any, **kw: Any) -> Any:
        return listing

    kube.list_namespaced_custom_object = stale_list  # type: ignore[method-assign]
    try:
        second = await claim(kube, "web-7d9-bbbbb")
    finally:
        kube.list_namespaced_custom_object = original  # type: ignore[method-assign]
    assert first is not None and second is None


async def test_two_migrations_of_one_owner_each_restore_one_pod(kube: FakeKube) -> None:
    open_in(kube, slot())
    open_in(kube, slot(migration="shop/move-other", migration_uid="uid-move-other", node="node-3"))
    first, second = await claim(kube, "web-7d9-aaaaa"), await claim(kube, "web-7d9-bbbbb")
    assert first is not None and second is not None
    assert {first.migration_uid, second.migration_uid} == {"uid-move-web", "uid-move-other"}
    assert await claim(kube, "web-7d9-ccccc") is None


async def test_a_statefulset_slot_matches_only_the_pod_of_its_name(kube: FakeKube) -> None:
    open_in(kube, slot(owner_uid="uid-db", pod_name="db-0"))
    assert await claim(kube, "db-1", owner_uid="uid-db") is None
    claimed = await claim(kube, "db-0", owner_uid="uid-db")
    assert claimed is not None and claimed.pod_name == "db-0"


async def test_a_slot_does_not_match_another_namespace_owner_or_an_unowned_pod(kube: FakeKube) -> None:
    open_in(kube, slot())
    assert await slots.claim(kube, new_pod(), namespace="other") is None  # type: ignore[arg-type]
    assert await claim(kube, "web-7d9-x", owner_uid="uid-api-5f6") is None
    assert await claim(kube, "web-7d9-x", controller=False) is None, "only the controlling owner counts"
    bare = new_pod()
    del bare["metadata"]["ownerReferences"]
    assert await slots.claim(kube, bare, namespace=NS) is None  # type: ignore[arg-type]
    assert await claim(kube, "web-7d9-x") is not None, "none of those used the slot up"


def test_reopening_on_the_same_node_keeps_the_claim_and_on_another_node_offers_a_new_generation() -> None:
    status: dict[str, Any] = {}
    assert slots.open_slot(status, slot()) is True and status[slots.STATUS_KEY]["generation"] == 1
    status[slots.STATUS_KEY].update(claimedGeneration=1, claimedAt="2026-03-01T10:00:00Z")
    assert slots.open_slot(status, slot()) is False, "the reconciler re-opens on every pass: the claim stays"
    assert slots.claimed(status)
    assert slots.open_slot(status, slot(node="node-1")) is True  # the rollback: a restore on the source node now
    assert status[slots.STATUS_KEY]["generation"] == 2 and not slots.claimed(status)
    assert "podName" not in status[slots.STATUS_KEY], "absent, not null: a null in a merge patch deletes"


def test_a_claim_whose_pod_never_came_is_offered_again_only_after_the_grace(clock: FakeClock) -> None:
    status: dict[str, Any] = {}
    slots.open_slot(status, slot())
    status[slots.STATUS_KEY].update(claimedGeneration=1, claimedAt=api_time(clock))
    clock.advance(slots.CLAIM_GRACE.total_seconds() - 1)
    assert slots.reopen_if_lost(status) is False and slots.claimed(status)
    clock.advance(1)
    assert slots.reopen_if_lost(status) is True
    assert status[slots.STATUS_KEY]["generation"] == 2 and not slots.claimed(status)


def api_time(clock: FakeClock) -> str:
    return iso(clock())
