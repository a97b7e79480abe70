"""Leader election (``kubeclient.leasing``) against an in-memory Lease store with the API server's conflict rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes_asyncio import client

from kubeclient.leasing import LeaderElector


class Leases:
    """``CoordinationV1Api`` for one namespace: read, create, replace with a resourceVersion precondition."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.down = False

    def _bump(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(lease)

    async def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        if self.down:
            raise OSError("connection refused")
        if name not in self.leases:
            raise client.ApiException(status=404)
        return copy.deepcopy(self.leases[name])

    async def create_namespaced_lease(self, namespace: str, body: dict[str, Any]) -> Any:
        if body["metadata"]["name"] in self.leases:
            raise client.ApiException(status=409)
        self.leases[body["metadata"]["name"]] = body = copy.deepcopy(body)
        return self._bump(body)

    async def replace_namespaced_lease(self, name: str, namespace: str, body: dict[str, Any]) -> Any:
        if self.down:
            raise OSError("connection refused")
        if body["metadata"].get("resourceVersion") != self.leases[name]["metadata"]["resourceVersion"]:
            raise client.ApiException(status=409)
        self.leases[name] = body = copy.deepcopy(body)
        return self._bump(body)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def elector(store: Leases, clock: Clock, identity: str) -> LeaderElector:
    return LeaderElector(
        coordination=store, namespace="podmigrate-system", name="podmigrate-controller", identity=identity,  # type: ignore[arg-type]
        lease_seconds=15, renew_deadline_seconds=10, retry_seconds=2, clock=clock,
    )  # fmt: skip


def holder(store: Leases) -> str:
    return str(store.leases["podmigrate-controller"]["spec"]["holderIdentity"])


async def test_one_leader_and_the_standby_takes_over_only_after_the_lease_expires() -> None:
    store, clock = Leases(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert await a.try_acquire_or_renew() is True and holder(store) == "a"
    assert await b.try_acquire_or_renew() is False, "held and fresh"
    clock.now += 14
    assert await b.try_acquire_or_renew() is False, "b saw the record 14 s ago: not expired yet"
    assert await a.try_acquire_or_renew() is True, "the leader renews"
    clock.now += 14
    assert await b.try_acquire_or_renew() is False, "a renewal seen: b's clock for it starts again"
    clock.now += 16  # a died: no renewal for longer than the lease
    assert await b.try_acquire_or_renew() is True
    spec = store.leases["podmigrate-controller"]["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert await a.try_acquire_or_renew() is False, "the old leader, back, is a standby now"


async def test_of_two_candidates_writing_the_same_expired_record_one_wins() -> None:
    store, clock = Leases(), Clock()
    await elector(store, clock, "old").try_acquire_or_renew()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert [await a.try_acquire_or_renew(), await b.try_acquire_or_renew()] == [False, False]  # both observe it
    clock.now += 16
    # b read the same record a did, but a wrote first: b's write carries a stale resourceVersion.
    stale = store.leases["podmigrate-controller"]["metadata"]["resourceVersion"]
    assert await a.try_acquire_or_renew() is True
    store_read = store.read_namespaced_lease

    async def read_stale(name: str, namespace: str) -> Any:
        lease = await store_read(name, namespace)
        lease["metadata"]["resourceVersion"] = stale
        lease["spec"]["holderIdentity"] = "old"
        return lease

    store.read_namespaced_lease = read_stale  # type: ignore[method-assign]
    assert await b.try_acquire_or_renew() is False
    assert holder(store) == "a"


async def test_a_released_lease_is_taken_at_once() -> None:
    store, clock = Leases(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    await a.acquire()
    await b.try_acquire_or_renew()
    await a.release()
    assert holder(store) == ""
    assert await b.try_acquire_or_renew() is True, "no wait for expiry"


async def test_a_leader_that_cannot_renew_steps_down_within_the_renew_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    store, clock = Leases(), Clock()
    a = elector(store, clock, "a")
    await a.acquire()

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    monkeypatch.setattr("kubeclient.leasing.asyncio.sleep", sleep)
    store.down = True  # partitioned from the API server
    await a.keep()
    assert a.leading is False
    assert clock.now - 100.0 <= 12, "stepped down before the lease (15 s) could pass to another replica"


def test_the_timings_must_leave_a_margin() -> None:
    with pytest.raises(ValueError):
        LeaderElector(coordination=None, namespace="n", name="l", identity="i", lease_seconds=10,  # type: ignore[arg-type]
                      renew_deadline_seconds=10)  # fmt: skip
