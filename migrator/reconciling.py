"""What every podmigrate reconciler does the same way: records, status saves, conditions, Events, waits.

Both controllers (``PodMigration`` and ``NodeDrain``) follow controller-runtime's pattern:
read the object, do what can be done now, record the outcome in ``status`` *before* acting on
it, and come back later if the world has to move first. The parts of that pattern that do
not depend on the resource live here, once:

* ``Record``: the object being reconciled and the status being built for it (a deep copy,
  so a pass can compare before and after), with the Events it wants recorded once the status
  that explains them is saved.
* ``Wait``: not an error: "this step needs the world to move; look again in N seconds". The
  dispatcher turns the returned seconds into a timed look (or an earlier one on a watch event).
* ``set_condition``: the Kubernetes convention for conditions: ``lastTransitionTime``
  changes only when the condition's status does (a new reason or message alone keeps it).
* ``Recorder``: saves a record's status (namespaced or cluster-scoped, through
  ``kubeclient.resources``), then records its queued Events; holds and releases finalizers;
  runs one step and saves what it changed (``attempt``).

Status writes mean what they say. Each save sends the merge patch from the status as last
saved to the status now (a key that went away is sent as ``null``, so it is gone on the server
too: a merge patch that only adds would leave stale keys that a later step reads as true), and
it is conditional on the resourceVersion the record last saw. A conflict whose object still
carries the status this record last saved was caused by a write to something else (a user
deleting the object sets its deletionTimestamp): the save is applied again on the new version.
A conflict with a *different* status means another writer (a second controller) got there
first: ``Conflict`` is raised and the pass ends; the next pass reads the object afresh.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from kubernetes_asyncio import client

from kubeclient.events import record_event
from kubeclient.resources import Conflict, CustomResource, Gone, merge_patch
from migrator.units import iso, now

CONFLICT_RETRIES: Final = 3
COMPONENT: Final = "podmigrate-controller"  # the Events' source, and the field manager people see
# Events about cluster-scoped objects live here, as those about Nodes do.
CLUSTER_EVENT_NAMESPACE: Final = "default"


class Wait(Exception):
    """Not an error: this step needs the world to move; look again after ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


def set_condition(status: dict[str, Any], *, kind: str, value: bool, reason: str, message: str) -> None:
    """Set condition ``kind``; its lastTransitionTime moves only when its status flips (Kubernetes convention)."""
    old = next((c for c in status.get("conditions") or [] if c["type"] == kind), None)
    state = "True" if value else "False"
    since = old["lastTransitionTime"] if old and old.get("status") == state else iso(now())
    conditions = [c for c in status.get("conditions") or [] if c["type"] != kind]
    conditions.append({"type": kind, "status": state, "reason": reason, "message": message, "lastTransitionTime": since})
    status["conditions"] = conditions


class Record:
    """A custom object being reconciled and the status being built for it."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self.obj = obj
        self.meta: Mapping[str, Any] = obj["metadata"]
        self.status: dict[str, Any] = copy.deepcopy(dict(obj.get("status") or {}))
        self.saved: dict[str, Any] = copy.deepcopy(self.status)  # the status as the server has it
        self.resource_version: str | None = self.meta.get("resourceVersion")
        self.events: list[tuple[str, str, bool]] = []  # (reason, message, warning), recorded once status is saved

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def namespace(self) -> str | None:
        return self.meta.get("namespace")

    @property
    def uid(self) -> str:
        return str(self.meta["uid"])

    @property
    def deleting(self) -> bool:
        return bool(self.meta.get("deletionTimestamp"))

    def note(self, reason: str, message: str, *, warning: bool = False) -> None:
        """An Event to record with the next status save (so it never tells of a step status does not show)."""
        self.events.append((reason, message, warning))

    def also_involved(self) -> list[tuple[str, client.V1ObjectReference, str]]:
        """Other objects each Event of this record is recorded on too: (namespace, reference, message prefix)."""
        return []

    def snapshot(self) -> str:
        return json.dumps(self.status, sort_keys=True)

    def before_save(self) -> None:
        """Derive what status shows from what it records (e.g. counts), just before each save."""


class Recorder:
    """Writes one resource's records: status, Events, finalizers."""

    def __init__(self, *, core: client.CoreV1Api, custom: client.CustomObjectsApi, resource: CustomResource) -> None:
        self.core = core
        self.custom = custom
        self.resource = resource

    async def save(self, r: Record) -> None:
        """Patch the status; then record the Events queued with it. ``Gone`` if the object was deleted."""
        r.before_save()
        patch = merge_patch(r.saved, r.status)
        if patch:
            written = await self._patch_status(r, patch)
            r.resource_version = written["metadata"]["resourceVersion"]
            r.saved = copy.deepcopy(r.status)
        events, r.events = r.events, []
        for reason, message, warning in events:
            await self.event(r, reason, message, warning=warning)

    async def _patch_status(self, r: Record, patch: dict[str, Any]) -> dict[str, Any]:
        for _ in range(CONFLICT_RETRIES):
            try:
                return await self.resource.patch_status(
                    self.custom, name=r.name, namespace=r.namespace, status=patch, resource_version=r.resource_version
                )
            except Conflict:
                fresh = await self.resource.get(self.custom, name=r.name, namespace=r.namespace)
                if fresh is None:
                    raise Gone(self.resource.path(r.name, r.namespace)) from None
                if (fresh.get("status") or {}) != r.saved:
                    raise  # another writer changed the status: do not overwrite it
                r.resource_version = fresh["metadata"]["resourceVersion"]
        raise Conflict(self.resource.path(r.name, r.namespace))

    async def event(self, r: Record, reason: str, message: str, *, warning: bool = False) -> None:
        """An Event on the object now (best effort), and on the objects it ``also_involved``."""
        namespace = r.namespace or CLUSTER_EVENT_NAMESPACE
        targets = [(namespace, self.resource.reference(r.obj), ""), *r.also_involved()]
        for where, involved, prefix in targets:
            await record_event(self.core, namespace=where, involved=involved, reason=reason, message=f"{prefix}{message}",
                               component=COMPONENT, warning=warning)  # fmt: skip

    async def attempt(
        self, r: Record, step: Callable[[], Awaitable[None]], *, save: bool = True, before: str | None = None
    ) -> float | None:
        """Run one step and save what it recorded; the seconds it asked to wait, or None when it completed.

        ``before`` is the status snapshot to compare with when the caller changed status itself
        before the step (a deadline's transition): a step that then only waits must not drop it.
        """
        before = r.snapshot() if before is None else before
        try:
            await step()
        except Wait as wait:
            if r.snapshot() != before or r.events:
                await self.save(r)
            return wait.seconds
        if save:
            await self.save(r)
        return None

    async def hold(self, r: Record, finalizer: str) -> None:
        """Add ``finalizer`` (conditional on the version read: a 409 re-reads and decides again)."""
        finalizers = list(r.meta.get("finalizers") or [])
        if finalizer in finalizers:
            return
        written = await self.resource.patch_metadata(
            self.custom, name=r.name, namespace=r.namespace, metadata={"finalizers": [*finalizers, finalizer]},
            resource_version=r.resource_version,
        )  # fmt: skip
        if written is None:
            raise Gone(self.resource.path(r.name, r.namespace))
        r.resource_version = written["metadata"]["resourceVersion"]

    async def release(self, r: Record, finalizer: str) -> None:
        """Remove ``finalizer``, conditional on the object as it is now (status patches moved its resourceVersion)."""
        fresh = await self.resource.get(self.custom, name=r.name, namespace=r.namespace)
        if fresh is None:
            return
        finalizers = list(fresh["metadata"].get("finalizers") or [])
        if finalizer not in finalizers:
            return
        await self.resource.patch_metadata(
            self.custom, name=r.name, namespace=r.namespace, metadata={"finalizers": [f for f in finalizers if f != finalizer]},
            resource_version=fresh["metadata"]["resourceVersion"],
        )  # fmt: skip
