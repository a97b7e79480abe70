"""The mutating admission webhook that turns a controller's replacement pod into the restore.

Why a webhook: a ReplicaSet's or StatefulSet's pod cannot simply be recreated by us, because
its controller owns the replica count. Delete it and the controller creates a replacement at
once, cold; create one ourselves and the controller deletes the surplus (or, for a
StatefulSet, the name is taken). So the migration lets the controller do what it does anyway
and changes only *what* it creates: when the source pod (already frozen and checkpointed) is
deleted, the controller's replacement pod passes through this webhook, which binds it to the
target node and swaps its images for the checkpoint images. The restored pod is owned by the
same controller, a StatefulSet pod keeps its name and identity, and the replica count never
leaves [replicas-1, replicas+1].

Each migration of a controller-owned pod opens one *slot* (owner UID, and the pod name for a
StatefulSet) in its status; a slot is claimed by exactly one pod creation, so a concurrent
scale-up can never produce a second restored copy (``migrator.slots``). The webhook keeps
nothing in memory: any replica of the control service can answer it.

It also intercepts ``pods/eviction`` in namespaces that opt in (``intercept_evictions``), so a
plain ``kubectl drain`` migrates their pods instead of killing them.

The webhook's failure policy is Ignore: if it is down, the controller's replacement starts
cold, which the migration detects and reports (state lost, but never zero copies).

The same server answers the validating webhooks of ``migrator.guard`` (who may use checkpoint
images, who may ask for a migration or a drain; failure policy Fail).

Who may call: only the API server. Each handler acts with the control service's permissions,
so a forged AdmissionReview would be a way around RBAC. The server asks for a client
certificate from the CA of the API server's admission configuration (``--webhook-client-ca``,
optionally by name) and refuses the TLS handshake without one; the handlers still re-read
every object they act on (the pod, its namespace's opt-in, the migration) rather than trust the
request's copy. Handlers make no blocking call: everything they await is the API server.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

from aiohttp import web
from kubernetes_asyncio import client

from kubeclient.informing import NotSynced, PodsAndNodes
from kubeclient.reading import plain, read_or_none
from migrator import api, claims, disruption, guard, movability, slots, warmstart
from migrator.slots import Slot
from migrator.units import now
from migrator.units import status_time as parse_time

log = logging.getLogger(__name__)

# How long after a move an eviction of the pod's name is taken for the evicting tool's retry of the old one.
RECENTLY_MOVED = timedelta(minutes=2)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def restore_patch(pod: Mapping[str, Any], slot: Slot) -> list[dict[str, Any]]:
    """The JSONPatch that makes the controller's pod a restore of the checkpoint on ``slot.node``."""
    annotations = {
        api.ANNOTATION_MIGRATION: slot.migration,
        api.ANNOTATION_MIGRATION_UID: slot.migration_uid,
        **slot.extra_annotations,
    }
    return checkpoint_patch(
        pod, node=slot.node, images=slot.images, source_node=slot.source_node, original_images=slot.original_images,
        annotations=annotations, restored_from=f"{slot.namespace}/{slot.source_pod}" if slot.source_pod else "",
        pull_secret=slot.pull_secret,
    )  # fmt: skip


def hold_patch(pod: Mapping[str, Any], slot: Slot) -> list[dict[str, Any]]:
    """The JSONPatch that makes a controller's replacement of a suspended pod hold its place: gated, its checkpoint's images."""
    checkpoint_namespace, _, checkpoint_name = slot.migration.partition("/")
    return checkpoint_patch(
        pod, node=None, images=slot.images, source_node=slot.source_node, original_images=slot.original_images,
        annotations={api.ANNOTATION_CHECKPOINT: f"{checkpoint_namespace}/{checkpoint_name}",
                     api.ANNOTATION_CHECKPOINT_UID: slot.migration_uid},
        restored_from=f"{slot.namespace}/{slot.source_pod}", pull_secret=slot.pull_secret,
    )  # fmt: skip


def checkpoint_patch(
    pod: Mapping[str, Any],
    *,
    node: str | None,
    images: Mapping[str, str],
    source_node: str,
    original_images: Mapping[str, str],
    annotations: Mapping[str, str],
    restored_from: str,
    pull_secret: str,
) -> list[dict[str, Any]]:
    """The JSONPatch that makes a controller's new pod restore checkpoint ``images`` ({container: image}) on ``node``.

    Bound to ``node`` (whose local storage holds the base images), or, with None, held: gated
    (``api.SCHEDULING_GATE_SUSPENDED``), so that it waits unscheduled until a PodRestore picks its node
    and lifts the gate (a suspended pod's place). The containers' images swapped
    for the checkpoint's, init containers dropped (they ran before the checkpoint), the checkpointed
    pod (``restored_from``) in each container's environment for the node's CRIU hook, and the
    checkpoint registry's pull Secret added.
    """
    spec = pod.get("spec") or {}
    if node is not None:
        ops: list[dict[str, Any]] = [{"op": "add", "path": "/spec/nodeName", "value": node}]
    else:
        gate = {"name": api.SCHEDULING_GATE_SUSPENDED}
        gates = spec.get("schedulingGates")
        ops = [
            {
                "op": "add",
                "path": "/spec/schedulingGates/-" if gates else "/spec/schedulingGates",
                "value": gate if gates else [gate],
            }
        ]
    annotations = {
        **annotations,
        api.ANNOTATION_RESTORED_FROM: source_node,
        api.ANNOTATION_CHECKPOINT_IMAGES: json.dumps(dict(images), sort_keys=True),
        api.ANNOTATION_ORIGINAL_IMAGES: json.dumps(dict(original_images), sort_keys=True),
    }
    if spec.get("initContainers"):
        annotations[api.ANNOTATION_SKIPPED_INIT] = ",".join(c["name"] for c in spec["initContainers"])
        ops.append({"op": "remove", "path": "/spec/initContainers"})
    if (pod.get("metadata") or {}).get("annotations"):
        ops += [{"op": "add", "path": f"/metadata/annotations/{_escape(k)}", "value": v} for k, v in annotations.items()]
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": annotations})
    env_entry = {"name": api.ENV_RESTORED_FROM, "value": restored_from}
    for i, container in enumerate(spec.get("containers") or []):
        if container["name"] in images:
            ops.append({"op": "replace" if "image" in container else "add", "path": f"/spec/containers/{i}/image",
                        "value": images[container["name"]]})  # fmt: skip
            ops.append({"op": "add", "path": f"/spec/containers/{i}/imagePullPolicy", "value": "IfNotPresent"})
            if restored_from:
                env = container.get("env")
                ops.append(
                    {"op": "add", "path": f"/spec/containers/{i}/env/-", "value": env_entry}
                    if env
                    else {"op": "add", "path": f"/spec/containers/{i}/env", "value": [env_entry]}
                )
    if pull_secret:  # the checkpoint registry's pull-only Secret, copied into the namespace (migrator/pullsecrets.py)
        secret = {"name": pull_secret}
        if not spec.get("imagePullSecrets"):
            ops.append({"op": "add", "path": "/spec/imagePullSecrets", "value": [secret]})
        elif secret not in spec["imagePullSecrets"]:
            ops.append({"op": "add", "path": "/spec/imagePullSecrets/-", "value": secret})
    return ops


def review_response(
    uid: str, *, patch: list[dict[str, Any]] | None = None, allowed: bool = True, code: int = 0, message: str = ""
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        reasons = {429: "TooManyRequests", 404: "NotFound"}  # what evicting tools act on (retry / pod gone)
        response["status"] = {"code": code or 403, "message": message, "reason": reasons.get(code, "Forbidden")}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def eviction_migration_name(pod: str, pod_uid: str) -> str:
    """One PodMigration per pod (per incarnation): retried evictions find it again."""
    return f"evict-{pod[:45]}-{pod_uid[:8]}"


PATH_MUTATE_PODS: Final = "/mutate-pods"
PATH_INTERCEPT_EVICTIONS: Final = "/intercept-evictions"
PATH_VALIDATE_PODS: Final = "/validate-pods"
PATH_VALIDATE_PODMIGRATIONS: Final = "/validate-podmigrations"
PATH_VALIDATE_NODEDRAINS: Final = "/validate-nodedrains"
PATH_VALIDATE_CHECKPOINTS: Final = "/validate-checkpoints"  # PodCheckpoints, PodRestores, CheckpointSchedules


def _common_names(peercert: Mapping[str, Any] | None) -> set[str]:
    """The commonName values of a peer certificate as ``ssl`` decodes it (``getpeercert()``)."""
    names = set()
    for rdn in (peercert or {}).get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                names.add(str(value))
    return names


def client_check(*, require_cert: bool, names: frozenset[str]) -> Any:
    """A middleware: 403 unless the TLS peer presented a certificate (and, when ``names`` is set, one of those CNs).

    The TLS layer (``CERT_REQUIRED`` with the client CA) already refuses a handshake without a
    valid certificate; this makes the rule visible per request and checks the name.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if not require_cert:
            return await handler(request)
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        if not cert:
            return web.json_response({"error": "a client certificate is required"}, status=403)
        if names and not (_common_names(cert) & names):
            return web.json_response({"error": f"client certificate {sorted(_common_names(cert))} is not accepted"}, status=403)
        return await handler(request)

    return middleware


class Webhook:
    def __init__(
        self,
        *,
        core: client.CoreV1Api | None = None,
        custom: client.CustomObjectsApi | None = None,
        policy: client.PolicyV1Api | None = None,
        authz: client.AuthorizationV1Api | None = None,
        apps: client.AppsV1Api | None = None,
        checkpoint_repository: str = "",
        own_user: str | None = None,
        client_names: frozenset[str] = frozenset(),
        require_client_cert: bool = False,
        pods_and_nodes: PodsAndNodes | None = None,
    ) -> None:
        self.core = core
        self.policy = policy
        self.custom = custom
        self.warm = (
            warmstart.WarmStart(core=core, apps=apps, custom=custom, pods_and_nodes=pods_and_nodes)
            if core is not None and apps is not None and custom is not None
            else None
        )
        self.guard = (
            guard.Guard(custom=custom, authz=authz, repository=checkpoint_repository, own_user=own_user)
            if custom is not None and authz is not None and checkpoint_repository
            else None
        )
        self.app = web.Application(middlewares=[client_check(require_cert=require_client_cert, names=client_names)])
        self.app.router.add_post(PATH_MUTATE_PODS, self.mutate_pods)
        self.app.router.add_post(PATH_INTERCEPT_EVICTIONS, self.intercept_evictions)
        self.app.router.add_post(PATH_VALIDATE_PODS, self.validate_pods)
        self.app.router.add_post(PATH_VALIDATE_PODMIGRATIONS, self.validate_podmigrations)
        self.app.router.add_post(PATH_VALIDATE_NODEDRAINS, self.validate_nodedrains)
        self.app.router.add_post(PATH_VALIDATE_CHECKPOINTS, self.validate_checkpoints)

    async def _validate(self, request: web.Request, decide: str) -> web.Response:
        """Answer a validating review with ``self.guard.<decide>``; refuse when it cannot be decided (failurePolicy Fail)."""
        review = await request.json()
        req = review.get("request") or {}
        uid = str(req.get("uid", ""))
        if self.guard is None:
            return web.json_response(
                review_response(uid, allowed=False, message="podmigrate's admission guard is not configured")
            )
        try:
            verdict = await getattr(self.guard, decide)(req)
        except client.ApiException as exc:
            log.warning("admission %s: cannot decide: %s", decide, exc.reason)
            return web.json_response(review_response(uid, allowed=False, code=503, message=f"cannot check now: {exc.reason}"))
        if not verdict.allowed:
            log.info("admission %s refused: %s", decide, verdict.message)
        return web.json_response(review_response(uid, allowed=verdict.allowed, message=verdict.message))

    async def validate_pods(self, request: web.Request) -> web.Response:
        return await self._validate(request, "pod")

    async def validate_podmigrations(self, request: web.Request) -> web.Response:
        return await self._validate(request, "podmigration")

    async def validate_nodedrains(self, request: web.Request) -> web.Response:
        return await self._validate(request, "nodedrain")

    async def validate_checkpoints(self, request: web.Request) -> web.Response:
        return await self._validate(request, "checkpoint_kinds")

    async def _opted_in(self, namespace: str) -> bool:
        """Does ``namespace`` ask for migrations instead of evictions, read now (not from the request)?"""
        if self.core is None or not namespace:
            return False
        try:
            ns = await read_or_none(self.core.read_namespace(namespace))
        except client.ApiException as exc:
            log.warning("eviction in %s: cannot read the namespace (%s): let through", namespace, exc.reason)
            return False
        labels = (ns.metadata.labels or {}) if ns is not None else {}
        return labels.get(api.LABEL_MIGRATE_ON_EVICT) == "true"

    async def _node_leaving(self, node: str | None) -> bool:
        """Is the pod's node being emptied: cordoned, or tainted against new pods (the cluster autoscaler's
        ToBeDeletedByClusterAutoscaler, an upgrade tool's taint)?"""
        if not node or self.core is None:
            return False
        try:
            spec = (await self.core.read_node(node)).spec
        except client.ApiException:
            return False
        return bool(spec.unschedulable) or any(t.effect in ("NoSchedule", "NoExecute") for t in spec.taints or [])

    async def _just_moved(self, namespace: str, annotations: Mapping[str, str]) -> bool:
        """Did this pod's own migration finish less than ``RECENTLY_MOVED`` ago (the evicting tool still retrying)?"""
        where = annotations.get(api.ANNOTATION_MIGRATION, "")
        if not annotations.get(api.ANNOTATION_MIGRATION_UID) or "/" not in where or self.custom is None:
            return False
        obj = await api.PODMIGRATIONS.get(self.custom, name=where.partition("/")[2], namespace=namespace)
        if obj is None:
            return False  # its record is gone: nothing says the move was recent
        completed = (obj.get("status") or {}).get("completionTime")
        return not completed or now() - parse_time(completed) < RECENTLY_MOVED

    async def intercept_evictions(self, request: web.Request) -> web.Response:
        """Migrate instead of evict, for namespaces that opted in (label ``podmigrate.io/migrate-on-evict``).

        ``kubectl drain``, the cluster autoscaler and upgrade tools evict pods through
        ``pods/eviction``. Here the eviction is answered 429 ("try again later", exactly what a
        PodDisruptionBudget answers) while a PodMigration moves the pod; the evicting tool
        retries, and once the pod it knew (by UID) is gone it carries on as if evicted. If the
        migration fails, the next retry is let through: the pod is evicted as it would have been.
        """
        review = await request.json()
        req = review.get("request") or {}
        uid = str(req.get("uid", ""))
        namespace, pod_name = str(req.get("namespace", "")), str(req.get("name", ""))
        if req.get("dryRun") or self.core is None or self.custom is None or not pod_name:
            return web.json_response(review_response(uid))
        resource = req.get("resource") or {}
        if (resource.get("resource"), req.get("subResource"), req.get("operation")) != ("pods", "eviction", "CREATE"):
            return web.json_response(review_response(uid))  # not an eviction: nothing to intercept
        if not await self._opted_in(namespace):  # the namespaceSelector said so; the request's word is not enough
            return web.json_response(review_response(uid))
        try:
            pod = await self.core.read_namespaced_pod(pod_name, namespace)
        except client.ApiException:
            return web.json_response(review_response(uid))
        annotations = pod.metadata.annotations or {}
        if await self._just_moved(namespace, annotations) and not await self._node_leaving(pod.spec.node_name):
            # An evicting tool retries by pod *name*; right after a move that name belongs to the restored pod on
            # a healthy node. 404 is what the tool would get had the pod been evicted: it moves on, the pod lives.
            # Only for a while, and never on a node that is itself being emptied: a later eviction of the restored
            # pod (the autoscaler removing its new node) is a real one, answered like any other.
            where = annotations.get(api.ANNOTATION_MIGRATION, "")
            message = f"pod {pod_name} was migrated off the drained node ({where}); it is not on that node any more"
            return web.json_response(review_response(uid, allowed=False, code=404, message=message))
        name = eviction_migration_name(pod_name, pod.metadata.uid)
        try:
            existing = await self.custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)
        except client.ApiException as exc:
            if exc.status != 404:
                return web.json_response(review_response(uid))
            existing = None
        if existing is None:
            # A pod that cannot move at all is evicted as asked rather than refused later by a doomed
            # migration. Its emptyDir files move with it: better than the eviction the caller accepted.
            refusal = movability.first_refusal(plain(pod), claims=await claims.read_for_pod(self.core, plain(pod)))
            if refusal is not None:
                log.info("eviction of %s/%s allowed: pod %s", namespace, pod_name, refusal.message)
                return web.json_response(review_response(uid))
            if spent := await self._budget_spent(namespace, plain(pod)):
                return web.json_response(review_response(uid, allowed=False, code=429, message=spent))
            body = {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "metadata": {"name": name, "namespace": namespace, "labels": {api.LABEL_EVICTION: "true"}},
                "spec": {"podName": pod_name},
            }
            try:
                await self.custom.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, body)
            except client.ApiException as exc:
                if exc.status != 409:
                    log.warning("eviction of %s/%s: cannot create %s: %s", namespace, pod_name, name, exc.reason)
                    return web.json_response(review_response(uid))
            phase = "Pending"
        else:
            phase = (existing.get("status") or {}).get("phase") or "Pending"
        if phase == api.Phase.FAILED:
            reason = (existing or {}).get("status", {}).get("reason", "")
            log.info("eviction of %s/%s allowed: its migration %s failed (%s)", namespace, pod_name, name, reason)
            return web.json_response(review_response(uid))
        message = f"podmigrate is migrating pod {pod_name} instead of evicting it (podmigration {name}: {phase}); retry later"
        return web.json_response(review_response(uid, allowed=False, code=429, message=message))

    async def _budget_spent(self, namespace: str, pod: Mapping[str, Any]) -> str | None:
        """Why a migration of ``pod`` now would exceed a PodDisruptionBudget, or None.

        This webhook runs at the eviction's admission, before the API server checks the budget, so it
        checks it here, as the eviction would: against ``disruptionsAllowed``, minus the migrations
        already under way in the namespace whose source pod still exists (a frozen pod is still
        counted healthy by the budget until it is deleted). Without this, a plain ``kubectl drain``
        would start a migration for every replica at once.
        """
        if self.policy is None or self.custom is None or self.core is None:
            return None
        pdbs = [plain(b) for b in (await self.policy.list_namespaced_pod_disruption_budget(namespace)).items]
        covering = disruption.covering(pod, disruption.budgets(pdbs))
        if not covering:
            return None
        listing = await self.custom.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)
        alive = {(namespace, p.metadata.name): plain(p) for p in (await self.core.list_namespaced_pod(namespace)).items}
        moving = disruption.moving_sources(listing.get("items") or [], alive)
        decision = disruption.check(pod, all_budgets=covering, in_flight={}, windows={}, others=moving)
        if not decision.allowed:
            return f"Cannot migrate pod {pod['metadata']['name']} now: {decision.reason}; retry later"
        return None

    async def _warm_start(self, pod: Mapping[str, Any], *, namespace: str) -> list[dict[str, Any]] | None:
        """A new pod of a ReplicaSet annotated for a warm start: the patch that restores it (``migrator.warmstart``).

        When the checkpoint cannot serve it, the pod starts cold with the reason in an annotation; when
        the API cannot be read now, it starts cold without one (the webhook fails open, as it is Ignore).
        """
        if self.warm is None:
            return None
        try:
            name = await self.warm.checkpoint_for(pod, namespace=namespace)
            if name is None:
                return None
            checkpoint, node = await self.warm.plan(pod, namespace=namespace, checkpoint_name=name)
        except warmstart.Skip as skip:
            log.info("warm start of a pod in %s skipped: %s", namespace, skip)
            key = f"/metadata/annotations/{_escape(api.ANNOTATION_WARM_START_SKIPPED)}"
            if (pod.get("metadata") or {}).get("annotations"):
                return [{"op": "add", "path": key, "value": str(skip)}]
            return [{"op": "add", "path": "/metadata/annotations", "value": {api.ANNOTATION_WARM_START_SKIPPED: str(skip)}}]
        except client.ApiException as exc:
            log.warning("warm start of a pod in %s not decided (%s): it starts cold", namespace, exc.reason)
            return None
        except NotSynced as exc:
            log.warning("warm start of a pod in %s not decided (%s): it starts cold", namespace, exc)
            return None
        status = checkpoint["status"]
        source_pod = status["originalPod"]["metadata"]["name"]
        log.info("warm start: a new pod in %s restores PodCheckpoint %s on %s", namespace, name, node)
        return checkpoint_patch(
            pod, node=node, images={c["name"]: c["image"] for c in status.get("containers") or []},
            source_node=status["sourceNode"],
            original_images={c["name"]: c["image"] for c in (pod.get("spec") or {}).get("containers") or []},
            annotations={api.ANNOTATION_CHECKPOINT: f"{namespace}/{name}",
                         api.ANNOTATION_CHECKPOINT_UID: checkpoint["metadata"]["uid"]},
            restored_from=f"{namespace}/{source_pod}", pull_secret=str(status.get("pullSecret") or ""),
        )  # fmt: skip

    async def mutate_pods(self, request: web.Request) -> web.Response:
        review = await request.json()
        req = review.get("request") or {}
        uid = str(req.get("uid", ""))
        pod = req.get("object") or {}
        if req.get("operation") != "CREATE" or req.get("kind", {}).get("kind") != "Pod":
            return web.json_response(review_response(uid))
        if self.custom is None:
            return web.json_response(review_response(uid))
        try:
            slot = await slots.claim(self.custom, pod, namespace=str(req.get("namespace", "")))
        except client.ApiException as exc:  # the pod starts cold; the migration sees that and says so
            log.warning("cannot claim a restore slot for a pod of %s: %s", req.get("namespace"), exc.reason)
            return web.json_response(review_response(uid))
        if slot is None:
            namespace = str(req.get("namespace", ""))
            try:
                hold = await slots.claim(self.custom, pod, namespace=namespace, resource=api.PODCHECKPOINTS)
            except client.ApiException as exc:  # it starts cold; the PodCheckpoint sees that and says so
                log.warning("cannot claim a suspended pod's place for a pod of %s: %s", namespace, exc.reason)
                hold = None
            if hold is not None:
                log.info("holding the place of suspended pod %s/%s (%s)", namespace, hold.source_pod, hold.migration)
                return web.json_response(review_response(uid, patch=hold_patch(pod, hold)))
            warm = await self._warm_start(pod, namespace=namespace)
            return web.json_response(review_response(uid, patch=warm))
        log.info(
            "restoring %s's replacement pod on %s for %s",
            pod.get("metadata", {}).get("generateName") or pod.get("metadata", {}).get("name"),
            slot.node,
            slot.migration,
        )
        return web.json_response(review_response(uid, patch=restore_patch(pod, slot)))
