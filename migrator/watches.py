"""Which changes in the cluster make which reconciler look again: every controller's wiring, in one place.

The reconcilers are level-triggered: an event only says "look at this object again"; its
dispatcher re-reads the object and reconciles it (``migrator.dispatching``). So wiring is a
table of watches and the keys they poke:

* PodMigrations -> the PodMigration reconciler (until finished and its finalizer released);
* NodeDrains -> the NodeDrain reconciler (until finished, or while being deleted);
* PodMigrations a drain created (label ``podmigrate.io/drain``) -> their drain, so a migration
  that finished is seen at once rather than at the drain's next poll;
* Nodes with (or that had) the ``podmigrate.io/drain`` annotation, and the auto drains'
  changes -> the auto-drain reconciler;
* PodCheckpoints -> the PodCheckpoint reconciler (until finished, and again when deleted: its
  images go first), and those a schedule created -> their CheckpointSchedule (retention, the next
  checkpoint of a pod whose last one was still in flight);
* PodRestores -> the PodRestore reconciler (until finished and its finalizer released);
* CheckpointSchedules -> the CheckpointSchedule reconciler (each one requeues itself for its next time).

Every watch is a ``kubeclient.watching.list_and_watch``: a fresh list on start and after 410
Gone, so a restarted control service sees every unfinished object again and resumes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client

from kubeclient.informing import PodsAndNodes
from kubeclient.reading import read_plain
from kubeclient.resources import CustomResource
from kubeclient.watching import list_and_watch
from migrator import api
from migrator.controllers.autodrain import AutoDrainReconciler
from migrator.controllers.checkpointschedule import CheckpointScheduleReconciler
from migrator.controllers.nodedrain import NodeDrainReconciler
from migrator.controllers.podcheckpoint import PodCheckpointReconciler
from migrator.controllers.podcheckpoint.record import finished as checkpoint_finished
from migrator.controllers.podmigration import PodMigrationReconciler
from migrator.controllers.podrestore import PodRestoreReconciler
from migrator.dispatching import Dispatcher, Key


class Controllers:
    """The reconcilers with their dispatchers and the watches that feed them."""

    def __init__(
        self,
        *,
        core: client.CoreV1Api,
        custom: client.CustomObjectsApi,
        policy: client.PolicyV1Api,
        migrations: PodMigrationReconciler,
        checkpoints: PodCheckpointReconciler,
        restores: PodRestoreReconciler,
        pods_and_nodes: PodsAndNodes | None = None,
    ) -> None:
        self.core = core
        self.custom = custom
        self.migrations = Dispatcher(fetch=self._fetch_migration, reconcile=migrations.reconcile)
        drains = NodeDrainReconciler(core=core, custom=custom, policy=policy, pods_and_nodes=pods_and_nodes)
        self.drains = Dispatcher(fetch=self._fetch_drain, reconcile=drains.reconcile)
        self.nodes = Dispatcher(fetch=self._fetch_node, reconcile=AutoDrainReconciler(custom=custom).reconcile)
        self.checkpoints = Dispatcher(fetch=self._fetch(api.PODCHECKPOINTS), reconcile=checkpoints.reconcile)
        self.restores = Dispatcher(fetch=self._fetch(api.PODRESTORES), reconcile=restores.reconcile)
        self.schedules = Dispatcher(
            fetch=self._fetch(api.CHECKPOINTSCHEDULES), reconcile=CheckpointScheduleReconciler(core=core, custom=custom).reconcile
        )
        self._annotated: set[str] = set()  # nodes seen with the drain annotation (its removal must be seen too)

    async def _fetch_migration(self, key: Key) -> dict[str, Any] | None:
        return await api.PODMIGRATIONS.get(self.custom, name=key[1], namespace=key[0])

    async def _fetch_drain(self, key: Key) -> dict[str, Any] | None:
        return await api.NODEDRAINS.get(self.custom, name=key[1])

    def _fetch(self, resource: CustomResource) -> Callable[[Key], Awaitable[dict[str, Any] | None]]:
        async def fetch(key: Key) -> dict[str, Any] | None:
            return await resource.get(self.custom, name=key[1], namespace=key[0])

        return fetch

    async def _fetch_node(self, key: Key) -> dict[str, Any] | None:
        return await read_plain(self.core.read_node(key[1]))

    async def watch(self) -> None:
        """Run every watch forever (until cancelled)."""
        await asyncio.gather(
            self._watch_migrations(), self._watch_drains(), self._watch_drain_migrations(), self._watch_nodes(),
            self._watch_checkpoints(), self._watch_restores(), self._watch_schedules(),
        )  # fmt: skip

    async def _watch_migrations(self) -> None:
        async for event in list_and_watch(
            self.custom.list_cluster_custom_object, group=api.GROUP, version=api.VERSION, plural=api.PLURAL
        ):
            obj = event.object
            if event.type in ("SYNCED", "DELETED") or obj is None:
                continue
            finished = (obj.get("status") or {}).get("phase") in api.TERMINAL_PHASES
            if finished and api.FINALIZER not in (obj["metadata"].get("finalizers") or []):
                continue
            self.migrations.notify((obj["metadata"]["namespace"], obj["metadata"]["name"]))

    async def _watch_drains(self) -> None:
        async for event in list_and_watch(
            self.custom.list_cluster_custom_object, group=api.GROUP, version=api.VERSION, plural=api.DRAIN_PLURAL
        ):
            obj = event.object
            if event.type == "SYNCED" or obj is None:
                continue
            meta = obj["metadata"]
            if (meta.get("labels") or {}).get(api.LABEL_AUTO_DRAIN):
                self.nodes.notify(("", str((obj.get("spec") or {}).get("nodeName", ""))))
            if event.type == "DELETED":
                continue
            finished = (obj.get("status") or {}).get("phase") in api.DRAIN_TERMINAL_PHASES
            if finished and not meta.get("deletionTimestamp"):
                continue
            self.drains.notify(("", meta["name"]))

    async def _watch_drain_migrations(self) -> None:
        async for event in list_and_watch(
            self.custom.list_cluster_custom_object,
            group=api.GROUP, version=api.VERSION, plural=api.PLURAL, label_selector=api.LABEL_DRAIN,
        ):  # fmt: skip
            obj = event.object
            if event.type in ("SYNC", "SYNCED") or obj is None:
                continue
            drain = (obj["metadata"].get("labels") or {}).get(api.LABEL_DRAIN)
            if drain:
                self.drains.notify(("", drain))

    async def _watch_nodes(self) -> None:
        async for event in list_and_watch(self.core.list_node):
            node = event.object
            if event.type == "SYNCED" or node is None:
                continue
            name = node.metadata.name
            annotated = api.ANNOTATION_DRAIN_REQUEST in (node.metadata.annotations or {})
            if event.type == "DELETED":
                self._annotated.discard(name)
                continue
            if annotated or name in self._annotated:
                self.nodes.notify(("", name))
            if annotated:
                self._annotated.add(name)
            else:
                self._annotated.discard(name)

    async def _watch_checkpoints(self) -> None:
        async for event in list_and_watch(
            self.custom.list_cluster_custom_object, group=api.GROUP, version=api.VERSION, plural=api.CHECKPOINT_PLURAL
        ):
            obj = event.object
            if event.type == "SYNCED" or obj is None:
                continue
            meta, status = obj["metadata"], obj.get("status") or {}
            if schedule := (meta.get("labels") or {}).get(api.LABEL_SCHEDULE):
                self.schedules.notify((meta["namespace"], schedule))
            if event.type == "DELETED":
                continue
            # Finished and nothing left to do: no images to delete, no held pod to be found again.
            place_lost = status.get("suspended") and status.get("owner") and not status.get("heldPod")
            settled = checkpoint_finished(obj) and not status.get("pendingDeletes") and not place_lost
            if settled and not meta.get("deletionTimestamp"):
                continue
            self.checkpoints.notify((meta["namespace"], meta["name"]))

    async def _watch_restores(self) -> None:
        async for event in list_and_watch(
            self.custom.list_cluster_custom_object, group=api.GROUP, version=api.VERSION, plural=api.RESTORE_PLURAL
        ):
            obj = event.object
            if event.type in ("SYNCED", "DELETED") or obj is None:
                continue
            finished = (obj.get("status") or {}).get("step") == "Done"
            if finished and not obj["metadata"].get("deletionTimestamp"):
                continue
            self.restores.notify((obj["metadata"]["namespace"], obj["metadata"]["name"]))

    async def _watch_schedules(self) -> None:
        async for event in list_and_watch(
            self.custom.list_cluster_custom_object, group=api.GROUP, version=api.VERSION, plural=api.SCHEDULE_PLURAL
        ):
            obj = event.object
            if event.type in ("SYNCED", "DELETED") or obj is None:
                continue
            self.schedules.notify((obj["metadata"]["namespace"], obj["metadata"]["name"]))

    def active(self) -> int:
        """Migrations being worked on now (the in-flight gauge)."""
        return self.migrations.active()

    async def stop(self) -> None:
        for dispatcher in (self.migrations, self.drains, self.nodes, self.checkpoints, self.restores, self.schedules):
            await dispatcher.stop()
