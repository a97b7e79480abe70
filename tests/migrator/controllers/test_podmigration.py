"""The PodMigration reconciler against the in-memory API: every step, the rollbacks, the deadline, cancel.

Each test drives ``reconcile`` pass by pass as the dispatcher does (the PodMigration re-read
before each pass, the clock moved on by the delay a pass asked for), moves the world in between
(the kubelets, a ReplicaSet and the webhook, the node agents) and asserts what a user sees: the
status, Events, which pods exist on which node, and what the node agents were asked to do.
Only the public interface is used: the constructor and ``reconcile``.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from kubernetes_asyncio import client

from agentapi import contract
from agentapi.client import AgentError
from kubeclient.informing import group_by_node
from migrator import api
from migrator.controllers.podmigration import PodMigrationReconciler, Settings
from migrator.units import status_time
from tests.fakekube import FakeAgents, FakeClock, FakeKube, Kubelet, image_id, make_node, make_pod, through_webhook, use_clock

NS = "shop"
REPO = "registry.local:5000/checkpoints"
IMAGE = "registry.local/shop/web:1.0"


class World:
    """The API, two nodes, their kubelets and agents, the restore slots, a clock, and the reconciler under test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clock = FakeClock()
        use_clock(monkeypatch, self.clock)
        self.kube = FakeKube(clock=self.clock)
        self.kubelet = Kubelet(self.kube)
        self.agents = FakeAgents(self.kube)
        self.reconciler = PodMigrationReconciler(
            core=self.kube, custom=self.kube, agents=self.agents, settings=Settings(checkpoint_repository=REPO),  # type: ignore[arg-type]
            metrics=None,
        )  # fmt: skip
        for name in ("node-1", "node-2"):
            self.kube.add_node(make_node(name))

    def migrate(self, pod: str = "web", *, name: str | None = None, **spec: Any) -> str:
        name = name or f"move-{pod}"
        body = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, "namespace": NS}}
        self.kube.add_custom(api.PLURAL, {**body, "spec": {"podName": pod, **spec}})
        return name

    async def reconcile(self, name: str) -> float | None:
        """One pass as the dispatcher runs it: the object read afresh; then time goes by as long as the pass asked."""
        obj = self.kube.migrations.get((NS, name))
        assert obj is not None, f"PodMigration {name} is gone"
        delay = await self.reconciler.reconcile(copy.deepcopy(obj))
        if delay:
            self.clock.advance(delay)
        return delay

    def status(self, name: str) -> dict[str, Any]:
        return self.kube.migrations[(NS, name)]["status"]

    def where(self) -> dict[str, str | None]:
        """Every pod of the namespace and its node."""
        return {n: p["spec"].get("nodeName") for (ns, n), p in self.kube.pods.items() if ns == NS}

    def prepull(self, name: str) -> dict[str, Any] | None:
        uid = self.kube.migrations[(NS, name)]["metadata"]["uid"]
        found = [p for p in self.kube.pods.values() if (p["metadata"].get("labels") or {}).get(api.LABEL_PREPULL) == uid]
        assert len(found) <= 1
        return found[0] if found else None

    def events(self, name: str) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events on the PodMigration."""
        return self.kube.event_log(kind=api.KIND, name=name)

    async def to_wait_ready(self, name: str) -> None:
        """Validate, PrepareTarget (images pulled), Checkpoint, RemoveSource, CreateTarget: the restored pod is being waited for."""
        await self.reconcile(name)
        prepull = self.prepull(name)
        assert prepull is not None
        self.kubelet.pull_images(NS, prepull["metadata"]["name"])
        await self.reconcile(name)
        await self.reconcile(name)
        assert self.status(name)["step"] == "WaitReady"


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    return World(monkeypatch)


def in_order(seen: list[str], expected: list[str]) -> bool:
    """``expected`` is a subsequence of ``seen``."""
    rest = iter(seen)
    return all(any(s == e for s in rest) for e in expected)


# --- the happy path -----------------------------------------------------------------------------
async def test_a_bare_pod_moves_step_by_step(world: World) -> None:
    source_uid = world.kube.add_pod(make_pod("web"))["metadata"]["uid"]
    name = world.migrate(targetNode="node-2")

    # Validate, then PrepareTarget: a pod on the target pulls the base images; nothing is frozen meanwhile.
    assert await world.reconcile(name) == pytest.approx(0.5)
    m = world.kube.migrations[(NS, name)]
    assert api.FINALIZER in m["metadata"]["finalizers"]
    s = m["status"]
    assert (s["phase"], s["step"]) == ("Pending", "PrepareTarget")
    assert (s["sourceNode"], s["targetNode"], s["podUID"]) == ("node-1", "node-2", source_uid)
    assert s["baseImages"] == [image_id(IMAGE)]
    prepull = world.prepull(name)
    assert prepull is not None and prepull["spec"]["nodeName"] == "node-2"
    assert [c["image"] for c in prepull["spec"]["containers"]] == [image_id(IMAGE)]
    assert world.agents.calls == []
    assert await world.reconcile(name) == pytest.approx(0.5), "the images are not pulled yet"
    assert world.status(name)["step"] == "PrepareTarget" and world.agents.calls == []

    # Pulled: the prepull pod goes; Checkpoint freezes the source; RemoveSource kills it and deletes the pod.
    world.kubelet.pull_images(NS, prepull["metadata"]["name"])
    assert await world.reconcile(name) == pytest.approx(0.1)
    s = world.status(name)
    assert (s["phase"], s["step"]) == ("Restoring", "RemoveSource")
    assert world.prepull(name) is None
    assert world.agents.calls == [("checkpoint", "node-1", "shop/web"), ("kill", "node-1", "shop/web")]
    (request,) = world.agents.requests
    assert request.image_repository == f"{REPO}/shop/web" and request.freeze and request.tag.startswith("pm-")
    (container,) = s["containers"]
    assert container["name"] == "app" and container["image"].startswith(f"{REPO}/shop/web@sha256:")
    assert container["baseImage"] == IMAGE
    assert s["frozenAt"] == next(p["start"] for p in s["phases"] if p["name"] == "checkpoint")
    assert world.where() == {}, "the frozen source is deleted at once (its agent killed it)"
    assert world.agents.traceparents[0] != world.agents.traceparents[1], "each call continues the trace from its own phase"
    assert s["traceID"] in world.agents.traceparents[0]

    # CreateTarget: the same pod bound to the target, running the checkpoint image; WaitReady waits for it.
    assert await world.reconcile(name) == pytest.approx(0.1)
    s = world.status(name)
    assert (s["phase"], s["step"], s["sourceRemoved"]) == ("Restoring", "WaitReady", True)
    pod = world.kube.pods[(NS, "web")]
    assert world.where() == {"web": "node-2"} and pod["metadata"]["uid"] != source_uid
    assert [(c["image"], c["imagePullPolicy"]) for c in pod["spec"]["containers"]] == [(container["image"], "IfNotPresent")]
    annotations = pod["metadata"]["annotations"]
    assert annotations[api.ANNOTATION_MIGRATION] == f"{NS}/{name}"
    assert annotations[api.ANNOTATION_MIGRATION_UID] == world.kube.migrations[(NS, name)]["metadata"]["uid"]
    assert annotations[api.ANNOTATION_RESTORED_FROM] == "node-1"
    assert json.loads(annotations[api.ANNOTATION_CHECKPOINT_IMAGES]) == {"app": container["image"]}
    assert json.loads(annotations[api.ANNOTATION_ORIGINAL_IMAGES]) == {"app": IMAGE}
    assert s["newPod"] == {"name": "web", "uid": pod["metadata"]["uid"], "node": "node-2"}
    world.clock.advance(1.5)
    assert await world.reconcile(name) == pytest.approx(0.1), "not Ready yet"

    # Ready: Cleanup deletes the checkpoint image; Succeeded, with the downtime.
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    s = world.status(name)
    downtime = (status_time(s["readyAt"]) - status_time(s["frozenAt"])).total_seconds()
    assert downtime > 1.5 and float(s["downtimeSeconds"]) == pytest.approx(downtime, abs=0.001)
    assert (s["phase"], s["step"], s["reason"]) == ("Succeeded", "Done", "Migrated")
    assert s["message"] == f"pod web moved from node-1 to node-2 with its state; downtime {downtime:.2f}s"
    assert next(c for c in s["conditions"] if c["type"] == "Succeeded")["status"] == "True"
    assert [p["name"] for p in s["phases"]] == [
        "validate", "prepare-target", "checkpoint", "remove-source", "create-target", "restore", "cleanup",
    ]  # fmt: skip
    assert all(p.get("end") and not p.get("error") for p in s["phases"])
    assert world.agents.calls[2:] == [("delete_image", "node-1", container["image"])]
    assert world.agents.frozen == set() and world.where() == {"web": "node-2"}
    assert await world.reconcile(name) is None and len(world.agents.calls) == 3, "a finished migration does nothing more"

    events = world.events(name)
    reasons = [reason for _, reason, _ in events]
    assert in_order(reasons, ["Validate", "PrepareTarget", "Checkpoint", "RemoveSource", "CreateTarget", "WaitReady",
                              "Cleanup", "Migrated"])  # fmt: skip
    assert {"Started", "Checkpointed", "Restored"} <= set(reasons)
    assert ("Normal", "Migrated", s["message"]) in events and all(kind == "Normal" for kind, _, _ in events)
    on_pod = world.kube.event_log(kind="Pod", name="web")
    assert ("Normal", "Migrated", f"[{name}] {s['message']}") in on_pod, "the pod's own Events tell the story too"


async def test_without_a_target_the_roomiest_node_that_fits_is_chosen(world: World) -> None:
    world.kube.add_node(make_node("node-3", cpu="16"))
    world.kube.add_node(make_node("node-4", cpu="64", unschedulable=True))
    world.kube.add_pod(make_pod("web"))
    name = world.migrate()
    await world.reconcile(name)
    s = world.status(name)
    assert (s["step"], s["targetNode"]) == ("PrepareTarget", "node-3")


async def test_retain_checkpoint_keeps_the_images(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2", retainCheckpoint=True)
    await world.to_wait_ready(name)
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    assert world.status(name)["phase"] == "Succeeded"
    assert world.agents.operations() == ["checkpoint", "kill"], "no delete_image"


# --- a ReplicaSet's pod: its controller's replacement, made the restore by the webhook -------
def replicaset_pod(name: str = "web-7d9-abcde", **extra: Any) -> dict[str, Any]:
    return make_pod(name, owner=("ReplicaSet", "web-7d9"), labels={"app": "web"}, **extra)


def replacement() -> dict[str, Any]:
    """What the ReplicaSet creates when its pod is gone: from its template, no name, no node."""
    pod = replicaset_pod("", node=None, phase="Pending")
    del pod["metadata"]["name"]
    pod["metadata"]["generateName"] = "web-7d9-"
    pod.pop("status")
    return pod


async def test_a_replicaset_pod_is_restored_through_its_controllers_replacement(world: World) -> None:
    world.kube.add_pod(replicaset_pod())
    name = world.migrate("web-7d9-abcde", targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]
    assert await world.reconcile(name) == pytest.approx(0.1)
    s = world.status(name)
    assert s["owner"] == {"kind": "ReplicaSet", "name": "web-7d9", "uid": "uid-web-7d9"}
    assert world.where() == {} and world.agents.operations() == ["checkpoint", "kill"]

    # The source is gone: AwaitReplacement waits for the ReplicaSet's new pod.
    assert await world.reconcile(name) == pytest.approx(0.5)
    s = world.status(name)
    assert (s["phase"], s["step"], s["sourceRemoved"]) == ("Restoring", "AwaitReplacement", True)
    assert "newPod" not in s

    # The ReplicaSet's replacement passes the webhook: it claims the migration's slot and becomes the restore.
    pod, slot = await through_webhook(replacement(), kube=world.kube, namespace=NS)
    assert slot is not None and (slot.node, slot.source_node) == ("node-2", "node-1")
    created = (await world.kube.create_namespaced_pod(NS, pod)).metadata.name
    restored = world.kube.pods[(NS, created)]
    assert restored["spec"]["nodeName"] == "node-2"
    assert [c["image"] for c in restored["spec"]["containers"]] == [c["image"] for c in s["containers"]]
    assert (
        restored["metadata"]["annotations"][api.ANNOTATION_MIGRATION_UID] == world.kube.migrations[(NS, name)]["metadata"]["uid"]
    )
    scale_up, none = await through_webhook(replacement(), kube=world.kube, namespace=NS)
    assert none is None and "nodeName" not in scale_up["spec"], "one slot, one restored pod: a second pod starts cold"

    assert await world.reconcile(name) == pytest.approx(0.1)
    s = world.status(name)
    assert (s["step"], s["newPod"]) == ("WaitReady", {"name": created, "uid": restored["metadata"]["uid"], "node": "node-2"})
    world.kubelet.start(NS, created)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Succeeded", "Migrated")
    assert s["message"].startswith("pod web-7d9-abcde moved from node-1 to node-2 with its state; downtime ")
    assert world.agents.operations() == ["checkpoint", "kill", "delete_image"]
    assert world.where() == {created: "node-2"}
    assert (await through_webhook(replacement(), kube=world.kube, namespace=NS))[1] is None, "the slot is closed"


async def test_a_replacement_that_skipped_the_webhook_fails_the_migration_with_the_state_lost(world: World) -> None:
    world.kube.add_pod(replicaset_pod())
    name = world.migrate("web-7d9-abcde", targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]
    await world.reconcile(name)
    assert await world.reconcile(name) == pytest.approx(0.5)
    # The webhook is down (failure policy Ignore): the ReplicaSet's pod is created as it is, and starts cold.
    cold = (await world.kube.create_namespaced_pod(NS, replacement())).metadata.name
    world.kubelet.schedule(NS, cold, "node-2")
    world.kubelet.start(NS, cold)
    for _ in range(3):
        assert await world.reconcile(name) == pytest.approx(0.5), "it may still turn out to be ours: wait a little"
    assert world.status(name)["step"] == "AwaitReplacement"
    world.clock.advance(20)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "ReplacementNotRestored")
    assert s["message"] == (
        f"ReplicaSet web-7d9 replaced the pod with {cold}, which started without the checkpoint "
        "(is the podmigrate webhook registered and reachable?); in-memory state lost"
    )
    assert ("Warning", "ReplacementNotRestored", s["message"]) in world.events(name)
    assert world.where() == {cold: "node-2"}
    assert (await through_webhook(replacement(), kube=world.kube, namespace=NS))[1] is None, "the slot is closed"


# --- validation: refused before anything is touched --------------------------------------------
def _daemonset(w: World) -> None:
    w.kube.add_pod(make_pod("web", owner=("DaemonSet", "agent")))


VALIDATION = {
    "pod not found": (lambda w: None, {}, "PodNotFound", 'pod "shop/web" not found'),
    "pod not running": (
        lambda w: w.kube.add_pod(make_pod("web", phase="Pending")), {}, "PodNotRunning", "pod web is Pending, not Running: there is no process to checkpoint"
    ),
    "daemonset pod": (_daemonset, {}, "DaemonSetPod", "pod web belongs to DaemonSet agent: it must stay on its node"),
    "host network": (
        lambda w: w.kube.add_pod(make_pod("web", hostNetwork=True)), {}, "HostNetwork",
        "pod web uses the host network: its sockets cannot move with it",
    ),
    "target not found": (
        lambda w: w.kube.add_pod(make_pod("web")), {"targetNode": "node-9"}, "NodeNotFound", 'target node "node-9" not found'
    ),
    "same node": (lambda w: w.kube.add_pod(make_pod("web")), {"targetNode": "node-1"}, "SameNode", "pod web already runs on node-1"),
    "target cordoned": (
        lambda w: (w.kube.add_pod(make_pod("web")), w.kube.nodes["node-2"]["spec"].update(unschedulable=True)),
        {"targetNode": "node-2"}, "NodeDoesNotFit", "node node-2 is cordoned (unschedulable)",
    ),
    "target too small": (
        lambda w: w.kube.add_pod(make_pod("web", cpu="8")), {"targetNode": "node-2"}, "NodeDoesNotFit",
        "node node-2 has 4 cpu free, the pod requests 8",
    ),
    "no node fits": (
        lambda w: (w.kube.add_pod(make_pod("web")), w.kube.nodes["node-2"]["spec"].update(unschedulable=True)),
        {}, "NoNodeFits", "no node can take pod web: node node-2 is cordoned (unschedulable)",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("setup", "spec", "reason", "message"), VALIDATION.values(), ids=VALIDATION.keys())
async def test_validation_refuses_and_touches_nothing(
    world: World, setup: Any, spec: dict[str, Any], reason: str, message: str
) -> None:
    setup(world)
    before = copy.deepcopy(world.kube.pods)
    name = world.migrate(**spec)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["step"], s["reason"], s["message"]) == ("Failed", "Done", reason, message)
    assert "sourceRemoved" not in s and "containers" not in s
    assert next(c for c in s["conditions"] if c["type"] == "Succeeded")["status"] == "False"
    assert world.agents.calls == [], "nothing frozen, nothing thawed"
    assert world.kube.pods == before, "no pod created, deleted or changed"
    assert ("Warning", reason, message) in world.events(name)


async def test_a_finished_migration_keeps_no_leftover_failure_in_its_status(world: World) -> None:
    name = world.migrate()
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "PodNotFound")
    assert "failure" not in s and "nothingTouched" not in s


# --- rollbacks ---------------------------------------------------------------------------------
async def test_a_failed_checkpoint_thaws_the_source_which_runs_on(world: World) -> None:
    source_uid = world.kube.add_pod(make_pod("web"))["metadata"]["uid"]
    name = world.migrate(targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]
    world.agents.errors["checkpoint"] = AgentError("criu dump failed: unsupported socket", status=500, stage="checkpoint")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "CheckpointFailed")
    assert s["message"] == (
        "checkpoint on node-1 failed (checkpoint): criu dump failed: unsupported socket; "
        "the source pod was left running on node-1"
    )
    assert s["frozen"] is False and "sourceRemoved" not in s
    assert world.agents.calls == [("checkpoint", "node-1", "shop/web"), ("thaw", "node-1", "shop/web")]
    assert world.agents.frozen == set(), "thawed"
    assert world.where() == {"web": "node-1"} and world.kube.pods[(NS, "web")]["metadata"]["uid"] == source_uid
    assert not world.kube.pods[(NS, "web")]["metadata"].get("deletionTimestamp")
    assert [p["name"] for p in s["phases"]][-2:] == ["checkpoint", "rollback-thaw-source"]
    assert "criu dump failed" in s["phases"][-2]["error"]
    assert ("Warning", "CheckpointFailed", s["message"]) in world.events(name)


async def test_a_base_image_that_cannot_be_pulled_fails_before_anything_is_frozen(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.fail_pull(NS, world.prepull(name)["metadata"]["name"], message="registry.local: connection refused")  # type: ignore[index]
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "BaseImageUnavailable")
    assert s["message"] == (
        "cannot pull the base image on node-2: registry.local: connection refused; the source pod was left running on node-1"
    )
    assert "checkpoint" not in world.agents.operations()
    assert world.where() == {"web": "node-1"}, "the prepull pod is gone, the source runs"


async def test_a_thaw_that_fails_is_retried_until_the_source_runs(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]
    world.agents.errors["checkpoint"] = AgentError("image push failed", status=502, stage="push")
    world.agents.errors["thaw"] = AgentError("agent at 127.0.9.1 unreachable", status=0)
    assert await world.reconcile(name) == pytest.approx(2.0)
    s = world.status(name)
    assert (s["phase"], s["step"]) == ("RollingBack", "ThawSource")
    assert s["thawError"] == "agent at 127.0.9.1 unreachable" and world.agents.frozen == {"shop/web"}
    assert await world.reconcile(name) == pytest.approx(2.0)
    del world.agents.errors["thaw"]
    assert await world.reconcile(name) is None
    assert world.status(name)["phase"] == "Failed" and world.agents.frozen == set()
    assert world.agents.operations() == ["checkpoint", "thaw", "thaw", "thaw"]


async def test_a_failed_restore_on_the_target_restores_the_pod_on_its_source(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    images = world.status(name)["containers"]
    world.kubelet.fail(NS, "web", reason="CreateContainerError", message="criu restore: cannot bind 10.244.0.7:8080")
    await world.reconcile(name)
    s = world.status(name)
    assert (s["phase"], s["step"]) == ("RollingBack", "RestoreSource")
    restore = next(p for p in s["phases"] if p["name"] == "restore")
    assert (
        restore["error"]
        == "restore on node-2 failed: container app: CreateContainerError: criu restore: cannot bind 10.244.0.7:8080"
    )
    assert world.kube.pods[(NS, "web")]["metadata"]["deletionTimestamp"], "the failed pod on the target is deleted first"
    assert await world.reconcile(name) == pytest.approx(0.3), "and nothing starts until its node confirms it gone"
    world.kubelet.terminate(NS, "web")
    assert world.where() == {}

    await world.reconcile(name)
    pod = world.kube.pods[(NS, "web")]
    assert world.where() == {"web": "node-1"}
    assert [c["image"] for c in pod["spec"]["containers"]] == [c["image"] for c in images], "from the checkpoint"
    assert pod["metadata"]["annotations"][api.ANNOTATION_RESTORED_FROM] == "node-1"
    assert await world.reconcile(name) == pytest.approx(0.5), "not Ready yet"

    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "RestoreFailed")
    assert s["message"] == (
        "restore on node-2 failed: container app: CreateContainerError: criu restore: cannot bind 10.244.0.7:8080; "
        "the pod was restored on its source node node-1 from the checkpoint (state kept)"
    )
    assert s["newPod"] == {"name": "web", "uid": pod["metadata"]["uid"], "node": "node-1"}
    assert world.agents.operations() == ["checkpoint", "kill", "delete_image"]
    assert ("Warning", "RestoreFailed", s["message"]) in world.events(name)


async def test_a_failed_pod_on_a_node_that_does_not_answer_is_waited_for_never_doubled(world: World) -> None:
    """No forced deletion of a pod that may still run: the rollback waits for its node to confirm it gone."""
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    world.kubelet.fail(NS, "web", reason="CreateContainerError", message="criu restore failed")
    node = world.kube.nodes["node-2"]
    node["status"]["conditions"] = [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"}]
    for _ in range(5):
        await world.reconcile(name)
        world.clock.advance(5)
    assert world.where() == {"web": "node-2"}, "still there, terminating: nothing restored beside it"
    assert world.kube.pods[(NS, "web")]["metadata"]["deletionTimestamp"]
    s = world.status(name)
    assert (s["step"], s["waitingFor"]) == ("RestoreSource", "node node-2 to confirm pod web is gone")
    assert any(e[1] == "WaitingForNode" for e in world.events(name))
    world.kubelet.terminate(NS, "web")  # the node is back (or was deleted): the pod is gone
    await world.reconcile(name)
    assert world.where() == {"web": "node-1"}


async def test_a_source_whose_freeze_lapsed_is_never_killed_and_stays_running(world: World) -> None:
    """The agent thawed it (the lease was not renewed in time): it ran since its checkpoint, so the move fails back."""
    uid = world.kube.add_pod(make_pod("web"))["metadata"]["uid"]
    world.agents.lapse_after_checkpoint.add(f"{NS}/web")
    name = world.migrate(targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]
    for _ in range(3):
        if await world.reconcile(name) is None:
            break
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "FreezeLapsed"), s
    assert "the source pod was left running on node-1" in s["message"]
    assert world.kube.pods[(NS, "web")]["metadata"]["uid"] == uid, "never deleted"
    assert "delete_image" in world.agents.operations(), "its images are gone too"
    assert world.agents.leases == {f"{NS}/web": 30}, "the checkpoint asked for a freeze lease"


async def test_a_source_restore_that_runs_but_never_turns_ready_is_kept_after_a_grace(world: World) -> None:
    """The rollback does not wait forever for Ready, nor kill a running restored pod (its state) to start it cold."""
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2", timeoutSeconds=60)
    await world.to_wait_ready(name)
    world.kubelet.start(NS, "web", ready=False)  # restored on the target, never Ready
    world.clock.advance(61)
    await world.reconcile(name)
    assert world.status(name)["step"] == "RestoreSource"
    world.kubelet.terminate(NS, "web")
    await world.reconcile(name)
    world.kubelet.start(NS, "web", ready=False)  # restored on the source: running, not Ready either
    assert await world.reconcile(name) == pytest.approx(0.5), "it waits for Ready first"
    world.clock.advance(31)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "Timeout")
    assert s["message"].endswith("restored on its source node node-1 from the checkpoint (state kept) but not Ready after 30s")
    assert world.where() == {"web": "node-1"}


async def test_the_deadline_holds_while_the_agent_checkpoints_too(world: World) -> None:
    """A checkpoint slower than what is left of timeoutSeconds is given up (and undone by its agent); the source runs on."""
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2", timeoutSeconds=60)
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]
    world.clock.advance(59.0)  # (the first pass waited 0.5 s): half a second left when the checkpoint starts

    async def slow() -> None:
        await asyncio.sleep(2)

    world.agents.during_checkpoint = slow
    for _ in range(3):
        if await world.reconcile(name) is None:
            break
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "Timeout"), s
    assert "while in step Checkpoint" in s["message"] and "left running on node-1" in s["message"]
    uid = world.kube.migrations[(NS, name)]["metadata"]["uid"]
    assert ("abort_checkpoint", "node-1", f"pm-{uid}") in world.agents.calls, "the agent undoes what it did"


async def test_a_namespace_deleted_mid_migration_is_not_held_up_by_it(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing can be created in a terminating namespace: the migration ends and lets its finalizer go."""
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    world.kubelet.fail(NS, "web", message="criu restore failed")
    await world.reconcile(name)
    world.kubelet.terminate(NS, "web")

    forbidden = client.ApiException(status=403, reason="Forbidden")
    forbidden.body = f'pods "web" is forbidden: unable to create new content in namespace {NS} because it is being terminated'

    async def terminating(namespace: str, body: Any, **_: Any) -> Any:
        raise forbidden

    monkeypatch.setattr(world.kube, "create_namespaced_pod", terminating)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "NamespaceDeleted"), s
    assert api.FINALIZER not in (world.kube.migrations[(NS, name)]["metadata"].get("finalizers") or [])


async def test_a_config_error_the_kubelet_retries_is_waited_for_before_it_counts_as_a_failed_restore(world: World) -> None:
    """CreateContainerConfigError is retried by the kubelet (the API server's caches may not know the new pod for
    its projected token yet): a failure only once it lasts."""
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    world.kubelet.fail(NS, "web", reason="CreateContainerConfigError", message="404 Not Found")
    await world.reconcile(name)
    assert world.status(name)["step"] == "WaitReady", "not a failure yet"
    world.kubelet.start(NS, "web")  # the kubelet's retry worked
    assert await world.reconcile(name) is None
    assert world.status(name)["phase"] == "Succeeded"


async def test_a_config_error_that_lasts_is_a_failed_restore(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    world.kubelet.fail(NS, "web", reason="CreateContainerConfigError", message='secret "db" not found')
    await world.reconcile(name)
    world.clock.advance(21)
    await world.reconcile(name)
    s = world.status(name)
    assert s["step"] == "RestoreSource" and "CreateContainerConfigError: secret" in s["failure"]["message"], s


async def fail_restore_on_target_and_source(world: World, name: str) -> None:
    """A restore that fails on the target, and then on the source too."""
    await world.to_wait_ready(name)
    world.kubelet.fail(NS, "web", message="criu restore failed on the target")
    await world.reconcile(name)
    world.kubelet.terminate(NS, "web")
    await world.reconcile(name)
    assert world.where() == {"web": "node-1"}
    world.kubelet.fail(NS, "web", message="criu restore failed on the source")


async def test_when_the_restore_fails_on_the_source_too_the_pod_is_recreated_from_its_original_spec(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await fail_restore_on_target_and_source(world, name)
    await world.reconcile(name)
    s = world.status(name)
    assert (s["phase"], s["step"]) == ("RollingBack", "Recreate")
    world.kubelet.terminate(NS, "web")
    assert world.where() == {}, "the failed restore on the source is deleted first"
    await world.reconcile(name)
    assert world.where() == {"web": None}, "recreated from its original spec, for the scheduler to place"
    pod = world.kube.pods[(NS, "web")]
    assert [c["image"] for c in pod["spec"]["containers"]] == [IMAGE]
    assert api.ANNOTATION_RESTORED_FROM not in pod["metadata"]["annotations"]
    world.kubelet.schedule(NS, "web", "node-2")
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "RestoreFailed")
    assert s["message"] == (
        "restore on node-2 failed: container app: CreateContainerError: criu restore failed on the target; "
        "restoring on node-1 failed too; the pod was recreated from its original spec (in-memory state lost)"
    )
    assert world.where() == {"web": "node-2"}


async def test_on_failure_recreate_starts_the_pod_again_from_its_original_spec(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2", onFailure="Recreate")
    await world.to_wait_ready(name)
    world.kubelet.fail(NS, "web", reason="CrashLoopBackOff", message="back-off restarting failed container")
    await world.reconcile(name)
    world.kubelet.terminate(NS, "web")
    assert (world.status(name)["step"], world.where()) == ("Recreate", {})
    await world.reconcile(name)
    assert world.where() == {"web": None}, "no node chosen: the scheduler places it"
    pod = world.kube.pods[(NS, "web")]
    assert [c["image"] for c in pod["spec"]["containers"]] == [IMAGE], "the original image, not the checkpoint"
    assert api.ANNOTATION_CHECKPOINT_IMAGES not in pod["metadata"]["annotations"]
    assert await world.reconcile(name) == pytest.approx(0.5), "not running yet"
    world.kubelet.schedule(NS, "web", "node-2")
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "RestoreFailed")
    assert s["message"] == (
        "restore on node-2 failed: container app: CrashLoopBackOff: back-off restarting failed container; "
        "the pod was recreated from its original spec (in-memory state lost)"
    )
    assert world.agents.operations() == ["checkpoint", "kill", "delete_image"]


async def test_an_owned_pod_whose_restore_fails_is_restored_on_its_source_by_its_controller(world: World) -> None:
    world.kube.add_pod(replicaset_pod())
    name = world.migrate("web-7d9-abcde", targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]
    await world.reconcile(name)
    await world.reconcile(name)
    pod, _ = await through_webhook(replacement(), kube=world.kube, namespace=NS)
    failed = (await world.kube.create_namespaced_pod(NS, pod)).metadata.name
    await world.reconcile(name)
    world.kubelet.fail(NS, failed, message="criu restore failed on the target")
    await world.reconcile(name)
    assert world.status(name)["step"] == "RestoreSource"
    world.kubelet.terminate(NS, failed)
    assert world.where() == {}, "our failed pod is deleted: its ReplicaSet replaces it"
    assert await world.reconcile(name) == pytest.approx(0.5)
    pod, slot = await through_webhook(replacement(), kube=world.kube, namespace=NS)
    assert slot is not None and slot.node == "node-1", "the replacement becomes the restore on the source node"
    back = (await world.kube.create_namespaced_pod(NS, pod)).metadata.name
    world.kubelet.start(NS, back)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "RestoreFailed")
    assert s["message"].endswith("; the pod was restored on its source node node-1 (state kept)")
    assert world.where() == {back: "node-1"}


# --- the deadline --------------------------------------------------------------------------------
async def test_the_deadline_before_the_freeze_fails_and_leaves_the_source_running(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2", timeoutSeconds=30)
    await world.reconcile(name)
    world.clock.advance(20)
    assert await world.reconcile(name) == pytest.approx(0.5), "the images are still being pulled, within the deadline"
    world.clock.advance(10)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "Timeout")
    assert s["message"] == (
        "the migration did not finish within 30s (timeoutSeconds) while in step PrepareTarget; "
        "the source pod was left running on node-1"
    )
    assert world.where() == {"web": "node-1"}, "the prepull pod is gone"
    assert "checkpoint" not in world.agents.operations()


async def test_the_deadline_after_the_source_is_removed_restores_it_on_its_source(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2", timeoutSeconds=60)
    await world.to_wait_ready(name)
    world.clock.advance(61)
    await world.reconcile(name)
    world.kubelet.terminate(NS, "web")
    assert (world.status(name)["step"], world.where()) == ("RestoreSource", {}), "the restore that never became Ready goes"
    await world.reconcile(name)
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "Timeout")
    assert s["message"] == (
        "the migration did not finish within 60s (timeoutSeconds) while in step WaitReady; "
        "the pod was restored on its source node node-1 from the checkpoint (state kept)"
    )
    assert world.where() == {"web": "node-1"}


# --- cancel --------------------------------------------------------------------------------------
async def test_cancel_before_the_source_is_removed_thaws_it_and_releases_the_finalizer(world: World) -> None:
    source_uid = world.kube.add_pod(make_pod("web"))["metadata"]["uid"]
    name = world.migrate(targetNode="node-2")
    await world.reconcile(name)
    world.kube.delete_custom(api.PLURAL, (NS, name))  # kubectl delete podmigration
    assert (NS, name) in world.kube.migrations, "held by the finalizer"
    assert await world.reconcile(name) is None
    assert (NS, name) not in world.kube.migrations, "finalizer released: the deletion completes"
    assert world.where() == {"web": "node-1"} and world.kube.pods[(NS, "web")]["metadata"]["uid"] == source_uid
    assert world.agents.operations() == ["thaw"]
    message = "the PodMigration was deleted (cancelled); the source pod was left running on node-1"
    assert ("Warning", "Cancelled", message) in world.events(name)


async def test_cancel_arriving_during_the_checkpoint_thaws_the_frozen_source(world: World) -> None:
    source_uid = world.kube.add_pod(make_pod("web"))["metadata"]["uid"]
    name = world.migrate(targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]

    async def cancel() -> None:
        world.kube.delete_custom(api.PLURAL, (NS, name))

    world.agents.during_checkpoint = cancel
    passes = 0
    while (NS, name) in world.kube.migrations and passes < 5:  # the deletion's watch event makes the dispatcher look again
        passes += 1
        assert await world.reconcile(name) is None
    assert (NS, name) not in world.kube.migrations
    assert world.agents.operations() == ["checkpoint", "thaw", "delete_image"], "never killed: thawed instead"
    assert world.agents.frozen == set() and world.agents.killed == set()
    assert world.where() == {"web": "node-1"} and world.kube.pods[(NS, "web")]["metadata"]["uid"] == source_uid
    assert any(reason == "Cancelled" and kind == "Warning" for kind, reason, _ in world.events(name))


async def test_cancel_after_the_source_is_removed_finishes_the_move_then_releases(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    world.kube.delete_custom(api.PLURAL, (NS, name))
    assert await world.reconcile(name) == pytest.approx(0.1), "the restore goes on: stopping now would lose the pod"
    assert world.where() == {"web": "node-2"}
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    assert (NS, name) not in world.kube.migrations
    assert world.where() == {"web": "node-2"}
    assert any(reason == "Migrated" for _, reason, _ in world.events(name))


# --- the agent cannot kill the frozen source -------------------------------------------------
async def test_a_source_the_agent_cannot_kill_is_deleted_with_a_grace_period_and_waited_for(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]
    world.agents.errors["kill"] = AgentError("runc kill: container not found", status=500, stage="freeze")
    assert await world.reconcile(name) == pytest.approx(0.1)
    source = world.kube.pods[(NS, "web")]
    assert source["metadata"]["deletionGracePeriodSeconds"] == 1 and source["metadata"]["deletionTimestamp"]
    assert await world.reconcile(name) == pytest.approx(0.1)
    assert world.status(name)["step"] == "RemoveSource", "no second copy while the source is still terminating"
    assert world.kube.writes.count("delete pod shop/web") == 1, "deleted once, then waited for"
    world.kubelet.terminate(NS, "web")
    await world.reconcile(name)
    assert world.status(name)["step"] == "WaitReady" and world.where() == {"web": "node-2"}


# --- one migration per pod; the point of no return ---------------------------------------------
async def test_a_second_migration_of_a_moving_pod_is_refused_and_touches_nothing(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    first = world.migrate(name="first", targetNode="node-2")
    await world.reconcile(first)
    world.clock.advance(0.5)
    second = world.migrate(name="second", targetNode="node-2")
    assert await world.reconcile(second) is None
    s = world.status(second)
    assert (s["phase"], s["reason"]) == ("Failed", "AlreadyMigrating")
    assert "already being moved or checkpointed by PodMigration first" in s["message"]
    assert world.agents.calls == [], "refused before anything was frozen"
    assert world.status(first)["step"] == "PrepareTarget", "the first one goes on"
    world.kubelet.pull_images(NS, world.prepull(first)["metadata"]["name"])  # type: ignore[index]
    await world.reconcile(first)
    await world.reconcile(first)
    assert world.where() == {"web": "node-2"}


async def test_the_kill_is_recorded_before_it_happens_so_a_later_cancel_never_thaws(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]

    class Crash(Exception):
        pass

    real_kill = world.agents.kill

    async def kill_then_crash(**kwargs: Any) -> None:
        await real_kill(**kwargs)
        raise Crash("the control service died right after the kill")

    world.agents.kill = kill_then_crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await world.reconcile(name)
    assert world.status(name)["sourceKilled"] is True, "recorded before the kill"
    world.agents.kill = real_kill  # type: ignore[method-assign]
    world.kube.delete_custom(api.PLURAL, (NS, name))  # and now the user cancels
    await world.reconcile(name)
    assert "thaw" not in world.agents.operations(), "a killed source is never thawed"
    assert world.status(name)["step"] in ("RemoveSource", "CreateTarget", "WaitReady")


async def test_a_target_with_another_container_runtime_is_refused_before_anything_is_frozen(world: World) -> None:
    world.kube.add_node(make_node("node-3", runtime="containerd://2.3.7"))
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-3")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "NodeDoesNotFit")
    assert "node-3 runs containerd, the pod's node runs cri-o" in s["message"]
    assert world.agents.calls == []


async def test_without_a_target_only_nodes_of_the_same_runtime_are_candidates(world: World) -> None:
    world.kube.add_node(make_node("node-3", runtime="containerd://2.3.7", cpu="64", memory="256Gi"))  # the roomiest
    world.kube.add_pod(make_pod("web"))
    name = world.migrate()
    await world.reconcile(name)
    assert world.status(name)["targetNode"] == "node-2"


# --- what cannot move is refused before anything is frozen (migrator.movability) --------------------
@pytest.mark.parametrize(
    ("volumes", "reason"),
    [
        ([{"name": "logs", "hostPath": {"path": "/var/log"}}], "HostPathVolume"),
        ([{"name": "db", "persistentVolumeClaim": {"claimName": "db"}}], "PersistentVolume"),
    ],
)
async def test_a_pod_whose_state_cannot_move_is_refused_before_anything_is_frozen(
    world: World, volumes: list[dict[str, Any]], reason: str
) -> None:
    uid = world.kube.add_pod(make_pod("web", volumes=volumes))["metadata"]["uid"]
    name = world.migrate(targetNode="node-2")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", reason), s
    assert world.agents.calls == [] and world.kube.pods[(NS, "web")]["metadata"]["uid"] == uid


# --- emptyDir files move with the pod (migrator.controllers.podmigration.artifacts) -----------------
SCRATCH = [{"name": "data", "emptyDir": {}}, {"name": "shm", "emptyDir": {"medium": "Memory"}}]


async def test_emptydir_files_are_captured_staged_on_the_target_and_checked_before_success(world: World) -> None:
    world.kube.add_pod(make_pod("web", volumes=SCRATCH))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    (request,) = world.agents.requests
    uid = world.kube.migrations[(NS, name)]["metadata"]["uid"]
    assert request.request_id == f"pm-{uid}", "a retried checkpoint call joins this one (idempotent)"
    assert request.volumes == (
        contract.EmptyDirVolume(name="data", medium=""), contract.EmptyDirVolume(name="shm", medium="Memory"),
    )  # fmt: skip
    s = world.status(name)
    assert s["volumeData"]["volumes"] == ["data", "shm"] and s["volumeData"]["stagedOn"] == ["node-2"]
    # Staged on the target while the source was still frozen and whole, before it was killed.
    assert world.agents.operations() == ["checkpoint", "stage_volumes", "kill"]
    (app,) = world.kube.pods[(NS, "web")]["spec"]["containers"]
    assert {"name": api.ENV_RESTORED_FROM, "value": f"{NS}/web"} in app["env"], "how the node's hook finds the files"
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Succeeded", "Migrated")
    assert f"with its state and its emptyDir files (data, shm, {1 << 20} bytes)" in s["message"]
    deleted = [what for op, _, what in world.agents.calls if op == "delete_image"]
    assert s["volumeData"]["image"] in deleted and len(deleted) == 2, "the volume data is deleted like the images"
    assert world.agents.staged == {} and s["volumeData"]["stagedOn"] == []


async def test_a_restore_without_the_files_is_a_failed_restore_and_the_source_gets_them(world: World) -> None:
    world.kube.add_pod(make_pod("web", volumes=SCRATCH))
    world.agents.without_hook.add("node-2")
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    world.kubelet.start(NS, "web")
    await world.reconcile(name)
    s = world.status(name)
    assert (s["phase"], s["step"]) == ("RollingBack", "RestoreSource"), s
    assert "restored on node-2 without its emptyDir files" in s["failure"]["message"]
    world.kubelet.terminate(NS, "web")
    await world.reconcile(name)  # the failed pod went, the files are staged on the source, the pod restored there
    assert ("stage_volumes", "node-1", f"{NS}/web") in world.agents.calls
    await world.reconcile(name)
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "VolumeDataNotRestored")
    assert s["message"].endswith("the pod was restored on its source node node-1 from the checkpoint (state kept)"), s["message"]
    assert world.agents.staged == {}


async def test_files_that_cannot_be_staged_leave_the_source_running(world: World) -> None:
    world.kube.add_pod(make_pod("web", volumes=SCRATCH))
    world.agents.errors["stage_volumes"] = AgentError("fetching volume data: registry.local: connection refused", status=502)
    name = world.migrate(targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]
    for _ in range(3):
        await world.reconcile(name)
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "VolumeDataFailed"), s
    assert "the source pod was left running on node-1" in s["message"]
    assert "kill" not in world.agents.operations() and world.agents.frozen == set()


# --- persistent volumes follow the pod when every node mounts them (migrator.claims) -----------------
async def test_a_pod_on_shared_storage_moves_and_its_volume_follows(world: World) -> None:
    world.kube.add_volume("pv-shared", claim=(NS, "shared"), modes=["ReadWriteMany"])
    world.kube.add_pod(make_pod("web", volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}]))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Succeeded", "Migrated") and "volumeData" not in s
    pod = world.kube.pods[(NS, "web")]
    assert pod["spec"]["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}]


async def test_a_target_outside_the_volumes_node_affinity_is_refused_before_anything_is_frozen(world: World) -> None:
    world.kube.add_volume("pv-local", claim=(NS, "local"), modes=["ReadWriteMany"], node="node-1")
    world.kube.add_pod(make_pod("web", volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "local"}}]))
    name = world.migrate(targetNode="node-2")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "NodeDoesNotFit"), s
    assert "outside the node affinity of persistent volume pv-local" in s["message"]
    assert world.agents.calls == []


async def test_with_delete_emptydir_data_it_moves_and_says_what_was_left_behind(world: World) -> None:
    world.kube.add_pod(make_pod("web", volumes=[{"name": "data", "emptyDir": {}}]))
    name = world.migrate(targetNode="node-2", deleteEmptyDirData=True)
    await world.to_wait_ready(name)
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Succeeded", "Migrated")
    assert "with its memory; emptyDir volume(s) data started empty (deleteEmptyDirData)" in s["message"]
    assert "with its state" not in s["message"], "never claims the state moved when some was left behind"


# --- the caches -----------------------------------------------------------------------------------
async def test_with_the_services_caches_the_target_is_chosen_without_listing_the_clusters_pods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The node is chosen from the informers' pods and nodes: no list of every pod or node per migration."""

    class Cached:
        """The informers as they are once synced: what the API holds, read without a request."""

        def __init__(self, kube: FakeKube) -> None:
            self.kube = kube
            self.asked: list[str] = []

        async def nodes(self) -> list[dict[str, Any]]:
            self.asked.append("nodes")
            return [copy.deepcopy(n) for n in self.kube.nodes.values()]

        async def pods(self, *, node: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
            self.asked.append("pods")
            return [copy.deepcopy(p) for (ns, _), p in self.kube.pods.items() if namespace in (None, ns)
                    and node in (None, p["spec"].get("nodeName"))]  # fmt: skip

        async def pods_by_node(self) -> tuple[dict[str, list[dict[str, Any]]], dict[tuple[str, str], dict[str, Any]]]:
            self.asked.append("pods_by_node")
            pods = {key: copy.deepcopy(p) for key, p in self.kube.pods.items()}
            return group_by_node(pods.values()), pods

    world = World(monkeypatch)
    cached = Cached(world.kube)
    world.reconciler = PodMigrationReconciler(
        core=world.kube, custom=world.kube, agents=world.agents, settings=Settings(checkpoint_repository=REPO),  # type: ignore[arg-type]
        pods_and_nodes=cached,
    )  # fmt: skip

    async def refused(*_: Any, **__: Any) -> Any:
        raise AssertionError("listed through the API")

    monkeypatch.setattr(world.kube, "list_pod_for_all_namespaces", refused)
    monkeypatch.setattr(world.kube, "list_node", refused)
    world.kube.add_pod(make_pod("web"))
    name = world.migrate()  # no targetNode: the best-fitting other node
    await world.reconcile(name)
    assert world.status(name)["targetNode"] == "node-2"
    assert cached.asked == ["nodes", "pods_by_node"]
