"""The PodMigration reconciler: one pod's move as a resumable state machine.

Level-triggered and idempotent, like a controller-runtime reconciler: every pass reads the
PodMigration and the world, does at most one step's work, and records the outcome (and the
next step) in ``status`` before anything else happens. A control service killed at any line
finds, on restart, the step it was in and runs it again; every step is written so that
running it twice is harmless (a second freeze is a no-op, a delete of a gone pod is success,
a create that finds our own pod adopts it).

The invariant the steps keep: at every instant exactly one copy of the pod may run.

    Validate -> PrepareTarget (base images pulled on the target: CRI-O restores only from local
                storage; done before the freeze, so it is not downtime)
             -> Checkpoint (agent freezes the source, kubelet checkpoints, image pushed)
             -> RemoveSource (the frozen source is deleted; only now is ``sourceRemoved`` true)
             -> CreateTarget (same name, bound to the target, images = checkpoint images)
             -> WaitReady -> Cleanup -> Succeeded

Failure before ``sourceRemoved``: ThawSource (the source runs on, it never stopped existing)
-> Failed. Failure after: RestoreSource (the checkpoint restored on the source node) and, if
that fails too, Recreate (the original spec, state lost but the pod is not) -> Failed. The
reason is always in ``status.reason``/``status.message`` and in an Event.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio import client

from agentapi import contract
from agentapi.client import AgentClient, AgentError
from kubeclient.events import record_event
from kubeclient.patching import Gone, patch_custom_status
from migrator import api, placement, tracing
from migrator.api import OWNERS_RESTORED_BY_WEBHOOK, OnFailure, Phase, Step
from migrator.metrics import ControllerMetrics
from migrator.units import iso, now
from migrator.units import status_time as parse_time
from migrator.webhook import RestoreSlots, Slot
from telemetry import logcontext

log = logging.getLogger(__name__)

CONTAINER_FAILURES = frozenset(
    {
        "CreateContainerError",
        "RunContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
    }
)
SPAN_NAMES = {
    Step.VALIDATE: "validate",
    Step.CHECKPOINT: "checkpoint",
    Step.PREPARE_TARGET: "prepare-target",
    Step.REMOVE_SOURCE: "remove-source",
    Step.CREATE_TARGET: "create-target",
    Step.AWAIT_REPLACEMENT: "await-replacement",
    Step.WAIT_READY: "restore",
    Step.CLEANUP: "cleanup",
    Step.THAW_SOURCE: "rollback-thaw-source",
    Step.RESTORE_SOURCE: "rollback-restore-on-source",
    Step.RECREATE: "rollback-recreate",
}
POLL = 0.5
COMPONENT = "podmigrate-controller"


@dataclass(frozen=True, kw_only=True)
class Settings:
    checkpoint_repository: str  # host[:port]/path; images go to <it>/<namespace>/<pod>
    checkpoint_timeout_seconds: int = 120


class Wait(Exception):
    """Not an error: this step needs the world to move; look again after ``seconds``."""

    def __init__(self, seconds: float = POLL) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class Migration:
    """A PodMigration and the status being built for it."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        self.obj = obj
        self.events: list[tuple[str, str]] = []  # (reason, message) to record once status is saved
        self.meta = obj["metadata"]
        self.spec: Mapping[str, Any] = obj.get("spec") or {}
        self.status: dict[str, Any] = copy.deepcopy(dict(obj.get("status") or {}))

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def namespace(self) -> str:
        return str(self.meta["namespace"])

    @property
    def uid(self) -> str:
        return str(self.meta["uid"])

    @property
    def pod_name(self) -> str:
        return str(self.spec["podName"])

    @property
    def step(self) -> Step:
        return Step(self.status.get("step") or Step.VALIDATE)

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "")

    def current_span_id(self) -> str:
        return str(self.status["phases"][-1]["spanID"])

    def traceparent(self) -> str:
        return tracing.traceparent(trace_id=self.status["traceID"], span_id=self.current_span_id())

    def images(self) -> dict[str, str]:
        return {c["name"]: c["image"] for c in self.status.get("containers") or []}


class PodMigrationReconciler:
    def __init__(
        self,
        *,
        core: client.CoreV1Api,
        custom: client.CustomObjectsApi,
        agents: AgentClient,
        settings: Settings,
        metrics: ControllerMetrics | None = None,
        slots: RestoreSlots | None = None,
    ) -> None:
        self.metrics = metrics
        self.slots = slots
        self.core = core
        self.custom = custom
        self.agents = agents
        self.settings = settings
        self.steps = {
            Step.VALIDATE: self._validate,
            Step.CHECKPOINT: self._checkpoint,
            Step.PREPARE_TARGET: self._prepare_target,
            Step.REMOVE_SOURCE: self._remove_source,
            Step.CREATE_TARGET: self._create_target,
            Step.AWAIT_REPLACEMENT: self._await_replacement,
            Step.WAIT_READY: self._wait_ready,
            Step.CLEANUP: self._cleanup,
            Step.THAW_SOURCE: self._thaw_source,
            Step.RESTORE_SOURCE: self._restore_source,
            Step.RECREATE: self._recreate,
        }

    # --- the loop -------------------------------------------------------------------------
    async def reconcile(self, obj: Mapping[str, Any]) -> float | None:
        """Drive one PodMigration as far as it can go now; seconds until the next look, or None when done."""
        m = Migration(obj)
        deleting = bool(m.meta.get("deletionTimestamp"))
        if m.phase in api.TERMINAL_PHASES:
            if deleting:
                await self._release(m)
            return None
        if not deleting and api.FINALIZER not in (m.meta.get("finalizers") or []):
            await self._hold(m)
        logcontext.migration.set(f"{m.namespace}/{m.name}")
        logcontext.trace_id.set(str(m.status.get("traceID", "")))
        if "traceID" not in m.status:
            start = now()
            parent = tracing.parse_traceparent((m.meta.get("annotations") or {}).get(api.ANNOTATION_TRACEPARENT))
            m.status.update(
                traceID=parent[0] if parent else tracing.new_trace_id(),
                rootSpanID=tracing.new_span_id(),
                startTime=iso(start),
                phases=[],
                conditions=[],
            )
            if parent:
                m.status["parentSpanID"] = parent[1]
            self._enter(m, Step.VALIDATE)
            logcontext.trace_id.set(m.status["traceID"])
            log.info("migrating pod %s", m.pod_name)
            await self._save(m)
            await self._event(m, "Started", f"migrating pod {m.pod_name}")
        while True:
            step = m.step
            if step == Step.DONE:
                if m.meta.get("deletionTimestamp"):
                    await self._release(m)
                return None
            self._check_deadline(m)
            self._check_cancelled(m)
            before = json.dumps(m.status, sort_keys=True)
            try:
                await self.steps[step](m)
            except Wait as wait:
                if json.dumps(m.status, sort_keys=True) != before:
                    await self._save(m)
                return wait.seconds
            except Gone:
                return None
            await self._save(m)

    async def _hold(self, m: Migration) -> None:
        """Add our finalizer: deleting a PodMigration mid-flight must not leave its pod frozen or gone."""
        finalizers = [*(m.meta.get("finalizers") or []), api.FINALIZER]
        await self._patch_meta(m, {"metadata": {"finalizers": finalizers, "resourceVersion": m.meta["resourceVersion"]}})

    async def _release(self, m: Migration) -> None:
        finalizers = [f for f in m.meta.get("finalizers") or [] if f != api.FINALIZER]
        if finalizers != list(m.meta.get("finalizers") or []):
            await self._patch_meta(m, {"metadata": {"finalizers": finalizers, "resourceVersion": m.meta["resourceVersion"]}})

    async def _patch_meta(self, m: Migration, body: dict[str, Any]) -> None:
        # resourceVersion in the patch makes it conditional: a 409 means someone changed the list meanwhile,
        # and the dispatcher's retry re-reads the object and tries again.
        try:
            await self.custom.patch_namespaced_custom_object(
                api.GROUP, api.VERSION, m.namespace, api.PLURAL, m.name, body, _content_type="application/merge-patch+json"
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    def _check_cancelled(self, m: Migration) -> None:
        """A deleted PodMigration is cancelled: roll back if the source still exists, else finish bringing the pod back."""
        if not m.meta.get("deletionTimestamp") or m.status.get("failure"):
            return
        message = "the PodMigration was deleted (cancelled)"
        if m.step in (Step.VALIDATE, Step.PREPARE_TARGET, Step.CHECKPOINT):
            self._fail_before_removal(m, "Cancelled", message)

    def _check_deadline(self, m: Migration) -> None:
        timeout = int(m.spec.get("timeoutSeconds") or 300)
        if now() < parse_time(m.status["startTime"]) + timedelta(seconds=timeout):
            return
        message = f"the migration did not finish within {timeout}s (timeoutSeconds) while in step {m.step}"
        if m.step in (Step.VALIDATE, Step.CHECKPOINT, Step.PREPARE_TARGET):
            self._fail_before_removal(m, "Timeout", message)
        elif m.step in (Step.CREATE_TARGET, Step.AWAIT_REPLACEMENT, Step.WAIT_READY) and not m.status.get("failure"):
            self._fail_after_removal(m, "Timeout", message)

    async def _save(self, m: Migration) -> None:
        await patch_custom_status(
            self.custom,
            group=api.GROUP,
            version=api.VERSION,
            plural=api.PLURAL,
            namespace=m.namespace,
            name=m.name,
            status=m.status,
        )
        events, m.events = m.events, []
        for reason, message in events:
            await self._event(m, reason, message)

    # --- bookkeeping ----------------------------------------------------------------------
    def _close_phase(self, m: Migration, *, error: str | None = None) -> None:
        phases = m.status.get("phases") or []
        if not phases or phases[-1].get("end"):
            return
        record = phases[-1]
        record["end"] = iso(now())
        if error:
            record["error"] = error
        tracing.emit_span(
            name=f"migration.{record['name']}",
            trace_id=m.status["traceID"],
            span_id=record["spanID"],
            parent_span_id=m.status["rootSpanID"],
            start=parse_time(record["start"]),
            end=parse_time(record["end"]),
            attributes=self._attributes(m),
            error=error,
        )

    def _enter(self, m: Migration, step: Step, *, error: str | None = None) -> None:
        self._close_phase(m, error=error)
        m.status["step"] = step.value
        if step == Step.DONE:
            return
        m.status["phase"] = api.PHASE_OF_STEP[step].value
        m.status.setdefault("phases", []).append({"name": SPAN_NAMES[step], "spanID": tracing.new_span_id(), "start": iso(now())})
        m.events.append((step.value, f"{api.PHASE_OF_STEP[step].value}: step {step.value} ({SPAN_NAMES[step]})"))

    def _attributes(self, m: Migration) -> dict[str, Any]:
        attrs: dict[str, Any] = {"k8s.namespace.name": m.namespace, "k8s.pod.name": m.pod_name, "podmigrate.migration": m.name}
        containers = m.status.get("containers") or []
        if containers:
            attrs["podmigrate.checkpoint.images"] = [c["image"] for c in containers]
            attrs["podmigrate.checkpoint.archive_bytes"] = sum(int(c.get("archiveBytes") or 0) for c in containers)
            attrs["podmigrate.checkpoint.image_bytes"] = sum(int(c.get("imageBytes") or 0) for c in containers)
        if m.status.get("downtimeSeconds"):
            attrs["podmigrate.downtime_seconds"] = float(m.status["downtimeSeconds"])
        for key, attr in (("sourceNode", "podmigrate.source_node"), ("targetNode", "podmigrate.target_node")):
            if m.status.get(key):
                attrs[attr] = m.status[key]
        return attrs

    def _set_condition(self, m: Migration, kind: str, value: bool, reason: str, message: str) -> None:
        conditions = [c for c in m.status.get("conditions") or [] if c["type"] != kind]
        conditions.append(
            {
                "type": kind,
                "status": "True" if value else "False",
                "reason": reason,
                "message": message,
                "lastTransitionTime": iso(now()),
            }
        )
        m.status["conditions"] = conditions

    def _fail_before_removal(self, m: Migration, reason: str, message: str) -> None:
        m.status["failure"] = {"reason": reason, "message": message}
        self._enter(m, Step.THAW_SOURCE, error=message)

    def _fail_after_removal(self, m: Migration, reason: str, message: str) -> None:
        m.status["failure"] = {"reason": reason, "message": message}
        on_failure = OnFailure(m.spec.get("onFailure") or OnFailure.RESTORE_SOURCE)
        next_step = (
            Step.RESTORE_SOURCE if on_failure == OnFailure.RESTORE_SOURCE and m.status.get("containers") else Step.RECREATE
        )
        self._enter(m, next_step, error=message)

    async def _finish(self, m: Migration, *, phase: Phase, reason: str, message: str) -> None:
        end = now()
        failed = phase == Phase.FAILED
        self._close_phase(m)
        m.status.update(phase=phase.value, step=Step.DONE.value, reason=reason, message=message, completionTime=iso(end))
        m.status.pop("failure", None)
        self._set_condition(m, "Succeeded", not failed, reason, message)
        if m.status.get("frozenAt") and m.status.get("readyAt"):
            frozen, ready = parse_time(m.status["frozenAt"]), parse_time(m.status["readyAt"])
            m.status["downtimeSeconds"] = f"{(ready - frozen).total_seconds():.3f}"
            tracing.emit_span(
                name="migration.downtime",
                trace_id=m.status["traceID"],
                span_id=tracing.new_span_id(),
                parent_span_id=m.status["rootSpanID"],
                start=frozen,
                end=ready,
                attributes=self._attributes(m),
            )
        tracing.emit_span(
            name="migration",
            trace_id=m.status["traceID"],
            span_id=m.status["rootSpanID"],
            parent_span_id=m.status.get("parentSpanID"),
            start=parse_time(m.status["startTime"]),
            end=end,
            attributes={**self._attributes(m), "podmigrate.outcome": phase.value, "podmigrate.reason": reason},
            error=message if failed else None,
        )
        tracing.flush()
        if self.metrics is not None:
            self.metrics.observe_finished(m.status)
        log.info("%s/%s %s: %s: %s", m.namespace, m.name, phase.value, reason, message)
        await self._event(m, reason, message, warning=failed)

    async def _event(self, m: Migration, reason: str, message: str, *, warning: bool = False) -> None:
        """An Event on the PodMigration and, tagged with its name, on the pod it moves."""
        involved = client.V1ObjectReference(
            api_version=api.API_VERSION, kind=api.KIND, name=m.name, namespace=m.namespace, uid=m.uid
        )
        await record_event(self.core, namespace=m.namespace, involved=involved, reason=reason, message=message,
                           component=COMPONENT, warning=warning)  # fmt: skip
        pod_uid = (m.status.get("newPod") or {}).get("uid") or m.status.get("podUID")
        if pod_uid:
            on_pod = client.V1ObjectReference(api_version="v1", kind="Pod", name=m.pod_name, namespace=m.namespace, uid=pod_uid)
            await record_event(self.core, namespace=m.namespace, involved=on_pod, reason=reason, message=f"[{m.name}] {message}",
                               component=COMPONENT, warning=warning)  # fmt: skip

    # --- reading the world ----------------------------------------------------------------
    async def _pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            pod = await self.core.read_namespaced_pod(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.core.api_client.sanitize_for_serialization(pod)

    async def _node(self, name: str) -> dict[str, Any] | None:
        try:
            node = await self.core.read_node(name)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.core.api_client.sanitize_for_serialization(node)

    # --- steps ----------------------------------------------------------------------------
    async def _validate(self, m: Migration) -> None:
        pod = await self._pod(m.namespace, m.pod_name)
        if pod is None:
            return self._fail_validation(m, "PodNotFound", f'pod "{m.namespace}/{m.pod_name}" not found')
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        owners = meta.get("ownerReferences") or []
        controller = next((o for o in owners if o.get("controller")), None)
        problem: tuple[str, str] | None = None
        if meta.get("deletionTimestamp"):
            problem = ("PodTerminating", f"pod {m.pod_name} is being deleted")
        elif status.get("phase") != "Running":
            problem = ("PodNotRunning", f"pod {m.pod_name} is {status.get('phase', 'Unknown')}, not Running")
        elif "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
            problem = ("StaticPod", f"pod {m.pod_name} is a static (mirror) pod: the kubelet owns it, it cannot be moved")
        elif controller and controller.get("kind") == "DaemonSet":
            problem = ("DaemonSetPod", f"pod {m.pod_name} belongs to DaemonSet {controller['name']}: it must stay on its node")
        elif controller and controller.get("kind") not in OWNERS_RESTORED_BY_WEBHOOK:
            problem = (
                "UnsupportedController",
                f"pod {m.pod_name} is managed by {controller['kind']} {controller['name']}; only bare pods and pods of "
                f"{' and '.join(sorted(OWNERS_RESTORED_BY_WEBHOOK))}s can be moved",
            )
        elif spec.get("hostNetwork"):
            problem = ("HostNetwork", f"pod {m.pod_name} uses the host network: its sockets cannot move with it")
        if problem:
            return self._fail_validation(m, *problem)
        source = spec["nodeName"]
        nodes = [self.core.api_client.sanitize_for_serialization(n) for n in (await self.core.list_node()).items]
        pods = (await self.core.list_pod_for_all_namespaces()).items
        by_node: dict[str, list[Mapping[str, Any]]] = {}
        for p in pods:
            if p.spec.node_name and p.metadata.uid != meta["uid"]:
                by_node.setdefault(p.spec.node_name, []).append(self.core.api_client.sanitize_for_serialization(p))
        wanted = m.spec.get("targetNode")
        if wanted:
            node = next((n for n in nodes if n["metadata"]["name"] == wanted), None)
            if node is None:
                return self._fail_validation(m, "NodeNotFound", f'target node "{wanted}" not found')
            if wanted == source:
                return self._fail_validation(m, "SameNode", f"pod {m.pod_name} already runs on {wanted}")
            verdict = placement.check(pod=pod, node=node, pods_on_node=by_node.get(wanted, []))
            if not verdict.fits:
                return self._fail_validation(m, "NodeDoesNotFit", verdict.reason)
            target = wanted
        else:
            best, verdicts = placement.choose(pod=pod, nodes=nodes, pods_by_node=by_node, exclude=source)
            if best is None:
                reasons = "; ".join(v.reason for v in verdicts) or "the cluster has no other node"
                return self._fail_validation(m, "NoNodeFits", f"no node can take pod {m.pod_name}: {reasons}")
            target = best.node
        images = [
            s["imageID"].removeprefix("docker-pullable://") for s in status.get("containerStatuses") or [] if s.get("imageID")
        ]
        if controller:
            m.status["owner"] = {"kind": controller["kind"], "name": controller["name"], "uid": controller["uid"]}
        m.status.update(
            sourceNode=source,
            targetNode=target,
            podUID=meta["uid"],
            baseImages=sorted(set(images)),
            originalPod={
                "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if meta.get(k)},
                "spec": spec,
            },
        )
        self._enter(m, Step.PREPARE_TARGET)

    def _fail_validation(self, m: Migration, reason: str, message: str) -> None:
        """Nothing was touched yet: fail straight away (no thaw needed, but ThawSource is harmless)."""
        m.status["failure"] = {"reason": reason, "message": message}
        self._enter(m, Step.THAW_SOURCE, error=message)
        m.status["nothingTouched"] = True

    async def _checkpoint(self, m: Migration) -> None:
        node = await self._node(m.status["sourceNode"])
        if node is None:
            return self._fail_before_removal(m, "NodeNotFound", f"source node {m.status['sourceNode']} disappeared")
        request = contract.CheckpointRequest(
            namespace=m.namespace,
            pod=m.pod_name,
            image_repository=f"{self.settings.checkpoint_repository}/{m.namespace}/{m.pod_name}",
            tag=f"pm-{m.uid[:8]}",
            freeze=True,
            timeout_seconds=self.settings.checkpoint_timeout_seconds,
        )
        try:
            response = await self.agents.checkpoint(node=node, request=request, traceparent=m.traceparent())
        except AgentError as exc:
            stage = f" ({exc.stage})" if exc.stage else ""
            return self._fail_before_removal(
                m, "CheckpointFailed", f"checkpoint on {m.status['sourceNode']} failed{stage}: {exc}"
            )
        m.status["frozen"] = response.frozen
        m.status["containers"] = [
            {"name": c.name, "image": c.image, "digest": c.digest, "baseImage": c.base_image,
             "archiveBytes": c.archive_bytes, "imageBytes": c.image_bytes}
            for c in response.containers
        ]  # fmt: skip
        await self._event(
            m, "Checkpointed", f"{len(response.containers)} container(s) checkpointed on {m.status['sourceNode']}, source frozen"
        )
        self._enter(m, Step.REMOVE_SOURCE)

    def _prepull_name(self, m: Migration) -> str:
        return f"{m.pod_name[:40]}-prepull-{m.uid[:8]}"

    async def _delete_pod(self, namespace: str, name: str, *, uid: str | None = None, grace: int = 0) -> None:
        options = client.V1DeleteOptions(
            grace_period_seconds=grace, preconditions=client.V1Preconditions(uid=uid) if uid else None
        )
        try:
            await self.core.delete_namespaced_pod(name, namespace, body=options)
        except client.ApiException as exc:
            if exc.status not in (404, 409):
                raise

    async def _prepare_target(self, m: Migration) -> None:
        bases = list(m.status.get("baseImages") or [])
        name = self._prepull_name(m)
        pod = await self._pod(m.namespace, name)
        if pod is None:
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": m.namespace, "labels": {api.LABEL_PREPULL: m.uid}},
                "spec": {
                    "nodeName": m.status["targetNode"],
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": False,
                    "tolerations": [{"operator": "Exists"}],
                    # Only the pull matters: the kubelet pulls before it creates, and this command does not exist.
                    "containers": [
                        {
                            "name": f"pull-{i}",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["/.podmigrate-prepull"],
                        }
                        for i, image in enumerate(bases)
                    ],
                },
            }
            try:
                await self.core.create_namespaced_pod(m.namespace, body)
            except client.ApiException as exc:
                if exc.status != 409:
                    raise
            raise Wait()
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        pulled = [s for s in statuses if s.get("imageID")]
        failed = [
            s for s in statuses if (s.get("state") or {}).get("waiting", {}).get("reason") in ("ErrImagePull", "ImagePullBackOff")
        ]
        if failed:
            message = failed[0]["state"]["waiting"].get("message", "")
            await self._delete_pod(m.namespace, name)
            return self._fail_before_removal(
                m, "BaseImageUnavailable", f"cannot pull the base image on {m.status['targetNode']}: {message}"
            )
        if len(pulled) < len(bases):
            raise Wait()
        await self._delete_pod(m.namespace, name)
        self._enter(m, Step.CHECKPOINT)
        m.status["frozenAt"] = m.status["phases"][-1]["start"]

    async def _remove_source(self, m: Migration) -> None:
        if m.status.get("owner"):
            self._open_slot(m, node=m.status["targetNode"])
        pod = await self._pod(m.namespace, m.pod_name)
        if pod is None or pod["metadata"]["uid"] != m.status["podUID"]:
            m.status["sourceRemoved"] = True
            m.status["frozen"] = False
            self._enter(m, Step.AWAIT_REPLACEMENT if m.status.get("owner") else Step.CREATE_TARGET)
            return
        if not pod["metadata"].get("deletionTimestamp"):
            # The point of no return: look at the PodMigration itself once more, a cancellation
            # that arrived while the checkpoint ran must still be able to thaw the source.
            try:
                fresh = await self.custom.get_namespaced_custom_object(api.GROUP, api.VERSION, m.namespace, api.PLURAL, m.name)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
                fresh = {"metadata": {"deletionTimestamp": "gone"}}
            if fresh["metadata"].get("deletionTimestamp"):
                return self._fail_before_removal(m, "Cancelled", "the PodMigration was deleted (cancelled)")
            # The source is frozen. Its agent kills it without letting it thaw first, so the pod object
            # can go at once; if the agent cannot, a short grace does the same through the kubelet
            # (SIGTERM stays pending while frozen, then SIGKILL).
            grace = 1
            node = await self._node(m.status["sourceNode"])
            if node is not None:
                try:
                    await self.agents.kill(node=node, namespace=m.namespace, pod=m.pod_name, traceparent=m.traceparent())
                    grace = 0
                except AgentError as exc:
                    log.warning("agent could not kill the frozen source (%s); deleting with a grace period", exc)
            await self._delete_pod(m.namespace, m.pod_name, uid=m.status["podUID"], grace=grace)
        raise Wait(0.1)

    def _replacement(self, m: Migration, *, node: str | None, from_checkpoint: bool) -> dict[str, Any]:
        original = m.status["originalPod"]
        meta = copy.deepcopy(original["metadata"])
        spec = copy.deepcopy(original["spec"])
        annotations = dict(meta.get("annotations") or {})
        annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
        annotations[api.ANNOTATION_MIGRATION] = f"{m.namespace}/{m.name}"
        annotations[api.ANNOTATION_MIGRATION_UID] = m.uid
        if node:
            spec["nodeName"] = node
        else:
            spec.pop("nodeName", None)
        if from_checkpoint:
            images = m.images()
            annotations[api.ANNOTATION_RESTORED_FROM] = m.status["sourceNode"]
            annotations[api.ANNOTATION_CHECKPOINT_IMAGES] = json.dumps(images, sort_keys=True)
            annotations[api.ANNOTATION_ORIGINAL_IMAGES] = json.dumps(
                {c["name"]: c["image"] for c in spec["containers"]}, sort_keys=True
            )
            for container in spec["containers"]:
                if container["name"] in images:
                    container["image"] = images[container["name"]]
                    container["imagePullPolicy"] = "IfNotPresent"
            if spec.get("initContainers"):
                # They ran before the checkpoint; their effects are in the restored processes.
                annotations[api.ANNOTATION_SKIPPED_INIT] = ",".join(c["name"] for c in spec.pop("initContainers"))
        meta["annotations"] = annotations
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}

    async def _create(self, m: Migration, body: dict[str, Any]) -> dict[str, Any]:
        """Create the pod, or adopt it if a previous pass of this migration already did."""
        try:
            created = await self.core.create_namespaced_pod(m.namespace, body)
            return self.core.api_client.sanitize_for_serialization(created)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        existing = await self._pod(m.namespace, body["metadata"]["name"])
        if existing and (existing["metadata"].get("annotations") or {}).get(api.ANNOTATION_MIGRATION_UID) == m.uid:
            return existing
        raise Wait(1.0)  # someone else's pod holds the name (or ours is still terminating): look again

    async def _create_target(self, m: Migration) -> None:
        pod = await self._create(m, self._replacement(m, node=m.status["targetNode"], from_checkpoint=True))
        m.status["newPod"] = {"name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"], "node": m.status["targetNode"]}
        self._enter(m, Step.WAIT_READY)

    @staticmethod
    def _ready(pod: Mapping[str, Any]) -> bool:
        return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or [])

    @staticmethod
    def _container_failure(pod: Mapping[str, Any]) -> str | None:
        status = pod.get("status") or {}
        if status.get("phase") == "Failed":
            return f"pod failed: {status.get('reason', '')} {status.get('message', '')}".strip()
        for s in status.get("containerStatuses") or []:
            waiting = (s.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in CONTAINER_FAILURES:
                return f"container {s['name']}: {waiting['reason']}: {waiting.get('message', '')}".strip()
            if (s.get("state") or {}).get("terminated") or s.get("restartCount", 0) > 0:
                return f"container {s['name']} exited after the restore"
        return None

    # --- controller-owned pods ----------------------------------------------------------------
    def _open_slot(self, m: Migration, *, node: str) -> None:
        if self.slots is None:
            return
        owner = m.status["owner"]
        original = m.status["originalPod"]
        self.slots.open(
            Slot(
                migration=f"{m.namespace}/{m.name}",
                migration_uid=m.uid,
                namespace=m.namespace,
                owner_uid=owner["uid"],
                pod_name=m.pod_name if owner["kind"] == "StatefulSet" else None,
                node=node,
                images=m.images(),
                source_node=m.status["sourceNode"],
                original_images={c["name"]: c["image"] for c in original["spec"]["containers"]},
            )
        )

    async def _owned_pods(self, m: Migration) -> list[dict[str, Any]]:
        """Pods of the migrated pod's controller, in its namespace, newest last."""
        owner_uid = m.status["owner"]["uid"]
        pods = [
            self.core.api_client.sanitize_for_serialization(p) for p in (await self.core.list_namespaced_pod(m.namespace)).items
        ]
        owned = [p for p in pods if any(o.get("uid") == owner_uid for o in p["metadata"].get("ownerReferences") or [])]
        return sorted(owned, key=lambda p: p["metadata"].get("creationTimestamp") or "")

    async def _find_restored(self, m: Migration, *, exclude: set[str]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """Our restored replacement (annotated by the webhook), and the owner's other new pods."""
        ours, others = None, []
        for pod in await self._owned_pods(m):
            meta = pod["metadata"]
            if meta["uid"] in exclude or meta.get("deletionTimestamp"):
                continue
            if (meta.get("annotations") or {}).get(api.ANNOTATION_MIGRATION_UID) == m.uid:
                ours = pod
            else:
                others.append(pod)
        return ours, others

    async def _await_replacement(self, m: Migration) -> None:
        """The controller's replacement, made a restore by the webhook, must appear."""
        self._open_slot(m, node=m.status["targetNode"])
        ours, others = await self._find_restored(m, exclude={m.status["podUID"]})
        if ours is not None:
            if self.slots is not None:
                self.slots.close(m.uid)
            meta = ours["metadata"]
            m.status["newPod"] = {"name": meta["name"], "uid": meta["uid"], "node": m.status["targetNode"]}
            self._enter(m, Step.WAIT_READY)
            return
        removed_at = parse_time(m.status["phases"][-1]["start"])
        cold = [p for p in others if parse_time(p["metadata"]["creationTimestamp"]) >= removed_at - timedelta(seconds=1)]
        if cold and now() - removed_at > timedelta(seconds=20):
            if self.slots is not None:
                self.slots.close(m.uid)
            name = cold[-1]["metadata"]["name"]
            await self._finish(
                m, phase=Phase.FAILED, reason="ReplacementNotRestored",
                message=f"{m.status['owner']['kind']} {m.status['owner']['name']} replaced the pod with {name}, which started "
                "without the checkpoint (is the podmigrate webhook registered and reachable?); in-memory state lost",
            )  # fmt: skip
            return
        raise Wait()

    async def _wait_ready(self, m: Migration) -> None:
        pod = await self._pod(m.namespace, m.status["newPod"]["name"])
        if pod is None or pod["metadata"]["uid"] != m.status["newPod"]["uid"]:
            return self._fail_after_removal(m, "TargetPodLost", f"the restored pod on {m.status['targetNode']} was deleted")
        if self._ready(pod):
            m.status["readyAt"] = iso(now())
            await self._target_spans(m, pod)
            await self._event(m, "Restored", f"pod {pod['metadata']['name']} restored and Ready on {m.status['targetNode']}")
            self._enter(m, Step.CLEANUP)
            return
        failure = self._container_failure(pod)
        if failure:
            return self._fail_after_removal(m, "RestoreFailed", f"restore on {m.status['targetNode']} failed: {failure}")
        raise Wait(0.1)  # the pod is down: look often

    async def _target_spans(self, m: Migration, pod: Mapping[str, Any]) -> None:
        """Where the restore phase's time went on the target, from the node's own Events.

        The kubelet reports when the checkpoint image was pulled and when the container was
        restored; with the phase's start and the moment the pod turned Ready that gives three
        children of the restore span: image pull, restore, readiness.
        """
        try:
            events = await self.core.list_namespaced_event(
                m.namespace, field_selector=f"involvedObject.uid={pod['metadata']['uid']}"
            )
        except client.ApiException:
            return
        moments: dict[str, datetime] = {}
        for event in events.items:
            when = event.event_time or event.first_timestamp
            if when is not None and event.reason in ("Pulled", "Restored", "Started"):
                moments.setdefault(event.reason, when if when.tzinfo else when.replace(tzinfo=UTC))
        record = m.status["phases"][-1]
        start, ready = parse_time(record["start"]), parse_time(m.status["readyAt"])
        pulled = min(max(moments.get("Pulled", start), start), ready)
        restored = min(max(moments.get("Restored", moments.get("Started", pulled)), pulled), ready)
        for name, begin, end in (("target.image-pull", start, pulled), ("target.restore", pulled, restored),
                                 ("target.readiness", restored, ready)):  # fmt: skip
            tracing.emit_span(
                name=name, trace_id=m.status["traceID"], span_id=tracing.new_span_id(), parent_span_id=record["spanID"],
                start=begin, end=end, attributes={**self._attributes(m), "k8s.node.name": m.status["newPod"]["node"]},
            )  # fmt: skip

    async def _delete_images(self, m: Migration) -> None:
        if m.spec.get("retainCheckpoint"):
            return
        node = await self._node(m.status["sourceNode"]) or await self._node(m.status.get("targetNode", ""))
        for container in m.status.get("containers") or []:
            try:
                if node:
                    await self.agents.delete_image(node=node, image=container["image"], traceparent=m.traceparent())
            except AgentError as exc:
                await self._event(m, "CleanupFailed", f"checkpoint image {container['image']} not deleted: {exc}", warning=True)

    async def _cleanup(self, m: Migration) -> None:
        await self._delete_pod(m.namespace, self._prepull_name(m))
        await self._delete_images(m)
        downtime = ""
        if m.status.get("frozenAt") and m.status.get("readyAt"):
            downtime = f"; downtime {(parse_time(m.status['readyAt']) - parse_time(m.status['frozenAt'])).total_seconds():.2f}s"
        await self._finish(
            m, phase=Phase.SUCCEEDED, reason="Migrated",
            message=f"pod {m.pod_name} moved from {m.status['sourceNode']} to {m.status['targetNode']} with its state{downtime}",
        )  # fmt: skip

    # --- failure paths --------------------------------------------------------------------
    async def _thaw_source(self, m: Migration) -> None:
        failure = m.status.get("failure") or {"reason": "Failed", "message": "migration failed"}
        if not m.status.pop("nothingTouched", False) and m.status.get("sourceNode"):
            await self._delete_pod(m.namespace, self._prepull_name(m))
            node = await self._node(m.status["sourceNode"])
            if node is not None:
                try:
                    await self.agents.thaw(node=node, namespace=m.namespace, pod=m.pod_name, traceparent=m.traceparent())
                except AgentError as exc:
                    m.status["thawError"] = str(exc)
                    raise Wait(2.0) from None  # the source must not stay frozen: keep trying
            m.status["frozen"] = False
            await self._delete_images(m)
            message = f"{failure['message']}; the source pod was left running on {m.status['sourceNode']}"
        else:
            message = failure["message"]
        await self._finish(m, phase=Phase.FAILED, reason=failure["reason"], message=message)

    async def _replace_and_wait(self, m: Migration, *, node: str | None, from_checkpoint: bool, need_ready: bool) -> bool | None:
        """Rollback helper: make the pod exist again; True when up, False when it failed, None to wait."""
        key = "rollbackPod"
        record = m.status.get(key)
        pod = await self._pod(m.namespace, m.pod_name)
        if record is None:
            if pod is not None and (pod["metadata"].get("annotations") or {}).get(api.ANNOTATION_MIGRATION_UID) == m.uid:
                if not pod["metadata"].get("deletionTimestamp"):
                    await self._delete_pod(m.namespace, m.pod_name, uid=pod["metadata"]["uid"])
                raise Wait(0.3)  # our failed pod must be gone first
            if pod is not None:
                raise Wait(1.0)  # a pod we did not create holds the name
            created = await self._create(m, self._replacement(m, node=node, from_checkpoint=from_checkpoint))
            m.status[key] = {"uid": created["metadata"]["uid"], "node": node or ""}
            raise Wait()
        if pod is None or pod["metadata"]["uid"] != record["uid"]:
            return False
        if self._ready(pod) if need_ready else (pod.get("status") or {}).get("phase") == "Running":
            return True
        return False if self._container_failure(pod) else None

    async def _owned_rollback(self, m: Migration, *, restore: bool) -> bool | None:
        """Rollback for a controller-owned pod: delete our failed pod and let the controller replace it,
        as a restore on the source node (``restore``) or cold. True when up, False when failed, None to wait."""
        record = m.status.setdefault("rollbackPod", {"failed": m.status.get("newPod", {}).get("uid", "")})
        if restore:
            self._open_slot(m, node=m.status["sourceNode"])
        elif self.slots is not None:
            self.slots.close(m.uid)
        failed_uid = record["failed"]
        for pod in await self._owned_pods(m):
            meta = pod["metadata"]
            if meta["uid"] == failed_uid and not meta.get("deletionTimestamp"):
                await self._delete_pod(m.namespace, meta["name"], uid=failed_uid)
                raise Wait(0.3)
        ours, others = await self._find_restored(m, exclude={failed_uid, m.status["podUID"]})
        candidate = ours if restore else (others[-1] if others else ours)
        if candidate is None:
            return None
        if restore and self.slots is not None:
            self.slots.close(m.uid)
        record["uid"] = candidate["metadata"]["uid"]
        m.status["newPod"] = {
            "name": candidate["metadata"]["name"],
            "uid": record["uid"],
            "node": candidate["spec"].get("nodeName", ""),
        }
        if self._ready(candidate) if restore else (candidate.get("status") or {}).get("phase") == "Running":
            return True
        return False if self._container_failure(candidate) else None

    async def _restore_source(self, m: Migration) -> None:
        failure = m.status["failure"]
        if m.status.get("owner"):
            owned = await self._owned_rollback(m, restore=True)
            if owned is None:
                raise Wait()
            if owned:
                await self._delete_images(m)
                message = f"{failure['message']}; the pod was restored on its source node {m.status['sourceNode']} (state kept)"
                return await self._finish(m, phase=Phase.FAILED, reason=failure["reason"], message=message)
            m.status["rollbackPod"] = {"failed": m.status["newPod"]["uid"]}
            m.status["failure"]["message"] += f"; restoring on {m.status['sourceNode']} failed too"
            self._enter(m, Step.RECREATE, error="restore on the source node failed")
            return
        outcome = await self._replace_and_wait(m, node=m.status["sourceNode"], from_checkpoint=True, need_ready=True)
        if outcome is None:
            raise Wait()
        if outcome:
            m.status["newPod"] = {"name": m.pod_name, "uid": m.status["rollbackPod"]["uid"], "node": m.status["sourceNode"]}
            await self._delete_images(m)
            source = m.status["sourceNode"]
            message = f"{failure['message']}; the pod was restored on its source node {source} from the checkpoint (state kept)"
            return await self._finish(m, phase=Phase.FAILED, reason=failure["reason"], message=message)
        m.status.pop("rollbackPod", None)
        m.status["failure"]["message"] += f"; restoring on {m.status['sourceNode']} failed too"
        self._enter(m, Step.RECREATE, error="restore on the source node failed")

    async def _recreate(self, m: Migration) -> None:
        failure = m.status["failure"]
        if m.status.get("owner"):
            owned = await self._owned_rollback(m, restore=False)
            if owned is None:
                raise Wait()
            await self._delete_images(m)
            owner = m.status["owner"]
            message = (
                f"{failure['message']}; {owner['kind']} {owner['name']} replaced the pod from its template (in-memory state lost)"
            )
            return await self._finish(m, phase=Phase.FAILED, reason=failure["reason"], message=message)
        outcome = await self._replace_and_wait(m, node=None, from_checkpoint=False, need_ready=False)
        if outcome is None:
            raise Wait()
        m.status["newPod"] = {"name": m.pod_name, "uid": m.status["rollbackPod"]["uid"], "node": ""}
        suffix = (
            "recreated from its original spec (in-memory state lost)"
            if outcome
            else "recreated from its original spec but it is not running"
        )
        await self._delete_images(m)
        await self._finish(m, phase=Phase.FAILED, reason=failure["reason"], message=f"{failure['message']}; the pod was {suffix}")
