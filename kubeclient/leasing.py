"""Leader election on a ``coordination.k8s.io/v1`` Lease: one replica drives, the others stand by.

Why: two control services driving the same migration would both freeze, kill and restore (two
copies, or none). The Deployment runs two replicas so that a standby takes over within seconds
when the leader dies or is partitioned away; only the leader runs reconcilers, while every
replica answers the admission webhook (it keeps no state: ``migrator.slots``).

The algorithm is client-go's ``leaderelection`` (the one kube-controller-manager uses), because
its edge cases are the ones that matter:

* expiry is judged on this process's monotonic clock, from when it last *saw the record change*,
  never by comparing the holder's ``renewTime`` with local time (clocks differ between nodes);
* every write carries the resourceVersion read: of two candidates only one wins, the other
  gets a 409 and keeps waiting;
* a leader that cannot renew within the lease duration stops acting *before* a standby can
  acquire (``keep`` returns after ``renew_deadline`` < lease duration), and the caller exits;
* a leader that stops on purpose releases the lease (empty holder), so the standby need not
  wait for it to expire.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client

from kubeclient.reading import plain

log = logging.getLogger(__name__)


def _micro_time(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        *,
        coordination: client.CoordinationV1Api,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: float = 15.0,
        renew_deadline_seconds: float = 10.0,
        retry_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry_seconds < renew_deadline_seconds < lease_seconds:
            raise ValueError("need retry < renew deadline < lease duration")
        self._api = coordination
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_seconds, self.renew_deadline, self.retry = lease_seconds, renew_deadline_seconds, retry_seconds
        self._clock = clock
        self._observed: tuple[str, str, str] | None = None  # (holder, renewTime, resourceVersion) last seen
        self._observed_at = 0.0
        self.leading = False

    async def _read(self) -> dict[str, Any] | None:
        try:
            return plain(await self._api.read_namespaced_lease(self.name, self.namespace))
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: True if this process holds the lease now."""
        now = _micro_time()
        lease = await self._read()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_seconds),
                         "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
            }  # fmt: skip
            try:
                await self._api.create_namespaced_lease(self.namespace, body)
            except client.ApiException as exc:
                if exc.status == 409:
                    return False
                raise
            self._observe(self.identity, now, "")
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        version = lease["metadata"].get("resourceVersion", "")
        record = (holder, str(spec.get("renewTime") or ""), version)
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        if holder and holder != self.identity and self._clock() < self._observed_at + duration:
            return False  # someone else holds it and has renewed within its duration, as far as we have seen
        if holder != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, renewTime=now, leaseDurationSeconds=int(self.lease_seconds))
        lease["spec"] = spec
        try:
            written = plain(await self._api.replace_namespaced_lease(self.name, self.namespace, lease))
        except client.ApiException as exc:
            if exc.status == 409:  # another candidate wrote first
                return False
            raise
        self._observe(self.identity, now, written["metadata"].get("resourceVersion", ""))
        return True

    def _observe(self, holder: str, renew: str, version: str) -> None:
        self._observed, self._observed_at = (holder, renew, version), self._clock()

    async def acquire(self) -> None:
        """Wait until this process leads."""
        announced = False
        while True:
            try:
                if await self.try_acquire_or_renew():
                    self.leading = True
                    log.info("leading: holding lease %s/%s as %s", self.namespace, self.name, self.identity)
                    return
            except client.ApiException as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc.reason)
            if not announced and self._observed:
                log.info("standing by: lease %s/%s is held by %s", self.namespace, self.name, self._observed[0])
                announced = True
            await asyncio.sleep(self.retry)

    async def keep(self) -> None:
        """Renew every ``retry`` seconds; return when leadership is lost (no renewal within the renew deadline)."""
        last_renewed = self._clock()
        while True:
            await asyncio.sleep(self.retry)
            try:
                if await self.try_acquire_or_renew():
                    last_renewed = self._clock()
                    continue
                log.error("lease %s/%s was taken by %s", self.namespace, self.name, self._observed and self._observed[0])
                break
            except (client.ApiException, OSError, TimeoutError) as exc:
                log.warning("renewing lease %s/%s failed: %s", self.namespace, self.name, exc)
            if self._clock() - last_renewed > self.renew_deadline:
                log.error("lease %s/%s not renewed for %.0fs: stepping down", self.namespace, self.name, self.renew_deadline)
                break
        self.leading = False

    async def release(self) -> None:
        """Give the lease up (empty holder) so that a standby takes over at once; best effort."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = await self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity="", leaseDurationSeconds=1, renewTime=_micro_time())
            await self._api.replace_namespaced_lease(self.name, self.namespace, lease)
            log.info("released lease %s/%s", self.namespace, self.name)
        except (client.ApiException, OSError) as exc:
            log.warning("releasing lease %s/%s failed: %s", self.namespace, self.name, exc)
