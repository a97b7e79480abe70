"""One PodMigration as a reconcile pass sees it, and what every step of it works with.

``Migration`` is the object and the status being built for it (``migrator.reconciling.Record``)
with the accessors the steps read. ``Context`` is everything a step may use besides the
migration: the API, the agents, the settings, metrics and the recorder that
saves status. Steps are plain functions of ``(ctx, m)``, so each module (forward steps,
rollback, bookkeeping) reads top to bottom without a class around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes_asyncio import client

from agentapi.client import AgentClient
from kubeclient.informing import Listing, PodsAndNodes
from migrator import api, tracing
from migrator.api import Step
from migrator.metrics import ControllerMetrics
from migrator.reconciling import Record, Recorder
from migrator.slots import LABEL_SLOT_OWNER


@dataclass(frozen=True, kw_only=True)
class Settings:
    checkpoint_repository: str  # host[:port]/path; images go to <it>/<namespace>/<pod>
    checkpoint_timeout_seconds: int = 120
    # How long a checkpointed source stays frozen without this service renewing it (freezes.py).
    freeze_lease_seconds: int = 30


class FreezeKeeperLike(Protocol):
    def keep(self, ctx: Context, m: Migration) -> None: ...

    def forget(self, m: Migration) -> None: ...


@dataclass(frozen=True, kw_only=True)
class Context:
    core: client.CoreV1Api
    custom: client.CustomObjectsApi
    agents: AgentClient
    settings: Settings
    recorder: Recorder
    metrics: ControllerMetrics | None = None
    freezes: FreezeKeeperLike | None = None
    # The service's informer caches (``kubeclient.informing``); without them, every question lists through the API.
    pods_and_nodes: PodsAndNodes | None = None

    @property
    def cluster(self) -> PodsAndNodes:
        """The cluster's nodes and pods for placement: the caches when the service runs them."""
        return self.pods_and_nodes or Listing(self.core)


class PodRecord(Record):
    """A custom object about one pod (``spec.podName``) whose checkpoint images it records in ``status.containers``.

    What a PodMigration and a PodCheckpoint share, so that the code that keeps or deletes their
    images (``artifacts``), hands out the registry's pull Secret (``migrator.pullsecrets``) and
    calls the agents with a trace context works for both.
    """

    @property
    def namespace(self) -> str:
        return str(self.meta["namespace"])

    @property
    def pod_name(self) -> str:
        return str(self.spec["podName"])

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.obj.get("spec") or {}

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "")

    def current_span_id(self) -> str:
        return str(self.status["phases"][-1]["spanID"])

    def traceparent(self) -> str:
        return tracing.traceparent(trace_id=self.status["traceID"], span_id=self.current_span_id())

    def images(self) -> dict[str, str]:
        return {c["name"]: c["image"] for c in self.status.get("containers") or []}


class Migration(PodRecord):
    """A PodMigration and the status being built for it."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        super().__init__(obj)
        # The owner UID the PodMigration is labelled with while its restore slot is open (migrator.slots).
        self.slot_label: str | None = (obj["metadata"].get("labels") or {}).get(LABEL_SLOT_OWNER)

    @property
    def step(self) -> Step:
        return Step(self.status.get("step") or Step.VALIDATE)

    def also_involved(self) -> list[tuple[str, client.V1ObjectReference, str]]:
        """Every Event is also told on the pod being moved (the new one once it exists), tagged with our name."""
        pod_uid = (self.status.get("newPod") or {}).get("uid") or self.status.get("podUID")
        if not pod_uid:
            return []
        on_pod = client.V1ObjectReference(api_version="v1", kind="Pod", name=self.pod_name, namespace=self.namespace, uid=pod_uid)
        return [(self.namespace, on_pod, f"[{self.name}] ")]


def prepull_name(m: Migration) -> str:
    """The short-lived pod that pulls the base images on the target before the freeze."""
    return f"{m.pod_name[:40]}-prepull-{m.uid[:8]}"


def is_restored_pod_of(m: Migration, pod: Mapping[str, Any]) -> bool:
    return (pod["metadata"].get("annotations") or {}).get(api.ANNOTATION_MIGRATION_UID) == m.uid
