"""Restore slots, kept in the PodMigration's status: opened by the controller, claimed by the webhook.

A migration of a controller-owned pod lets the pod's controller create the replacement and has
the admission webhook make that replacement the restore (``migrator.webhook``). The *slot* says
which creation that is: a pod of this owner (and, for a StatefulSet, of this name) in this
namespace, restored on this node from these images. Exactly one pod creation may claim it.

Why in the API and not in the control service's memory: any replica serves the webhook (the
Service picks one), the leader that opened the slot may die, and a restarted service must not
offer a slot whose pod was already created. So:

* the controller writes ``status.restoreSlot`` (with a ``generation``) and labels the PodMigration
  ``podmigrate.io/restore-slot-owner=<owner UID>`` so that the webhook finds it with one list;
* the webhook claims it by writing ``claimedGeneration`` with a resourceVersion precondition: of
  two pod creations racing for one slot, one wins and the other (a scale-up) starts cold;
* a claimed slot is never offered again by the webhook. Only the controller re-opens it (a new
  generation), and only after ``CLAIM_GRACE`` passed without any pod carrying the migration's UID
  (an admission whose pod creation then failed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from kubernetes_asyncio import client

from kubeclient.resources import Conflict, CustomResource, Gone
from migrator import api
from migrator.units import iso, now, status_time

log = logging.getLogger(__name__)

LABEL_SLOT_OWNER: Final = "podmigrate.io/restore-slot-owner"
STATUS_KEY: Final = "restoreSlot"
# A claimed slot whose pod never appeared is re-opened by the controller after this (an admitted
# pod creation lands within milliseconds; one that failed after admission never does).
CLAIM_GRACE: Final = timedelta(seconds=30)
CLAIM_ATTEMPTS: Final = 3


@dataclass(kw_only=True)
class Slot:
    migration: str  # namespace/name
    migration_uid: str
    namespace: str
    owner_uid: str
    pod_name: str | None  # StatefulSet pods keep their name; ReplicaSet pods get a new one
    node: str
    images: dict[str, str]
    source_node: str
    original_images: dict[str, str]
    source_pod: str = ""  # the checkpointed pod's name (the replacement's may differ)
    extra_annotations: dict[str, str] = field(default_factory=dict)
    generation: int = 1
    pull_secret: str = ""  # the checkpoint registry's pull Secret the restored pod names (migrator.pullsecrets)

    def to_status(self) -> dict[str, Any]:
        out = {
            "node": self.node, "ownerUID": self.owner_uid, "sourcePod": self.source_pod, "sourceNode": self.source_node,
            "images": dict(self.images), "originalImages": dict(self.original_images), "generation": self.generation,
        }  # fmt: skip
        if self.pod_name is not None:  # (a null in a merge patch deletes: absent means "any name")
            out["podName"] = self.pod_name
        if self.extra_annotations:
            out["extraAnnotations"] = dict(self.extra_annotations)
        if self.pull_secret:
            out["pullSecret"] = self.pull_secret
        return out

    @classmethod
    def from_migration(cls, obj: Mapping[str, Any]) -> Slot | None:
        """The open (unclaimed) slot of a PodMigration, or None."""
        meta, status = obj["metadata"], obj.get("status") or {}
        raw = status.get(STATUS_KEY)
        if not raw or raw.get("claimedGeneration") == raw.get("generation"):
            return None
        return cls(
            migration=f"{meta['namespace']}/{meta['name']}", migration_uid=meta["uid"], namespace=meta["namespace"],
            owner_uid=raw["ownerUID"], pod_name=raw.get("podName"), node=raw["node"], images=dict(raw.get("images") or {}),
            source_node=raw.get("sourceNode", ""), original_images=dict(raw.get("originalImages") or {}),
            source_pod=raw.get("sourcePod", ""), extra_annotations=dict(raw.get("extraAnnotations") or {}),
            generation=int(raw.get("generation") or 1), pull_secret=str(raw.get("pullSecret") or ""),
        )  # fmt: skip


# --- the controller's side ------------------------------------------------------------------------
def open_slot(status: dict[str, Any], slot: Slot) -> bool:
    """Put ``slot`` in ``status`` (same node: keep what is there, claimed or not); True if it changed."""
    current = status.get(STATUS_KEY)
    if current and current.get("node") == slot.node and current.get("ownerUID") == slot.owner_uid:
        return False
    slot.generation = int((current or {}).get("generation") or 0) + 1
    status[STATUS_KEY] = slot.to_status()
    return True


async def label_owner(
    custom: client.CustomObjectsApi, resource: CustomResource, *, name: str, namespace: str, owner_uid: str | None
) -> dict[str, Any] | None:
    """Label the slot's holder with the owner UID (None: unlabel), so the webhook finds it with one list; the object
    as written, or None if it is gone."""
    return await resource.patch_metadata(
        custom, name=name, namespace=namespace, metadata={"labels": {LABEL_SLOT_OWNER: owner_uid}}
    )


def reopen_if_lost(status: dict[str, Any]) -> bool:
    """A slot claimed longer than ``CLAIM_GRACE`` ago (and whose pod the caller did not find): offer it anew."""
    current = status.get(STATUS_KEY)
    if not current or current.get("claimedGeneration") != current.get("generation"):
        return False
    claimed_at = current.get("claimedAt")
    if claimed_at and now() - status_time(claimed_at) < CLAIM_GRACE:
        return False
    current["generation"] = int(current["generation"]) + 1
    current.pop("claimedAt", None)
    current.pop("claimedGeneration", None)
    return True


def claimed(status: Mapping[str, Any]) -> bool:
    current = status.get(STATUS_KEY) or {}
    return bool(current) and current.get("claimedGeneration") == current.get("generation")


# --- the webhook's side ---------------------------------------------------------------------------
async def claim(
    custom: client.CustomObjectsApi, pod: Mapping[str, Any], *, namespace: str, resource: CustomResource = api.PODMIGRATIONS
) -> Slot | None:
    """Claim the open slot this pod creation fills, or None (not a pod any migration waits for).

    ``resource``: whose slots (a PodMigration's, or a PodCheckpoint's that suspends a controller's pod
    and has its replacement hold the pod's place: ``migrator.controllers.podcheckpoint``).
    """
    meta = pod.get("metadata") or {}
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if owner is None or not owner.get("uid"):
        return None
    listing = await custom.list_namespaced_custom_object(
        resource.group, resource.version, namespace, resource.plural, label_selector=f"{LABEL_SLOT_OWNER}={owner['uid']}"
    )
    candidates = sorted(listing.get("items") or [], key=lambda o: o["metadata"].get("creationTimestamp") or "")
    for obj in candidates:
        for _ in range(CLAIM_ATTEMPTS):
            slot = Slot.from_migration(obj)
            if slot is None or slot.owner_uid != owner["uid"]:
                break
            if slot.pod_name is not None and slot.pod_name != meta.get("name"):
                break
            try:
                await resource.patch_status(
                    custom, name=obj["metadata"]["name"], namespace=namespace,
                    status={STATUS_KEY: {"claimedGeneration": slot.generation, "claimedAt": iso(now())}},
                    resource_version=obj["metadata"]["resourceVersion"],
                )  # fmt: skip
                return slot
            except Conflict:  # someone wrote it since: read it again (another creation may have claimed it)
                fresh = await resource.get(custom, name=obj["metadata"]["name"], namespace=namespace)
                if fresh is None:
                    break
                obj = fresh
            except Gone:
                break
    return None
