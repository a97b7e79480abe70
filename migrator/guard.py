"""Validating admission: who may use checkpoint images, and who may ask for a migration.

Why these checks exist (SECURITY.md has the whole threat model):

* **Checkpoint images are process memory.** A pod whose container names a checkpoint image is
  a *restore* of that process: CRI-O and containerd restore any container whose image is a
  checkpoint image. So a pod creator who names another pod's checkpoint image would run that
  process, with its keys and data, in a pod of their own. Only two kinds of pod may name one:
  a restored pod of an open migration, in the migration's own namespace, with exactly the
  images that migration's checkpoint produced, created by podmigrate itself (bare pods,
  rollbacks) or by the pod's own workload controller (the replacement the mutating webhook
  turned into the restore). An update may not introduce a checkpoint image either.
* **A PodMigration deletes and recreates a pod** with the control service's permissions. Were
  anyone who may create PodMigrations allowed to name any pod, the control service would be a
  confused deputy: a user who may not delete a pod could have it frozen, dumped and killed.
  So creating a PodMigration requires that its creator may ``delete`` that pod, and creating
  a NodeDrain that its creator may ``patch`` that node and ``create pods/eviction`` (what
  ``kubectl drain`` needs). The API server answers these SubjectAccessReviews, for the user
  of the admission request.

Everything is read live from the API server, never from the request's claims about other
objects; the webhooks are configured ``failurePolicy: Fail`` with ``matchConditions`` that
send only requests naming checkpoint images (or creating our two kinds) here, so the rest of
the cluster does not depend on this service being up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from kubernetes_asyncio import client

from agentapi import contract
from migrator import api
from ocicheckpoint.reference import parse_reference

log = logging.getLogger(__name__)

# Who creates the restored pods: the workload controllers of kube-controller-manager (their
# ServiceAccounts with --use-service-account-credentials, else the manager's own identity).
WORKLOAD_CONTROLLERS: Final = frozenset(
    {
        "system:serviceaccount:kube-system:replicaset-controller",
        "system:serviceaccount:kube-system:statefulset-controller",
        "system:kube-controller-manager",
    }
)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    allowed: bool
    message: str = ""


ALLOW: Final = Verdict(allowed=True)


def _containers(pod: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    spec = pod.get("spec") or {}
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def checkpoint_images(pod: Mapping[str, Any], *, repository: str) -> dict[str, str]:
    """``{image: namespace}`` for each container image of ``pod`` under the checkpoint ``repository``."""
    found: dict[str, str] = {}
    registry = parse_reference(repository).registry
    for container in _containers(pod):
        image = container.get("image")
        if not isinstance(image, str):
            continue
        try:
            ref = parse_reference(image.lower())
        except ValueError:
            continue  # not fully qualified: not ours (the checkpoint repository always names its registry)
        # By path, whatever the host is spelled as: another name or address of the same registry
        # (a DNS alias, an IP) must not slip a checkpoint image past this check.
        namespace = contract.namespace_of_image(root=repository, image=replace(ref, registry=registry))
        if namespace is not None:
            found[image] = namespace
    return found


def _user(request: Mapping[str, Any]) -> Mapping[str, Any]:
    return request.get("userInfo") or {}


async def may(
    authz: client.AuthorizationV1Api,
    request: Mapping[str, Any],
    *,
    verb: str,
    resource: str,
    namespace: str | None = None,
    name: str | None = None,
    group: str = "",
    subresource: str | None = None,
) -> Verdict:
    """May the user of admission ``request`` do this? A SubjectAccessReview for that user, with their groups and extras."""
    user = _user(request)
    spec = client.V1SubjectAccessReviewSpec(
        user=user.get("username") or "",
        uid=user.get("uid") or None,
        groups=list(user.get("groups") or []),
        extra={k: list(v) for k, v in (user.get("extra") or {}).items()} or None,
        resource_attributes=client.V1ResourceAttributes(
            group=group, resource=resource, subresource=subresource, verb=verb, namespace=namespace, name=name
        ),
    )
    review = await authz.create_subject_access_review(client.V1SubjectAccessReview(spec=spec))
    status = review.status
    if status is not None and status.allowed:
        return ALLOW
    what = f"{verb} {resource}{'/' + subresource if subresource else ''} {name or ''}".strip()
    where = f' in namespace "{namespace}"' if namespace else ""
    return Verdict(allowed=False, message=f'user "{user.get("username")}" may not {what}{where}')


class Guard:
    """The validating handlers' decisions (the HTTP side is ``migrator.webhook``)."""

    def __init__(
        self, *, custom: client.CustomObjectsApi, authz: client.AuthorizationV1Api, repository: str, own_user: str | None
    ) -> None:
        self._custom = custom
        self._authz = authz
        self._repository = repository
        self._own_user = own_user

    async def pod(self, request: Mapping[str, Any]) -> Verdict:
        """A pod naming checkpoint images: only the restore of an open migration, with that migration's images."""
        pod = request.get("object") or {}
        namespace = str(request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "")
        images = checkpoint_images(pod, repository=self._repository)
        if request.get("operation") == "UPDATE":
            before = checkpoint_images(request.get("oldObject") or {}, repository=self._repository)
            images = {image: ns for image, ns in images.items() if image not in before}
        if not images:
            return ALLOW
        foreign = sorted({ns for ns in images.values() if ns != namespace})
        if foreign:
            return Verdict(
                allowed=False, message=f"checkpoint images of namespace {', '.join(foreign)} cannot be used in {namespace}"
            )
        if request.get("operation") != "CREATE":
            return Verdict(allowed=False, message="a checkpoint image cannot be put into an existing pod")
        username = str(_user(request).get("username") or "")
        if username != self._own_user and username not in WORKLOAD_CONTROLLERS:
            return Verdict(
                allowed=False, message=f'only podmigrate restores pods from checkpoint images (user "{username}" may not)'
            )
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        if annotations.get(api.ANNOTATION_CHECKPOINT):
            gates = {g.get("name") for g in (pod.get("spec") or {}).get("schedulingGates") or []}
            return await self._restore_of_checkpoint(namespace=namespace, username=username, annotations=annotations,
                                                     images=images, held=api.SCHEDULING_GATE_SUSPENDED in gates)  # fmt: skip
        where = str(annotations.get(api.ANNOTATION_MIGRATION) or "")
        m_namespace, _, m_name = where.partition("/")
        if m_namespace != namespace or not m_name:
            return Verdict(allowed=False, message="a pod with checkpoint images must be the restore of a PodMigration here")
        migration = await api.PODMIGRATIONS.get(self._custom, name=m_name, namespace=namespace)
        if migration is None or migration["metadata"].get("uid") != annotations.get(api.ANNOTATION_MIGRATION_UID):
            return Verdict(allowed=False, message=f"PodMigration {where} (of these checkpoint images) does not exist")
        status = migration.get("status") or {}
        if status.get("phase") in api.TERMINAL_PHASES:
            return Verdict(
                allowed=False, message=f"PodMigration {where} is {status.get('phase')}: its checkpoint is not restored now"
            )
        produced = {str(c.get("image")) for c in status.get("containers") or []}
        stray = sorted(set(images) - produced)
        if stray:
            return Verdict(allowed=False, message=f"{', '.join(stray)} is not a checkpoint of PodMigration {where}")
        return ALLOW

    async def _restore_of_checkpoint(
        self, *, namespace: str, username: str, annotations: Mapping[str, Any], images: Mapping[str, str], held: bool
    ) -> Verdict:
        """A pod restoring a PodCheckpoint of its namespace: a PodRestore's (made by podmigrate), or a warm start's.

        A PodRestore's pod is created by this service and names its open PodRestore; a warm start's
        is created by the ReplicaSet controller, made a restore by ``migrator.warmstart`` because its
        ReplicaSet names the checkpoint: whoever may write that Deployment or ReplicaSet may restore
        this namespace's checkpoints into it (SECURITY.md). Either way the images must be exactly
        ones that checkpoint holds, and the checkpoint must be Available (not failed, not being deleted).
        A workload controller's replacement of a pod being suspended holds its place while the
        checkpoint is still Suspending: allowed only gated (``api.SCHEDULING_GATE_SUSPENDED``), so it
        cannot run until a PodRestore releases it.
        """
        where = str(annotations.get(api.ANNOTATION_CHECKPOINT) or "")
        c_namespace, _, c_name = where.partition("/")
        if c_namespace != namespace or not c_name:
            return Verdict(allowed=False, message=f"PodCheckpoint {where} is not in namespace {namespace}")
        checkpoint = await api.PODCHECKPOINTS.get(self._custom, name=c_name, namespace=namespace)
        if checkpoint is None or checkpoint["metadata"].get("uid") != annotations.get(api.ANNOTATION_CHECKPOINT_UID):
            return Verdict(allowed=False, message=f"PodCheckpoint {where} (of these checkpoint images) does not exist")
        status = checkpoint.get("status") or {}
        holding = held and status.get("phase") == api.CheckpointPhase.SUSPENDING
        if (status.get("phase") != api.CheckpointPhase.AVAILABLE and not holding) or checkpoint["metadata"].get(
            "deletionTimestamp"
        ):
            return Verdict(allowed=False, message=f"PodCheckpoint {where} is not Available: it is not restored now")
        produced = {str(c.get("image")) for c in status.get("containers") or []}
        if stray := sorted(set(images) - produced):
            return Verdict(allowed=False, message=f"{', '.join(stray)} is not a checkpoint of PodCheckpoint {where}")
        if username == self._own_user:
            restore_at = str(annotations.get(api.ANNOTATION_RESTORE) or "")
            r_namespace, _, r_name = restore_at.partition("/")
            restore = await api.PODRESTORES.get(self._custom, name=r_name, namespace=namespace) if r_name else None
            if (
                r_namespace != namespace
                or restore is None
                or restore["metadata"].get("uid") != annotations.get(api.ANNOTATION_RESTORE_UID)
            ):
                return Verdict(allowed=False, message=f"PodRestore {restore_at or '(none)'} of these images does not exist")
            if (restore.get("status") or {}).get("phase") in api.RESTORE_TERMINAL_PHASES:
                return Verdict(allowed=False, message=f"PodRestore {restore_at} is finished: it creates no pod now")
        return ALLOW

    async def podmigration(self, request: Mapping[str, Any]) -> Verdict:
        """Its creator may delete the pod it moves (the migration deletes it)."""
        if request.get("operation") != "CREATE" or _user(request).get("username") == self._own_user:
            return ALLOW  # the spec is immutable (CRD rule); podmigrate's own are for evictions and drains it checked
        obj = request.get("object") or {}
        pod = str((obj.get("spec") or {}).get("podName") or "")
        verdict = await may(
            self._authz, request, verb="delete", resource="pods", namespace=str(request.get("namespace")), name=pod
        )
        if not verdict.allowed:
            return Verdict(allowed=False, message=f"{verdict.message}, so it may not migrate it")
        return ALLOW

    async def nodedrain(self, request: Mapping[str, Any]) -> Verdict:
        """Its creator may cordon the node and evict pods, as ``kubectl drain`` needs."""
        if request.get("operation") != "CREATE" or _user(request).get("username") == self._own_user:
            return ALLOW  # auto-drains: the node's annotation, set by whoever may patch the node
        node = str(((request.get("object") or {}).get("spec") or {}).get("nodeName") or "")
        for verdict in (
            await may(self._authz, request, verb="patch", resource="nodes", name=node),
            await may(self._authz, request, verb="create", resource="pods", subresource="eviction"),
        ):
            if not verdict.allowed:
                return Verdict(allowed=False, message=f"{verdict.message}, so it may not drain node {node}")
        return ALLOW

    async def checkpoint_kinds(self, request: Mapping[str, Any]) -> Verdict:
        """Their creator may do what they lead to: a checkpoint reads a pod's memory, a restore creates a pod.

        * PodCheckpoint: ``create pods/exec`` on its pod (its memory is what exec would reach), and
          ``delete`` on it too to suspend it (the pod is removed);
        * CheckpointSchedule: ``create pods/exec`` on pods of its namespace (it checkpoints whatever its
          selector matches, now and later);
        * PodRestore: ``create pods`` in its namespace (the pod runs as the checkpointed pod's
          ServiceAccount, which creating pods there allows anyway).
        """
        if request.get("operation") != "CREATE" or _user(request).get("username") == self._own_user:
            return ALLOW  # a schedule's checkpoints: its creator was checked
        kind = str((request.get("kind") or {}).get("kind") or "")
        namespace = str(request.get("namespace") or "")
        spec = (request.get("object") or {}).get("spec") or {}
        checks: list[dict[str, Any]] = []
        if kind == api.CHECKPOINT_KIND:
            pod = str(spec.get("podName") or "")
            checks.append({"verb": "create", "resource": "pods", "subresource": "exec", "name": pod})
            if spec.get("mode") == api.CheckpointMode.SUSPEND:
                checks.append({"verb": "delete", "resource": "pods", "name": pod})
        elif kind == api.SCHEDULE_KIND:
            checks.append({"verb": "create", "resource": "pods", "subresource": "exec", "name": spec.get("podName") or None})
        elif kind == api.RESTORE_KIND:
            checks.append({"verb": "create", "resource": "pods"})
        for check in checks:
            verdict = await may(self._authz, request, namespace=namespace, **check)
            if not verdict.allowed:
                return Verdict(allowed=False, message=f"{verdict.message}, so it may not create this {kind}")
        return ALLOW
