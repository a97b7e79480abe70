"""The checkpoint registry's pull Secret, copied into the namespace of a pod being migrated.

Why a copy per namespace: a pod's ``imagePullSecrets`` can name Secrets of its own namespace only,
and the restored pod's images are checkpoints (its memory, in a registry that refuses anonymous
reads: docs/registry.md). The operator keeps one pull-only ``kubernetes.io/dockerconfigjson``
Secret, ``podmigrate-checkpoint-pull``, in podmigrate's namespace; while a migration in a
namespace is open the controller keeps a copy there (labelled as its own, so a Secret of that name
that someone else made is used as it is, never overwritten or deleted), the restored pod names it
(``webhook.restore_patch`` for controller-owned pods, ``pods.replacement`` for bare ones), and
the last migration of the namespace to finish deletes it. Push and delete credentials never leave
the agents (``node_agent.publishing``).

Without the source Secret (a registry that needs no credentials) nothing is copied and restored
pods name no Secret. Copying is best effort: a refusal is logged, and the restore then fails with
the kubelet's own ``ErrImagePull``, which says why.

A copy is deleted with a ``resourceVersion`` precondition read before the namespace's other
migrations are listed, and every ``ensure`` rewrites the copy's ``used-by`` annotation: so a
migration that starts while another finishes either is listed as open or has changed the copy
since, and the delete then fails instead of pulling the Secret from under it.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Final

from kubernetes_asyncio import client

from kubeclient.reading import plain, read_plain
from migrator import api
from migrator.controllers.podmigration.migration import Context, PodRecord
from ocicheckpoint.credentials import SECRET_TYPE_DOCKERCONFIGJSON

log = logging.getLogger(__name__)

PULL_SECRET: Final = "podmigrate-checkpoint-pull"
# The namespace the operator's Secret is in: the controller's own (the Deployment sets POD_NAMESPACE).
SOURCE_NAMESPACE_ENV: Final = "POD_NAMESPACE"
DEFAULT_SOURCE_NAMESPACE: Final = "podmigrate-system"
LABEL_COPY: Final = "podmigrate.io/checkpoint-pull-copy"  # "true" on the copies the controller made (and may delete)
ANNOTATION_USED_BY: Final = "podmigrate.io/used-by"  # the uid of the migration that last ensured the copy
STATUS_KEY: Final = "pullSecret"  # in a PodMigration's status: the Secret its restored pod names


def source_namespace() -> str:
    return os.environ.get(SOURCE_NAMESPACE_ENV) or DEFAULT_SOURCE_NAMESPACE


def _copy(source: dict[str, Any], *, namespace: str, migration_uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": source.get("type") or SECRET_TYPE_DOCKERCONFIGJSON,
        "metadata": {
            "name": PULL_SECRET,
            "namespace": namespace,
            "labels": {LABEL_COPY: "true"},
            "annotations": {ANNOTATION_USED_BY: migration_uid},
        },
        "data": dict(source.get("data") or {}),
    }


async def _ensure(ctx: Context, m: PodRecord) -> bool:
    home = source_namespace()
    source = await read_plain(ctx.core.read_namespaced_secret(PULL_SECRET, home))
    if source is None:
        return False  # no credentials to hand out: the registry needs none
    if m.namespace == home:
        return True
    body = _copy(source, namespace=m.namespace, migration_uid=m.uid)
    existing = await read_plain(ctx.core.read_namespaced_secret(PULL_SECRET, m.namespace))
    if existing is None:
        try:
            await ctx.core.create_namespaced_secret(m.namespace, body)
            return True
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            existing = await read_plain(ctx.core.read_namespaced_secret(PULL_SECRET, m.namespace))
            if existing is None:
                raise
    meta = existing.get("metadata") or {}
    if (meta.get("labels") or {}).get(LABEL_COPY) != "true":
        log.warning("%s/%s is not podmigrate's copy: restored pods use it as it is", m.namespace, PULL_SECRET)
        return True
    current = ((meta.get("annotations") or {}).get(ANNOTATION_USED_BY), existing.get("data") or {})
    if current != (m.uid, body["data"]):
        body["metadata"]["resourceVersion"] = meta["resourceVersion"]
        await ctx.core.replace_namespaced_secret(PULL_SECRET, m.namespace, body)
    return True


async def ensure(ctx: Context, m: PodRecord) -> None:
    """Keep the pull Secret in the migration's namespace; record its name in the status for the restored pod."""
    try:
        present = await _ensure(ctx, m)
    except client.ApiException as exc:
        log.warning("cannot copy %s into %s (%s %s): restores pull without it", PULL_SECRET, m.namespace, exc.status, exc.reason)
        return
    if present:
        m.status[STATUS_KEY] = PULL_SECRET
    else:
        m.status.pop(STATUS_KEY, None)


async def release(ctx: Context, m: PodRecord) -> None:
    """Delete the namespace's copy when no other migration there is open and no PodCheckpoint kept (best effort)."""
    if not m.status.get(STATUS_KEY) or m.namespace == source_namespace():
        return
    try:
        existing = await read_plain(ctx.core.read_namespaced_secret(PULL_SECRET, m.namespace))
        meta = (existing or {}).get("metadata") or {}
        if existing is None or (meta.get("labels") or {}).get(LABEL_COPY) != "true":
            return
        listed = plain(
            await ctx.custom.list_namespaced_custom_object(
                api.PODMIGRATIONS.group, api.PODMIGRATIONS.version, m.namespace, api.PODMIGRATIONS.plural
            )
        )
        for item in listed.get("items") or []:
            phase = (item.get("status") or {}).get("phase")
            if item["metadata"].get("uid") != m.uid and phase not in api.TERMINAL_PHASES:
                return  # another migration here still needs it
        # A PodCheckpoint can be restored at any time (a PodRestore, a Deployment's warm start): the copy
        # stays while one exists here; the last one deleted releases it.
        kept = plain(
            await ctx.custom.list_namespaced_custom_object(
                api.PODCHECKPOINTS.group, api.PODCHECKPOINTS.version, m.namespace, api.PODCHECKPOINTS.plural
            )
        )
        if any(item["metadata"].get("uid") != m.uid for item in kept.get("items") or []):
            return
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=meta["resourceVersion"]))
        await ctx.core.delete_namespaced_secret(PULL_SECRET, m.namespace, body=options)
    except client.ApiException as exc:
        if exc.status not in (404, 409):  # gone already / ensured again meanwhile: both mean keep out of it
            log.warning("cannot delete %s/%s (%s %s)", m.namespace, PULL_SECRET, exc.status, exc.reason)
