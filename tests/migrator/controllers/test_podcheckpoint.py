"""The PodCheckpoint reconciler against the in-memory API: both modes, the refusals, failures, the deadline, deletion.

Driven like ``test_podmigration``: ``reconcile`` pass by pass as the dispatcher runs it (the
PodCheckpoint read afresh, the clock moved on by the delay a pass asked for), the node agents
faked (``FakeAgents``), and what a user sees asserted: the status, Events, the pod, and what the
agents were asked to do. Only the public interface is used: the constructor and ``reconcile``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agentapi.client import AgentError, AgentUnreachable
from migrator import api, pullsecrets, slots
from migrator.controllers.podcheckpoint import PodCheckpointReconciler
from migrator.controllers.podmigration import Settings
from migrator.slots import Slot
from tests.fakekube import FakeAgents, FakeClock, FakeKube, Kubelet, image_id, make_node, make_pod, through_webhook, use_clock
from tests.migrator.controllers.test_podmigration import replacement, replicaset_pod

NS = "shop"
REPO = "registry.local:5000/checkpoints"
IMAGE = "registry.local/shop/web:1.0"


class World:
    """The API, two nodes, their kubelets and agents, a clock, and the PodCheckpoint reconciler under test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(pullsecrets.SOURCE_NAMESPACE_ENV, raising=False)
        self.clock = FakeClock()
        use_clock(monkeypatch, self.clock)
        self.kube = FakeKube(clock=self.clock)
        self.kubelet = Kubelet(self.kube)
        self.agents = FakeAgents(self.kube)
        self.reconciler = self.new_reconciler()
        for name in ("node-1", "node-2"):
            self.kube.add_node(make_node(name))

    def new_reconciler(self) -> PodCheckpointReconciler:
        return PodCheckpointReconciler(
            core=self.kube, custom=self.kube, agents=self.agents, settings=Settings(checkpoint_repository=REPO),  # type: ignore[arg-type]
        )  # fmt: skip

    def checkpoint(self, pod: str = "web", *, name: str | None = None, mode: str = "Running", **spec: Any) -> str:
        """A PodCheckpoint as ``kubectl migrate checkpoint`` creates it."""
        name = name or f"ck-{pod}"
        self.kube.add_custom(
            api.CHECKPOINT_PLURAL,
            {
                "apiVersion": api.API_VERSION, "kind": api.CHECKPOINT_KIND,
                "metadata": {"name": name, "namespace": NS, "labels": {api.LABEL_CHECKPOINT_POD: pod}},
                "spec": {"podName": pod, "mode": mode, **spec},
            },
        )  # fmt: skip
        return name

    def obj(self, name: str) -> dict[str, Any] | None:
        return self.kube.custom_objects.get(api.CHECKPOINT_PLURAL, {}).get((NS, name))

    def status(self, name: str) -> dict[str, Any]:
        obj = self.obj(name)
        assert obj is not None, f"PodCheckpoint {name} is gone"
        return obj.get("status") or {}

    def uid(self, name: str) -> str:
        obj = self.obj(name)
        assert obj is not None
        return str(obj["metadata"]["uid"])

    async def reconcile(self, name: str) -> float | None:
        """One pass as the dispatcher runs it: the object read afresh; then time goes by as long as the pass asked."""
        obj = self.obj(name)
        assert obj is not None, f"PodCheckpoint {name} is gone"
        delay = await self.reconciler.reconcile(copy.deepcopy(obj))
        if delay:
            self.clock.advance(delay)
        return delay

    async def settle(self, name: str, *, passes: int = 5) -> None:
        """Passes until the checkpoint is done (or gone)."""
        for _ in range(passes):
            if self.obj(name) is None or await self.reconcile(name) is None:
                return
        raise AssertionError(f"PodCheckpoint {name} still not done after {passes} passes: {self.status(name)}")

    def events(self, name: str) -> list[tuple[str, str, str]]:
        return self.kube.event_log(kind=api.CHECKPOINT_KIND, name=name)

    def deleted(self) -> list[str]:
        """The images the agents were asked to delete, in order."""
        return [what for operation, _, what in self.agents.calls if operation == "delete_image"]

    def delete(self, name: str) -> None:
        """``kubectl delete podcheckpoint``: held by its finalizer."""
        self.kube.delete_custom(api.CHECKPOINT_PLURAL, (NS, name))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    return World(monkeypatch)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions") or [] if c["type"] == kind)


def in_order(seen: list[str], expected: list[str]) -> bool:
    """``expected`` is a subsequence of ``seen``."""
    rest = iter(seen)
    return all(any(s == e for s in rest) for e in expected)


# --- mode Running --------------------------------------------------------------------------------
async def test_a_running_checkpoint_is_taken_in_one_pass_and_the_pod_runs_on(world: World) -> None:
    pod = world.kube.add_pod(make_pod("web"))
    before = copy.deepcopy(pod)
    name = world.checkpoint()

    assert await world.reconcile(name) is None, "done: nothing to wait for"
    obj = world.obj(name)
    assert obj is not None and api.CHECKPOINT_FINALIZER in obj["metadata"]["finalizers"], "its images are held"
    (request,) = world.agents.requests
    assert request.freeze is False and request.freeze_lease_seconds is None, "the pod is never frozen"
    assert request.image_repository == f"{REPO}/shop/web"
    assert request.tag == f"ck-{world.uid(name)[:8]}" and request.request_id == f"ck-{world.uid(name)}"

    s = world.status(name)
    assert (s["phase"], s["step"], s["reason"]) == ("Available", "Done", "Checkpointed")
    assert s["message"] == "1 container(s) checkpointed on node-1 (8.0KiB); the pod runs on"
    (container,) = s["containers"]
    assert container["name"] == "app" and container["image"].startswith(f"{REPO}/shop/web@sha256:")
    assert (container["baseImage"], container["imageBytes"], container["archiveBytes"]) == (IMAGE, 8192, 4096)
    assert (s["totalBytes"], s["size"]) == (8192, "8.0KiB")
    assert s["checkpointTime"] and s["completionTime"]
    assert (s["sourceNode"], s["podUID"], s["runtime"]) == ("node-1", pod["metadata"]["uid"], "cri-o")
    assert s["baseImages"] == [image_id(IMAGE)]
    assert s["originalPod"]["metadata"]["name"] == "web" and s["originalPod"]["spec"]["nodeName"] == "node-1"
    assert s["frozen"] is False and "suspended" not in s and "failure" not in s
    available = condition(s, "Available")
    assert (available["status"], available["reason"]) == ("True", "Checkpointed")
    assert [p["name"] for p in s["phases"]] == ["validate", "checkpoint"]
    assert all(p.get("end") and not p.get("error") for p in s["phases"])

    assert world.agents.calls == [("checkpoint", "node-1", "shop/web")], "no kill, no thaw, nothing deleted"
    assert world.agents.frozen == set()
    assert world.kube.pods[(NS, "web")] == before, "the pod is untouched"
    assert not any(w.split()[1] == "pod" for w in world.kube.writes), "no pod created or deleted"
    reasons = [reason for _, reason, _ in world.events(name)]
    assert in_order(reasons, ["Started", "Checkpointed"]) and all(kind == "Normal" for kind, _, _ in world.events(name))
    assert ("Normal", "Checkpointed", f"[{name}] {s['message']}") in world.kube.event_log(kind="Pod", name="web")

    assert await world.reconcile(name) is None and len(world.agents.calls) == 1, "an Available checkpoint does nothing more"


async def test_a_pod_of_a_replicaset_can_be_checkpointed_running_and_its_owner_is_recorded(world: World) -> None:
    world.kube.add_pod(make_pod("web-7d9-abcde", owner=("ReplicaSet", "web-7d9"), labels={"app": "web"}))
    name = world.checkpoint("web-7d9-abcde")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert s["phase"] == "Available"
    assert s["owner"] == {"kind": "ReplicaSet", "name": "web-7d9", "uid": "uid-web-7d9"}


async def test_the_registrys_pull_secret_is_copied_and_recorded_for_the_restores(world: World) -> None:
    world.kube.add_secret({
        "metadata": {"name": pullsecrets.PULL_SECRET, "namespace": pullsecrets.DEFAULT_SOURCE_NAMESPACE},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="},
    })  # fmt: skip
    world.kube.add_pod(make_pod("web"))
    name = world.checkpoint()
    assert await world.reconcile(name) is None
    assert world.status(name)[pullsecrets.STATUS_KEY] == pullsecrets.PULL_SECRET
    assert (NS, pullsecrets.PULL_SECRET) in world.kube.secrets

    world.delete(name)
    assert await world.reconcile(name) is None
    assert world.obj(name) is None
    assert (NS, pullsecrets.PULL_SECRET) not in world.kube.secrets, "the last checkpoint of the namespace took its copy along"


# --- mode Suspend --------------------------------------------------------------------------------
async def test_a_suspend_checkpoint_freezes_kills_and_deletes_the_pod_which_lives_on_in_the_checkpoint(world: World) -> None:
    pod_uid = world.kube.add_pod(make_pod("web"))["metadata"]["uid"]
    name = world.checkpoint(mode="Suspend")
    seen_at_kill: list[Any] = []
    real_kill = world.agents.kill

    async def kill(**kwargs: Any) -> list[str]:
        seen_at_kill.append(world.status(name).get("sourceKilled"))
        return await real_kill(**kwargs)

    world.agents.kill = kill  # type: ignore[method-assign]
    deletions: list[dict[str, Any]] = []
    real_delete = world.kube.delete_namespaced_pod

    async def delete_pod(name: str, namespace: str, **kwargs: Any) -> Any:
        deletions.append(world.kube._plain(kwargs.get("body")))
        return await real_delete(name, namespace, **kwargs)

    world.kube.delete_namespaced_pod = delete_pod  # type: ignore[method-assign]

    # Validate, Checkpoint (frozen), Suspend: killed by its agent, then deleted; waited for until it is gone.
    assert await world.reconcile(name) == pytest.approx(0.2)
    (request,) = world.agents.requests
    assert request.freeze is True and request.freeze_lease_seconds == 30
    assert world.agents.calls == [("checkpoint", "node-1", "shop/web"), ("kill", "node-1", "shop/web")]
    assert seen_at_kill == [True], "sourceKilled was saved before the kill was sent"
    assert world.agents.killed == {"shop/web"} and world.agents.frozen == set()
    assert deletions == [{"gracePeriodSeconds": 0, "preconditions": {"uid": pod_uid}}], "only that pod, at once: it is dead"
    assert (NS, "web") not in world.kube.pods
    s = world.status(name)
    assert (s["phase"], s["step"], s["sourceKilled"]) == ("Suspending", "Suspend", True)
    checkpointed = "1 container(s) checkpointed on node-1 (8.0KiB); the pod is frozen and is removed next"
    assert ("Normal", "Checkpointed", checkpointed) in world.events(name)

    # Gone: Available, suspended.
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["step"], s["reason"]) == ("Available", "Done", "Suspended")
    assert s["suspended"] is True and s["frozen"] is False
    assert s["message"] == (
        f"pod web suspended: checkpointed on node-1 (8.0KiB) and removed; resume it with a PodRestore of {name}"
    )
    assert condition(s, "Available")["status"] == "True"
    assert [p["name"] for p in s["phases"]] == ["validate", "checkpoint", "suspend"]
    assert world.deleted() == [], "its images are the pod now: kept"
    assert "thaw" not in world.agents.operations()


async def test_a_suspended_pod_the_agent_cannot_kill_is_deleted_with_a_grace_period(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.checkpoint(mode="Suspend")
    world.agents.errors["kill"] = AgentError("runc kill: container not found", status=500, stage="freeze")
    assert await world.reconcile(name) == pytest.approx(0.2)
    pod = world.kube.pods[(NS, "web")]
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 1, "through the kubelet (SIGTERM stays pending while frozen)"
    assert await world.reconcile(name) == pytest.approx(0.2), "waited for: never thawed from here on"
    assert world.kube.writes.count("delete pod shop/web") == 1
    world.kubelet.terminate(NS, "web")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["suspended"]) == ("Available", True)
    assert "thaw" not in world.agents.operations()


async def test_a_kill_refused_because_the_freeze_lapsed_fails_and_the_pod_runs_on(world: World) -> None:
    pod_uid = world.kube.add_pod(make_pod("web"))["metadata"]["uid"]
    name = world.checkpoint(mode="Suspend")
    world.agents.lapse_after_checkpoint.add("shop/web")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "NotSuspended")
    assert s["message"].startswith("the pod on node-1: the freeze of shop/web lapsed")
    assert s["message"].endswith("; pod web runs on")
    assert s["sourceKilled"] is False and s["frozen"] is False and "suspended" not in s
    assert condition(s, "Available")["status"] == "False"
    assert world.kube.pods[(NS, "web")]["metadata"]["uid"] == pod_uid and "delete pod shop/web" not in world.kube.writes
    (container,) = s["containers"]
    assert world.agents.operations() == ["checkpoint", "kill", "thaw", "delete_image"]
    assert world.deleted() == [container["image"]], "a checkpoint of a pod that ran on since is worth nothing: deleted"
    assert "pendingDeletes" not in s and condition(s, "CheckpointDeleted")["status"] == "True"
    assert ("Warning", "NotSuspended", s["message"]) in world.events(name)


async def test_a_suspend_checkpoint_deleted_before_the_kill_thaws_the_pod_and_goes(world: World) -> None:
    pod_uid = world.kube.add_pod(make_pod("web"))["metadata"]["uid"]
    name = world.checkpoint(mode="Suspend")

    async def cancel() -> None:
        world.delete(name)

    world.agents.during_checkpoint = cancel
    assert await world.reconcile(name) is None
    assert world.status(name)["reason"] == "Cancelled" and world.obj(name) is not None, "this pass still saw it undeleted"
    assert await world.reconcile(name) is None, "the deletion's watch event: the finalizer goes"
    assert world.obj(name) is None, "finalizer released once its images were deleted"
    assert world.agents.operations() == ["checkpoint", "thaw", "delete_image"], "never killed: thawed instead"
    assert world.agents.frozen == set() and world.agents.killed == set()
    assert world.kube.pods[(NS, "web")]["metadata"]["uid"] == pod_uid
    assert ("Warning", "Cancelled", "the PodCheckpoint was deleted before the pod was suspended; pod web runs on") in (
        world.events(name)
    )


# --- mode Suspend of a controller's pod: its replacement holds its place ---------------------------------
def slot_label(world: World, name: str) -> str | None:
    obj = world.obj(name)
    assert obj is not None
    return (obj["metadata"].get("labels") or {}).get(slots.LABEL_SLOT_OWNER)


async def replaced(world: World, pod: dict[str, Any] | None = None) -> tuple[dict[str, Any], Slot | None]:
    """The controller replaces its pod: the creation passes the webhook (which may make it hold a place), then is stored."""
    body, slot = await through_webhook(pod or replacement(), kube=world.kube, namespace=NS)
    created = (await world.kube.create_namespaced_pod(NS, body)).metadata.name
    return world.kube.pods[(NS, created)], slot


async def test_a_suspended_replicaset_pods_replacement_holds_its_place_gated_with_the_checkpoint(world: World) -> None:
    world.kube.add_pod(replicaset_pod())
    name = world.checkpoint("web-7d9-abcde", mode="Suspend")
    seen_at_kill: list[Any] = []
    real_kill = world.agents.kill

    async def kill(**kwargs: Any) -> list[str]:
        seen_at_kill.append((slot_label(world, name), (world.status(name).get(slots.STATUS_KEY) or {}).get("ownerUID")))
        return await real_kill(**kwargs)

    world.agents.kill = kill  # type: ignore[method-assign]

    # The place-holding slot is opened (and the PodCheckpoint labelled) before the kill; the pod goes.
    assert await world.reconcile(name) == pytest.approx(0.2)
    assert seen_at_kill == [("uid-web-7d9", "uid-web-7d9")], "saved before the kill: the replacement comes at once"
    assert world.status(name)["owner"] == {"kind": "ReplicaSet", "name": "web-7d9", "uid": "uid-web-7d9"}
    assert (NS, "web-7d9-abcde") not in world.kube.pods
    assert await world.reconcile(name) == pytest.approx(0.3), "the ReplicaSet's replacement is waited for"
    s = world.status(name)
    assert (s["phase"], s["step"], s["sourceRemoved"]) == ("Suspending", "Suspend", True)

    # The ReplicaSet's replacement passes the webhook: it holds the place, gated, naming the checkpoint's images.
    held, slot = await replaced(world)
    assert slot is not None and slot.migration == f"{NS}/{name}"
    (image,) = [c["image"] for c in s["containers"]]
    assert held["spec"]["schedulingGates"] == [{"name": api.SCHEDULING_GATE_SUSPENDED}] and "nodeName" not in held["spec"]
    (container,) = held["spec"]["containers"]
    assert (container["image"], container["imagePullPolicy"]) == (image, "IfNotPresent")
    assert container["env"] == [{"name": api.ENV_RESTORED_FROM, "value": f"{NS}/web-7d9-abcde"}]
    annotations = held["metadata"]["annotations"]
    assert annotations[api.ANNOTATION_CHECKPOINT] == f"{NS}/{name}"
    assert annotations[api.ANNOTATION_CHECKPOINT_UID] == world.uid(name)
    assert annotations[api.ANNOTATION_RESTORED_FROM] == "node-1"
    scale_up, none = await replaced(world)
    assert none is None and "schedulingGates" not in scale_up["spec"], "one place held: another new pod starts cold"

    # Found: Available, suspended, the slot closed.
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"], s["suspended"]) == ("Available", "Suspended", True)
    assert s["heldPod"] == {"name": held["metadata"]["name"], "uid": held["metadata"]["uid"]}
    assert s["message"] == (
        f"pod web-7d9-abcde suspended: checkpointed on node-1 (8.0KiB) and removed; ReplicaSet web-7d9's replacement "
        f"{held['metadata']['name']} holds its place, unscheduled (scheduling gate {api.SCHEDULING_GATE_SUSPENDED}), "
        f"until a PodRestore of {name} resumes it"
    )
    assert slots.STATUS_KEY not in s and slot_label(world, name) is None
    assert world.agents.operations() == ["checkpoint", "kill"]


async def test_a_suspended_statefulset_pod_is_held_under_its_own_name(world: World) -> None:
    world.kube.add_pod(make_pod("db-0", owner=("StatefulSet", "db"), labels={"app": "db"}))
    name = world.checkpoint("db-0", mode="Suspend")
    assert await world.reconcile(name) == pytest.approx(0.2)
    assert world.status(name)[slots.STATUS_KEY]["podName"] == "db-0", "only its own name may claim the place"
    other, none = await replaced(world, make_pod("db-1", owner=("StatefulSet", "db"), node=None, phase="Pending"))
    assert none is None and "schedulingGates" not in other["spec"]
    held, slot = await replaced(world, make_pod("db-0", owner=("StatefulSet", "db"), node=None, phase="Pending"))
    assert slot is not None and held["spec"]["schedulingGates"] == [{"name": api.SCHEDULING_GATE_SUSPENDED}]
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["reason"], s["heldPod"]["name"]) == ("Suspended", "db-0")


async def test_a_replacement_that_started_cold_is_reported_and_the_checkpoint_kept(world: World) -> None:
    world.kube.add_pod(replicaset_pod())
    name = world.checkpoint("web-7d9-abcde", mode="Suspend")
    assert await world.reconcile(name) == pytest.approx(0.2)
    cold = (await world.kube.create_namespaced_pod(NS, replacement())).metadata.name  # the webhook was down
    world.kubelet.schedule(NS, cold, "node-2")
    world.kubelet.start(NS, cold)
    assert await world.reconcile(name) == pytest.approx(0.3), "it may still turn out to be the held one: wait a little"
    world.clock.advance(20)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Available", "ReplacedCold")
    assert s["message"] == (
        f"ReplicaSet web-7d9 replaced pod web-7d9-abcde with {cold}, which started cold (is the podmigrate webhook "
        "registered and reachable?); the checkpoint is kept, but the pod was not suspended"
    )
    assert not s.get("suspended") and slots.STATUS_KEY not in s and slot_label(world, name) is None


async def test_a_workload_scaled_down_meanwhile_leaves_the_checkpoint_as_the_only_copy(world: World) -> None:
    world.kube.add_pod(replicaset_pod())
    name = world.checkpoint("web-7d9-abcde", mode="Suspend")
    assert await world.reconcile(name) == pytest.approx(0.2)
    for _ in range(5):
        assert await world.reconcile(name) == pytest.approx(0.3)
    world.clock.advance(60)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"], s["suspended"]) == ("Available", "Suspended", True)
    assert s["message"].endswith("ReplicaSet web-7d9 made no replacement to hold its place")
    assert "heldPod" not in s and slots.STATUS_KEY not in s and slot_label(world, name) is None


async def test_a_suspend_of_a_replicaset_pod_that_failed_leaves_no_place_holding_slot_behind(world: World) -> None:
    world.kube.add_pod(replicaset_pod())
    name = world.checkpoint("web-7d9-abcde", mode="Suspend")
    world.agents.lapse_after_checkpoint.add(f"{NS}/web-7d9-abcde")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "NotSuspended")
    assert ("shop", "web-7d9-abcde") in world.kube.pods, "it runs on"
    scale_up, slot = await replaced(world)
    assert slot is None and "schedulingGates" not in scale_up["spec"], "the workload's next pod starts as usual"
    assert slots.STATUS_KEY not in world.status(name) and slot_label(world, name) is None


# --- validation ------------------------------------------------------------------------------------
def _busy_checkpoint(w: World) -> None:
    w.kube.add_pod(make_pod("web"))
    w.checkpoint(name="ck-earlier")  # older and not finished: it goes first
    w.clock.advance(5)


def _busy_migration(w: World) -> None:
    w.kube.add_pod(make_pod("web"))
    w.kube.add_custom(api.PLURAL, {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "move-web", "namespace": NS},
                                   "spec": {"podName": "web"}, "status": {"phase": "Checkpointing", "step": "Checkpoint"}})  # fmt: skip


VALIDATION = {
    "pod missing": (lambda w: None, "Running", "PodNotFound", 'pod "shop/web" not found'),
    "pod not running": (
        lambda w: w.kube.add_pod(make_pod("web", phase="Pending")), "Running", "PodNotRunning",
        "pod web is not running (only a running pod can be checkpointed)",
    ),
    "pod terminating": (
        lambda w: w.kube.add_pod(make_pod("web"))["metadata"].update(deletionTimestamp="2026-03-01T10:00:00Z"), "Suspend",
        "PodNotRunning", "pod web is not running (only a running pod can be checkpointed)",
    ),
    "another checkpoint in flight": (
        _busy_checkpoint, "Running", "Busy", "pod web is being checkpointed or moved by PodCheckpoint ck-earlier; one at a time"
    ),
    "a migration in flight": (
        _busy_migration, "Suspend", "Busy", "pod web is being checkpointed or moved by PodMigration move-web; one at a time"
    ),
    "host network": (
        lambda w: w.kube.add_pod(make_pod("web", hostNetwork=True)), "Running", "HostNetwork",
        "pod web uses the host network: its sockets cannot move with it",
    ),
    "emptyDir volumes": (
        lambda w: w.kube.add_pod(make_pod("web", volumes=[{"name": "scratch", "emptyDir": {}},
                                                          {"name": "cache", "emptyDir": {"medium": "Memory"}}])),
        "Running", "EmptyDirNotCarried",
        "pod web has emptyDir volume(s) cache, scratch, whose files a PodCheckpoint does not carry (a PodMigration does): "
        "restoring it would give its processes empty directories",
    ),
    "suspend of a job's pod": (
        lambda w: w.kube.add_pod(make_pod("web", owner=("Job", "batch"))), "Suspend", "UnsupportedController",
        "pod web is managed by Job batch; only bare pods and pods of ReplicaSet and StatefulSets can be moved",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("setup", "mode", "reason", "message"), VALIDATION.values(), ids=VALIDATION.keys())
async def test_validation_refuses_with_the_reason_and_touches_nothing(
    world: World, setup: Any, mode: str, reason: str, message: str
) -> None:
    setup(world)
    before = copy.deepcopy(world.kube.pods)
    name = world.checkpoint(mode=mode)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["step"], s["reason"]) == ("Failed", "Done", reason)
    assert s["message"] == message
    assert "containers" not in s and "failure" not in s and "sourceNode" not in s
    assert condition(s, "Available")["status"] == "False"
    assert world.agents.calls == [], "nothing frozen, nothing thawed"
    assert world.kube.pods == before, "no pod created, deleted or changed"
    assert ("Warning", reason, message) in world.events(name)
    assert [p["name"] for p in s["phases"]] == ["validate", "thaw"] and s["phases"][0]["error"] == message


async def test_of_two_checkpoints_of_one_pod_the_older_goes_first_and_finished_ones_do_not_count(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    done = world.checkpoint(name="ck-yesterday")
    assert await world.reconcile(done) is None and world.status(done)["phase"] == "Available"
    world.clock.advance(60)
    first = world.checkpoint(name="ck-b")
    world.clock.advance(1)
    second = world.checkpoint(name="ck-a")
    assert await world.reconcile(second) is None, "the newer one (whatever its name) is refused"
    assert (world.status(second)["phase"], world.status(second)["reason"]) == ("Failed", "Busy")
    assert await world.reconcile(first) is None
    assert world.status(first)["phase"] == "Available", "an Available checkpoint or a failed newer one is not in its way"


# --- failures ----------------------------------------------------------------------------------------
async def test_an_agent_failure_fails_a_running_checkpoint_and_the_pod_runs_on(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.checkpoint()
    world.agents.errors["checkpoint"] = AgentError("criu dump failed: unsupported socket", status=500, stage="checkpoint")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "CheckpointFailed")
    assert s["message"] == "checkpoint on node-1 failed (checkpoint): criu dump failed: unsupported socket; pod web runs on"
    assert world.agents.operations() == ["checkpoint"], "not frozen: nothing to thaw, nothing pushed to delete"
    assert "pendingDeletes" not in s or s["pendingDeletes"] == []
    assert condition(s, "Available")["status"] == "False" and condition(s, "CheckpointDeleted")["status"] == "True"
    assert s["phases"][-2]["name"] == "checkpoint" and "criu dump failed" in s["phases"][-2]["error"]


async def test_an_agent_failure_after_the_freeze_thaws_a_suspended_pod(world: World) -> None:
    pod_uid = world.kube.add_pod(make_pod("web"))["metadata"]["uid"]
    name = world.checkpoint(mode="Suspend")
    world.agents.errors["checkpoint"] = AgentError("image push failed: 502", status=502, stage="push")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "CheckpointFailed")
    assert s["message"] == "checkpoint on node-1 failed (push): image push failed: 502; pod web runs on"
    assert world.agents.calls == [("checkpoint", "node-1", "shop/web"), ("thaw", "node-1", "shop/web")]
    assert world.agents.frozen == set(), "thawed"
    assert s["frozen"] is False and "sourceKilled" not in s
    assert world.kube.pods[(NS, "web")]["metadata"]["uid"] == pod_uid and "delete pod shop/web" not in world.kube.writes


async def test_a_thaw_that_fails_is_retried_until_the_pod_runs(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.checkpoint(mode="Suspend")
    world.agents.errors["checkpoint"] = AgentError("image push failed", status=502, stage="push")
    world.agents.errors["thaw"] = AgentError("agent at 127.0.9.1 unreachable", status=0)
    assert await world.reconcile(name) == pytest.approx(2.0)
    s = world.status(name)
    assert (s["phase"], s["step"], s["thawError"]) == ("Checkpointing", "Thaw", "agent at 127.0.9.1 unreachable")
    assert world.agents.frozen == {"shop/web"}
    del world.agents.errors["thaw"]
    assert await world.reconcile(name) is None
    assert (world.status(name).get("reason"), world.agents.frozen) == ("CheckpointFailed", set())
    assert world.agents.operations() == ["checkpoint", "thaw", "thaw"]


@pytest.mark.parametrize("mode", ["Running", "Suspend"])
async def test_an_unreachable_agent_has_its_checkpoint_undone_by_id_and_its_tag_deleted(world: World, mode: str) -> None:
    """No answer: the agent may have pushed all the same. It is told to undo the request, then what the tag names goes."""
    world.kube.add_pod(make_pod("web"))
    name = world.checkpoint(mode=mode)
    world.agents.errors["checkpoint"] = AgentUnreachable("agent at 127.0.9.1 unreachable: connection reset", status=0)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "CheckpointFailed")
    uid = world.uid(name)
    thaw = [("thaw", "node-1", "shop/web")] if mode == "Suspend" else []
    assert world.agents.calls == [
        ("checkpoint", "node-1", "shop/web"),
        ("abort_checkpoint", "node-1", f"ck-{uid}"),
        *thaw,
        ("delete_image", "node-1", f"{REPO}/shop/web:ck-{uid[:8]}"),
    ]
    assert "abandonedCheckpoint" not in s and "pendingDeletes" not in s
    assert condition(s, "CheckpointDeleted")["status"] == "True"


async def test_the_deadline_fails_a_checkpoint_whose_pass_never_came_back_and_undoes_it(world: World) -> None:
    """The control service died during the agent's call; the next pass, after timeoutSeconds, gives it up."""
    world.kube.add_pod(make_pod("web"))
    name = world.checkpoint(mode="Suspend", timeoutSeconds=60)

    async def crash() -> None:
        raise RuntimeError("the control service was killed")

    world.agents.during_checkpoint = crash
    with pytest.raises(RuntimeError):
        await world.reconcile(name)
    assert (world.status(name)["phase"], world.status(name)["step"]) == ("Checkpointing", "Checkpoint")
    world.agents.during_checkpoint = None
    world.reconciler = world.new_reconciler()
    world.clock.advance(61)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "Timeout")
    assert s["message"] == "the checkpoint was not done within 60s (timeoutSeconds); pod web runs on"
    uid = world.uid(name)
    assert world.agents.calls[1:] == [
        ("abort_checkpoint", "node-1", f"ck-{uid}"),
        ("thaw", "node-1", "shop/web"),
        ("delete_image", "node-1", f"{REPO}/shop/web:ck-{uid[:8]}"),
    ], "no second checkpoint: undone, thawed, its tag deleted"
    assert ("Warning", "Timeout", s["message"]) in world.events(name)


async def test_the_deadline_does_not_apply_once_the_pod_is_killed(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.checkpoint(mode="Suspend", timeoutSeconds=60)
    world.agents.errors["kill"] = AgentError("runc kill: container not found", status=500, stage="freeze")
    assert await world.reconcile(name) == pytest.approx(0.2)
    world.clock.advance(120)
    assert await world.reconcile(name) == pytest.approx(0.2)
    assert world.status(name)["step"] == "Suspend", "never thawed after the kill was sent"
    world.kubelet.terminate(NS, "web")
    assert await world.reconcile(name) is None
    assert (world.status(name)["phase"], world.status(name)["suspended"]) == ("Available", True)


# --- deletion: the images go first -------------------------------------------------------------------
async def test_deleting_an_available_checkpoint_deletes_its_images_then_releases_the_finalizer(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.checkpoint()
    assert await world.reconcile(name) is None
    (image,) = [c["image"] for c in world.status(name)["containers"]]
    assert world.deleted() == []

    world.delete(name)
    assert world.obj(name) is not None, "held by its finalizer"
    assert await world.reconcile(name) is None
    assert world.deleted() == [image]
    assert world.obj(name) is None, "the images are gone: so is the PodCheckpoint"
    assert ("shop", "web") in world.kube.pods, "a Running checkpoint's pod is not touched by the deletion"


async def test_a_registry_failure_keeps_the_pending_deletes_and_the_finalizer_until_a_retry_succeeds(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.checkpoint()
    assert await world.reconcile(name) is None
    (image,) = [c["image"] for c in world.status(name)["containers"]]
    world.agents.errors["delete_image"] = AgentError("registry.local:5000: cannot connect", status=500)

    world.delete(name)
    assert await world.reconcile(name) == pytest.approx(15.0), "looked at again until the images are gone"
    s = world.status(name)
    assert [entry["image"] for entry in s["pendingDeletes"]] == [image]
    deleted = condition(s, "CheckpointDeleted")
    assert (deleted["status"], deleted["reason"]) == ("False", "DeletePending")
    assert "1 image(s) still to delete" in deleted["message"]
    obj = world.obj(name)
    assert obj is not None and obj["metadata"]["finalizers"] == [api.CHECKPOINT_FINALIZER], "held: its images hold the memory"
    assert any(reason == "CleanupFailed" and kind == "Warning" for kind, reason, _ in world.events(name))

    # A restarted control service goes on from status.
    world.reconciler = world.new_reconciler()
    assert await world.reconcile(name) == pytest.approx(15.0)
    assert world.obj(name) is not None
    del world.agents.errors["delete_image"]
    assert await world.reconcile(name) is None
    assert world.obj(name) is None
    assert world.deleted() == [image, image, image], "tried until it succeeded, never queued twice"


async def test_deleting_a_suspended_checkpoint_says_the_pod_is_gone_with_it(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.checkpoint(mode="Suspend")
    await world.settle(name)
    assert world.status(name)["suspended"] is True
    (image,) = [c["image"] for c in world.status(name)["containers"]]
    world.delete(name)
    assert await world.reconcile(name) is None
    assert world.obj(name) is None and world.deleted() == [image]
    assert (
        "Warning", "SuspendedPodDeleted", "pod web was suspended in this checkpoint and never resumed: it is gone with it",
    ) in world.events(name)  # fmt: skip


async def test_deleting_a_failed_checkpoint_releases_it_at_once(world: World) -> None:
    name = world.checkpoint()  # of a pod that does not exist
    assert await world.reconcile(name) is None
    assert world.status(name)["phase"] == "Failed"
    world.delete(name)
    assert await world.reconcile(name) is None
    assert world.obj(name) is None and world.deleted() == []


async def test_deleting_a_checkpoint_whose_pass_died_in_the_agent_call_cancels_and_undoes_it(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.checkpoint(mode="Suspend")

    class Crash(Exception):
        pass

    async def crash() -> None:
        raise Crash("the control service was killed")

    world.agents.during_checkpoint = crash
    with pytest.raises(Crash):
        await world.reconcile(name)
    world.agents.during_checkpoint = None
    world.delete(name)
    await world.settle(name)
    assert world.obj(name) is None
    operations = world.agents.operations()
    assert operations[0] == "checkpoint" and operations[1:] == ["abort_checkpoint", "thaw", "delete_image"]
    assert any(reason == "Cancelled" for _, reason, _ in world.events(name))
