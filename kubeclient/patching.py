"""Writing status: the one place that knows how custom-object status patches must be sent.

kubernetes-asyncio picks a content type from the body; for custom objects that is not what
the API server accepts for a status subresource, so the merge-patch type is set explicitly.
A merge patch replaces lists wholesale, which is what status lists here want (callers send
the full list). A 404 means the object is gone (deleted by its owner): callers stop.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

MERGE_PATCH = "application/merge-patch+json"


class Gone(Exception):
    """The object was deleted while we worked on it."""


async def patch_custom_status(
    api: client.CustomObjectsApi,
    *,
    group: str,
    version: str,
    plural: str,
    namespace: str,
    name: str,
    status: dict[str, Any],
) -> dict[str, Any]:
    try:
        return await api.patch_namespaced_custom_object_status(
            group, version, namespace, plural, name, {"status": status}, _content_type=MERGE_PATCH
        )
    except client.ApiException as exc:
        if exc.status == 404:
            raise Gone(f"{plural}/{namespace}/{name}") from None
        raise
