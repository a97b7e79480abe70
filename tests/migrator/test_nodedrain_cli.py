"""kubectl migrate drain / get drains / describe drain with a fake API: flags, the body, dry run, --wait, tables."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from migrator.cli import drains
from migrator.cli.arguments import parse_args
from migrator.cli.commands import Io
from migrator.cli.errors import CliError
from tests.migrator.test_cli import NOW, FakeApi, run_cli, sample_node, ts
from tests.migrator.test_nodedrain import node, pod


class DrainApi(FakeApi):
    """FakeApi plus NodeDrains, nodes and pods; ``drain_states`` scripts what watching the created drain shows."""

    def __init__(self) -> None:
        super().__init__()
        self.all_pods: list[dict[str, Any]] = []
        self.drains: dict[str, dict[str, Any]] = {}
        self.drain_states: list[dict[str, Any] | None] = []
        self.drain_events: list[dict[str, Any]] = []
        for n in (node("node-1"), node("node-2"), node("node-3", cordoned=True)):
            self.nodes[n["metadata"]["name"]] = n

    async def list_nodes(self) -> list[dict[str, Any]]:
        return list(self.nodes.values())

    async def list_pods(self, *, node: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self.all_pods if node in (None, p["spec"].get("nodeName"))]

    async def create_drain(self, *, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("create drain")
        obj = json.loads(json.dumps(body))
        obj["metadata"]["name"] = obj["metadata"].pop("generateName") + "x7k2p"
        self.created.append(obj)
        self.drains[obj["metadata"]["name"]] = obj
        return obj

    async def read_drain(self, *, name: str) -> dict[str, Any] | None:
        return self.drains.get(name)

    async def list_drains(self) -> list[dict[str, Any]]:
        return list(self.drains.values())

    async def list_drain_events(self, *, name: str) -> list[dict[str, Any]]:
        return self.drain_events

    async def watch_drain(self, *, name: str) -> AsyncIterator[dict[str, Any] | None]:
        for obj in self.drain_states:
            yield obj
        await asyncio.Event().wait()


def drain_obj(phase: str | None, *, pods: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    counts = {"total": len(pods or []), "migrated": 0, "evicted": 0, "skipped": 0, "failed": 0}
    for p in pods or []:
        key = {"migrated": "migrated", "evicted": "evicted", "skipped": "skipped", "failed": "failed"}.get(p["outcome"])
        if key:
            counts[key] += 1
    return {
        "apiVersion": "podmigrate.io/v1alpha1",
        "kind": "NodeDrain",
        "metadata": {"name": "node-1-x7k2p", "uid": "uid-d", "creationTimestamp": ts(0)[:19] + "Z"},
        "spec": {"nodeName": "node-1", "maxConcurrent": 2, "timeoutSeconds": 1800, "unmigratablePolicy": "Block"},
        "status": ({"phase": phase, "pods": pods or [], "counts": counts, "startTime": ts(0), **status} if phase else {}),
    }


def entry(name: str, action: str, outcome: str, target: str = "", reason: str = "") -> dict[str, Any]:
    return {"namespace": "shop", "name": name, "action": action, "outcome": outcome, "target": target, "reason": reason}


# --- arguments ----------------------------------------------------------------------------------
def test_drain_flags_mirror_kubectl_drain() -> None:
    args = parse_args(["drain", "node-1"])
    assert (args.node, args.pod_selector, args.timeout, args.dry_run, args.wait) == ("node-1", "", 1800.0, False, False)
    assert (args.ignore_daemonsets, args.delete_emptydir_data, args.max_concurrent, args.to) == (True, False, 2, [])
    assert (args.on_unmigratable, args.target_selector) == ("block", {})
    args = parse_args(
        ["drain", "node/node-1", "--pod-selector", "app=web", "--timeout", "10m", "--dry-run", "--ignore-daemonsets=false",
         "--delete-emptydir-data", "--max-concurrent", "5", "--to", "node-2,node-3", "--to", "node-4",
         "--on-unmigratable", "evict", "--wait"]
    )  # fmt: skip
    assert (args.node, args.pod_selector, args.timeout, args.dry_run, args.wait) == ("node-1", "app=web", 600.0, True, True)
    assert (args.ignore_daemonsets, args.delete_emptydir_data, args.max_concurrent) == (False, True, 5)
    assert (args.to, args.on_unmigratable) == (["node-2", "node-3", "node-4"], "evict")
    assert parse_args(["drain", "n", "--dry-run=client"]).dry_run is True
    assert parse_args(["drain", "n", "--dry-run=none"]).dry_run is False
    assert parse_args(["drain", "n", "--delete-emptydir-data=true", "--ignore-daemonsets=TRUE"]).delete_emptydir_data is True
    assert parse_args(["drain", "n", "--target-selector", "pool=spare, zone=b"]).target_selector == {"pool": "spare", "zone": "b"}


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["drain"], "required: NODE"),
        (["drain", "n", "--dry-run=server"], '--dry-run="server" is not supported'),
        (["drain", "n", "--ignore-daemonsets=maybe"], 'invalid value "maybe" for --ignore-daemonsets'),
        (["drain", "n", "--max-concurrent", "21"], "must be between 1 and 20"),
        (["drain", "n", "--on-unmigratable", "pray"], "invalid choice: 'pray'"),
        (["drain", "n", "--to", "a", "--target-selector", "x=y"], "use --to or --target-selector, not both"),
        (["drain", "n", "--target-selector", "x"], 'invalid --target-selector term "x"'),
        (["get", "web", "extra"], 'unexpected argument "extra"'),
        (["describe", "drain"], "describe drain needs the NodeDrain's name"),
    ],
)
def test_drain_usage_errors_are_one_line(argv: list[str], fragment: str) -> None:
    code, out, err = run_cli(DrainApi(), *argv)
    assert code == 1 and out == "" and err.count("\n") == 1 and fragment in err, err


def test_get_and_describe_know_drains_by_kubectls_names() -> None:
    for argv in (["get", "drains"], ["get", "nd"], ["get", "nodedrains.podmigrate.io"]):
        args = parse_args(argv)
        assert (args.drains, args.name) == (True, None)
    assert (parse_args(["get", "drain", "d1"]).name, parse_args(["get", "nd/d1"]).name) == ("d1", "d1")
    args = parse_args(["describe", "nodedrain/d1"])
    assert (args.drains, args.name) == (True, "d1")
    assert (parse_args(["describe", "drain", "d1"]).name, parse_args(["get", "web-1"]).drains) == ("d1", False)


# --- creating one --------------------------------------------------------------------------------
def test_drain_creates_a_node_drain_with_the_flags_spec() -> None:
    fake = DrainApi()
    code, out, err = run_cli(fake, "drain", "node-1", "--pod-selector", "app=web", "--to", "node-2", "--timeout", "5m")
    assert (code, err) == (0, "")
    assert out == "nodedrain.podmigrate.io/node-1-x7k2p created\n"
    (body,) = fake.created
    assert body["metadata"] == {"name": "node-1-x7k2p"} and body["apiVersion"] == "podmigrate.io/v1alpha1"
    assert body["spec"] == {
        "nodeName": "node-1", "maxConcurrent": 2, "timeoutSeconds": 300, "unmigratablePolicy": "Block",
        "deleteEmptyDirData": False, "ignoreDaemonSets": True, "podSelector": "app=web", "targetNodes": ["node-2"],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["drain", "node-9"], 'error: node "node-9" not found\n'),
        (["drain", "node-1", "--to", "node-1"], "error: --to node-1: that is the node being drained\n"),
        (["drain", "node-1", "--to", "node-9"], 'error: node "node-9" not found (--to)\n'),
        (["drain", "node-1", "--pod-selector", "app in web"], 'error: --pod-selector: invalid label selector term "app in web"'),
    ],
)
def test_drain_checks_before_it_creates(argv: list[str], message: str) -> None:
    fake = DrainApi()
    code, out, err = run_cli(fake, *argv)
    assert code == 1 and out == "" and err.startswith(message) and not fake.created


def test_a_node_being_drained_is_not_drained_twice() -> None:
    fake = DrainApi()
    fake.drains["node-1-abcde"] = drain_obj("Draining") | {"metadata": {"name": "node-1-abcde"}}
    code, _, err = run_cli(fake, "drain", "node-1")
    assert (
        code == 1 and err == 'error: node "node-1" is already being drained by nodedrain.podmigrate.io/node-1-abcde (Draining)\n'
    )
    fake.drains["node-1-abcde"]["status"]["phase"] = "Succeeded"
    assert run_cli(fake, "drain", "node-1")[0] == 0, "a finished drain of the node is no obstacle"


# --- dry run -------------------------------------------------------------------------------------
def dry_run_world() -> DrainApi:
    fake = DrainApi()
    fake.all_pods = [
        pod("web", labels={"app": "web"}),
        pod("api", labels={"app": "api"}),
        pod("agent-x", owner=("DaemonSet", "agent")),
        pod("other", node="node-2"),
    ]
    return fake


def test_dry_run_prints_what_would_move_where_and_creates_nothing() -> None:
    fake = dry_run_world()
    code, out, err = run_cli(fake, "drain", "node-1", "--dry-run")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "node/node-1 cordoned (dry run)",
        "skip    shop/agent-x  DaemonSet pod (agent): stays, it tolerates the cordon",
        "migrate shop/api      -> node-2",
        "migrate shop/web      -> node-2",
        "dry run: 2 pod(s) would be migrated, 0 evicted, 1 left alone; nothing was changed",
    ]
    assert not fake.created and "create drain" not in fake.calls
    code, out, _ = run_cli(fake, "drain", "node-1", "--dry-run", "--pod-selector", "app=web")
    assert out.splitlines()[1:] == [
        "migrate shop/web  -> node-2",
        "dry run: 1 pod(s) would be migrated, 0 evicted, 0 left alone (2 more not selected by --pod-selector); nothing was changed",
    ]


def test_dry_run_that_would_block_exits_1_with_the_reasons() -> None:
    fake = dry_run_world()
    fake.nodes["node-2"]["spec"] = {"unschedulable": True}
    code, out, err = run_cli(fake, "drain", "node-1", "--dry-run", "--pod-selector", "app=web")
    assert code == 1
    assert "blocked shop/web  cannot be migrated: no node can take it" in out
    assert err == (
        "error: the drain would stop Blocked, moving nothing: shop/web: no node can take it: "
        "node node-2 is cordoned (unschedulable); node node-3 is cordoned (unschedulable)\n"
    )
    code, out, err = run_cli(fake, "drain", "node-1", "--dry-run", "--pod-selector", "app=web", "--on-unmigratable", "evict")
    assert code == 0 and "evict   shop/web  cannot be migrated (no node can take it" in out


# --- --wait ---------------------------------------------------------------------------------------
def test_wait_prints_each_pods_changes_and_exits_0() -> None:
    fake = DrainApi()
    fake.drain_states = [
        drain_obj(None),
        drain_obj("Cordoned"),
        drain_obj("Draining", message="1 pod(s) to migrate", pods=[entry("web", "migrate", "pending", "node-2")]),
        drain_obj("Draining", message="1 pod(s) to migrate", pods=[entry("web", "migrate", "in-progress", "node-2", "migrating")]),
        drain_obj("Draining", message="1 pod(s) to migrate", pods=[entry("web", "migrate", "in-progress", "node-2", "migrating")]),
        drain_obj(
            "Succeeded", message="node node-1 drained: 1 migrated", completionTime=ts(42),
            pods=[entry("web", "migrate", "migrated", "node-2", "pod web moved")],
        ),
    ]  # fmt: skip
    code, out, err = run_cli(fake, "drain", "node-1", "--wait")
    assert (code, err) == (0, "")
    lines = [line.split(" ", 1)[1] if line[:2].isdigit() else line for line in out.splitlines()]
    assert lines == [
        "nodedrain.podmigrate.io/node-1-x7k2p created",
        "nodedrain.podmigrate.io/node-1-x7k2p (waiting for the control service)",
        "nodedrain.podmigrate.io/node-1-x7k2p Cordoned",
        "nodedrain.podmigrate.io/node-1-x7k2p Draining: 1 pod(s) to migrate",
        "shop/web migrate pending -> node-2",
        "shop/web migrate in-progress -> node-2: migrating",
        "nodedrain.podmigrate.io/node-1-x7k2p Succeeded: node node-1 drained: 1 migrated",
        "shop/web migrate migrated -> node-2: pod web moved",
        "nodedrain.podmigrate.io/node-1-x7k2p Succeeded: node node-1 drained: 1 migrated [42.0s]",
    ]


@pytest.mark.parametrize("phase", ["Blocked", "Failed", "Cancelled"])
def test_wait_exits_1_and_says_why_when_a_drain_does_not_succeed(phase: str) -> None:
    fake = DrainApi()
    pods = [entry("web", "migrate", "failed", "", "cannot be migrated: no node can take it"), entry("a", "skip", "skipped")]
    fake.drain_states = [
        drain_obj(phase, reason="Unmigratable", message="1 pod(s) can be neither migrated nor evicted", pods=pods)
    ]
    code, _, err = run_cli(fake, "drain", "node-1", "--wait")
    assert code == 1
    assert err.splitlines() == [
        f"error: {phase}: Unmigratable: 1 pod(s) can be neither migrated nor evicted",
        "  shop/web: cannot be migrated: no node can take it",
    ]


def test_wait_gives_up_with_exit_2_and_on_deletion_exits_1() -> None:
    fake = DrainApi()
    fake.drain_states = [drain_obj("Draining")]
    out, err = io.StringIO(), io.StringIO()
    code = asyncio.run(
        drains.wait_for_drain(kube=fake, io=Io(out=out, err=err, now=lambda: NOW), name="node-1-x7k2p", timeout=0.05)
    )
    assert code == 2 and err.getvalue().startswith(
        "error: timed out waiting for nodedrain.podmigrate.io/node-1-x7k2p: still Draining"
    )
    assert "kubectl migrate describe drain node-1-x7k2p" in err.getvalue()
    fake.drain_states = [drain_obj("Draining"), None]
    code, _, err = run_cli(fake, "drain", "node-1", "--wait")
    assert code == 1 and err == 'error: nodedrain.podmigrate.io "node-1-x7k2p" was deleted while waiting for it\n'


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_table_is_redrawn_in_place() -> None:
    out = Tty()
    live = drains.LiveTable(out)
    states = [
        drain_obj("Draining", pods=[entry("web", "migrate", "in-progress", "node-2", "migrating")]),
        drain_obj("Draining", pods=[entry("web", "migrate", "migrated", "node-2", "moved")]),
    ]
    for obj in states:
        live.draw(obj, io=Io(out=out, err=io.StringIO(), now=lambda: NOW))
    first, second = out.getvalue().split("\x1b[3F")
    assert first.startswith(drains.CLEAR_BELOW) and first.count("\n") == 3
    assert "in-progress" in first and "migrated" in second.splitlines()[2]
    assert (
        second.splitlines()[0]
        == f"{drains.CLEAR_BELOW}node-1-x7k2p on node-1: Draining  1/1 migrated, 0 evicted, 0 skipped, 0 failed  10m0s"
    )


# --- get / describe -------------------------------------------------------------------------------
def test_get_drains_lists_shows_one_and_renders() -> None:
    fake = DrainApi()
    obj = drain_obj("Succeeded", pods=[entry("web", "migrate", "migrated", "node-2"), entry("a", "skip", "skipped")])
    fake.drains["node-1-x7k2p"] = obj
    code, out, _ = run_cli(fake, "get", "drains")
    assert code == 0 and out.splitlines() == [
        "NAME           NODE     PHASE       MIGRATED   EVICTED   SKIPPED   FAILED   TOTAL   AGE",
        "node-1-x7k2p   node-1   Succeeded   1          0         1         0        2       10m",
    ]
    assert run_cli(fake, "get", "nd", "node-1-x7k2p", "-o", "name")[1] == "nodedrain.podmigrate.io/node-1-x7k2p\n"
    assert json.loads(run_cli(fake, "get", "drains", "-o", "json")[1])["items"][0]["metadata"]["name"] == "node-1-x7k2p"
    code, out, err = run_cli(fake, "get", "drain", "nope")
    assert (code, out, err) == (1, "", 'error: nodedrain "nope" not found\n')
    assert run_cli(DrainApi(), "get", "drains")[2] == "No resources found\n"


def test_describe_drain_shows_spec_status_pods_and_events() -> None:
    fake = DrainApi()
    pods = [
        entry("web", "migrate", "migrated", "node-2", "pod web moved") | {"migration": "drain-node-1-web"},
    ]
    fake.drains["node-1-x7k2p"] = drain_obj(
        "Blocked", pods=pods, reason="Unmigratable", message="stopped", cordonedByDrain=True,
        blockedReasons=["shop/db: uses the host network"], budgets=[{"namespace": "shop", "name": "web", "disruptionsAllowed": 1}],
    )  # fmt: skip
    fake.drain_events = [
        {"type": "Normal", "reason": "Cordoned", "message": "node node-1 cordoned", "lastTimestamp": ts(1)[:19] + "Z",
         "source": {"component": "podmigrate-controller"}, "involvedObject": {"uid": "uid-d"}},
        {"type": "Normal", "reason": "Old", "message": "another drain of that name", "involvedObject": {"uid": "uid-0"}},
    ]  # fmt: skip
    code, out, _ = run_cli(fake, "describe", "drain", "node-1-x7k2p")
    assert code == 0
    lines = out.splitlines()
    for expected in (
        "Name:    node-1-x7k2p",
        "Node:    node-1",
        "  Targets:              <any other node that fits>",
        "  Unmigratable Policy:  Block",
        "  Phase:             Blocked",
        "  Cordoned By Drain: yes (uncordoned when this drain is deleted)",
        "Blocked By:",
        "  shop/db: uses the host network",
        "  shop/web: 1 allowed",
    ):
        assert expected in lines, f"{expected!r} missing from:\n{out}"
    pods_at = lines.index("Pods:")
    assert lines[pods_at + 1].split() == ["POD", "ACTION", "OUTCOME", "TARGET", "PODMIGRATION", "REASON"]
    assert lines[pods_at + 2].split()[:5] == ["shop/web", "migrate", "migrated", "node-2", "drain-node-1-web"]
    assert "node node-1 cordoned" in out and "another drain" not in out


def test_sample_node_and_drain_nodes_agree() -> None:
    """The CLI tests' nodes work for placement (Ready, allocatable) as well as for the pod checks."""
    assert sample_node("node-2")["status"]["conditions"] == node("node-2")["status"]["conditions"]
    with pytest.raises(CliError):
        parse_args(["drain", "n", "--dry-run=server"])
