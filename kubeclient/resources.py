"""Custom resources by kind: one description, and the calls that differ between scopes written once.

kubernetes-asyncio has separate methods for namespaced and cluster-scoped custom objects
(``get_namespaced_custom_object`` vs ``get_cluster_custom_object``, and the same for patches
and status patches). Code that works on "a custom object" should not care which; a
``CustomResource`` names the resource and picks the right call, so a PodMigration (namespaced)
and a NodeDrain (cluster-scoped) are read and written by the same functions.

Semantics handled here, once:

* 404 on a read is "not there" (``None``), on a write it is ``Gone``: the object was deleted
  while we worked on it (by its owner, or a user), and the caller stops.
* Status and metadata are written as JSON merge patches. kubernetes-asyncio picks a content
  type from the body, which for custom objects is not one the API server accepts on the status
  subresource, so the merge-patch type is set explicitly. A merge patch replaces lists
  wholesale (callers send whole lists) and removes a key only when it is sent as ``null``.
* A patch carrying ``metadata.resourceVersion`` is conditional: 409 Conflict (``Conflict``)
  means someone changed the object since it was read; the caller re-reads it and decides again.
  ``merge_patch`` computes the patch between two versions of a document, with ``null`` for
  every key that went away, so a removed status field is really removed on the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from kubernetes_asyncio import client

from kubeclient.reading import read_or_none

MERGE_PATCH: Final = "application/merge-patch+json"


class Gone(Exception):
    """The object was deleted while we worked on it."""


class Conflict(Exception):
    """A conditional write found the object changed since it was read (409)."""


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (objects recursively, anything else whole)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


def _conditional(body: dict[str, Any], resource_version: str | None) -> dict[str, Any]:
    if resource_version:
        body["metadata"] = {**body.get("metadata", {}), "resourceVersion": resource_version}
    return body


@dataclass(frozen=True, kw_only=True)
class CustomResource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def path(self, name: str, namespace: str | None = None) -> str:
        return f"{self.plural}/{namespace}/{name}" if self.namespaced else f"{self.plural}/{name}"

    def reference(self, obj: dict[str, Any] | Any) -> client.V1ObjectReference:
        """An ObjectReference to one of these objects (what an Event's involvedObject names)."""
        meta = obj["metadata"]
        return client.V1ObjectReference(
            api_version=self.api_version,
            kind=self.kind,
            name=meta["name"],
            namespace=meta.get("namespace") if self.namespaced else None,
            uid=meta.get("uid"),
        )

    async def get(self, custom: client.CustomObjectsApi, *, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object as it is now, or None when it does not exist."""
        if self.namespaced:
            call = custom.get_namespaced_custom_object(self.group, self.version, namespace, self.plural, name)
        else:
            call = custom.get_cluster_custom_object(self.group, self.version, self.plural, name)
        return await read_or_none(call)

    async def patch_status(
        self,
        custom: client.CustomObjectsApi,
        *,
        name: str,
        namespace: str | None = None,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch the status subresource (``status`` is the patch); the object as written.

        ``Gone`` when the object no longer exists; ``Conflict`` when ``resource_version`` is given
        and the object changed since.
        """
        body = _conditional({"status": status}, resource_version)
        try:
            if self.namespaced:
                return await custom.patch_namespaced_custom_object_status(
                    self.group, self.version, namespace, self.plural, name, body, _content_type=MERGE_PATCH
                )
            return await custom.patch_cluster_custom_object_status(
                self.group, self.version, self.plural, name, body, _content_type=MERGE_PATCH
            )
        except client.ApiException as exc:
            if exc.status == 404:
                raise Gone(self.path(name, namespace)) from None
            if exc.status == 409:
                raise Conflict(self.path(name, namespace)) from None
            raise

    async def patch_metadata(
        self,
        custom: client.CustomObjectsApi,
        *,
        name: str,
        namespace: str | None = None,
        metadata: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any] | None:
        """Merge-patch metadata (finalizers, labels); conditional on ``resource_version`` when given.

        The object as written, or None if it vanished: whatever the patch was for no longer
        matters then. ``Conflict`` when the object changed since ``resource_version``.
        """
        body = _conditional({"metadata": dict(metadata)}, resource_version)
        try:
            if self.namespaced:
                return await custom.patch_namespaced_custom_object(
                    self.group, self.version, namespace, self.plural, name, body, _content_type=MERGE_PATCH
                )
            return await custom.patch_cluster_custom_object(
                self.group, self.version, self.plural, name, body, _content_type=MERGE_PATCH
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 409:
                raise Conflict(self.path(name, namespace)) from None
            raise
