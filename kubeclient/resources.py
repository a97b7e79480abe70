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
* A metadata patch carrying ``resourceVersion`` is conditional: 409 Conflict means someone
  changed the object meanwhile; the caller's retry re-reads it and decides again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from kubernetes_asyncio import client

from kubeclient.reading import read_or_none

MERGE_PATCH: Final = "application/merge-patch+json"


class Gone(Exception):
    """The object was deleted while we worked on it."""


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
        self, custom: client.CustomObjectsApi, *, name: str, namespace: str | None = None, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the status subresource; ``Gone`` when the object no longer exists."""
        body = {"status": status}
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
            raise

    async def patch_metadata(
        self,
        custom: client.CustomObjectsApi,
        *,
        name: str,
        namespace: str | None = None,
        metadata: dict[str, Any],
        resource_version: str | None = None,
    ) -> None:
        """Merge-patch metadata (finalizers, labels); conditional on ``resource_version`` when given.

        A vanished object is not an error here: whatever the patch was for no longer matters.
        """
        body = {"metadata": {**metadata, **({"resourceVersion": resource_version} if resource_version else {})}}
        try:
            if self.namespaced:
                await custom.patch_namespaced_custom_object(
                    self.group, self.version, namespace, self.plural, name, body, _content_type=MERGE_PATCH
                )
            else:
                await custom.patch_cluster_custom_object(
                    self.group, self.version, self.plural, name, body, _content_type=MERGE_PATCH
                )
        except client.ApiException as exc:
            if exc.status != 404:
                raise
