"""End to end: exactly one copy of the pod, whatever breaks (the fault matrix of docs/faults.md).

Each case breaks one thing at one moment of a real migration on the local cluster and then checks
the same invariants:

* exactly one pod of that name exists and runs (never zero, never two);
* it counts on from where it was (the restored copy continued from the checkpoint, or the source,
  never frozen for good, went on); nothing it counted went backwards;
* the PodMigration ended (``Succeeded``, or ``Failed`` with the reason and the pod running) and can
  be deleted (its finalizer lets go);
* no checkpoint image of it is left in the registry.

The controller is killed when the PodMigration's recorded step becomes the one under test, seen
through a watch (``kubectl get -w``), so the kill lands while that step runs or just after.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import cluster as lc
from localcluster import registryauth
from tests.conftest import Kube, Podmigrate, wait_for
from tests.migrator.workloads import counter_pod, migration

pytestmark = pytest.mark.cluster

STEPS = ("Validate", "PrepareTarget", "Checkpoint", "RemoveSource", "CreateTarget", "WaitReady", "Cleanup")


class StepWatch(threading.Thread):
    """``kubectl get podmigration -w``: calls ``at_step`` the moment the recorded step becomes ``step``."""

    def __init__(self, kube: Kube, namespace: str, name: str, *, step: str, action: Any) -> None:
        super().__init__(daemon=True)
        self.step, self.action = step, action
        self.seen: list[str] = []
        self.fired = threading.Event()
        self.proc = subprocess.Popen(
            # The collection, selected by name: the watch starts before the PodMigration exists and misses nothing.
            [kube.cluster.kubectl, f"--kubeconfig={kube.kubeconfig}", "get", "podmigrations", "-n", namespace, "-w",
             f"--field-selector=metadata.name={name}", "-o", "jsonpath={.status.step}{'\\n'}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            step = line.strip()
            if step and (not self.seen or self.seen[-1] != step):
                self.seen.append(step)
            if step == self.step and not self.fired.is_set():
                self.action()
                self.fired.set()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)
        self.join(timeout=5)


@contextlib.contextmanager
def broken_at(kube: Kube, namespace: str, manifest: str, *, step: str, action: Any) -> Iterator[int]:
    """Create the PodMigration ``manifest`` (of the pod counter) and run ``action`` the moment its recorded step
    becomes ``step``; yields what the counter had counted a moment before the move."""
    watch = StepWatch(kube, namespace, "move-counter", step=step, action=action)
    watch.start()
    time.sleep(0.5)  # the watch is established
    try:
        kube.apply(manifest)
        before = max(numbers(kube, namespace, "counter"))
        assert watch.fired.wait(timeout=60), f"never saw step {step}: {watch.seen}"
        yield before
    finally:
        watch.close()


def numbers(kube: Kube, namespace: str, pod: str) -> list[int]:
    result = kube.run("logs", pod, "-n", namespace, check=False)
    return [int(x) for x in result.stdout.split() if x.isdigit()] if result.returncode == 0 else []


def running_copies(kube: Kube, namespace: str, pod: str) -> list[dict[str, Any]]:
    pods = kube.get("pods", namespace=namespace)["items"]
    return [p for p in pods if p["metadata"]["name"] == pod and not p["metadata"].get("deletionTimestamp")]


def registry_read(podmigrate: Podmigrate, repository: str) -> dict[str, str]:
    """A pull token for a checkpoint repository (the registry refuses anonymous reads): the agents' credentials."""
    cluster = podmigrate.installation.cluster
    creds = cluster.registry_credentials(registryauth.PUSH_USER).for_registry(cluster.registry)
    return registryauth.bearer_headers(registry=cluster.registry, credentials=creds, scope=f"repository:{repository}:pull")


def registry_tags(podmigrate: Podmigrate, namespace: str, pod: str) -> list[str]:
    registry, _, path = podmigrate.installation.repository.partition("/")
    url = f"http://{registry}/v2/{path}/{namespace}/{pod}/tags/list"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=registry_read(podmigrate, f"{path}/{namespace}/{pod}"))
    try:
        with opener.open(request, timeout=5) as resp:
            return list(json.loads(resp.read()).get("tags") or [])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


def manifests_left(podmigrate: Podmigrate, namespace: str, pod: str) -> list[str]:
    """Tags whose manifest still exists (a deleted manifest's tag may linger in the tag list of registry 2.8)."""
    registry, _, path = podmigrate.installation.repository.partition("/")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    left = []
    token = registry_read(podmigrate, f"{path}/{namespace}/{pod}")
    for tag in registry_tags(podmigrate, namespace, pod):
        request = urllib.request.Request(
            f"http://{registry}/v2/{path}/{namespace}/{pod}/manifests/{tag}", method="HEAD",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json", **token},
        )  # fmt: skip
        try:
            with opener.open(request, timeout=5):
                left.append(tag)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
    return left


def assert_exactly_one_copy_counting_on(
    kube: Kube, podmigrate: Podmigrate, namespace: str, *, before: int, migration_name: str
) -> dict[str, Any]:
    status = podmigrate.wait_done(namespace, migration_name, timeout=240)["status"]
    (pod,) = wait_for(
        "exactly one copy, running",
        lambda: (c if len(c := running_copies(kube, namespace, "counter")) == 1 and c[0]["status"].get("phase") == "Running"
                 else None),
        timeout=90,
    )  # fmt: skip
    wait_for("counting on", lambda: max(numbers(kube, namespace, "counter") or [0]) >= before + 2, timeout=60)
    counted = numbers(kube, namespace, "counter")
    assert all(b == a + 1 for a, b in itertools.pairwise(counted)), f"never back, never twice: {counted}"
    assert counted[-1] > before
    obj = podmigrate.migration(namespace, migration_name)
    # Its finalizer lets go once it is deleted (a finished migration holds nothing back).
    kube.run("delete", "podmigration", migration_name, "-n", namespace, "--timeout=30s")
    if status["phase"] == "Failed":
        assert status.get("reason") and status.get("message"), status
    wait_for("no checkpoint image left", lambda: not manifests_left(podmigrate, namespace, "counter"), timeout=30)
    return {"status": status, "pod": pod, "migration": obj}


@pytest.fixture
def counter(kube: Kube, cluster: lc.Cluster, namespace: str) -> Iterator[tuple[str, str]]:
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    kube.apply(counter_pod(namespace, source, cluster.images["counter"]))
    wait_for("counting", lambda: len(numbers(kube, namespace, "counter")) >= 2)
    yield source, target


@pytest.mark.parametrize("step", STEPS)
def test_the_controller_killed_at_each_step_leaves_exactly_one_copy(
    kube: Kube, podmigrate: Podmigrate, namespace: str, counter: tuple[str, str], step: str
) -> None:
    _source, target = counter
    with broken_at(kube, namespace, migration(namespace, "counter", target=target), step=step,
                   action=podmigrate.kill_controller) as before:  # fmt: skip
        killed_at = podmigrate.migration(namespace, "move-counter").get("status", {}).get("step")
        time.sleep(1)
        podmigrate.start_controller()
        outcome = assert_exactly_one_copy_counting_on(kube, podmigrate, namespace, before=before, migration_name="move-counter")
    status = outcome["status"]
    print(f"\nkilled at {step} (recorded step then: {killed_at}): {status['phase']} {status.get('reason', '')}: "
          f"{status.get('message', '')}")  # fmt: skip
    assert status["phase"] == "Succeeded", "a restarted control service resumes from status"
    assert outcome["pod"]["spec"]["nodeName"] == target


@pytest.mark.parametrize("step", ["Checkpoint", "RemoveSource", "WaitReady"])
def test_the_leaders_pod_deleted_mid_migration_the_deployment_finishes_it(
    kube: Kube, podmigrate: Podmigrate, namespace: str, counter: tuple[str, str], step: str
) -> None:
    """What an operator (or a node drain) does: ``kubectl delete pod`` of the leading controller. The
    Deployment's other replica, or the pod that replaces the deleted one, picks the migration up from status."""
    if not hasattr(podmigrate.installation, "delete_controller_pod"):
        pytest.skip("podmigrate runs as host processes here (PODMIGRATE_INSTALL=processes): there is no pod to delete")
    _source, target = counter
    deleted: list[str] = []
    with broken_at(kube, namespace, migration(namespace, "counter", target=target), step=step,
                   action=lambda: deleted.append(podmigrate.installation.delete_controller_pod())) as before:  # fmt: skip
        outcome = assert_exactly_one_copy_counting_on(kube, podmigrate, namespace, before=before, migration_name="move-counter")
    status = outcome["status"]
    print(f"\nleader pod {deleted} deleted at {step}; {podmigrate.leader()} finished: {status['phase']} "
          f"{status.get('reason', '')}")  # fmt: skip
    assert deleted and podmigrate.leader().rpartition("_")[0] not in ("", *deleted)
    assert status["phase"] == "Succeeded", status
    assert outcome["pod"]["spec"]["nodeName"] == target
    podmigrate.start_controller()  # two replicas again before the next test


def test_the_standby_takes_over_when_the_leader_dies_mid_migration(
    kube: Kube, podmigrate: Podmigrate, namespace: str, counter: tuple[str, str]
) -> None:
    _source, target = counter
    podmigrate.start_controller(replica=1)  # as processes; the Deployment runs two replicas already
    try:
        leader = wait_for("a leader", podmigrate.leader)
        with broken_at(kube, namespace, migration(namespace, "counter", target=target), step="Checkpoint",
                       action=podmigrate.kill_controller) as before:  # fmt: skip
            pass
        took_over = time.monotonic()
        wait_for("the standby leading", lambda: podmigrate.leader() not in ("", leader), timeout=30)
        print(f"\nleader {leader} killed at Checkpoint; {podmigrate.leader()} leads {time.monotonic() - took_over:.1f}s later")
        outcome = assert_exactly_one_copy_counting_on(kube, podmigrate, namespace, before=before, migration_name="move-counter")
        assert outcome["status"]["phase"] == "Succeeded", outcome["status"]
        assert outcome["pod"]["spec"]["nodeName"] == target
    finally:
        podmigrate.start_controller()
        if hasattr(podmigrate.installation, "standby_health"):  # as processes: back to replica 0 alone, leading
            podmigrate.kill_controller(replica=1)
            wait_for(
                "replica 0 leading again", lambda: not podmigrate.leader().startswith("podmigrate-controller-1-"), timeout=30
            )


@pytest.mark.parametrize("apart", [0.0, 0.6], ids=["together", "0.6s-apart"])
def test_two_migrations_of_one_pod_at_once_move_it_once(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, counter: tuple[str, str], apart: float
) -> None:
    source, target = counter
    other = next(n.name for n in cluster.nodes if n.name not in (source, target) and n.kind == "standin")
    before = max(numbers(kube, namespace, "counter"))
    if apart:
        kube.apply(migration(namespace, "counter", name="first", target=target))
        time.sleep(apart)
        kube.apply(migration(namespace, "counter", name="second", target=other))
    else:
        kube.apply(
            migration(namespace, "counter", name="first", target=target)
            + "---\n"
            + migration(namespace, "counter", name="second", target=other)
        )
    first = podmigrate.wait_done(namespace, "first")["status"]
    second = podmigrate.wait_done(namespace, "second")["status"]
    outcomes = sorted([(first["phase"], first.get("reason")), (second["phase"], second.get("reason"))])
    assert outcomes == [("Failed", "AlreadyMigrating"), ("Succeeded", "Migrated")], (first, second)
    (pod,) = wait_for("one copy", lambda: c if len(c := running_copies(kube, namespace, "counter")) == 1 else None)
    assert pod["spec"]["nodeName"] == (target if first["phase"] == "Succeeded" else other)
    wait_for("counting on", lambda: max(numbers(kube, namespace, "counter") or [0]) >= before + 2, timeout=60)
    for name in ("first", "second"):
        kube.run("delete", "podmigration", name, "-n", namespace, "--timeout=30s")  # finalizers released: no hang


def test_a_restore_that_never_turns_ready_ends_at_the_timeout_with_the_pod_kept_on_its_source(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    """Ready only while a file it wrote at start is there; moved without its emptyDir files, it never is again."""
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    loop = "touch /data/ready; i=0; while true; do i=$((i+1)); echo $i; sleep 1; done"
    kube.apply(
        f"""apiVersion: v1
kind: Pod
metadata: {{name: counter, namespace: {namespace}}}
spec:
  nodeName: {source}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {cluster.images["counter"]}
    command: ["/bin/sh", "-c", "{loop}"]
    readinessProbe: {{exec: {{command: ["test", "-f", "/data/ready"]}}, periodSeconds: 1}}
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, emptyDir: {{}}}}]
"""
    )
    wait_for("Ready", lambda: any(c["type"] == "Ready" and c["status"] == "True"
                                  for c in kube.get("pod", "counter", namespace)["status"].get("conditions") or []))  # fmt: skip
    before = max(numbers(kube, namespace, "counter"))
    kube.apply(migration(namespace, "counter", target=target, extra="  timeoutSeconds: 15\n  deleteEmptyDirData: true\n"))
    status = podmigrate.wait_done(namespace, "move-counter", timeout=180)["status"]
    print(f"\n{status['phase']} {status.get('reason')}: {status.get('message')}")
    assert (status["phase"], status["reason"]) == ("Failed", "Timeout"), status
    assert "restored on its source node" in status["message"] and "not Ready" in status["message"]
    (pod,) = wait_for("one copy", lambda: c if len(c := running_copies(kube, namespace, "counter")) == 1 else None)
    assert pod["spec"]["nodeName"] == source
    wait_for("counting on, from the checkpoint", lambda: max(numbers(kube, namespace, "counter") or [0]) >= before + 2)
    assert min(numbers(kube, namespace, "counter")) > 1, "restored (state kept), not started cold"
    wait_for("no checkpoint image left", lambda: not manifests_left(podmigrate, namespace, "counter"), timeout=30)


def agent_stage_reached(cluster: lc.Cluster, *, stage: str, node: str, pod_uid: str, since: float) -> bool:
    """Is the source agent at ``stage`` now, as seen from outside it: the pod's cgroup FROZEN (freeze), the
    kubelet writing its archive (checkpoint), the archive written and not yet deleted, so being packed and
    pushed (push)?"""
    checkpoints = Path(next(n.state_dir for n in cluster.nodes if n.name == node)) / "kubelet" / "checkpoints"
    if stage == "freeze":
        for state in Path("/sys/fs/cgroup/freezer").glob(f"localcluster-n*/{pod_uid}/*/freezer.state"):
            with contextlib.suppress(OSError):
                if state.read_text().strip() == "FROZEN":
                    return True
        return False
    if stage == "checkpoint":
        return any(checkpoints.glob(".work-*"))
    for archive in checkpoints.glob("checkpoint-counter_*.tar"):
        with contextlib.suppress(FileNotFoundError):  # pushed and deleted in between
            if archive.stat().st_mtime >= since:
                return True
    return False


@pytest.mark.parametrize("stage", ["freeze", "checkpoint", "push"])
def test_the_source_agent_killed_at_each_of_its_stages_leaves_exactly_one_copy(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, counter: tuple[str, str], stage: str
) -> None:
    source, target = counter
    uid = kube.get("pod", "counter", namespace)["metadata"]["uid"]
    killed = threading.Event()
    started = time.time()

    def watch_and_kill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed.is_set():
            if agent_stage_reached(cluster, stage=stage, node=source, pod_uid=uid, since=started):
                podmigrate.kill_agent(source)
                killed.set()
                return
            time.sleep(0.002)

    killer = threading.Thread(target=watch_and_kill, daemon=True)
    killer.start()
    try:
        kube.apply(migration(namespace, "counter", target=target))
        before = max(numbers(kube, namespace, "counter"))
        assert killed.wait(timeout=60), f"the agent never reached {stage}"
        time.sleep(1)
        podmigrate.wait_agent(source)  # its DaemonSet pod restarted
        outcome = assert_exactly_one_copy_counting_on(kube, podmigrate, namespace, before=before, migration_name="move-counter")
    finally:
        killed.set()
        killer.join(timeout=5)
        podmigrate.wait_agent(source)
    status = outcome["status"]
    print(f"\nagent killed at {stage}: {status['phase']} {status.get('reason', '')}: {status.get('message', '')}")


def test_the_registry_gone_during_the_checkpoint_leaves_the_source_running(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, counter: tuple[str, str]
) -> None:
    source, target = counter
    try:
        with broken_at(kube, namespace, migration(namespace, "counter", target=target), step="Checkpoint",
                       action=cluster.kill_registry) as before:  # fmt: skip
            status = podmigrate.wait_done(namespace, "move-counter", timeout=120)["status"]
    finally:
        if cluster.registry_pid() is None:
            cluster.start_registry()
    print(f"\nregistry killed during the checkpoint: {status['phase']} {status.get('reason', '')}: {status.get('message', '')}")
    if status["phase"] == "Failed":  # the push failed: the source was thawed and runs on where it was
        assert status["reason"] == "CheckpointFailed" and "left running on" in status["message"], status
    (pod,) = wait_for("one copy", lambda: c if len(c := running_copies(kube, namespace, "counter")) == 1 else None)
    assert pod["spec"]["nodeName"] == (source if status["phase"] == "Failed" else target)
    wait_for("counting on", lambda: max(numbers(kube, namespace, "counter") or [0]) >= before + 2, timeout=60)
    counted = numbers(kube, namespace, "counter")
    assert all(b == a + 1 for a, b in itertools.pairwise(counted)), counted
    wait_for("no checkpoint image left", lambda: not manifests_left(podmigrate, namespace, "counter"), timeout=30)


def test_a_drain_takes_the_pods_that_land_on_the_node_while_it_runs(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    source = cluster.nodes[0].name
    targets = [n.name for n in cluster.nodes[1:] if n.kind == "standin"]
    for name in ("first", "second"):
        kube.apply(counter_pod(namespace, source, cluster.images["counter"], name=name).replace(
            "labels: {app: " + name + "}", f"labels: {{app: {name}, drain-test: {namespace}}}"))  # fmt: skip
    wait_for("counting", lambda: all(len(numbers(kube, namespace, n)) >= 2 for n in ("first", "second")))
    drain = f"arrivals-{namespace}"[:63]
    kube.apply(json.dumps({
        "apiVersion": "podmigrate.io/v1alpha1", "kind": "NodeDrain", "metadata": {"name": drain},
        "spec": {"nodeName": source, "podSelector": f"drain-test={namespace}", "targetNodes": targets, "maxConcurrent": 1},
    }))  # fmt: skip
    try:
        wait_for("the drain under way", lambda: (kube.get("nodedrain", drain).get("status") or {}).get("phase") == "Draining")
        kube.apply(counter_pod(namespace, source, cluster.images["counter"], name="late").replace(
            "labels: {app: late}", f"labels: {{app: late, drain-test: {namespace}}}"))  # fmt: skip
        status = wait_for(
            "the drain to finish",
            lambda: s if (s := kube.get("nodedrain", drain).get("status") or {}).get("phase") in ("Succeeded", "Failed", "Blocked")
            else None,
            timeout=240,
        )  # fmt: skip
        print(f"\nNodeDrain {drain}: {status['phase']} {status.get('message', '')}")
        assert status["phase"] == "Succeeded", status
        assert {p["name"]: p["outcome"] for p in status["pods"]} == {
            "first": "migrated",
            "second": "migrated",
            "late": "migrated",
        }
        for name in ("first", "second", "late"):
            assert kube.get("pod", name, namespace)["spec"]["nodeName"] in targets
    finally:
        kube.run("delete", "nodedrain", drain, "--wait=true", "--timeout=60s", check=False)
        kube.run("uncordon", source, check=False)


def test_the_target_node_that_stops_answering_right_after_the_restore_never_gets_a_second_copy_beside_it(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, counter: tuple[str, str]
) -> None:
    """The target's kubelet stops (its containers run on, unreported): the migration times out and rolls back,
    but it waits for the node to confirm the restored pod gone before restoring on the source: at most one copy."""
    source, target = counter
    manifest = migration(namespace, "counter", target=target, extra="  timeoutSeconds: 15\n")
    try:
        with broken_at(
            kube, namespace, manifest, step="WaitReady", action=lambda: cluster.pause_node(target, paused=True)
        ) as before:
            waiting = wait_for(
                "the rollback waiting for the silent node",
                lambda: (s := podmigrate.migration(namespace, "move-counter").get("status") or {}).get("waitingFor") and s,
                timeout=90,
            )  # fmt: skip
            assert waiting["step"] == "RestoreSource" and target in waiting["waitingFor"], waiting
            pods = [p for p in kube.get("pods", namespace=namespace)["items"] if p["metadata"]["name"] == "counter"]
            assert [p["spec"]["nodeName"] for p in pods] == [target], "nothing started on the source beside it"
            assert pods[0]["metadata"].get("deletionTimestamp"), "deleted, waiting for its node to confirm"
    finally:
        cluster.pause_node(target, paused=False)
    status = podmigrate.wait_done(namespace, "move-counter", timeout=120)["status"]

    # The next test moves pods to this node: wait until the node lifecycle controller has lifted what it put on
    # the silent node (NotReady, the unreachable/not-ready taints), or placement refuses it (NodeDoesNotFit).
    def recovered() -> bool:
        node = kube.get("node", target)
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions") or [])
        taints = {t["key"] for t in node["spec"].get("taints") or []}
        return ready and not taints & {"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"}

    wait_for(f"{target} Ready and untainted again", recovered, timeout=120)
    print(f"\ntarget paused at WaitReady: {status['phase']} {status.get('reason', '')}: {status.get('message', '')}")
    assert (status["phase"], status["reason"]) == ("Failed", "Timeout"), status
    (pod,) = wait_for("one copy", lambda: c if len(c := running_copies(kube, namespace, "counter")) == 1 else None)
    assert pod["spec"]["nodeName"] == source
    wait_for("counting on", lambda: max(numbers(kube, namespace, "counter") or [0]) >= before + 2, timeout=60)


def test_a_registry_that_stalls_during_the_checkpoint_ends_at_the_deadline_with_the_source_running(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, counter: tuple[str, str]
) -> None:
    """Connections accepted, never answered: the migration's deadline ends the wait, the agent undoes the
    checkpoint (the push cancelled, the pod thawed) and the source runs on."""
    source, target = counter
    manifest = migration(namespace, "counter", target=target, extra="  timeoutSeconds: 20\n")
    try:
        with broken_at(
            kube, namespace, manifest, step="Checkpoint", action=lambda: cluster.pause_registry(paused=True)
        ) as before:
            status = podmigrate.wait_done(namespace, "move-counter", timeout=120)["status"]
    finally:
        cluster.pause_registry(paused=False)
    print(f"\nregistry stalled during the checkpoint: {status['phase']} {status.get('reason', '')}: {status.get('message', '')}")
    assert (status["phase"], status["reason"]) == ("Failed", "Timeout"), status
    assert "while in step Checkpoint" in status["message"] and "left running on" in status["message"]
    (pod,) = wait_for("one copy", lambda: c if len(c := running_copies(kube, namespace, "counter")) == 1 else None)
    assert pod["spec"]["nodeName"] == source
    wait_for("counting on", lambda: max(numbers(kube, namespace, "counter") or [0]) >= before + 2, timeout=60)
    wait_for("no checkpoint image left", lambda: not manifests_left(podmigrate, namespace, "counter"), timeout=60)


@pytest.mark.parametrize("step", ["ThawSource", "RestoreSource"])
def test_the_controller_killed_in_a_rollback_step_finishes_it_after_its_restart(
    kube: Kube, podmigrate: Podmigrate, namespace: str, counter: tuple[str, str], step: str
) -> None:
    from localcluster.node.restoring import FAIL_CHECKPOINTS_ANNOTATION, FAIL_RESTORES_ANNOTATION

    source, target = counter
    node, annotation = (source, FAIL_CHECKPOINTS_ANNOTATION) if step == "ThawSource" else (target, FAIL_RESTORES_ANNOTATION)
    kube.run("annotate", "node", node, f"{annotation}=injected for the fault matrix", "--overwrite")
    try:
        with broken_at(kube, namespace, migration(namespace, "counter", target=target), step=step,
                       action=podmigrate.kill_controller) as before:  # fmt: skip
            time.sleep(1)
            podmigrate.start_controller()
            outcome = assert_exactly_one_copy_counting_on(
                kube, podmigrate, namespace, before=before, migration_name="move-counter"
            )
    finally:
        kube.run("annotate", "node", node, f"{annotation}-", check=False)
    status = outcome["status"]
    print(f"\nkilled in {step}: {status['phase']} {status.get('reason', '')}: {status.get('message', '')}")
    assert status["phase"] == "Failed" and outcome["pod"]["spec"]["nodeName"] == source
    assert ("left running on" if step == "ThawSource" else "restored on its source node") in status["message"]


def test_the_controller_killed_while_recreating_after_a_double_failure_still_ends_with_one_running_copy(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, counter: tuple[str, str]
) -> None:
    """The restore fails on the target and on the source: the pod is recreated from its spec (state lost,
    said so), never gone; the controller killed in that step finishes it after its restart."""
    from localcluster.node.restoring import FAIL_RESTORES_ANNOTATION

    source, target = counter
    for node in (source, target):
        kube.run("annotate", "node", node, f"{FAIL_RESTORES_ANNOTATION}=injected for the fault matrix", "--overwrite")
    try:
        with broken_at(kube, namespace, migration(namespace, "counter", target=target), step="Recreate",
                       action=podmigrate.kill_controller):  # fmt: skip
            for node in (source, target):  # the recreated pod starts cold, wherever the scheduler puts it
                kube.run("annotate", "node", node, f"{FAIL_RESTORES_ANNOTATION}-", check=False)
            time.sleep(1)
            podmigrate.start_controller()
            status = podmigrate.wait_done(namespace, "move-counter", timeout=180)["status"]
    finally:
        for node in (source, target):
            kube.run("annotate", "node", node, f"{FAIL_RESTORES_ANNOTATION}-", check=False)
    print(f"\nkilled in Recreate: {status['phase']} {status.get('reason', '')}: {status.get('message', '')}")
    assert (status["phase"], status["reason"]) == ("Failed", "RestoreFailed"), status
    assert "recreated from its original spec" in status["message"] and "state lost" in status["message"]
    wait_for("one copy, running", lambda: c if len(c := running_copies(kube, namespace, "counter")) == 1
             and c[0]["status"].get("phase") == "Running" else None, timeout=90)  # fmt: skip
    wait_for("counting again", lambda: len(numbers(kube, namespace, "counter")) >= 2, timeout=60)
    wait_for("no checkpoint image left", lambda: not manifests_left(podmigrate, namespace, "counter"), timeout=30)
