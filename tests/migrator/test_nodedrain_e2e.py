"""End to end: NodeDrains on the real local cluster, with the real control service and agents.

The NodeDrain controllers run where they run in production: in the control service that the
``podmigrate`` fixture installs (``migrator.service``, with its own ServiceAccount, so its RBAC is
what is tested), next to the PodMigration controller. Every test drains ``nodes[0]`` towards
``nodes[1]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import cluster as lc
from tests.conftest import Kube, Podmigrate, wait_for

pytestmark = pytest.mark.cluster

CLI = str(Path(sys.executable).parent / "kubectl-migrate")


def restart_control_service(podmigrate: Podmigrate) -> None:
    """The control service dies (SIGKILL: no clean-up, its tasks stop wherever they are) and comes back."""
    podmigrate.kill_controller()
    time.sleep(1)
    podmigrate.start_controller()


@pytest.fixture
def clean_nodes(kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate) -> Iterator[None]:
    """No test leaves a NodeDrain, a cordon or a drain annotation behind (other tests pin pods to these nodes)."""
    yield
    kube.run("delete", "nodedrains", "--all", "--wait=false", check=False)
    wait_for("NodeDrains gone", lambda: not kube.get("nodedrains")["items"], timeout=120)
    for node in cluster.nodes:
        kube.run("annotate", "node", node.name, "podmigrate.io/drain-", "podmigrate.io/drain-policy-", check=False)
        kube.run("uncordon", node.name, check=False)


def labelled_counter(namespace: str, node: str, image: str, *, name: str = "counter", labels: str = "") -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, "
        f"labels: {{drain-test: {namespace}{labels}}}}}\n"
        f"spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n"
        f"  containers:\n  - name: counter\n    image: {image}\n    resources: {{requests: {{cpu: 50m, memory: 16Mi}}}}\n"
    )


def daemonset(namespace: str, image: str) -> str:
    return f"""apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent, drain-test: {namespace}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{{name: agent, image: {image}}}]
"""


def node_drain(name: str, node: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "podmigrate.io/v1alpha1",
            "kind": "NodeDrain",
            "metadata": {"name": name},
            "spec": {"nodeName": node, **spec},
        }
    )


def running(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    pod = kube.get("pod", name, namespace)
    return pod if pod["status"].get("phase") == "Running" else None


def numbers(kube: Kube, namespace: str, name: str) -> list[int]:
    return [int(x) for x in kube.logs(name, namespace).split()]


def drain_done(kube: Kube, name: str, *, timeout: float = 180) -> dict[str, Any]:
    terminal = ("Succeeded", "Blocked", "Failed", "Cancelled")
    return wait_for(
        f"NodeDrain {name} to finish",
        lambda: d if ((d := kube.get("nodedrain", name)).get("status") or {}).get("phase") in terminal else None,
        timeout=timeout,
    )


def entries(drain: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in drain["status"]["pods"]}


def cordoned(kube: Kube, node: str) -> bool:
    return bool(kube.get("node", node)["spec"].get("unschedulable"))


def test_drain_migrates_a_bare_pod_and_leaves_the_daemonset_alone(
    kube: Kube, cluster: lc.Cluster, namespace: str, clean_nodes: None
) -> None:
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    kube.apply(daemonset(namespace, cluster.images["counter"]))
    kube.apply(labelled_counter(namespace, source, cluster.images["counter"]))
    wait_for("counting", lambda: len(numbers(kube, namespace, "counter")) >= 3)
    ds_pod = wait_for(
        "the DaemonSet's pod on the drained node",
        lambda: next(
            (p for p in kube.get("pods", namespace=namespace)["items"]
             if p["metadata"]["name"].startswith("agent-") and p["spec"].get("nodeName") == source
             and p["status"].get("phase") == "Running"),
            None,
        ),
    )  # fmt: skip
    before = numbers(kube, namespace, "counter")[-1]
    old_uid = kube.get("pod", "counter", namespace)["metadata"]["uid"]

    result = subprocess.run(
        [CLI, "--kubeconfig", cluster.kubeconfig, "drain", source, "--pod-selector", f"drain-test={namespace}",
         "--to", target, "--timeout", "3m", "--wait"],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    name = lines[0].removeprefix("nodedrain.podmigrate.io/").removesuffix(" created")
    assert lines[0] == f"nodedrain.podmigrate.io/{name} created" and name.startswith(f"{source}-")
    assert any(f"{namespace}/counter migrate in-progress -> {target}" in line for line in lines), result.stdout
    assert any(f"{namespace}/counter migrate migrated -> {target}" in line for line in lines), result.stdout
    assert lines[-1].startswith(f"nodedrain.podmigrate.io/{name} Succeeded: node {source} drained: 1 migrated")

    drain = kube.get("nodedrain", name)
    status = drain["status"]
    assert status["counts"] == {"total": 2, "migrated": 1, "evicted": 0, "skipped": 1, "failed": 0}
    assert status["cordonedByDrain"] is True and cordoned(kube, source)
    pods = entries(drain)
    counter = pods["counter"]
    assert (counter["action"], counter["outcome"], counter["target"], counter["owner"]) == ("migrate", "migrated", target, "")
    assert counter["migration"] == f"drain-{source}-counter" and "with its state" in counter["reason"]
    agent = pods[ds_pod["metadata"]["name"]]
    assert (agent["action"], agent["outcome"], agent["owner"]) == ("skip", "skipped", "DaemonSet/agent")

    moved = kube.get("pod", "counter", namespace)
    assert moved["spec"]["nodeName"] == target and moved["metadata"]["uid"] != old_uid
    first = wait_for("output after the move", lambda: numbers(kube, namespace, "counter")[:1])[0]
    assert first > before, f"the counter continued from its checkpoint (>{before}), it did not restart: {first}"
    still = kube.get("pod", ds_pod["metadata"]["name"], namespace)
    assert still["metadata"]["uid"] == ds_pod["metadata"]["uid"] and still["spec"]["nodeName"] == source, "untouched"

    migration = kube.get("podmigration", counter["migration"], namespace)
    assert migration["metadata"]["labels"]["podmigrate.io/drain"] == name
    assert [(o["kind"], o["name"]) for o in migration["metadata"]["ownerReferences"]] == [("NodeDrain", name)]
    assert migration["status"]["traceID"] == status["traceID"], "the migration's trace is part of the drain's"
    assert "podmigrate.io/uncordon" in drain["metadata"]["finalizers"]

    # kubectl sees it too (printer columns), and the CLI describes it.
    table = kube.run("get", "nd", name).stdout.splitlines()
    assert table[0].split() == ["NAME", "NODE", "PHASE", "MIGRATED", "EVICTED", "FAILED", "AGE"]
    assert table[1].split()[:6] == [name, source, "Succeeded", "1", "0", "0"]
    described = subprocess.run(
        [CLI, "--kubeconfig", cluster.kubeconfig, "describe", "drain", name], capture_output=True, text=True, check=True
    ).stdout
    assert "Cordoned By Drain: yes" in described and f"{namespace}/counter" in described and "Drained" in described

    # Deleting the drain gives the node back (it had cordoned it) and takes its PodMigrations with it.
    kube.run("delete", "nodedrain", name, "--wait=false")
    wait_for("uncordoned", lambda: not cordoned(kube, source), timeout=60)
    wait_for("the drain gone", lambda: kube.run("get", "nodedrain", name, check=False).returncode != 0, timeout=60)
    wait_for("its PodMigrations collected", lambda: not kube.get("podmigrations", namespace=namespace)["items"], timeout=60)
    assert kube.get("pod", "counter", namespace)["spec"]["nodeName"] == target, "the moved pod stays where it went"


class ReadyWatcher(threading.Thread):
    """Counts, at every change the API server reports, the selected pods a PDB would call healthy (Ready, not deleting)."""

    def __init__(self, kube: Kube, namespace: str, selector: str) -> None:
        super().__init__(daemon=True)
        template = (
            "{.type}|{.object.metadata.name}|{.object.metadata.uid}|{.object.metadata.deletionTimestamp}|"
            '{.object.status.conditions[?(@.type=="Ready")].status}{"\\n"}'
        )
        self.proc = subprocess.Popen(
            [kube.cluster.kubectl, f"--kubeconfig={kube.kubeconfig}", "get", "pods", "-n", namespace, "-l", selector,
             "-w", "--output-watch-events", "-o", f"jsonpath={template}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.healthy: dict[str, bool] = {}
        self.history: list[tuple[float, int, str]] = []

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind, name, uid, deleting, ready = (line.rstrip("\n").split("|") + [""] * 5)[:5]
            if kind == "DELETED":
                self.healthy.pop(uid, None)
            else:
                self.healthy[uid] = ready == "True" and not deleting
            self.history.append(
                (time.monotonic(), sum(self.healthy.values()), f"{kind} {name} ready={ready} deleting={bool(deleting)}")
            )

    def lowest_since(self, start: float) -> int:
        counts = [count for when, count, _ in self.history if when >= start]
        return min(counts) if counts else -1

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_a_pdb_holds_migrations_back_and_is_never_violated(
    kube: Kube, cluster: lc.Cluster, namespace: str, clean_nodes: None
) -> None:
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    image = cluster.images["counter"]
    for name in ("g1", "g2"):
        kube.apply(labelled_counter(namespace, source, image, name=name, labels=", app: guarded"))
    kube.apply(
        f"apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: guarded, namespace: {namespace}}}\n"
        "spec:\n  minAvailable: 2\n  selector: {matchLabels: {app: guarded}}\n"
    )
    for name in ("g1", "g2"):
        wait_for(f"{name} running", lambda name=name: running(kube, namespace, name))
    wait_for(
        "the PDB computed (0 allowed)", lambda: kube.get("pdb", "guarded", namespace).get("status", {}).get("currentHealthy") == 2
    )
    watcher = ReadyWatcher(kube, namespace, "app=guarded")
    watcher.start()
    wait_for("the watcher sees both pods", lambda: len(watcher.healthy) == 2)
    watching_since = time.monotonic()

    drain = f"pdb-{namespace}"[:63]
    kube.apply(node_drain(drain, source, podSelector=f"drain-test={namespace}", targetNodes=[target], maxConcurrent=2))

    def both_waiting() -> bool:
        pods = kube.get("nodedrain", drain).get("status", {}).get("pods") or []
        reasons = [p.get("reason", "") for p in pods if p["name"] in ("g1", "g2")]  # other pods on the node are not selected
        assert len(reasons) == 2 and all(r.startswith("waiting: ") and "guarded" in r for r in reasons), reasons
        return True

    wait_for("both pods waiting on the budget", both_waiting, timeout=60)
    time.sleep(6)  # a retry interval later: still nothing moved
    assert kube.get("nodedrain", drain)["status"]["phase"] == "Draining"
    assert not kube.get("podmigrations", namespace=namespace)["items"], "no disruption while the budget allows none"

    # A third pod elsewhere makes room for exactly one disruption at a time.
    kube.apply(labelled_counter(namespace, target, image, name="g3", labels=", app: guarded"))
    done = drain_done(kube, drain, timeout=240)
    watcher.stop()
    status = done["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["counts"]["migrated"] == 2
    lowest = watcher.lowest_since(watching_since)
    assert lowest >= 2, "minAvailable 2 was violated:\n" + "\n".join(f"{c} {e}" for _, c, e in watcher.history)
    migrations = sorted(
        (m["status"]["startTime"], m["status"]["completionTime"], m["spec"]["podName"])
        for m in kube.get("podmigrations", namespace=namespace)["items"]
    )
    (_, end1, _), (start2, _, _) = migrations
    assert end1 <= start2, f"the budget allowed one disruption, so the migrations ran one after the other: {migrations}"
    for name in ("g1", "g2"):
        assert kube.get("pod", name, namespace)["spec"]["nodeName"] == target


def test_a_drain_no_node_can_take_ends_blocked_and_deletes_nothing(
    kube: Kube, cluster: lc.Cluster, namespace: str, clean_nodes: None
) -> None:
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    kube.apply(labelled_counter(namespace, source, cluster.images["counter"]))
    pod = wait_for("running", lambda: running(kube, namespace, "counter"))
    kube.run("cordon", target)
    drain = f"blocked-{namespace}"[:63]
    kube.apply(node_drain(drain, source, podSelector=f"drain-test={namespace}", targetNodes=[target]))
    status = drain_done(kube, drain, timeout=60)["status"]
    assert status["phase"] == "Blocked" and status["reason"] == "Unmigratable", status
    assert status["blockedReasons"] == [f"{namespace}/counter: no node can take it: node {target} is cordoned (unschedulable)"]
    assert "nothing was moved or evicted" in status["message"]
    counter = entries(kube.get("nodedrain", drain))["counter"]
    assert counter["outcome"] == "failed" and "unmigratablePolicy Block: not evicted" in counter["reason"]
    after = kube.get("pod", "counter", namespace)
    assert after["metadata"]["uid"] == pod["metadata"]["uid"] and after["spec"]["nodeName"] == source, "nothing deleted"
    assert not kube.get("podmigrations", namespace=namespace)["items"]
    assert cordoned(kube, source), "a Blocked drain keeps the node cordoned until it is deleted"

    # The same with unmigratablePolicy Evict: the pod is evicted, as kubectl drain would.
    kube.run("delete", "nodedrain", drain)
    assert not cordoned(kube, source)
    evicting = f"evict-{namespace}"[:63]
    kube.apply(
        node_drain(evicting, source, podSelector=f"drain-test={namespace}", targetNodes=[target], unmigratablePolicy="Evict")
    )
    status = drain_done(kube, evicting, timeout=90)["status"]
    assert status["phase"] == "Succeeded" and status["counts"]["evicted"] == 1, status
    assert kube.run("get", "pod", "counter", "-n", namespace, check=False).returncode != 0, "evicted: gone"


def test_dry_run_prints_the_plan_and_changes_nothing(kube: Kube, cluster: lc.Cluster, namespace: str, clean_nodes: None) -> None:
    source = cluster.nodes[0].name
    kube.apply(daemonset(namespace, cluster.images["counter"]))
    kube.apply(labelled_counter(namespace, source, cluster.images["counter"]))
    wait_for("running", lambda: running(kube, namespace, "counter"))
    drains_before = kube.get("nodedrains")["items"]
    result = subprocess.run(
        [CLI, "--kubeconfig", cluster.kubeconfig, "drain", source, "--dry-run", "--pod-selector", f"drain-test={namespace}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"node/{source} cordoned (dry run)"
    # Placement picks the best-fitting stand-in; which one depends on what else runs there (podmigrate's own pods too).
    others = {n.name for n in cluster.nodes if n.kind == "standin" and n.name != source}
    moves = [line.split() for line in lines if line.split()[:2] == ["migrate", f"{namespace}/counter"]]
    assert len(moves) == 1 and moves[0][2] == "->" and moves[0][3] in others, result.stdout
    assert lines[-1].startswith("dry run: 1 pod(s) would be migrated, 0 evicted") and lines[-1].endswith("nothing was changed")
    assert not cordoned(kube, source)
    assert kube.get("nodedrains")["items"] == drains_before
    assert not kube.get("podmigrations", namespace=namespace)["items"]


def test_the_drain_annotation_creates_and_removes_an_auto_drain(
    kube: Kube, cluster: lc.Cluster, namespace: str, clean_nodes: None
) -> None:
    source = cluster.nodes[0].name
    kube.apply(labelled_counter(namespace, source, cluster.images["counter"]))
    wait_for("running", lambda: running(kube, namespace, "counter"))
    auto = f"auto-{source}"
    kube.run("annotate", "node", source, "podmigrate.io/drain=true", "podmigrate.io/drain-policy=Block", "--overwrite")
    drain = wait_for("the auto drain", lambda: kube.get("nodedrains")["items"] and kube.get("nodedrain", auto), timeout=30)
    assert drain["metadata"]["labels"] == {"podmigrate.io/auto-drain": "true"}
    assert drain["spec"]["unmigratablePolicy"] == "Block" and drain["spec"]["nodeName"] == source
    done = drain_done(kube, auto, timeout=180)
    assert entries(done)["counter"]["outcome"] == "migrated", json.dumps(done["status"], indent=1)
    assert kube.get("pod", "counter", namespace)["spec"]["nodeName"] == entries(done)["counter"]["target"] != source
    assert cordoned(kube, source)
    kube.run("annotate", "node", source, "podmigrate.io/drain-")
    wait_for("the auto drain deleted", lambda: kube.run("get", "nodedrain", auto, check=False).returncode != 0, timeout=60)
    wait_for("uncordoned", lambda: not cordoned(kube, source), timeout=30)


def test_deleting_a_drain_mid_flight_finishes_what_runs_starts_nothing_and_uncordons(
    kube: Kube, cluster: lc.Cluster, namespace: str, clean_nodes: None
) -> None:
    source = cluster.nodes[0].name
    for name in ("c1", "c2", "c3"):
        kube.apply(labelled_counter(namespace, source, cluster.images["counter"], name=name))
    uids = {
        name: wait_for("running", lambda name=name: running(kube, namespace, name))["metadata"]["uid"]
        for name in ("c1", "c2", "c3")
    }
    drain = f"cancel-{namespace}"[:63]
    kube.apply(node_drain(drain, source, podSelector=f"drain-test={namespace}", maxConcurrent=1))
    wait_for(
        "a migration in flight",
        lambda: any(p.get("outcome") == "in-progress" for p in kube.get("nodedrain", drain).get("status", {}).get("pods", [])),
        interval=0.1,
    )
    kube.run("delete", "nodedrain", drain, "--wait=false")
    wait_for(
        "the drain gone (finalizer released)",
        lambda: kube.run("get", "nodedrain", drain, check=False).returncode != 0,
        timeout=120,
    )
    assert not cordoned(kube, source), "uncordoned: the drain had cordoned it"
    pods = {p["metadata"]["name"]: p for p in kube.get("pods", namespace=namespace)["items"]}
    assert set(pods) == {"c1", "c2", "c3"} and all(p["status"]["phase"] == "Running" for p in pods.values()), "no pod lost"
    moved = {name for name, p in pods.items() if p["spec"]["nodeName"] != source}
    stayed = {name for name, p in pods.items() if p["metadata"]["uid"] == uids[name] and p["spec"]["nodeName"] == source}
    assert moved and stayed and moved | stayed == {"c1", "c2", "c3"}, (
        f"the one in flight finished, the rest never started: {moved}"
    )
    wait_for("its PodMigrations collected", lambda: not kube.get("podmigrations", namespace=namespace)["items"], timeout=60)


def test_a_drain_goes_on_after_the_control_service_restarts(
    kube: Kube, cluster: lc.Cluster, namespace: str, podmigrate: Podmigrate, clean_nodes: None
) -> None:
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    names = ("r1", "r2", "r3")
    for name in names:
        kube.apply(labelled_counter(namespace, source, cluster.images["counter"], name=name))
    for name in names:
        wait_for("counting", lambda name=name: len(numbers(kube, namespace, name)) >= 2)
    drain = f"restart-{namespace}"[:63]
    kube.apply(node_drain(drain, source, podSelector=f"drain-test={namespace}", targetNodes=[target], maxConcurrent=1))
    wait_for(
        "the first migration started",
        lambda: kube.get("podmigrations", namespace=namespace)["items"],
        interval=0.1,
    )
    before = {name: numbers(kube, namespace, name)[-1] for name in names[1:]}
    restart_control_service(podmigrate)
    status = drain_done(kube, drain, timeout=240)["status"]
    assert status["phase"] == "Succeeded" and status["counts"]["migrated"] == 3, json.dumps(status, indent=1)
    migrations = kube.get("podmigrations", namespace=namespace)["items"]
    assert sorted(m["spec"]["podName"] for m in migrations) == sorted(names), "one PodMigration per pod, none twice"
    for name in names:
        assert kube.get("pod", name, namespace)["spec"]["nodeName"] == target
    for name, last in before.items():
        first = wait_for("output after the move", lambda name=name: numbers(kube, namespace, name)[:1])[0]
        assert first > last, f"{name} continued from its checkpoint"
