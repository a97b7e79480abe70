"""The CheckpointSchedule reconciler against the in-memory API: runs, missed runs, in-flight skips, retention, validity.

The PodCheckpoint controller is played by the tests (``World.finish`` sets a checkpoint's phase);
time is a ``FakeClock`` that only moves when a test moves it.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from migrator import api
from migrator.controllers.checkpointschedule import CheckpointScheduleReconciler, checkpoint_name, label_selector
from migrator.drainplan import SelectorError
from tests.fakekube import FakeClock, FakeKube, api_error, make_node, make_pod, use_clock

NS = "shop"
START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)  # FakeClock's start: the schedules below are created then


class World:
    """The API with two nodes and pods web-1, web-2 (app=web) and db-1 (app=db), a clock, and the reconciler."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clock = FakeClock(START)
        use_clock(monkeypatch, self.clock)
        self.kube = FakeKube(clock=self.clock)
        self.reconciler = CheckpointScheduleReconciler(core=self.kube, custom=self.kube, poll=5.0, max_wait=300.0)  # type: ignore[arg-type]
        for node in ("node-1", "node-2"):
            self.kube.add_node(make_node(node))
        for pod, node in (("web-1", "node-1"), ("web-2", "node-2"), ("db-1", "node-1")):
            self.kube.add_pod(make_pod(pod, namespace=NS, node=node))

    def schedule(self, name: str = "snap", *, schedule: str = "*/10 * * * * *", **spec: Any) -> str:
        if "podName" not in spec and "selector" not in spec:
            spec["selector"] = {"matchLabels": {"app": "web"}}
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.SCHEDULE_KIND,
            "metadata": {"name": name, "namespace": NS},
            "spec": {"schedule": schedule, **spec},
        }
        self.kube.add_custom(api.SCHEDULE_PLURAL, body)
        return name

    def obj(self, name: str = "snap") -> dict[str, Any]:
        return self.kube.custom_objects[api.SCHEDULE_PLURAL][(NS, name)]

    def status(self, name: str = "snap") -> dict[str, Any]:
        return self.obj(name).get("status") or {}

    def edit(self, name: str = "snap", **spec: Any) -> None:
        self.obj(name)["spec"].update(spec)
        self.kube.bump(self.obj(name))

    async def reconcile(self, name: str = "snap") -> float | None:
        """One pass as the dispatcher runs it: the object read afresh."""
        return await self.reconciler.reconcile(copy.deepcopy(self.obj(name)))

    async def at(self, seconds: float, name: str = "snap") -> float | None:
        """Move the clock to ``seconds`` after START, then one pass."""
        self.clock.current = START + timedelta(seconds=seconds)
        return await self.reconcile(name)

    @property
    def checkpoints(self) -> dict[str, dict[str, Any]]:
        return {name: obj for (_ns, name), obj in self.kube.custom_objects.get(api.CHECKPOINT_PLURAL, {}).items()}

    def names(self) -> list[str]:
        return sorted(self.checkpoints)

    def finish(self, *names: str, phase: str = "Available", size: int = 100) -> None:
        """The PodCheckpoint controller's outcome for these checkpoints (all in flight ones when none is named)."""
        for name in names or [n for n, c in self.checkpoints.items() if not (c.get("status") or {}).get("phase")]:
            c = self.checkpoints[name]
            c["status"] = {"phase": phase}
            if phase == "Available":
                c["status"].update(totalBytes=size, checkpointTime=self.kube.timestamp())
            self.kube.bump(c)

    def add_checkpoint(self, name: str, *, pod: str = "web-1", schedule: str = "snap", **spec: Any) -> dict[str, Any]:
        """A checkpoint made before (or by hand), as the API would list it."""
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.CHECKPOINT_KIND,
            "metadata": {"name": name, "namespace": NS, "labels": {api.LABEL_SCHEDULE: schedule, api.LABEL_CHECKPOINT_POD: pod}},
            "spec": {"podName": pod, "mode": "Running", **spec},
        }
        return self.kube.add_custom(api.CHECKPOINT_PLURAL, body)

    def events(self, name: str = "snap") -> list[tuple[str, str, str]]:
        return self.kube.event_log(kind=api.SCHEDULE_KIND, name=name)

    def reasons(self, name: str = "snap") -> list[str]:
        return [reason for _type, reason, _message in self.events(name)]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    return World(monkeypatch)


def condition(status: dict[str, Any], kind: str = "Valid") -> dict[str, Any]:
    return next(c for c in status.get("conditions") or [] if c["type"] == kind)


# --- names and selectors --------------------------------------------------------------------------
def test_checkpoint_names() -> None:
    when = datetime(2026, 3, 1, 10, 0, 10, tzinfo=UTC)
    assert checkpoint_name(schedule="nightly", pod="web-1", when=when) == "nightly-web-1-20260301-100010"
    assert checkpoint_name(schedule="My.Schedule", pod="web.v2", when=when) == "my-schedule-web-v2-20260301-100010"


def test_truncated_names_stay_apart() -> None:
    when = datetime(2026, 3, 1, 10, 0, 10, tzinfo=UTC)
    a = checkpoint_name(schedule="s" * 40, pod="a-very-long-statefulset-name-0", when=when)
    b = checkpoint_name(schedule="s" * 40, pod="a-very-long-statefulset-name-1", when=when)
    assert a != b
    for name in (a, b):
        schedule_part, pod_part = name[:30], name[31:-16]
        assert len(schedule_part) <= 30 and len(pod_part) <= 20, name
        assert name.endswith("-20260301-100010")
        assert "--" not in name and len(name) <= 30 + 1 + 20 + 1 + 15


def test_label_selector_strings() -> None:
    assert label_selector(None) is None
    assert label_selector({}) is None  # an empty selector selects nothing (the CRD says so)
    assert label_selector({"matchLabels": {"app": "web", "tier": "front"}}) == "app=web,tier=front"
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "staging"]},
            {"key": "zone", "operator": "NotIn", "values": ["a"]},
            {"key": "example.com/snapshot", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
    assert label_selector(selector) == "app=web,env in (prod,staging),zone notin (a),example.com/snapshot,!legacy"


@pytest.mark.parametrize(
    ("selector", "words"),
    [
        ({"matchExpressions": [{"key": "env", "operator": "In"}]}, "env In needs values"),
        ({"matchExpressions": [{"key": "env", "operator": "Exists", "values": ["x"]}]}, "takes no values"),
        ({"matchExpressions": [{"key": "env", "operator": "Gt", "values": ["1"]}]}, "unknown operator 'Gt'"),
        ({"matchLabels": {"app": "has space"}}, "invalid"),
        ({"matchLabels": {"-bad": "x"}}, "invalid"),
    ],
)
def test_bad_selectors(selector: dict[str, Any], words: str) -> None:
    with pytest.raises(SelectorError, match=words):
        label_selector(selector)


# --- runs -----------------------------------------------------------------------------------------
async def test_nothing_before_the_first_due_time(world: World) -> None:
    world.schedule()
    assert await world.at(3) == 7.0
    assert world.names() == []
    status = world.status()
    assert status["nextScheduleTime"] == "2026-03-01T10:00:10.000Z"
    assert "lastScheduleTime" not in status
    assert status["kept"] == 0
    assert condition(status)["status"] == "True"


async def test_a_run_checkpoints_each_selected_running_pod(world: World) -> None:
    world.schedule()
    delay = await world.at(13)
    assert world.names() == ["snap-web-1-20260301-100010", "snap-web-2-20260301-100010"]
    c = world.checkpoints["snap-web-1-20260301-100010"]
    assert c["metadata"]["labels"] == {api.LABEL_SCHEDULE: "snap", api.LABEL_CHECKPOINT_POD: "web-1"}
    assert c["spec"] == {"podName": "web-1", "mode": "Running"}
    assert "ownerReferences" not in c["metadata"]  # checkpoints outlive their schedule
    status = world.status()
    assert status["lastScheduleTime"] == "2026-03-01T10:00:10.000Z"  # when it was due, not when the pass ran
    assert status["nextScheduleTime"] == "2026-03-01T10:00:20.000Z"
    assert status["lastCreated"] == ["snap-web-1-20260301-100010", "snap-web-2-20260301-100010"]
    assert status["skipped"] == 0
    assert status["kept"] == 2
    assert delay == 5.0  # checkpoints in flight: look again soon
    assert world.events() == [
        ("Normal", "Scheduled",
         "run due at 2026-03-01T10:00:10.000Z: created snap-web-1-20260301-100010, snap-web-2-20260301-100010"),
    ]  # fmt: skip


async def test_the_next_run_follows_the_due_time_not_the_pass(world: World) -> None:
    world.schedule()
    await world.at(13)
    world.finish()
    assert await world.at(14) == 6.0  # the next is due at :20, whatever time this pass runs
    assert len(world.names()) == 2
    await world.at(20)
    assert len(world.names()) == 4
    assert world.status()["lastScheduleTime"] == "2026-03-01T10:00:20.000Z"


async def test_only_running_pods_on_a_node_not_being_deleted(world: World) -> None:
    world.kube.add_pod(make_pod("web-pending", namespace=NS, node="node-1", phase="Pending"))
    world.kube.add_pod(make_pod("web-unbound", namespace=NS, node=None, phase="Pending"))
    world.kube.add_pod(make_pod("web-done", namespace=NS, node="node-1", phase="Succeeded"))
    going = make_pod("web-going", namespace=NS, node="node-1")
    going["metadata"]["deletionTimestamp"] = "2026-03-01T10:00:00Z"
    world.kube.add_pod(going)
    world.kube.add_pod(make_pod("web-elsewhere", namespace="other", node="node-1"))
    world.schedule()
    await world.at(10)
    assert world.names() == ["snap-web-1-20260301-100010", "snap-web-2-20260301-100010"]


async def test_one_named_pod(world: World) -> None:
    world.schedule(podName="db-1")
    await world.at(10)
    assert world.names() == ["snap-db-1-20260301-100010"]


async def test_a_named_pod_that_is_gone_gets_nothing(world: World) -> None:
    world.schedule(podName="ghost")
    assert await world.at(10) == 10.0
    assert world.names() == []
    assert world.status()["lastScheduleTime"] == "2026-03-01T10:00:10.000Z"
    assert world.events()[-1][2].endswith("no running pod to checkpoint")


async def test_an_empty_selector_selects_nothing(world: World) -> None:
    world.schedule(selector={})
    await world.at(10)
    assert world.names() == []
    assert condition(world.status())["status"] == "True"


async def test_a_run_is_idempotent(world: World) -> None:
    """A pass that created a run's checkpoints but died before saving status creates them again: 409 is success."""
    world.schedule()
    await world.at(10)
    first = world.names()
    world.obj()["status"].pop("lastScheduleTime")  # as if that status save never happened
    await world.at(11)
    assert world.names() == first
    assert world.status()["lastScheduleTime"] == "2026-03-01T10:00:10.000Z"
    assert world.status()["lastCreated"] == first
    assert world.status()["skipped"] == 0  # its own checkpoints in flight do not make it skip


async def test_a_name_taken_by_something_else_is_reported(world: World) -> None:
    world.schedule()
    world.add_checkpoint("snap-web-1-20260301-100010", pod="db-1", schedule="other")
    await world.at(10)
    assert world.checkpoints["snap-web-1-20260301-100010"]["spec"]["podName"] == "db-1"
    assert "snap-web-2-20260301-100010" in world.names()
    assert ("Warning", "CreateFailed",
            "no checkpoint of pod web-1 this run: the name snap-web-1-20260301-100010 is taken by another PodCheckpoint",
            ) in world.events()  # fmt: skip


async def test_a_refused_checkpoint_does_not_stop_the_others(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    create = world.kube.create_namespaced_custom_object

    async def refusing(group: str, version: str, namespace: str, plural: str, body: Any, **kw: Any) -> Any:
        if body["spec"]["podName"] == "web-1":
            raise api_error(422, "metadata.labels: Invalid value")
        return await create(group, version, namespace, plural, body, **kw)

    monkeypatch.setattr(world.kube, "create_namespaced_custom_object", refusing)
    world.schedule()
    await world.at(10)
    assert world.names() == ["snap-web-2-20260301-100010"]
    assert world.status()["lastScheduleTime"] == "2026-03-01T10:00:10.000Z"
    assert (
        "Warning",
        "CreateFailed",
        "no checkpoint of pod web-1 this run: 422 Invalid: metadata.labels: Invalid value",
    ) in world.events()


async def test_missed_runs_fire_once(world: World) -> None:
    world.schedule()
    await world.at(10)
    world.finish()
    await world.at(95)  # down through :20 ... :90
    assert sorted(n[-6:] for n in world.names()) == ["100010", "100010", "100130", "100130"]
    assert world.status()["lastScheduleTime"] == "2026-03-01T10:01:30.000Z"
    assert world.status()["nextScheduleTime"] == "2026-03-01T10:01:40.000Z"
    assert "missed runs since 2026-03-01T10:00:20.000Z: fired once" in world.events()[-1][2]


async def test_a_pod_whose_checkpoint_is_in_flight_is_skipped(world: World) -> None:
    world.schedule()
    await world.at(10)
    world.finish("snap-web-2-20260301-100010")
    assert await world.at(20) == 5.0
    assert world.names() == ["snap-web-1-20260301-100010", "snap-web-2-20260301-100010", "snap-web-2-20260301-100020"]
    assert world.status()["skipped"] == 1
    assert world.events()[-1][2].endswith("skipped web-1: previous checkpoint still in flight")
    world.finish()
    await world.at(30)
    assert len(world.names()) == 5
    assert world.status()["skipped"] == 0


async def test_a_failed_checkpoint_does_not_block_the_next(world: World) -> None:
    world.schedule()
    await world.at(10)
    world.finish(phase="Failed")
    await world.at(20)
    assert len(world.names()) == 4
    assert world.status()["skipped"] == 0


# --- retention ------------------------------------------------------------------------------------
async def test_retention_by_count_deletes_the_oldest(world: World) -> None:
    world.schedule(podName="web-1", retention={"maxCountPerPod": 2})
    for second in (10, 20, 30, 40):
        await world.at(second)
        world.finish()
    await world.at(41)
    assert world.names() == ["snap-web-1-20260301-100030", "snap-web-1-20260301-100040"]
    status = world.status()
    assert status["kept"] == 2
    assert [d["name"] for d in status["lastDeleted"]] == ["snap-web-1-20260301-100020", "snap-web-1-20260301-100010"]
    assert status["lastDeleted"][0]["reason"] == "more than 2 checkpoints of pod web-1"
    deleted = [m for _t, r, m in world.events() if r == "DeletedCheckpoint"]
    assert deleted == [
        "Deleted checkpoint snap-web-1-20260301-100010: more than 2 checkpoints of pod web-1",
        "Deleted checkpoint snap-web-1-20260301-100020: more than 2 checkpoints of pod web-1",
    ]
    assert "delete podcheckpoint shop/snap-web-1-20260301-100010" in world.kube.writes


async def test_the_run_s_new_checkpoint_does_not_push_out_a_good_one(world: World) -> None:
    world.schedule(podName="web-1", retention={"maxCountPerPod": 1})
    await world.at(10)
    world.finish()
    await world.at(20)  # the new one is in flight: the Available one stays until it is Available too
    assert world.names() == ["snap-web-1-20260301-100010", "snap-web-1-20260301-100020"]
    world.finish()
    await world.at(21)
    assert world.names() == ["snap-web-1-20260301-100020"]


async def test_pinned_and_other_schedules_checkpoints_are_left_alone(world: World) -> None:
    world.add_checkpoint("pinned", pinned=True)["status"] = {
        "phase": "Available",
        "totalBytes": 100,
        "checkpointTime": "2026-01-01T00:00:00Z",
    }
    world.add_checkpoint("theirs", schedule="other")["status"] = {"phase": "Available", "checkpointTime": "2026-01-01T00:00:00Z"}
    world.schedule(podName="web-1", retention={"maxAgeSeconds": 60, "maxCountPerPod": 1})
    await world.at(5)
    assert world.names() == ["pinned", "theirs"]
    assert world.status()["kept"] == 1


async def test_retention_by_age_and_the_wait_for_it(world: World) -> None:
    world.schedule(schedule="@daily", podName="web-1", retention={"maxAgeSeconds": 600})
    world.add_checkpoint("old")["status"] = {"phase": "Available", "checkpointTime": "2026-03-01T09:00:00Z", "totalBytes": 1}
    delay = await world.at(1)
    assert delay == 300.0  # the next run is 14 h away: look again sooner, for retention by age
    assert world.names() == []
    assert world.status()["lastDeleted"][0]["reason"] == "older than 600s"
    assert world.status()["nextScheduleTime"] == "2026-03-02T00:00:00.000Z"


async def test_a_checkpoint_being_deleted_is_not_counted_and_not_deleted_again(world: World) -> None:
    going = world.add_checkpoint("going")
    going["status"] = {"phase": "Available", "checkpointTime": "2026-03-01T09:00:00Z"}
    going["metadata"].update(finalizers=[api.CHECKPOINT_FINALIZER], deletionTimestamp="2026-03-01T09:59:00Z")
    world.schedule(podName="web-1", retention={"maxAgeSeconds": 600})
    await world.at(1)
    assert world.names() == ["going"]
    assert world.status()["kept"] == 0
    assert "DeletedCheckpoint" not in world.reasons()


# --- suspend --------------------------------------------------------------------------------------
async def test_suspended_schedules_do_not_run_but_retain(world: World) -> None:
    world.schedule(podName="web-1", suspend=True, retention={"maxAgeSeconds": 60})
    world.add_checkpoint("old")["status"] = {"phase": "Available", "checkpointTime": "2026-03-01T09:00:00Z"}
    assert await world.at(30) == 300.0
    assert world.names() == []
    assert "nextScheduleTime" not in world.status()
    assert "lastScheduleTime" not in world.status()
    world.edit(suspend=False)
    await world.at(35)  # resumed: the runs it missed while suspended fire once
    assert world.names() == ["snap-web-1-20260301-100030"]
    assert world.status()["nextScheduleTime"] == "2026-03-01T10:00:40.000Z"


# --- validity -------------------------------------------------------------------------------------
async def test_an_invalid_schedule_is_reported_once(world: World) -> None:
    world.schedule(schedule="*/10 * * *")
    assert await world.at(10) is None
    status = world.status()
    valid = condition(status)
    assert (valid["status"], valid["reason"]) == ("False", "InvalidSchedule")
    assert valid["message"] == (
        "spec.schedule '*/10 * * *': expected 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), got 4"
    )
    assert world.events() == [("Warning", "InvalidSchedule", valid["message"])]
    assert world.names() == []
    assert await world.at(20) is None
    assert len(world.events()) == 1  # not once per pass
    world.edit(schedule="*/10 * * * * *")
    await world.at(21)
    assert condition(world.status())["status"] == "True"
    assert len(world.names()) == 2  # the first run, due at :10, fires now


async def test_an_invalid_selector(world: World) -> None:
    world.schedule(selector={"matchExpressions": [{"key": "app", "operator": "In", "values": []}]})
    assert await world.at(10) is None
    valid = condition(world.status())
    assert (valid["status"], valid["reason"]) == ("False", "InvalidSelector")
    assert valid["message"] == "spec.selector: matchExpressions: app In needs values"
    assert world.reasons() == ["InvalidSelector"]


async def test_an_impossible_schedule(world: World) -> None:
    world.schedule(schedule="0 0 30 2 *")
    assert await world.at(10) is None
    assert "no such day in feb" in condition(world.status())["message"]


async def test_a_name_too_long_for_a_label(world: World) -> None:
    world.schedule("s" * 64)
    assert await world.at(10, "s" * 64) is None
    assert condition(world.status("s" * 64))["reason"] == "InvalidName"


# --- deletion -------------------------------------------------------------------------------------
async def test_a_schedule_being_deleted_is_left_alone(world: World) -> None:
    world.schedule()
    world.obj()["metadata"]["deletionTimestamp"] = "2026-03-01T10:00:05Z"
    assert await world.at(10) is None
    assert world.names() == []
    assert "status" not in world.obj()


async def test_a_schedule_deleted_during_a_pass(world: World) -> None:
    world.schedule()
    obj = copy.deepcopy(world.obj())
    world.kube.delete_custom(api.SCHEDULE_PLURAL, (NS, "snap"))
    world.clock.advance(10)
    assert await world.reconciler.reconcile(obj) is None
    assert len(world.names()) == 2  # the run it was doing; they outlive the schedule anyway
