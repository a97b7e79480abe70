"""The PodRestore reconciler against the in-memory API: resume, clone, the refusals, failures, the deadline, cancel.

The PodCheckpoints it restores are made by the real PodCheckpoint reconciler (``test_podcheckpoint.World``),
so the restore reads exactly what that controller records. Driven pass by pass like the other
reconcilers' tests; the kubelets (``Kubelet``) pull, start and fail pods on the test's command.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes_asyncio import client

from migrator import api, pullsecrets
from migrator.controllers.podmigration import Settings
from migrator.controllers.podrestore import PodRestoreReconciler
from tests.fakekube import api_error, image_id, make_node, make_pod
from tests.migrator.controllers.test_podcheckpoint import IMAGE, NS, World, replaced
from tests.migrator.controllers.test_podmigration import replicaset_pod

DATA = {".dockerconfigjson": "e30="}


class RestoreWorld(World):
    """``test_podcheckpoint``'s world (API, nodes, kubelets, agents, clock, PodCheckpoint reconciler) and the PodRestore one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch)
        self.restorer = self.new_restorer()

    def new_restorer(self) -> PodRestoreReconciler:
        return PodRestoreReconciler(
            core=self.kube, custom=self.kube, agents=self.agents, settings=Settings(checkpoint_repository="registry.local:5000/c"),  # type: ignore[arg-type]
        )  # fmt: skip

    async def taken(self, pod: str = "web", *, mode: str = "Suspend", name: str | None = None) -> str:
        """A PodCheckpoint of ``pod``, taken to the end (Available, or Failed) by its controller."""
        name = self.checkpoint(pod, mode=mode, name=name)
        await self.settle(name)
        return name

    def restore(self, checkpoint: str, *, name: str = "resume-web", **spec: Any) -> str:
        """A PodRestore as ``kubectl migrate restore`` creates it."""
        self.kube.add_custom(
            api.RESTORE_PLURAL,
            {
                "apiVersion": api.API_VERSION, "kind": api.RESTORE_KIND, "metadata": {"name": name, "namespace": NS},
                "spec": {"checkpointName": checkpoint, **spec},
            },
        )  # fmt: skip
        return name

    def robj(self, name: str) -> dict[str, Any] | None:
        return self.kube.custom_objects.get(api.RESTORE_PLURAL, {}).get((NS, name))

    def rstatus(self, name: str) -> dict[str, Any]:
        obj = self.robj(name)
        assert obj is not None, f"PodRestore {name} is gone"
        return obj.get("status") or {}

    def ruid(self, name: str) -> str:
        obj = self.robj(name)
        assert obj is not None
        return str(obj["metadata"]["uid"])

    async def rreconcile(self, name: str) -> float | None:
        obj = self.robj(name)
        assert obj is not None, f"PodRestore {name} is gone"
        delay = await self.restorer.reconcile(copy.deepcopy(obj))
        if delay:
            self.clock.advance(delay)
        return delay

    def revents(self, name: str) -> list[tuple[str, str, str]]:
        return self.kube.event_log(kind=api.RESTORE_KIND, name=name)

    def prepull(self, name: str) -> dict[str, Any] | None:
        uid = self.ruid(name)
        found = [p for p in self.kube.pods.values() if (p["metadata"].get("labels") or {}).get(api.LABEL_PREPULL) == uid]
        assert len(found) <= 1
        return found[0] if found else None

    def where(self) -> dict[str, str | None]:
        return {n: p["spec"].get("nodeName") for (ns, n), p in self.kube.pods.items() if ns == NS}

    async def to_wait_ready(self, name: str) -> dict[str, Any]:
        """Validate, PrepareTarget (the base images pulled), Create: the restored pod exists and is waited for."""
        assert await self.rreconcile(name) == pytest.approx(0.5)
        prepull = self.prepull(name)
        assert prepull is not None
        self.kubelet.pull_images(NS, prepull["metadata"]["name"])
        assert await self.rreconcile(name) == pytest.approx(0.2)
        s = self.rstatus(name)
        assert (s["phase"], s["step"]) == ("Restoring", "WaitReady")
        return self.kube.pods[(NS, s["pod"]["name"])]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> RestoreWorld:
    return RestoreWorld(monkeypatch)


def condition(status: dict[str, Any], kind: str = "Succeeded") -> dict[str, Any]:
    return next(c for c in status.get("conditions") or [] if c["type"] == kind)


def pull_secret_source(world: RestoreWorld) -> None:
    meta = {"name": pullsecrets.PULL_SECRET, "namespace": pullsecrets.DEFAULT_SOURCE_NAMESPACE}
    world.kube.add_secret({"metadata": meta, "type": "kubernetes.io/dockerconfigjson", "data": DATA})


# --- a suspended pod resumed under its own name ------------------------------------------------------
async def test_a_suspended_pod_is_resumed_under_its_own_name_on_the_node_asked_for(world: RestoreWorld) -> None:
    pull_secret_source(world)
    source = make_pod(
        "web", initContainers=[{"name": "init-db", "image": "busybox:1.36"}], imagePullSecrets=[{"name": "team-registry"}]
    )
    source["metadata"]["annotations"] = {"team": "payments", api.ANNOTATION_MIGRATION: "shop/an-earlier-move"}
    world.kube.add_pod(source)
    checkpoint = await world.taken()
    ck = world.status(checkpoint)
    assert (ck["phase"], ck["suspended"]) == ("Available", True) and world.where() == {}
    (image,) = [c["image"] for c in ck["containers"]]
    name = world.restore(checkpoint, targetNode="node-2")

    # Validate, then PrepareTarget: a short-lived pod on the target pulls the checkpoint's base images.
    assert await world.rreconcile(name) == pytest.approx(0.5)
    obj = world.robj(name)
    assert obj is not None and api.RESTORE_FINALIZER in obj["metadata"]["finalizers"]
    s = world.rstatus(name)
    assert (s["phase"], s["step"]) == ("Pending", "PrepareTarget")
    assert (s["podName"], s["sourcePod"], s["targetNode"], s["clone"]) == ("web", "web", "node-2", False)
    assert s["checkpoint"] == {"name": checkpoint, "uid": world.uid(checkpoint)}
    prepull = world.prepull(name)
    assert prepull is not None and prepull["metadata"]["name"] == f"web-prepull-{world.ruid(name)[:8]}"
    assert prepull["spec"]["nodeName"] == "node-2"
    assert [c["image"] for c in prepull["spec"]["containers"]] == [image_id(IMAGE)] == ck["baseImages"]
    assert prepull["spec"]["imagePullSecrets"] == [{"name": "team-registry"}], "the base images need the pod's own Secrets"
    assert ("shop", "web") not in world.kube.pods
    assert await world.rreconcile(name) == pytest.approx(0.5), "not pulled yet"

    # Pulled: the prepull pod goes; Create makes the pod from the recorded spec, bound to the target.
    world.kubelet.pull_images(NS, prepull["metadata"]["name"])
    assert await world.rreconcile(name) == pytest.approx(0.2)
    assert world.prepull(name) is None
    s = world.rstatus(name)
    assert (s["phase"], s["step"]) == ("Restoring", "WaitReady")
    pod = world.kube.pods[(NS, "web")]
    assert s["pod"] == {"name": "web", "uid": pod["metadata"]["uid"]}
    assert pod["spec"]["nodeName"] == "node-2" and pod["metadata"]["labels"] == {"app": "web"}
    (container,) = pod["spec"]["containers"]
    assert (container["image"], container["imagePullPolicy"]) == (image, "IfNotPresent")
    assert {"name": api.ENV_RESTORED_FROM, "value": "shop/web"} in container["env"]
    assert "initContainers" not in pod["spec"], "they ran before the checkpoint"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "team-registry"}, {"name": pullsecrets.PULL_SECRET}]
    annotations = pod["metadata"]["annotations"]
    assert annotations == {
        "team": "payments",
        api.ANNOTATION_CHECKPOINT: f"{NS}/{checkpoint}",
        api.ANNOTATION_CHECKPOINT_UID: world.uid(checkpoint),
        api.ANNOTATION_RESTORE: f"{NS}/{name}",
        api.ANNOTATION_RESTORE_UID: world.ruid(name),
        api.ANNOTATION_RESTORED_FROM: "node-1",
        api.ANNOTATION_CHECKPOINT_IMAGES: json.dumps({"app": image}),
        api.ANNOTATION_ORIGINAL_IMAGES: json.dumps({"app": IMAGE}),
        api.ANNOTATION_SKIPPED_INIT: "init-db",
    }, "an earlier migration's annotation names another object: dropped"
    assert ("Normal", "Created", f"pod web created on node-2 from PodCheckpoint {checkpoint}") in world.revents(name)
    world.clock.advance(1.5)
    assert await world.rreconcile(name) == pytest.approx(0.2), "not Ready yet"

    # Ready: Succeeded; the checkpoint no longer is the only copy of the pod.
    world.kubelet.start(NS, "web")
    assert await world.rreconcile(name) is None
    s = world.rstatus(name)
    assert (s["phase"], s["step"], s["reason"]) == ("Succeeded", "Done", "Restored")
    # 0.5 + 0.5 (pulling) + 0.2 (created) + 1.5 + 0.2 (not Ready) seconds on the clock since the PodRestore started.
    assert float(s["readySeconds"]) == pytest.approx(2.9, abs=0.001) and s["readyAt"] and s["completionTime"]
    assert s["message"] == f"PodCheckpoint {checkpoint} restored as pod web, Ready on node-2 after 2.90s"
    assert condition(s)["status"] == "True"
    assert [p["name"] for p in s["phases"]] == ["validate", "preparetarget", "create", "waitready"]
    ck = world.status(checkpoint)
    assert ck["suspended"] is False
    assert ck["resumedBy"] == {"restore": name, "pod": pod["metadata"]["uid"], "at": s["readyAt"]}
    assert ck["phase"] == "Available", "the checkpoint stays, restorable again"
    assert world.agents.operations() == ["checkpoint", "kill"], "a restore needs no agent"
    assert ("Normal", "Restored", s["message"]) in world.revents(name)

    # Deleting a finished PodRestore releases it and leaves the pod alone.
    assert await world.rreconcile(name) is None
    world.kube.delete_custom(api.RESTORE_PLURAL, (NS, name))
    assert await world.rreconcile(name) is None
    assert world.robj(name) is None and world.where() == {"web": "node-2"}


async def test_without_a_target_a_node_that_fits_and_runs_the_checkpoints_runtime_is_chosen(world: RestoreWorld) -> None:
    world.kube.add_node(make_node("node-3", cpu="64", runtime="containerd://2.0.0"))
    world.kube.add_node(make_node("node-4", cpu="16"))
    world.kube.add_pod(make_pod("web"))
    name = world.restore(await world.taken())
    await world.rreconcile(name)
    assert world.rstatus(name)["targetNode"] == "node-4", "the roomiest of the nodes the checkpoint can restore on"


# --- a clone under another name ----------------------------------------------------------------------
async def test_a_running_pods_checkpoint_is_cloned_under_another_name_and_the_checkpoint_is_not_touched(
    world: RestoreWorld,
) -> None:
    world.kube.add_pod(make_pod("web"))
    checkpoint = await world.taken(mode="Running")
    before = copy.deepcopy(world.status(checkpoint))
    name = world.restore(checkpoint, name="clone-web", podName="web-copy", targetNode="node-2")
    pod = await world.to_wait_ready(name)
    s = world.rstatus(name)
    assert (s["podName"], s["sourcePod"], s["clone"]) == ("web-copy", "web", True)
    assert pod["metadata"]["name"] == "web-copy" and pod["spec"]["nodeName"] == "node-2"
    assert {"name": api.ENV_RESTORED_FROM, "value": "shop/web"} in pod["spec"]["containers"][0]["env"], (
        "the checkpointed pod, whose staged files the hook would look for"
    )
    world.kubelet.start(NS, "web-copy")
    assert await world.rreconcile(name) is None
    s = world.rstatus(name)
    assert s["phase"] == "Succeeded" and s["message"].startswith(f"PodCheckpoint {checkpoint} cloned as pod web-copy, Ready")
    assert world.status(checkpoint) == before, "a clone resumes nothing: the checkpoint is not patched"
    assert world.where() == {"web": "node-1", "web-copy": "node-2"}


# --- refusals --------------------------------------------------------------------------------------------
async def _missing(w: RestoreWorld) -> tuple[str, dict[str, Any]]:
    return "ck-nothing", {}


async def _failed(w: RestoreWorld) -> tuple[str, dict[str, Any]]:
    return await w.taken(), {}  # of a pod that does not exist


async def _being_deleted(w: RestoreWorld) -> tuple[str, dict[str, Any]]:
    w.kube.add_pod(make_pod("web"))
    checkpoint = await w.taken()
    w.delete(checkpoint)
    return checkpoint, {}


async def _name_taken(w: RestoreWorld) -> tuple[str, dict[str, Any]]:
    w.kube.add_pod(make_pod("web"))
    return await w.taken(mode="Running"), {}


async def _clone_name_taken(w: RestoreWorld) -> tuple[str, dict[str, Any]]:
    w.kube.add_pod(make_pod("web"))
    w.kube.add_pod(make_pod("other"))
    return await w.taken(mode="Running"), {"podName": "other"}


async def _statefulset(w: RestoreWorld) -> tuple[str, dict[str, Any]]:
    w.kube.add_pod(make_pod("web", owner=("StatefulSet", "db")))
    checkpoint = await w.taken(mode="Running")
    await w.kube.delete_namespaced_pod("web", NS, grace_period_seconds=0)  # gone: the name alone is not the issue
    return checkpoint, {}


async def _replicaset(w: RestoreWorld) -> tuple[str, dict[str, Any]]:
    w.kube.add_pod(make_pod("web", owner=("ReplicaSet", "web-7d9")))
    return await w.taken(mode="Running"), {"podName": "web-copy"}


async def _suspended(w: RestoreWorld) -> tuple[str, dict[str, Any]]:
    w.kube.add_pod(make_pod("web"))
    return await w.taken(), {}


async def _node_missing(w: RestoreWorld) -> tuple[str, dict[str, Any]]:
    checkpoint, _ = await _suspended(w)
    return checkpoint, {"targetNode": "node-9"}


async def _node_cordoned(w: RestoreWorld) -> tuple[str, dict[str, Any]]:
    checkpoint, _ = await _suspended(w)
    w.kube.nodes["node-2"]["spec"]["unschedulable"] = True
    return checkpoint, {"targetNode": "node-2"}


async def _node_other_runtime(w: RestoreWorld) -> tuple[str, dict[str, Any]]:
    checkpoint, _ = await _suspended(w)
    w.kube.add_node(make_node("node-3", runtime="containerd://2.0.0"))
    return checkpoint, {"targetNode": "node-3"}


async def _no_node_fits(w: RestoreWorld) -> tuple[str, dict[str, Any]]:
    checkpoint, _ = await _suspended(w)
    for node in w.kube.nodes.values():
        node["spec"]["unschedulable"] = True
    return checkpoint, {}


async def _busy(w: RestoreWorld) -> tuple[str, dict[str, Any]]:
    checkpoint, _ = await _suspended(w)
    first = w.restore(checkpoint, name="resume-first")
    assert await w.rreconcile(first) == pytest.approx(0.5)
    return checkpoint, {}


REFUSALS = {
    "checkpoint missing": (_missing, "CheckpointNotFound", 'PodCheckpoint "shop/ck-nothing" not found'),
    "checkpoint failed": (_failed, "CheckpointFailed", 'PodCheckpoint ck-web failed: pod "shop/web" not found'),
    "checkpoint being deleted": (_being_deleted, "CheckpointDeleted", "PodCheckpoint ck-web is being deleted (its images are going)"),
    "pod name taken": (_name_taken, "PodExists", "pod web exists in shop; give podName to restore a clone under another name"),
    "clone name taken": (_clone_name_taken, "PodExists", "pod other exists in shop"),
    "statefulset pod": (
        _statefulset, "OwnedByController", "pod web is StatefulSet db's: its identity is unique, so it cannot be restored beside it"
    ),
    "replicaset pod": (
        _replicaset, "OwnedByController",
        "pod web was owned by ReplicaSet web-7d9, which would adopt the restored pod and delete one to keep its replica "
        f"count: annotate the workload with {api.ANNOTATION_WARM_START}=ck-web to have its new pods restored from it",
    ),
    "target node missing": (_node_missing, "NodeNotFound", 'target node "node-9" not found'),
    "target node cordoned": (_node_cordoned, "NodeDoesNotFit", "node node-2 is cordoned (unschedulable)"),
    "target node of another runtime": (
        _node_other_runtime, "NodeDoesNotFit",
        "node node-3 runs containerd, the pod's node runs cri-o: a checkpoint restores only on the runtime that wrote it",
    ),
    "no node fits": (
        _no_node_fits, "NoNodeFits",
        "no node can take pod web: node node-1 is cordoned (unschedulable); node node-2 is cordoned (unschedulable)",
    ),
    "another restore of the name": (_busy, "Busy", "PodRestore resume-first is restoring pod web already"),
}  # fmt: skip


@pytest.mark.parametrize(("setup", "reason", "message"), REFUSALS.values(), ids=REFUSALS.keys())
async def test_a_restore_that_cannot_be_done_is_refused_with_the_reason_and_creates_nothing(
    world: RestoreWorld, setup: Any, reason: str, message: str
) -> None:
    checkpoint, spec = await setup(world)
    pods = copy.deepcopy(world.kube.pods)
    checkpoint_before = copy.deepcopy(world.obj(checkpoint))
    name = world.restore(checkpoint, **spec)
    assert await world.rreconcile(name) is None
    s = world.rstatus(name)
    assert (s["phase"], s["step"], s["reason"]) == ("Failed", "Done", reason)
    assert s["message"] == f"{message}; PodCheckpoint {checkpoint} is unchanged"
    assert condition(s)["status"] == "False" and "failure" not in s and "pod" not in s
    assert world.kube.pods == pods, "no pod created or deleted"
    assert world.obj(checkpoint) == checkpoint_before
    assert ("Warning", reason, s["message"]) in world.revents(name)
    world.kube.delete_custom(api.RESTORE_PLURAL, (NS, name))
    assert await world.rreconcile(name) is None and world.robj(name) is None, "a finished restore's finalizer goes on deletion"


async def test_a_restore_waits_while_its_checkpoint_is_being_taken(world: RestoreWorld) -> None:
    world.kube.add_pod(make_pod("web"))
    checkpoint = world.checkpoint(mode="Suspend")
    name = world.restore(checkpoint, targetNode="node-2")
    assert await world.rreconcile(name) == pytest.approx(1.0), "a new checkpoint: not taken yet"
    assert (world.rstatus(name)["phase"], world.rstatus(name)["step"]) == ("Pending", "Validate")
    assert await world.reconcile(checkpoint) == pytest.approx(0.2)
    assert world.status(checkpoint)["phase"] == "Suspending"
    assert await world.rreconcile(name) == pytest.approx(1.0), "still being taken"
    assert await world.reconcile(checkpoint) is None
    assert await world.rreconcile(name) == pytest.approx(0.5)
    assert world.rstatus(name)["step"] == "PrepareTarget"


async def test_a_checkpoint_that_is_never_taken_times_the_restore_out(world: RestoreWorld) -> None:
    world.kube.add_pod(make_pod("web"))
    checkpoint = world.checkpoint(mode="Suspend")
    name = world.restore(checkpoint, timeoutSeconds=30)
    assert await world.rreconcile(name) == pytest.approx(1.0)
    world.clock.advance(30)
    assert await world.rreconcile(name) is None
    s = world.rstatus(name)
    assert (s["phase"], s["reason"]) == ("Failed", "Timeout")
    assert s["message"] == (
        f"the restored pod was not Ready within 30s (timeoutSeconds) in step Validate; PodCheckpoint {checkpoint} is unchanged"
    )


# --- failures -------------------------------------------------------------------------------------------
async def test_a_restore_that_fails_on_the_node_deletes_its_pod_and_leaves_the_checkpoint(world: RestoreWorld) -> None:
    world.kube.add_pod(make_pod("web"))
    checkpoint = await world.taken()
    name = world.restore(checkpoint, targetNode="node-2")
    pod = await world.to_wait_ready(name)
    world.kubelet.fail(NS, "web", reason="CreateContainerError", message="criu restore: mount point missing")
    assert await world.rreconcile(name) is None
    s = world.rstatus(name)
    assert (s["phase"], s["reason"]) == ("Failed", "RestoreFailed")
    assert s["message"] == (
        "restore on node-2 failed: container app: CreateContainerError: criu restore: mount point missing; pod web deleted; "
        f"PodCheckpoint {checkpoint} is unchanged"
    )
    deleted = world.kube.pods[(NS, "web")]
    assert deleted["metadata"]["uid"] == pod["metadata"]["uid"] and deleted["metadata"]["deletionTimestamp"], (
        "deleted (with a grace: it may run), so the resume can simply be tried again"
    )
    ck = world.status(checkpoint)
    assert (ck["phase"], ck["suspended"]) == ("Available", True) and "resumedBy" not in ck
    assert [p["name"] for p in s["phases"]][-2:] == ["waitready", "cleanup"]


async def test_a_base_image_that_cannot_be_pulled_fails_the_restore_before_any_pod_is_made(world: RestoreWorld) -> None:
    world.kube.add_pod(make_pod("web"))
    checkpoint = await world.taken()
    name = world.restore(checkpoint, targetNode="node-2")
    assert await world.rreconcile(name) == pytest.approx(0.5)
    prepull = world.prepull(name)
    assert prepull is not None
    world.kubelet.fail_pull(NS, prepull["metadata"]["name"], message="registry.local: connection refused")
    assert await world.rreconcile(name) is None
    s = world.rstatus(name)
    assert (s["phase"], s["reason"]) == ("Failed", "BaseImageUnavailable")
    assert s["message"] == (
        f"cannot pull the base image on node-2: registry.local: connection refused; PodCheckpoint {checkpoint} is unchanged"
    )
    assert world.where() == {}, "the prepull pod is gone, no pod was made"


async def test_the_deadline_fails_a_restore_whose_pod_never_turns_ready(world: RestoreWorld) -> None:
    world.kube.add_pod(make_pod("web"))
    checkpoint = await world.taken()
    name = world.restore(checkpoint, targetNode="node-2", timeoutSeconds=60)
    await world.to_wait_ready(name)
    world.kubelet.start(NS, "web", ready=False)
    assert await world.rreconcile(name) == pytest.approx(0.2)
    world.clock.advance(60)
    assert await world.rreconcile(name) is None
    s = world.rstatus(name)
    assert (s["phase"], s["reason"]) == ("Failed", "Timeout")
    assert s["message"] == (
        f"the restored pod was not Ready within 60s (timeoutSeconds) in step WaitReady; pod web deleted; "
        f"PodCheckpoint {checkpoint} is unchanged"
    )
    assert world.kube.pods[(NS, "web")]["metadata"]["deletionTimestamp"]
    assert world.status(checkpoint)["suspended"] is True


async def test_a_restored_pod_deleted_by_someone_else_fails_the_restore(world: RestoreWorld) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.restore(await world.taken(), targetNode="node-2")
    await world.to_wait_ready(name)
    await world.kube.delete_namespaced_pod("web", NS, grace_period_seconds=0)
    assert await world.rreconcile(name) is None
    s = world.rstatus(name)
    assert (s["phase"], s["reason"]) == ("Failed", "PodLost")
    assert s["message"].startswith("the restored pod web was deleted; pod web deleted;")


# --- cancel -----------------------------------------------------------------------------------------------
async def test_deleting_a_restore_while_it_prepares_cancels_it_and_releases_the_finalizer(world: RestoreWorld) -> None:
    world.kube.add_pod(make_pod("web"))
    checkpoint = await world.taken()
    name = world.restore(checkpoint, targetNode="node-2")
    assert await world.rreconcile(name) == pytest.approx(0.5)
    assert world.prepull(name) is not None
    world.kube.delete_custom(api.RESTORE_PLURAL, (NS, name))
    assert world.robj(name) is not None, "held by its finalizer"
    events_before = len(world.kube.events)
    assert await world.rreconcile(name) is None
    assert world.robj(name) is None, "cancelled, cleaned up, released"
    assert world.where() == {}, "the prepull pod is gone, no pod was made"
    cancelled = [e for e in world.kube.events[events_before:] if e.get("reason") == "Cancelled"]
    assert cancelled and cancelled[0]["type"] == "Warning"
    assert cancelled[0]["message"] == (
        f"the PodRestore was deleted before the pod was Ready; PodCheckpoint {checkpoint} is unchanged"
    )
    assert world.status(checkpoint)["suspended"] is True


async def test_deleting_a_restore_while_its_pod_comes_up_cancels_it_and_deletes_the_pod(world: RestoreWorld) -> None:
    world.kube.add_pod(make_pod("web"))
    checkpoint = await world.taken()
    name = world.restore(checkpoint, targetNode="node-2")
    await world.to_wait_ready(name)
    world.kube.delete_custom(api.RESTORE_PLURAL, (NS, name))
    assert await world.rreconcile(name) is None
    assert world.robj(name) is None
    assert world.kube.pods[(NS, "web")]["metadata"]["deletionTimestamp"], "the pod it made is deleted"
    assert any(e.get("reason") == "Cancelled" and "pod web deleted" in e["message"] for e in world.kube.events)


# --- a suspended controller's pod: its held replacement is released ----------------------------------------
async def suspended_replica(world: RestoreWorld) -> tuple[str, dict[str, Any]]:
    """A ReplicaSet's pod suspended: its PodCheckpoint, and the replacement that holds its place (gated)."""
    world.kube.add_pod(replicaset_pod())
    checkpoint = world.checkpoint("web-7d9-abcde", mode="Suspend")
    assert await world.reconcile(checkpoint) == pytest.approx(0.2)
    held, slot = await replaced(world)
    assert slot is not None
    assert await world.reconcile(checkpoint) is None
    assert world.status(checkpoint)["heldPod"]["name"] == held["metadata"]["name"]
    return checkpoint, held


async def test_a_held_replacement_is_released_onto_the_target_and_resumes_the_suspended_pod(world: RestoreWorld) -> None:
    checkpoint, held = await suspended_replica(world)
    held_name, held_uid = held["metadata"]["name"], held["metadata"]["uid"]
    name = world.restore(checkpoint, targetNode="node-2")

    assert await world.rreconcile(name) == pytest.approx(0.5)
    s = world.rstatus(name)
    assert (s["podName"], s["sourcePod"], s["clone"]) == (held_name, "web-7d9-abcde", False)
    assert s["heldPod"] == {"name": held_name, "uid": held_uid}
    prepull = world.prepull(name)
    assert prepull is not None and prepull["spec"]["nodeName"] == "node-2"
    world.kubelet.pull_images(NS, prepull["metadata"]["name"])

    # Release: the held pod gets the target as its node selector, then its gate is lifted; no pod is created.
    assert await world.rreconcile(name) == pytest.approx(0.2)
    pod = world.kube.pods[(NS, held_name)]
    assert pod["metadata"]["uid"] == held_uid and "nodeName" not in pod["spec"], "the scheduler binds it"
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "node-2"}
    assert pod["spec"]["schedulingGates"] == []
    assert [w for w in world.kube.writes if w.startswith("create pod") and "-prepull-" not in w] == [
        f"create pod {NS}/{held_name}"
    ], "no pod created: the ReplicaSet's own replica resumes"
    assert f"patch pod {NS}/{held_name} /spec/nodeSelector" in world.kube.writes
    s = world.rstatus(name)
    assert (s["step"], s["pod"]) == ("WaitReady", {"name": held_name, "uid": held_uid})
    assert any(reason == "Released" for _, reason, _ in world.revents(name))

    world.kubelet.schedule(NS, held_name, "node-2")
    world.kubelet.start(NS, held_name)
    assert await world.rreconcile(name) is None
    s = world.rstatus(name)
    assert (s["phase"], s["reason"]) == ("Succeeded", "Restored")
    assert s["message"].startswith(f"PodCheckpoint {checkpoint} restored as pod {held_name}, Ready on node-2")
    ck = world.status(checkpoint)
    assert ck["suspended"] is False and ck["resumedBy"]["pod"] == held_uid


async def test_a_held_pod_cannot_be_cloned(world: RestoreWorld) -> None:
    checkpoint, held = await suspended_replica(world)
    name = world.restore(checkpoint, podName="web-copy")
    assert await world.rreconcile(name) is None
    s = world.rstatus(name)
    assert (s["phase"], s["reason"]) == ("Failed", "OwnedByController")
    assert s["message"].startswith(
        f"pod web-7d9-abcde was suspended with ReplicaSet web-7d9's pod {held['metadata']['name']} holding its place: "
        "it resumes as that pod (leave podName empty), and cannot be cloned"
    )
    assert (NS, "web-copy") not in world.kube.pods


async def test_a_held_pod_that_is_gone_or_already_released_is_not_resumed_again(world: RestoreWorld) -> None:
    checkpoint, held = await suspended_replica(world)
    held_name = held["metadata"]["name"]
    await world.kube.patch_namespaced_pod(
        held_name,
        NS,
        [{"op": "replace", "path": "/spec/schedulingGates", "value": []}],
        _content_type="application/json-patch+json",
    )
    name = world.restore(checkpoint, name="resume-1")
    assert await world.rreconcile(name) is None
    s = world.rstatus(name)
    assert (s["reason"], s["message"].split(";")[0]) == (
        "AlreadyResumed",
        f"pod {held_name} is not held any more (it was resumed)",
    )

    await world.kube.delete_namespaced_pod(held_name, NS, grace_period_seconds=0)
    name = world.restore(checkpoint, name="resume-2")
    assert await world.rreconcile(name) is None
    s = world.rstatus(name)
    assert (s["reason"], s["message"].split(";")[0]) == (
        "HeldPodGone",
        f"pod {held_name}, which held suspended pod web-7d9-abcde's place, is gone",
    )


# --- product bugs, pinned (see the reasons) ---------------------------------------------------------------
async def test_a_restore_whose_checkpoint_was_deleted_meanwhile_still_succeeds_once_its_pod_is_ready(
    world: RestoreWorld,
) -> None:
    world.kube.add_pod(make_pod("web"))
    checkpoint = await world.taken()
    name = world.restore(checkpoint, targetNode="node-2")
    await world.to_wait_ready(name)
    world.delete(checkpoint)  # kubectl delete podcheckpoint: its controller deletes the images and lets it go
    await world.settle(checkpoint)
    await world.settle(checkpoint)
    assert world.obj(checkpoint) is None
    world.kubelet.start(NS, "web")
    assert await world.rreconcile(name) is None
    assert world.rstatus(name)["phase"] == "Succeeded"


async def test_a_clean_up_that_hit_an_api_error_is_retried(world: RestoreWorld) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.restore(await world.taken(), targetNode="node-2")
    await world.to_wait_ready(name)
    world.kubelet.fail(NS, "web")
    real_delete = world.kube.delete_namespaced_pod
    failures = [api_error(500, "etcdserver: request timed out")]

    async def delete_pod(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real_delete(*args, **kwargs)

    world.kube.delete_namespaced_pod = delete_pod  # type: ignore[method-assign]
    with pytest.raises(client.ApiException):
        await world.rreconcile(name)
    await world.rreconcile(name)  # the dispatcher's retry
    s = world.rstatus(name)
    assert (s["step"], s.get("reason")) == ("Done", "RestoreFailed")
    assert world.kube.pods[(NS, "web")]["metadata"].get("deletionTimestamp"), "the failed pod is deleted"


async def test_a_held_pod_whose_restore_failed_can_be_resumed_again(world: RestoreWorld) -> None:
    checkpoint, held = await suspended_replica(world)
    held_name = held["metadata"]["name"]
    name = world.restore(checkpoint, targetNode="node-2")
    await world.rreconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]
    assert await world.rreconcile(name) == pytest.approx(0.2)
    world.kubelet.schedule(NS, held_name, "node-2")
    world.kubelet.fail(NS, held_name, message="criu restore failed")
    assert await world.rreconcile(name) is None
    assert world.rstatus(name)["reason"] == "RestoreFailed"
    # The failed place-holder was deleted only after its place was held again: the next pod of the ReplicaSet holds it.
    gone = world.kube.pods.get((NS, held_name))
    assert gone is None or gone["metadata"].get("deletionTimestamp"), "deleted (gracefully: it may still run)"
    again = world.restore(checkpoint, name="resume-again")
    assert await world.rreconcile(again) == pytest.approx(1.0), "waits while the place is being held again"
    second, slot = await replaced(world)
    assert slot is not None and {"name": api.SCHEDULING_GATE_SUSPENDED} in second["spec"]["schedulingGates"]
    assert await world.reconcile(checkpoint) is None
    assert world.status(checkpoint)["heldPod"]["name"] == second["metadata"]["name"]
    assert await world.rreconcile(again) == pytest.approx(0.5), world.rstatus(again).get("message")
    assert world.rstatus(again)["heldPod"]["uid"] == second["metadata"]["uid"]
