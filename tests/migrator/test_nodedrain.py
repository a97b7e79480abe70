"""What a drain decides before it touches anything: classification, selectors, names, spreading, PDB accounting."""

from __future__ import annotations

from typing import Any

import pytest

from migrator import disruption, drainplan
from migrator.api import PodAction, UnmigratablePolicy
from migrator.drainplan import DrainSpec, SelectorError


def pod(
    name: str,
    *,
    node: str = "node-1",
    namespace: str = "shop",
    labels: dict[str, str] | None = None,
    phase: str = "Running",
    owner: tuple[str, str] | None = None,
    cpu: str | None = "100m",
    **spec: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "uid": f"uid-{owner[1]}", "controller": True}]
    return {
        "metadata": meta,
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}} if cpu else {}}],
            **spec,
        },
        "status": {"phase": phase},
    }


def node(name: str, *, cpu: str = "4", cordoned: bool = False, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"unschedulable": True} if cordoned else {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
        },
    }


def verdict(p: dict[str, Any], **spec: Any) -> drainplan.Verdict:
    return drainplan.judge(p, spec=DrainSpec(node="node-1", **spec))


# --- classification, as kubectl drain does it -------------------------------------------------
def test_bare_running_pod_is_migrated() -> None:
    assert verdict(pod("web")) == drainplan.Verdict(action=PodAction.MIGRATE)
    assert verdict(pod("web", owner=("ReplicaSet", "web-7d9"))).action == PodAction.MIGRATE
    assert verdict(pod("db-0", owner=("StatefulSet", "db"))).action == PodAction.MIGRATE


def test_daemonset_pods_stay_or_block() -> None:
    ds = pod("agent-x", owner=("DaemonSet", "agent"))
    skipped = verdict(ds)
    assert skipped.action == PodAction.SKIP and not skipped.blocks and "DaemonSet pod (agent)" in skipped.reason
    blocking = verdict(ds, ignore_daemonsets=False)
    assert blocking.blocks and "ignoreDaemonSets" in blocking.reason


def test_mirror_finished_and_terminating_pods_are_left_alone() -> None:
    mirror = pod("etcd-node-1")
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    assert verdict(mirror).action == PodAction.SKIP and "static (mirror)" in verdict(mirror).reason
    done = verdict(pod("job-x", phase="Succeeded"))
    assert done.action == PodAction.SKIP and "finished (Succeeded)" in done.reason
    going = pod("old")
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert verdict(going).action == PodAction.SKIP


def test_pods_the_selector_leaves_out_are_not_part_of_the_plan() -> None:
    pods = [pod("web", labels={"app": "web"}), pod("db", labels={"app": "db"})]
    plan = drainplan.plan(
        spec=DrainSpec(node="node-1", pod_selector="app=web"), pods=pods, nodes=[node("node-2")], pods_by_node={}
    )
    assert [p.name for p in plan.pods] == ["web"] and plan.unselected == 1


def test_emptydir_files_move_with_their_pod_unless_the_drain_leaves_them_and_says_so() -> None:
    p = pod("cache", volumes=[{"name": "scratch", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}])
    moved = verdict(p)
    assert moved.action == PodAction.MIGRATE and not moved.blocks and not moved.unmigratable
    assert moved.reason == "with its emptyDir files (scratch)"
    left = verdict(p, delete_emptydir_data=True)
    assert (
        left.action == PodAction.MIGRATE and not left.blocks and left.reason == "emptyDir files left behind (deleteEmptyDirData)"
    )


def test_what_a_podmigration_would_refuse_is_unmigratable() -> None:
    host = verdict(pod("router", hostNetwork=True))
    assert host.unmigratable and "host network" in host.reason
    pending = verdict(pod("new", phase="Pending"))
    assert pending.unmigratable and "Pending, not Running" in pending.reason
    job = verdict(pod("batch-x", owner=("Job", "batch")))
    assert job.unmigratable and "managed by Job batch" in job.reason


# --- selectors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("", {}, True),
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("env in (prod, staging)", {"env": "staging"}, True),
        ("env in (prod,staging)", {"env": "dev"}, False),
        ("env notin (prod)", {}, True),
        ("canary", {"canary": ""}, True),
        ("!canary", {"canary": "yes"}, False),
        ("app=web,env in (a,b),!legacy", {"app": "web", "env": "b"}, True),
        ("app=web,env in (a,b),!legacy", {"app": "web", "env": "b", "legacy": "1"}, False),
        ("example.com/tier=front", {"example.com/tier": "front"}, True),
    ],
)
def test_kubectl_selector_syntax(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert drainplan.selector_matches(drainplan.parse_selector(selector), labels) is matches


@pytest.mark.parametrize("selector", ["=web", "app in (a,,b)", "app in a", "app=we b", "a b", "app=web,"])
def test_bad_selectors_are_refused(selector: str) -> None:
    with pytest.raises(SelectorError):
        drainplan.parse_selector(selector)


def test_an_empty_value_means_present_and_empty() -> None:
    (requirement,) = drainplan.parse_selector("app=")
    assert requirement.values == ("",) and requirement.matches({"app": ""}) and not requirement.matches({"app": "x"})


def test_label_selector_of_a_pdb() -> None:
    labels = {"app": "web", "tier": "front"}
    assert drainplan.label_selector_matches({}, labels), "policy/v1: an empty selector selects every pod"
    assert not drainplan.label_selector_matches(None, labels), "a null selector selects none"
    assert drainplan.label_selector_matches({"matchLabels": {"app": "web"}}, labels)
    assert not drainplan.label_selector_matches({"matchLabels": {"app": "db"}}, labels)
    expr = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "edge"]}]}
    assert drainplan.label_selector_matches(expr, labels)
    assert not drainplan.label_selector_matches({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, labels)


# --- names --------------------------------------------------------------------------------------
def test_migration_names_fit_in_63_characters_and_stay_unique() -> None:
    assert drainplan.migration_name("node-1", "web") == "drain-node-1-web"
    long_pod = "a-very-long-pod-name-from-a-statefulset-with-a-long-name-0123456789"
    one, two = drainplan.migration_name("node-1", long_pod), drainplan.migration_name("node-1", long_pod + "x")
    assert len(one) == len(two) == 63 and one != two and one.startswith("drain-node-1-a-very-long")
    assert one[-1].isalnum() and one == drainplan.migration_name("node-1", long_pod), "deterministic: a retry finds it"
    assert drainplan.auto_drain_name("node-1") == "auto-node-1"
    assert len(drainplan.auto_drain_name("n" * 253)) == 63
    assert drainplan.drain_generate_name("node-1") == "node-1-"
    assert len(drainplan.drain_generate_name("n" * 253)) + 5 <= 63


# --- placement and spreading -------------------------------------------------------------------
def test_pods_spread_over_targets_counting_what_the_drain_already_sent() -> None:
    nodes = [node("node-1"), node("node-2", cpu="2"), node("node-3", cpu="2")]
    pods = [pod(f"p{i}", cpu="500m") for i in range(4)]
    plan = drainplan.plan(spec=DrainSpec(node="node-1"), pods=pods, nodes=nodes, pods_by_node={"node-1": pods})
    targets = [p.target for p in plan.pods]
    assert sorted(targets) == ["node-2", "node-2", "node-3", "node-3"], targets
    assert not plan.blocked


def test_pods_without_requests_spread_over_the_least_loaded_nodes() -> None:
    nodes = [node("node-1"), node("node-2"), node("node-3"), node("node-4")]
    pods = [pod(f"p{i}", cpu=None) for i in range(6)]
    busy = {"node-2": [pod(f"old{i}", cpu=None) for i in range(3)]}
    plan = drainplan.plan(spec=DrainSpec(node="node-1"), pods=pods, nodes=nodes, pods_by_node={"node-1": pods, **busy})
    targets = sorted(p.target for p in plan.pods)
    # Scores tie (no requests): the drain fills the emptier nodes first instead of piling all on node-2 by name,
    # and every node ends with three pods.
    assert targets == ["node-3", "node-3", "node-3", "node-4", "node-4", "node-4"], targets


def test_a_pod_that_fits_nowhere_once_others_are_placed_is_unmigratable() -> None:
    nodes = [node("node-1"), node("node-2", cpu="1")]
    pods = [pod("a", cpu="600m"), pod("b", cpu="600m")]
    blocked = drainplan.plan(spec=DrainSpec(node="node-1"), pods=pods, nodes=nodes, pods_by_node={})
    assert [p.target for p in blocked.pods] == ["node-2", ""]
    assert blocked.blocked == ["shop/b: no node can take it: node node-2 has 0.4 cpu free, the pod requests 0.6"]
    assert blocked.pods[1].blocks and "unmigratablePolicy Block: not evicted" in blocked.pods[1].reason
    evicting = drainplan.plan(
        spec=DrainSpec(node="node-1", policy=UnmigratablePolicy.EVICT), pods=pods, nodes=nodes, pods_by_node={}
    )
    assert not evicting.blocked and evicting.pods[1].action == PodAction.EVICT
    assert evicting.pods[1].entry()["outcome"] == "pending"


def test_targets_are_restricted_to_target_nodes_or_selector() -> None:
    nodes = [node("node-1"), node("node-2"), node("node-3", labels={"pool": "spare"}), node("node-4", cordoned=True)]
    web = pod("web")
    pick = drainplan.choose_target
    assert pick(web, spec=DrainSpec(node="node-1", target_nodes=("node-3",)), nodes=nodes, pods_by_node={}) == ("node-3", "")
    by_label = DrainSpec(node="node-1", target_selector={"pool": "spare"})
    assert pick(web, spec=by_label, nodes=nodes, pods_by_node={}) == ("node-3", "")
    none, why = pick(web, spec=DrainSpec(node="node-1", target_nodes=("node-4", "node-9")), nodes=nodes, pods_by_node={})
    assert none is None and "node-4 is cordoned" in why and "node node-9 not found" in why
    alone, why = pick(web, spec=DrainSpec(node="node-1"), nodes=[node("node-1")], pods_by_node={})
    assert alone is None and "the cluster has no other node" in why
    # A preferred (planned) target is kept while it fits, even if another has more room now.
    assert pick(web, spec=DrainSpec(node="node-1"), nodes=nodes, pods_by_node={"node-2": [pod("x", cpu="3")]}, prefer="node-2")[
        0
    ] == ("node-2")


def test_plan_entries_are_what_status_pods_shows() -> None:
    nodes = [node("node-1"), node("node-2")]
    pods = [
        pod("web", owner=("ReplicaSet", "web-1")),
        pod("agent", owner=("DaemonSet", "agent")),
        pod("router", hostNetwork=True),
    ]
    plan = drainplan.plan(spec=DrainSpec(node="node-1"), pods=pods, nodes=nodes, pods_by_node={})
    entries = {e["name"]: e for e in (p.entry() for p in plan.pods)}
    assert entries["web"] == {
        "namespace": "shop", "name": "web", "uid": "uid-web", "owner": "ReplicaSet/web-1",
        "action": "migrate", "outcome": "pending", "reason": "", "target": "node-2",
    }  # fmt: skip
    assert (entries["agent"]["action"], entries["agent"]["outcome"]) == ("skip", "skipped")
    assert (entries["router"]["action"], entries["router"]["outcome"]) == ("migrate", "failed")
    assert plan.blocked == ["shop/router: uses the host network: its sockets cannot move with it"]


def test_spec_defaults_match_the_crd() -> None:
    import yaml

    from tests.migrator.test_cli import REPO

    crd = yaml.safe_load((REPO / "manifests" / "crd" / "nodedrains.yaml").read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    spec = DrainSpec.from_spec({"nodeName": "n"})
    assert spec.max_concurrent == props["maxConcurrent"]["default"]
    assert spec.timeout_seconds == props["timeoutSeconds"]["default"]
    assert spec.policy == props["unmigratablePolicy"]["default"]
    assert spec.delete_emptydir_data == props["deleteEmptyDirData"]["default"]
    assert spec.ignore_daemonsets == props["ignoreDaemonSets"]["default"]
    assert spec.dry_run == props["dryRun"]["default"]


# --- PodDisruptionBudgets --------------------------------------------------------------------
def pdb(name: str, *, allowed: int, app: str = "web", generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop", "generation": generation},
        "spec": {"selector": {"matchLabels": {"app": app}}, "minAvailable": 2},
        "status": {"disruptionsAllowed": allowed, "observedGeneration": observed},
    }


def test_budgets_cover_pods_by_selector_and_stale_ones_allow_nothing() -> None:
    budgets = disruption.budgets([pdb("web", allowed=2), pdb("db", allowed=1, app="db"), pdb("new", allowed=3, generation=2)])
    assert [b.disruptions_allowed for b in budgets] == [2, 1, 0]
    web = pod("web-1", labels={"app": "web"})
    assert [b.key for b in disruption.covering(web, budgets)] == ["shop/web", "shop/new"]
    assert disruption.covering(pod("web-1", namespace="other", labels={"app": "web"}), budgets) == []


def test_own_disruptions_in_flight_are_capped_by_what_the_budget_allowed_when_they_began() -> None:
    budgets = disruption.budgets([pdb("web", allowed=2)])
    web = pod("web-1", labels={"app": "web"})
    first = disruption.check(web, all_budgets=budgets, in_flight={}, windows={})
    assert first.allowed and first.opens == {"shop/web": 2}, "the first opens a window at today's allowance"
    # One in flight: the PDB's status may still say 2 (a frozen pod looks healthy) or already 1; the window says 2.
    for now_allowed in (2, 1):
        live = disruption.budgets([pdb("web", allowed=now_allowed)])
        second = disruption.check(web, all_budgets=live, in_flight={"shop/web": 1}, windows={"shop/web": 2})
        assert second.allowed and second.opens == {}
    third = disruption.check(web, all_budgets=budgets, in_flight={"shop/web": 2}, windows={"shop/web": 2})
    assert not third.allowed and "allowed 2 disruption(s) and 2 of this drain's pods" in third.reason
    exhausted = disruption.check(web, all_budgets=disruption.budgets([pdb("web", allowed=0)]), in_flight={}, windows={})
    assert not exhausted.allowed and exhausted.reason == "PodDisruptionBudget shop/web allows no disruption now"
    free = disruption.check(pod("other", labels={"app": "x"}), all_budgets=budgets, in_flight={"shop/web": 9}, windows={})
    assert free.allowed, "pods no budget covers are never held back"


def test_windows_close_when_nothing_of_the_drain_is_in_flight_under_them() -> None:
    windows = {"shop/web": 2, "shop/db": 1}
    assert disruption.open_windows({"shop/web": 1}, windows) == {"shop/web": 2}
    records = disruption.windows_to_status(windows)
    assert records == [
        {"namespace": "shop", "name": "db", "disruptionsAllowed": 1},
        {"namespace": "shop", "name": "web", "disruptionsAllowed": 2},
    ]
    assert disruption.windows_from_status(records) == windows


def test_podmigrates_own_control_service_is_evicted_never_migrated_whatever_the_policy() -> None:
    """A drain of a node that runs a controller replica: it cannot checkpoint itself, and needs not (its state is
    in status): it is evicted, as kubectl drain would, even with unmigratablePolicy Block."""
    from migrator import drainplan
    from migrator.api import PodAction

    pod = {
        "metadata": {
            "name": "podmigrate-controller-5df47479b8-qq7l9", "namespace": "podmigrate-system", "uid": "u1",
            "labels": {"app.kubernetes.io/name": "podmigrate", "app.kubernetes.io/component": "controller"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "podmigrate-controller-5df47479b8", "controller": True}],
        },
        "spec": {"nodeName": "node-1", "hostNetwork": True, "containers": [{"name": "controller"}]},
        "status": {"phase": "Running"},
    }  # fmt: skip
    verdict = drainplan.judge(pod, spec=drainplan.DrainSpec(node="node-1"))
    assert verdict.action == PodAction.EVICT and not verdict.blocks and not verdict.unmigratable
    assert "own control service" in verdict.reason
