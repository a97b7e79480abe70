"""The Node annotation ``podmigrate.io/drain``, turned into a NodeDrain.

Maintenance automation often speaks in node annotations rather than custom objects: setting
``podmigrate.io/drain: "true"`` on a Node asks for a NodeDrain ``auto-<node>``; removing it
deletes that drain (which cancels it if it still runs, and uncordons the node through the
drain's finalizer). So the annotation is the node's desired state, reconciled like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client

from migrator import api, drainplan
from migrator.api import UnmigratablePolicy

log = logging.getLogger(__name__)


class AutoDrainReconciler:
    """``podmigrate.io/drain: "true"`` on a Node: a NodeDrain ``auto-<node>`` exists (unless another drain of it runs).

    ``podmigrate.io/drain-policy: Evict`` makes it evict what cannot be migrated (default Block).
    Without the annotation, an ``auto-<node>`` drain is deleted: that cancels it if it still runs,
    and uncordons the node (the drain's finalizer), so the annotation is the node's desired state.
    """

    def __init__(self, *, custom: client.CustomObjectsApi) -> None:
        self.custom = custom

    async def reconcile(self, node: Mapping[str, Any]) -> float | None:
        meta = node["metadata"]
        name = str(meta["name"])
        annotations = meta.get("annotations") or {}
        wanted = str(annotations.get(api.ANNOTATION_DRAIN_REQUEST, "")).lower() == "true"
        drain_name = drainplan.auto_drain_name(name)
        listing = await self.custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.DRAIN_PLURAL)
        drains = [o for o in listing.get("items") or [] if (o.get("spec") or {}).get("nodeName") == name]
        auto = next((o for o in drains if o["metadata"]["name"] == drain_name and self.automatic(o)), None)
        if not wanted:
            if auto is not None and not auto["metadata"].get("deletionTimestamp"):
                log.info("node %s: annotation %s removed; deleting NodeDrain %s", name, api.ANNOTATION_DRAIN_REQUEST, drain_name)
                await self._delete(drain_name)
            return None
        if auto is not None or any(api.drain_running(o) for o in drains):
            return None  # it has its auto drain already (finished or not), or someone is draining it
        policy = self.policy(annotations.get(api.ANNOTATION_DRAIN_POLICY))
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.DRAIN_KIND,
            "metadata": {"name": drain_name, "labels": {api.LABEL_AUTO_DRAIN: "true"}},
            "spec": {"nodeName": name, "unmigratablePolicy": policy.value},
        }
        try:
            await self.custom.create_cluster_custom_object(api.GROUP, api.VERSION, api.DRAIN_PLURAL, body)
            log.info(
                "node %s: annotation %s=true: created NodeDrain %s (%s)", name, api.ANNOTATION_DRAIN_REQUEST, drain_name, policy
            )
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        return None

    @staticmethod
    def automatic(drain: Mapping[str, Any]) -> bool:
        return (drain["metadata"].get("labels") or {}).get(api.LABEL_AUTO_DRAIN) == "true"

    @staticmethod
    def policy(text: str | None) -> UnmigratablePolicy:
        """The annotation's policy, case-insensitively; anything else is the safe default, Block."""
        return UnmigratablePolicy.EVICT if str(text or "").strip().lower() == "evict" else UnmigratablePolicy.BLOCK

    async def _delete(self, name: str) -> None:
        try:
            await self.custom.delete_cluster_custom_object(api.GROUP, api.VERSION, api.DRAIN_PLURAL, name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
