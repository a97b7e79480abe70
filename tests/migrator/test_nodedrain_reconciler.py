"""The NodeDrain reconciler against an in-memory API: cordon, plan, concurrency, budgets, policies, cancel, resume.

The API is the shared in-memory one (``tests.fakekube``); the PodMigration controller is played
by the tests, which set a migration's status. The same
scenarios run against the real cluster in ``test_nodedrain_e2e.py``.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from migrator import api
from migrator.controllers.autodrain import AutoDrainReconciler
from migrator.controllers.nodedrain import NodeDrainReconciler
from tests.fakekube import FakeKube
from tests.migrator.test_nodedrain import node, pod


class DrainWorld(FakeKube):
    """The shared in-memory API, plus the scenario helpers of these tests (the PodMigration controller is played here)."""

    def add_drain(self, name: str, **spec: Any) -> dict[str, Any]:
        obj = {
            "apiVersion": api.API_VERSION,
            "kind": api.DRAIN_KIND,
            "metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": f"2026-01-01T00:00:0{len(self.drains)}Z"},
            "spec": {"nodeName": "node-1", **spec},
        }
        return self.add_custom(api.DRAIN_PLURAL, obj)

    def delete_drain(self, name: str) -> None:
        self.delete_custom(api.DRAIN_PLURAL, name)

    def finish_migration(self, namespace: str, name: str, *, ok: bool = True, refused: str = "") -> None:
        m = self.migrations[(namespace, name)]
        pod_name, target = m["spec"]["podName"], m["spec"]["targetNode"]
        if refused:
            m["status"] = {"phase": "Failed", "reason": refused, "message": f"pod {pod_name} refused"}
        elif ok:
            m["status"] = {"phase": "Succeeded", "sourceNode": "node-1", "targetNode": target, "message": f"pod {pod_name} moved"}
            p = self.pods[(namespace, pod_name)]
            p["metadata"]["uid"] += "-new"
            p["spec"]["nodeName"] = target
            self.bump(p)
        else:
            m["status"] = {"phase": "Failed", "sourceNode": "node-1", "reason": "CheckpointFailed", "message": "criu said no"}
        self.bump(m)


@pytest.fixture
def world() -> DrainWorld:
    w = DrainWorld()
    for n in (node("node-1"), node("node-2"), node("node-3")):
        w.add_node(n)
    return w


def reconciler(w: DrainWorld) -> NodeDrainReconciler:
    return NodeDrainReconciler(core=w, custom=w, policy=w, poll=0.01, retry=0.01)  # type: ignore[arg-type]


async def run(w: DrainWorld, name: str, *, passes: int = 1) -> float | None:
    r = reconciler(w)
    delay = None
    for _ in range(passes):
        if name not in w.drains:
            return None
        delay = await r.reconcile(copy.deepcopy(w.drains[name]))
    return delay


def status(w: DrainWorld, name: str) -> dict[str, Any]:
    return w.drains[name]["status"]


def pods_by_name(w: DrainWorld, name: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in status(w, name)["pods"]}


async def test_drain_cordons_migrates_with_bounded_concurrency_and_succeeds(world: DrainWorld) -> None:
    for i in range(3):
        world.add_pod(pod(f"web-{i}", labels={"app": "web"}))
    world.add_pod(pod("agent-a", owner=("DaemonSet", "agent")))
    world.add_pod(pod("elsewhere", node="node-2"))
    world.add_drain("d", maxConcurrent=2)
    assert await run(world, "d") == pytest.approx(0.01)
    s = status(world, "d")
    assert s["phase"] == "Draining" and s["cordonedByDrain"] is True
    assert world.nodes["node-1"]["spec"]["unschedulable"] is True
    assert world.writes[0] == "patch node node-1 unschedulable=True", "cordoned before anything else"
    assert api.DRAIN_FINALIZER in world.drains["d"]["metadata"]["finalizers"]
    assert [w for w in world.writes if "podmigration" in w] == [
        "create podmigration shop/drain-node-1-web-0",
        "create podmigration shop/drain-node-1-web-1",
    ], "maxConcurrent 2"
    m = world.migrations[("shop", "drain-node-1-web-0")]
    assert m["metadata"]["labels"] == {api.LABEL_DRAIN: "d"}
    assert m["metadata"]["ownerReferences"] == [
        {"apiVersion": api.API_VERSION, "kind": "NodeDrain", "name": "d", "uid": "uid-d", "controller": True}
    ]
    assert m["spec"] == {"podName": "web-0", "targetNode": m["spec"]["targetNode"], "timeoutSeconds": 300}
    trace = f"00-{s['traceID']}-{s['rootSpanID']}-01"
    assert m["metadata"]["annotations"] == {api.ANNOTATION_TRACEPARENT: trace}, "a drain is one trace holding its migrations"
    targets = {world.migrations[("shop", f"drain-node-1-web-{i}")]["spec"]["targetNode"] for i in range(2)}
    assert targets == {"node-2", "node-3"}, "spread, counting what this drain already sent"
    assert world.dry_run_evictions == ["shop/web-0", "shop/web-1"], "the API server's PDB verdict asked before each"
    p = pods_by_name(world, "d")
    assert (p["agent-a"]["action"], p["agent-a"]["outcome"]) == ("skip", "skipped")
    assert (p["web-0"]["outcome"], p["web-2"]["outcome"]) == ("in-progress", "pending")
    assert "elsewhere" not in p

    world.finish_migration("shop", "drain-node-1-web-0")
    await run(world, "d")
    assert pods_by_name(world, "d")["web-0"]["outcome"] == "migrated"
    assert ("shop", "drain-node-1-web-2") in world.migrations, "a slot freed, the next pod started"
    world.finish_migration("shop", "drain-node-1-web-1")
    world.finish_migration("shop", "drain-node-1-web-2")
    assert await run(world, "d") is None
    s = status(world, "d")
    assert s["phase"] == "Succeeded" and s["reason"] == "Drained"
    assert s["counts"] == {"total": 4, "migrated": 3, "evicted": 0, "skipped": 1, "failed": 0}
    assert s["message"] == "node node-1 drained: 3 migrated, 0 evicted, 1 left alone, 0 failed"
    assert world.nodes["node-1"]["spec"]["unschedulable"] is True, "a drained node stays cordoned"
    assert ("Drained", s["message"]) in world.event_pairs()


async def test_a_restart_between_recording_and_creating_a_migration_creates_it(world: DrainWorld) -> None:
    world.add_pod(pod("web"))
    world.add_drain("d")
    r = reconciler(world)
    original = world.create_namespaced_custom_object

    async def crash(*args: Any) -> Any:
        raise RuntimeError("control service killed")

    world.create_namespaced_custom_object = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await r.reconcile(copy.deepcopy(world.drains["d"]))
    entry = pods_by_name(world, "d")["web"]
    assert (entry["outcome"], entry["migration"]) == ("in-progress", "drain-node-1-web"), "recorded before it was created"
    assert not world.migrations
    world.create_namespaced_custom_object = original  # type: ignore[method-assign]
    await run(world, "d")
    assert ("shop", "drain-node-1-web") in world.migrations


async def test_pdb_limits_this_drains_own_disruptions_in_flight(world: DrainWorld) -> None:
    for i in range(3):
        world.add_pod(pod(f"web-{i}", labels={"app": "web"}))
    budget = world.add_pdb(
        {
            "metadata": {"name": "web", "namespace": "shop", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": 2},
            "status": {"disruptionsAllowed": 1, "observedGeneration": 1},
        }
    )
    world.add_drain("d", maxConcurrent=3)
    await run(world, "d")
    assert list(world.migrations) == [("shop", "drain-node-1-web-0")], "the budget allowed one disruption"
    p = pods_by_name(world, "d")
    assert p["web-0"]["disruptionBudgets"] == ["shop/web"]
    assert "allowed 1 disruption(s) and 1 of this drain's pods under it are being moved" in p["web-1"]["reason"]
    assert status(world, "d")["budgets"] == [{"namespace": "shop", "name": "web", "disruptionsAllowed": 1}]
    # The PDB's status still says 1 (the frozen pod looks healthy): the dry run alone would let web-1 go too.
    await run(world, "d", passes=3)
    assert len(world.migrations) == 1
    # While the budget is spent, the API server's dry run says 429 and the drain waits.
    world.finish_migration("shop", "drain-node-1-web-0")
    budget["status"]["disruptionsAllowed"] = 0
    await run(world, "d")
    p = pods_by_name(world, "d")
    assert p["web-0"]["outcome"] == "migrated" and len(world.migrations) == 1
    assert p["web-1"]["reason"].startswith("waiting: PodDisruptionBudget shop/web allows no disruption now")
    assert status(world, "d")["budgets"] == [], "the window closed with nothing in flight"
    budget["status"]["disruptionsAllowed"] = 1
    await run(world, "d")
    assert ("shop", "drain-node-1-web-1") in world.migrations and len(world.migrations) == 2


async def test_a_pod_frozen_by_someone_elses_migration_counts_against_the_budget(world: DrainWorld) -> None:
    """A frozen pod still looks healthy to its PDB: the drain counts everyone's migrations under way."""
    world.add_pod(pod("web-0", labels={"app": "web"}, node="node-2"))  # being moved by kubectl migrate, elsewhere
    world.add_pod(pod("web-1", labels={"app": "web"}))
    world.add_pdb({
        "metadata": {"name": "web", "namespace": "shop", "generation": 1},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": 1},
        "status": {"disruptionsAllowed": 1, "observedGeneration": 1},
    })  # fmt: skip
    manual = world.add_custom(api.PLURAL, {
        "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "by-hand", "namespace": "shop"},
        "spec": {"podName": "web-0"}, "status": {"phase": "Checkpointing", "step": "Checkpoint"},
    })  # fmt: skip
    world.add_drain("d")
    await run(world, "d")
    assert ("shop", "drain-node-1-web-1") not in world.migrations
    reason = pods_by_name(world, "d")["web-1"]["reason"]
    assert "allowed 1 disruption(s) and 1 pod(s) migrated by others under it are being moved" in reason, reason
    manual["status"] = {"phase": "Succeeded", "step": "Done"}
    await run(world, "d")
    assert ("shop", "drain-node-1-web-1") in world.migrations, "once that one is done"


async def test_a_spent_budget_holds_a_pod_back(world: DrainWorld) -> None:
    world.add_pod(pod("web", labels={"app": "web"}))
    world.add_pdb(
        {
            "metadata": {"name": "all", "namespace": "shop", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "web"}}},
            "status": {"disruptionsAllowed": 0, "observedGeneration": 1},
        }
    )
    world.add_drain("d")
    assert await run(world, "d") == pytest.approx(0.01)
    assert not world.migrations
    reason = pods_by_name(world, "d")["web"]["reason"]
    assert reason.startswith("waiting: PodDisruptionBudget shop/all allows no disruption now")


async def test_the_api_servers_dry_run_verdict_holds_a_pod_back_too(world: DrainWorld) -> None:
    """The PDB's status may say yes while the eviction API says no (e.g. another eviction just took the last disruption)."""
    world.add_pod(pod("web", labels={"app": "web"}))
    world.dry_runs_refused = "Cannot evict pod as it would violate the pod's disruption budget."
    world.add_drain("d")
    assert await run(world, "d") == pytest.approx(0.01)
    assert not world.migrations
    reason = pods_by_name(world, "d")["web"]["reason"]
    assert reason == (
        "waiting: a dry-run eviction was refused: Cannot evict pod as it would violate the pod's disruption budget.; "
        "trying again every 0.01s"
    )
    world.dry_runs_refused = ""
    await run(world, "d")
    assert ("shop", "drain-node-1-web") in world.migrations


async def test_no_node_fits_blocks_before_anything_moves(world: DrainWorld) -> None:
    world.nodes["node-2"]["spec"] = {"unschedulable": True}
    del world.nodes["node-3"]
    world.add_pod(pod("web"))
    world.add_pod(pod("api"))
    world.add_drain("d", targetNodes=["node-2"])
    assert await run(world, "d") is None
    s = status(world, "d")
    assert s["phase"] == "Blocked" and s["reason"] == "Unmigratable"
    assert "nothing was moved or evicted" in s["message"] and "node-2 is cordoned" in s["message"]
    assert s["blockedReasons"] == [
        "shop/api: no node can take it: node node-2 is cordoned (unschedulable)",
        "shop/web: no node can take it: node node-2 is cordoned (unschedulable)",
    ]
    assert not world.migrations and set(world.pods) == {("shop", "web"), ("shop", "api")}
    assert [w for w in world.writes if not w.startswith("patch node")] == [], "nothing created, nothing evicted"


async def test_evict_policy_evicts_what_cannot_move_and_retries_429(world: DrainWorld) -> None:
    world.add_pod(pod("router", hostNetwork=True))
    world.add_pod(pod("web"))
    world.evictions_refused = 1
    world.add_drain("d", unmigratablePolicy="Evict")
    await run(world, "d")
    p = pods_by_name(world, "d")
    assert p["router"]["action"] == "evict" and p["router"]["outcome"] == "in-progress"
    assert "eviction refused for now" in p["router"]["reason"] and "disruption budget" in p["router"]["reason"]
    assert ("shop", "router") in world.pods
    await asyncio.sleep(0.02)
    world.finish_migration("shop", "drain-node-1-web")
    await run(world, "d", passes=2)
    assert "evict shop/router" in world.writes and ("shop", "router") not in world.pods
    s = status(world, "d")
    assert s["phase"] == "Succeeded" and s["counts"]["evicted"] == 1 and s["counts"]["migrated"] == 1


async def test_a_refusal_by_the_podmigration_follows_the_policy(world: DrainWorld) -> None:
    world.add_pod(pod("web"))
    world.add_pod(pod("zeta"))
    world.add_drain("block", maxConcurrent=1)
    await run(world, "block")
    world.finish_migration("shop", "drain-node-1-web", refused="UnsupportedController")
    assert await run(world, "block") is None
    s = status(world, "block")
    assert s["phase"] == "Blocked" and "UnsupportedController" in s["blockedReasons"][0]
    p = pods_by_name(world, "block")
    assert p["web"]["outcome"] == "failed" and p["zeta"]["outcome"] == "pending", "nothing new starts once blocked"
    assert p["zeta"]["reason"] == "not started: the drain is blocked"
    assert not any(w.startswith("evict") for w in world.writes)


async def test_a_failed_migration_fails_the_drain_but_the_others_go_on(world: DrainWorld) -> None:
    world.add_pod(pod("a"))
    world.add_pod(pod("b"))
    world.add_drain("d")
    await run(world, "d")
    world.finish_migration("shop", "drain-node-1-a", ok=False)
    world.finish_migration("shop", "drain-node-1-b")
    assert await run(world, "d") is None
    s = status(world, "d")
    assert s["phase"] == "Failed" and s["reason"] == "MigrationFailed"
    assert "shop/a: migration failed: CheckpointFailed: criu said no" in s["message"]
    assert s["counts"]["failed"] == 1 and s["counts"]["migrated"] == 1


async def test_timeout_fails_what_has_not_started(world: DrainWorld) -> None:
    world.add_pod(pod("web", labels={"app": "web"}))
    world.add_pdb(
        {
            "metadata": {"name": "web", "namespace": "shop", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "web"}}},
            "status": {"disruptionsAllowed": 0, "observedGeneration": 1},
        }
    )
    world.add_drain("d", timeoutSeconds=30)
    await run(world, "d")
    status(world, "d")["startTime"] = "2020-01-01T00:00:00.000Z"
    assert await run(world, "d") is None
    s = status(world, "d")
    assert s["phase"] == "Failed" and s["reason"] == "Timeout"
    assert pods_by_name(world, "d")["web"]["reason"] == "not started within timeoutSeconds (30s)"


async def test_cancel_lets_in_flight_finish_then_uncordons(world: DrainWorld) -> None:
    world.add_pod(pod("a"))
    world.add_pod(pod("b"))
    world.add_drain("d", maxConcurrent=1)
    await run(world, "d")
    world.delete_drain("d")
    assert await run(world, "d") == pytest.approx(0.01)
    s = status(world, "d")
    assert s["phase"] == "Cancelled" and s["message"] == "cancelled; waiting for 1 pod(s) in flight"
    assert pods_by_name(world, "d")["b"]["reason"] == "not started: the drain was cancelled"
    assert world.nodes["node-1"]["spec"].get("unschedulable") is True, "still cordoned while a pod is in flight"
    world.finish_migration("shop", "drain-node-1-a")
    assert await run(world, "d") is None
    assert "d" not in world.drains, "finalizer released"
    assert not world.nodes["node-1"]["spec"].get("unschedulable"), "uncordoned: this drain had cordoned it"
    assert ("shop", "drain-node-1-b") not in world.migrations


async def test_cancel_leaves_a_cordon_someone_else_made(world: DrainWorld) -> None:
    world.nodes["node-1"]["spec"] = {"unschedulable": True}
    world.add_drain("d")
    await run(world, "d")
    assert status(world, "d")["cordonedByDrain"] is False and status(world, "d")["phase"] == "Succeeded"
    world.delete_drain("d")
    await run(world, "d")
    assert "d" not in world.drains and world.nodes["node-1"]["spec"]["unschedulable"] is True


async def test_a_shared_cordon_is_released_by_the_last_drain_holding_it(world: DrainWorld) -> None:
    world.add_drain("first")
    await run(world, "first")
    world.add_drain("second")
    await run(world, "second")
    assert status(world, "second")["cordonedByDrain"] is True, "the cordon of a drain of the same node is shared"
    world.delete_drain("first")
    await run(world, "first")
    assert world.nodes["node-1"]["spec"]["unschedulable"] is True, "the second drain still holds it"
    world.delete_drain("second")
    await run(world, "second")
    assert not world.nodes["node-1"]["spec"].get("unschedulable")


async def test_one_drain_per_node_at_a_time(world: DrainWorld) -> None:
    world.add_pod(pod("web"))
    world.add_drain("first")
    await run(world, "first")
    world.add_drain("preview", dryRun=True)
    await run(world, "preview")
    assert status(world, "preview")["reason"] == "DryRun", "a dry run conflicts with nothing"
    world.add_drain("second")
    assert await run(world, "second") is None
    s = status(world, "second")
    assert s["phase"] == "Failed" and s["reason"] == "DrainInProgress" and "NodeDrain first" in s["message"]


async def test_dry_run_plans_and_changes_nothing(world: DrainWorld) -> None:
    world.add_pod(pod("web"))
    world.add_pod(pod("agent", owner=("DaemonSet", "agent")))
    world.add_drain("d", dryRun=True)
    assert await run(world, "d") is None
    s = status(world, "d")
    assert s["phase"] == "Succeeded" and s["reason"] == "DryRun"
    assert s["message"] == "dry run: 1 pod(s) to migrate, 0 to evict, 1 left alone; nothing was changed"
    assert pods_by_name(world, "d")["web"]["target"] in ("node-2", "node-3")
    assert world.writes == [] and "cordonedByDrain" not in s


async def test_invalid_pod_selector_fails_with_the_reason(world: DrainWorld) -> None:
    world.add_drain("d", podSelector="app in web")
    await run(world, "d")
    s = status(world, "d")
    assert s["phase"] == "Failed" and s["reason"] == "InvalidPodSelector" and "app in web" in s["message"]


async def test_missing_node_fails(world: DrainWorld) -> None:
    world.add_drain("d", nodeName="node-9")
    await run(world, "d")
    assert status(world, "d")["reason"] == "NodeNotFound"


# --- the annotation -------------------------------------------------------------------------
async def test_the_node_annotation_makes_and_unmakes_an_auto_drain(world: DrainWorld) -> None:
    auto = AutoDrainReconciler(custom=world)  # type: ignore[arg-type]
    n = world.nodes["node-1"]
    n["metadata"]["annotations"] = {api.ANNOTATION_DRAIN_REQUEST: "true", api.ANNOTATION_DRAIN_POLICY: "evict"}
    await auto.reconcile(n)
    drain = world.drains["auto-node-1"]
    assert drain["spec"] == {"nodeName": "node-1", "unmigratablePolicy": "Evict"}
    assert drain["metadata"]["labels"] == {api.LABEL_AUTO_DRAIN: "true"}
    await auto.reconcile(n)
    assert world.writes.count("create nodedrain auto-node-1") == 1
    n["metadata"]["annotations"] = {}
    await auto.reconcile(n)
    assert "auto-node-1" not in world.drains


async def test_the_annotation_leaves_other_drains_alone(world: DrainWorld) -> None:
    auto = AutoDrainReconciler(custom=world)  # type: ignore[arg-type]
    world.add_drain("by-hand")
    n = world.nodes["node-1"]
    n["metadata"]["annotations"] = {api.ANNOTATION_DRAIN_REQUEST: "true", api.ANNOTATION_DRAIN_POLICY: "nonsense"}
    await auto.reconcile(n)
    assert list(world.drains) == ["by-hand"], "a drain of the node runs already"
    n["metadata"]["annotations"] = {}
    await auto.reconcile(n)
    assert list(world.drains) == ["by-hand"], "only auto drains go with the annotation"
    world.drains["by-hand"]["status"] = {"phase": "Succeeded"}
    n["metadata"]["annotations"] = {api.ANNOTATION_DRAIN_REQUEST: "true"}
    await auto.reconcile(n)
    assert world.drains["auto-node-1"]["spec"]["unmigratablePolicy"] == "Block", "a finished drain is no obstacle"
    assert AutoDrainReconciler.policy("nonsense") == "Block" and AutoDrainReconciler.policy(" Evict ") == "Evict"


async def test_pods_that_land_on_the_node_during_the_drain_join_it(world: DrainWorld) -> None:
    world.add_pod(pod("web-0"))
    world.add_drain("d", maxConcurrent=5)
    await run(world, "d")
    assert set(pods_by_name(world, "d")) == {"web-0"}
    world.add_pod(pod("late"))  # bound to the node by name, past the cordon
    await run(world, "d")
    entries = pods_by_name(world, "d")
    assert entries["late"]["action"] == "migrate" and entries["late"]["outcome"] == "in-progress"
    assert ("shop", "drain-node-1-late") in world.migrations
    assert any(reason == "PodsArrived" for reason, _ in world.event_pairs())
    world.finish_migration("shop", "drain-node-1-web-0")
    world.finish_migration("shop", "drain-node-1-late")
    assert await run(world, "d") is None
    assert status(world, "d")["counts"]["migrated"] == 2


async def test_a_pod_put_back_by_a_failed_migration_of_the_drain_is_not_taken_again(world: DrainWorld) -> None:
    world.add_pod(pod("web-0"))
    world.add_drain("d")
    await run(world, "d")
    world.finish_migration("shop", "drain-node-1-web-0", ok=False)
    restored = world.pods[("shop", "web-0")]
    restored["metadata"]["uid"] += "-restored"  # restored on its source from the checkpoint
    restored["metadata"].setdefault("annotations", {})[api.ANNOTATION_MIGRATION] = "shop/drain-node-1-web-0"
    assert await run(world, "d", passes=2) is None
    s = status(world, "d")
    assert s["phase"] == "Failed" and [p["name"] for p in s["pods"]] == ["web-0"], "once"


async def test_one_pod_of_a_controller_at_a_time(world: DrainWorld) -> None:
    """Each migration takes its pod out of service briefly: two replicas of a 2-replica StatefulSet never at once."""
    for name in ("db-0", "db-1"):
        world.add_pod(pod(name, owner=("StatefulSet", "db")))
    world.add_drain("d", maxConcurrent=5)
    await run(world, "d")
    assert list(world.migrations) == [("shop", "drain-node-1-db-0")]
    assert pods_by_name(world, "d")["db-1"]["reason"] == (
        "waiting: StatefulSet/db's pod db-0 is being moved (one at a time per controller)"
    )
    world.finish_migration("shop", "drain-node-1-db-0")
    await run(world, "d")
    assert ("shop", "drain-node-1-db-1") in world.migrations


async def test_a_pod_that_lands_while_still_starting_joins_once_it_runs_and_does_not_block(world: DrainWorld) -> None:
    """Judged while Pending it would be unmigratable ("no process to checkpoint") and block the drain."""
    from migrator.units import iso, now

    world.add_pod(pod("first"))
    world.add_drain("d", maxConcurrent=1)
    await run(world, "d")
    late = pod("late", phase="Pending")
    late["metadata"]["creationTimestamp"] = iso(now())
    world.add_pod(late)
    world.finish_migration("shop", "drain-node-1-first")
    assert await run(world, "d") == pytest.approx(0.01), "waits for the starting pod instead of finishing"
    s = status(world, "d")
    assert "late" not in pods_by_name(world, "d") and not s.get("blockedReasons") and s["phase"] == "Draining"
    world.pods[("shop", "late")]["status"]["phase"] = "Running"
    await run(world, "d")
    assert pods_by_name(world, "d")["late"]["outcome"] == "in-progress"
    world.finish_migration("shop", "drain-node-1-late")
    assert await run(world, "d") is None
    assert status(world, "d")["phase"] == "Succeeded"


async def test_a_pod_pending_for_long_is_judged_as_it_is(world: DrainWorld) -> None:
    world.add_pod(pod("first"))
    world.add_drain("d", maxConcurrent=1)
    await run(world, "d")
    stuck = pod("stuck", phase="Pending")
    stuck["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    world.add_pod(stuck)
    world.finish_migration("shop", "drain-node-1-first")
    assert await run(world, "d") is None
    s = status(world, "d")
    assert s["phase"] == "Blocked" and "not Running" in s["message"], s
