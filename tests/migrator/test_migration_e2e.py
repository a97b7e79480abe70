"""End to end: PodMigrations on the real local cluster, driven by the real control service and agents."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from localcluster import cluster as lc
from tests.conftest import Kube, Podmigrate, wait_for
from tests.migrator.workloads import counter_pod, http, migrate_while_writing, migration, pod_ip, ready, warmup_pod

pytestmark = pytest.mark.cluster

CHECKPOINT_STAGES = ("freeze", "dump", "upload")
RESTORE_STAGES = ("fetch", "restore", "ready")


def assert_stages_in_time_order(status: Mapping[str, Any], *, freeze_first: bool = True) -> None:
    """``status.stages`` of a finished migration: the source agent's freeze, dump, upload and the target kubelet's
    fetch, restore, ready, each side in the order it runs, the checkpoint's before the restore's, all inside the
    migration's startTime..completionTime. ``freeze_first``: the agent freezes before the dump (not on containerd,
    where the CRIU hook stops the container at the end of its dump and the agent freezes it then)."""
    from migrator.units import status_time as at

    records = status.get("stages") or []
    begin, end = at(status["startTime"]), at(status["completionTime"])
    for r in records:
        assert begin <= at(r["start"]) <= at(r["end"]) <= end, f"{r} outside {begin}..{end}"
    agent = [r for r in records if r["source"] == "agent" and r["node"] == status["sourceNode"]]
    kubelet = [r for r in records if r["source"] == "kubelet" and r["node"] == status["targetNode"]]
    assert set(CHECKPOINT_STAGES) <= {r["name"] for r in agent}, records
    assert set(RESTORE_STAGES) <= {r["name"] for r in kubelet}, records

    def one(side: list[dict[str, Any]], name: str, container: str | None) -> dict[str, Any]:
        (found,) = [r for r in side if r["name"] == name and r.get("container") == container]
        return found

    for c in status["containers"]:
        dump, upload = one(agent, "dump", c["name"]), one(agent, "upload", c["name"])
        assert at(dump["start"]) <= at(upload["start"]) and at(dump["end"]) <= at(upload["end"]), (dump, upload)
        if freeze_first:
            assert at(one(agent, "freeze", None)["start"]) <= at(dump["start"])
        else:  # the container's own freeze, once its dump stopped it
            assert at(one(agent, "freeze", c["name"])["end"]) <= at(upload["end"])
        fetch, restore, ready = (one(kubelet, name, c["name"]) for name in RESTORE_STAGES)
        assert at(fetch["start"]) <= at(fetch["end"]) <= at(restore["end"]) <= at(ready["end"])
        assert (restore["start"], ready["start"], ready["end"]) == (fetch["end"], restore["end"], status["readyAt"])
    assert max(at(r["end"]) for r in agent) <= min(at(r["start"]) for r in kubelet), "the checkpoint's stages come first"


def test_counter_moves_to_the_other_node_and_continues(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    source = cluster.nodes[0].name
    kube.apply(counter_pod(namespace, source, cluster.images["counter"]))
    wait_for("counter at 3", lambda: len(kube.logs("counter", namespace).split()) >= 3)
    old_uid = kube.get("pod", "counter", namespace)["metadata"]["uid"]
    kube.apply(migration(namespace, "counter"))
    before = int(kube.logs("counter", namespace).split()[-1])
    done = podmigrate.wait_done(namespace, "move-counter")
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    # No targetNode: the control service picked one (the least loaded of those that fit, so not always node-2).
    assert status["sourceNode"] == source and status["targetNode"] not in (source, None)
    target = status["targetNode"]
    pod = kube.get("pod", "counter", namespace)
    assert pod["metadata"]["uid"] != old_uid and pod["spec"]["nodeName"] == target
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    numbers = wait_for("restored output", lambda: [int(x) for x in kube.logs("counter", namespace).split()][:1])
    assert numbers[0] > before, f"continued from the checkpoint (>{before}), never reset: {numbers}"
    (container,) = status["containers"]
    assert "@sha256:" in container["image"] and container["archiveBytes"] > 0
    assert {p["name"] for p in status["phases"]} >= {
        "validate",
        "checkpoint",
        "prepare-target",
        "remove-source",
        "create-target",
        "restore",
    }
    assert float(status["downtimeSeconds"]) > 0
    assert len(status["traceID"]) == 32

    # The story is told by Events (kubectl describe) and by the metrics endpoint.
    described = kube.run("describe", "podmigration", "move-counter", "-n", namespace).stdout
    for step in ("Validate", "PrepareTarget", "Checkpoint", "RemoveSource", "CreateTarget", "WaitReady", "Cleanup", "Migrated"):
        assert step in described, f"no {step} event in:\n{described}"
    pod_events = kube.run(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=Pod,involvedObject.name=counter"
    ).stdout
    assert "[move-counter]" in pod_events
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{podmigrate.installation.health_address}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert 'podmigrate_migrations_total{outcome="Succeeded",reason="Migrated"}' in metrics
    assert "podmigrate_migration_downtime_seconds_count" in metrics
    assert 'podmigrate_migration_phase_duration_seconds_count{phase="checkpoint"}' in metrics
    archived = [line for line in metrics.splitlines() if line.startswith("podmigrate_checkpoint_archive_bytes_total ")]
    assert archived and float(archived[0].split()[1]) >= container["archiveBytes"]

    # And by the timeline, on the terminal and as a picture.
    import subprocess
    import sys
    import xml.etree.ElementTree as ET

    cli = [str(Path(sys.executable).parent / "kubectl-migrate"), f"--kubeconfig={cluster.kubeconfig}", "-n", namespace]
    text = subprocess.run([*cli, "timeline", "move-counter", "--ascii"], capture_output=True, text=True, check=True).stdout
    for phase in status["phases"]:
        assert phase["name"] in text
    assert "downtime" in text
    svg_path = Path(cluster.state_dir) / "move-counter.svg"
    subprocess.run([*cli, "timeline", "move-counter", "-o", "svg", "--file", str(svg_path)], capture_output=True, check=True)
    from datetime import UTC, datetime

    from migrator import timeline

    tl = timeline.build(kube.get("podmigration", "move-counter", namespace), now=datetime.now(UTC))
    assert abs(sum(bar.duration for bar in tl.bars) - tl.total) <= 0.05 * tl.total, "the phases add up to the total"
    root = ET.parse(svg_path).getroot()
    assert root.tag.endswith("svg") and "checkpoint" in "".join(root.itertext())
    # Where the checkpoint's and the restore's time went: status.stages, drawn under their phases.
    assert_stages_in_time_order(status)
    assert {(s.phase, s.name) for s in tl.stages} >= {
        *(("checkpoint", name) for name in CHECKPOINT_STAGES),
        *(("restore", name) for name in RESTORE_STAGES),
    }
    for name in (*CHECKPOINT_STAGES, *RESTORE_STAGES):
        assert re.search(rf"^   [|`] {name} ", text, re.MULTILINE), f"no {name} row under its phase in:\n{text}"
    assert len([g for g in root.iter() if g.get("class") == "stage"]) == len(tl.stages)


def test_warm_app_serves_again_at_once_with_its_memory(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    warmup = 15
    kube.apply(warmup_pod(namespace, cluster.nodes[0].name, cluster.images["warmup"], warmup=warmup))
    wait_for("app warm and Ready", lambda: ready(kube, namespace, "app"), timeout=90)
    ip = pod_ip(kube, namespace, "app")
    for i in range(10):
        http("POST", f"http://{ip}:8080/write?key=k{i}&value=v{i}")
    before = http("GET", f"http://{ip}:8080/state")
    kube.apply(migration(namespace, "app"))
    status = podmigrate.wait_done(namespace, "move-app")["status"]
    assert status["phase"] == "Succeeded", status
    pod = wait_for("Ready on the target", lambda: ready(kube, namespace, "app"))
    standins = {n.name for n in cluster.nodes if n.kind == "standin"}
    assert pod["spec"]["nodeName"] in standins - {cluster.nodes[0].name}, "the best-fitting other stand-in"
    restore = next(p for p in status["phases"] if p["name"] == "restore")
    from migrator.units import status_time as parse_time

    took = (parse_time(restore["end"]) - parse_time(restore["start"])).total_seconds()
    assert took < warmup / 2, f"serving again took {took:.1f}s; a cold start warms up for {warmup}s"
    after = http("GET", f"http://{pod['status']['podIP']}:8080/state")
    assert after["boot_id"] == before["boot_id"] and after["warm"], "the same warmed-up process, not a new one"
    assert http("GET", f"http://{pod['status']['podIP']}:8080/dump") == {f"k{i}": f"v{i}" for i in range(10)}


def test_no_acknowledged_write_is_lost(kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str) -> None:
    kube.apply(warmup_pod(namespace, cluster.nodes[0].name, cluster.images["warmup"], warmup=2))
    wait_for("app Ready", lambda: ready(kube, namespace, "app"), timeout=60)
    _, writer = migrate_while_writing(kube, podmigrate, namespace, manifest=migration(namespace, "app"))
    assert writer.failed > 0, "some writes must have hit the frozen source and been left unacknowledged"


def test_checkpoint_failure_leaves_the_source_running(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    from localcluster.node.restoring import FAIL_CHECKPOINTS_ANNOTATION

    source = cluster.nodes[0].name
    kube.apply(warmup_pod(namespace, source, cluster.images["warmup"], warmup=1))
    pod = wait_for("app Ready", lambda: ready(kube, namespace, "app"), timeout=60)
    ip = pod["status"]["podIP"]
    before = http("GET", f"http://{ip}:8080/state")
    kube.run("annotate", "node", source, f"{FAIL_CHECKPOINTS_ANNOTATION}=criu dump failed (injected)", "--overwrite")
    try:
        kube.apply(migration(namespace, "app"))
        status = podmigrate.wait_done(namespace, "move-app")["status"]
    finally:
        kube.run("annotate", "node", source, f"{FAIL_CHECKPOINTS_ANNOTATION}-")
    assert status["phase"] == "Failed" and status["reason"] == "CheckpointFailed", status
    assert "criu dump failed (injected)" in status["message"], "the kubelet's own words reach the user"
    assert "left running" in status["message"]
    after_pod = kube.get("pod", "app", namespace)
    assert after_pod["metadata"]["uid"] == pod["metadata"]["uid"] and after_pod["spec"]["nodeName"] == source
    after = http("GET", f"http://{ip}:8080/state")
    assert after["boot_id"] == before["boot_id"], "the very same process serves on, not frozen"
    http("POST", f"http://{ip}:8080/write?key=after&value=1")
    events = kube.run("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=move-app", "-o", "json").stdout
    assert "CheckpointFailed" in events


def test_restore_failure_restores_the_pod_on_its_source(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    from localcluster.node.restoring import FAIL_RESTORES_ANNOTATION

    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    kube.apply(counter_pod(namespace, source, cluster.images["counter"]))
    wait_for("counting", lambda: len(kube.logs("counter", namespace).split()) >= 3)
    kube.run("annotate", "node", target, f"{FAIL_RESTORES_ANNOTATION}=CRIU version mismatch (injected)", "--overwrite")
    try:
        kube.apply(migration(namespace, "counter", target=target))
        before = int(kube.logs("counter", namespace).split()[-1])
        status = podmigrate.wait_done(namespace, "move-counter")["status"]
    finally:
        kube.run("annotate", "node", target, f"{FAIL_RESTORES_ANNOTATION}-")
    assert status["phase"] == "Failed" and status["reason"] == "RestoreFailed", status
    assert "injected" in status["message"] and "restored on its source node" in status["message"]
    pod = wait_for("running again", lambda: ready(kube, namespace, "counter"))
    assert pod["spec"]["nodeName"] == source
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    first = wait_for("restored output", lambda: [int(x) for x in kube.logs("counter", namespace).split()][:1])[0]
    assert first > before, "restored from the checkpoint, not restarted from zero"


def test_killing_the_control_service_mid_migration(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    kube.apply(warmup_pod(namespace, cluster.nodes[0].name, cluster.images["warmup"], warmup=1, ballast=300))
    pod = wait_for("app Ready", lambda: ready(kube, namespace, "app"), timeout=90)
    ip = pod["status"]["podIP"]
    for i in range(5):
        http("POST", f"http://{ip}:8080/write?key=k{i}&value=v{i}")
    before = http("GET", f"http://{ip}:8080/state")
    kube.apply(migration(namespace, "app"))
    wait_for(
        "the checkpoint in flight",
        lambda: (podmigrate.migration(namespace, "move-app").get("status") or {}).get("step") == "Checkpoint",
        interval=0.05,
    )
    podmigrate.kill_controller()
    time.sleep(2)
    podmigrate.start_controller()
    status = podmigrate.wait_done(namespace, "move-app")["status"]
    assert status["phase"] == "Succeeded", status
    pods = kube.get("pods", namespace=namespace)["items"]
    assert [p["metadata"]["name"] for p in pods] == ["app"], "exactly one copy"
    new = wait_for("Ready", lambda: ready(kube, namespace, "app"))
    after = http("GET", f"http://{new['status']['podIP']}:8080/state")
    assert after["boot_id"] == before["boot_id"] and after["keys"] == 5


def test_a_bad_spec_is_rejected_by_the_api_server(kube: Kube, podmigrate: Podmigrate, namespace: str) -> None:
    bad = kube.run("apply", "-f", "-", input=migration(namespace, "Bad_Name"), check=False)
    assert bad.returncode != 0 and "spec.podName" in bad.stderr
    short = kube.run("apply", "-f", "-", input=migration(namespace, "x", extra="  timeoutSeconds: 1\n"), check=False)
    assert short.returncode != 0 and "spec.timeoutSeconds" in short.stderr and "10" in short.stderr
    policy = kube.run("apply", "-f", "-", input=migration(namespace, "x", extra="  onFailure: Pray\n"), check=False)
    assert policy.returncode != 0 and "RestoreSource" in policy.stderr


def test_a_missing_pod_fails_with_a_reason(kube: Kube, podmigrate: Podmigrate, namespace: str) -> None:
    kube.apply(migration(namespace, "ghost"))
    status = podmigrate.wait_done(namespace, "move-ghost", timeout=30)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "PodNotFound"
    assert f'pod "{namespace}/ghost" not found' in status["message"]


def test_the_migration_is_one_trace_with_the_agents_spans_inside(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, otlp: Any, namespace: str
) -> None:
    kube.apply(counter_pod(namespace, cluster.nodes[1].name, cluster.images["counter"]))
    wait_for("counting", lambda: len(kube.logs("counter", namespace).split()) >= 2)
    kube.apply(migration(namespace, "counter"))
    status = podmigrate.wait_done(namespace, "move-counter")["status"]
    assert status["phase"] == "Succeeded", status
    trace_id = status["traceID"]
    phase_names = {p["name"] for p in status["phases"]}

    def complete() -> list[Any] | None:
        spans = otlp.trace(trace_id)
        names = {s.name for s in spans}
        have_phases = {f"migration.{p}" for p in phase_names} <= names
        return spans if have_phases and "migration" in names and "kubelet.checkpoint" in names else None

    spans = wait_for("the whole trace at the OTLP receiver", complete, timeout=30)
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1 and roots[0].name == "migration" and roots[0].service == "podmigrate-controller"
    by_id = {s.span_id: s for s in spans}
    for s in spans:
        if s.parent_span_id:
            assert s.parent_span_id in by_id, f"{s.name} hangs off a span that is not in the trace"
    checkpoint = next(s for s in spans if s.name == "migration.checkpoint")
    assert checkpoint.parent_span_id == roots[0].span_id
    agent = [s for s in spans if s.service == "podmigrate-agent"]
    assert {"agent.checkpoint", "kubelet.checkpoint", "registry.push"} <= {s.name for s in agent}
    top = next(s for s in agent if s.name == "agent.checkpoint")
    assert top.parent_span_id == checkpoint.span_id, "the agent's work sits inside the checkpoint phase"
    assert any(s.name == "migration.downtime" for s in spans)
    # The logs tell the same story, every line tagged: the controller's and the agent's.
    tag = f"migration={namespace}/move-counter trace_id={trace_id}"
    assert tag in podmigrate.installation.logs(component="controller")
    agent_log = podmigrate.installation.logs(component="agent", node=status["sourceNode"])
    assert any("checkpointed" in line and tag in line for line in agent_log.splitlines()), "the agent's lines carry it too"
    restore = next(s for s in spans if s.name == "migration.restore")
    target = [s for s in spans if s.name.startswith("target.")]
    assert {s.name for s in target} == {"target.image-pull", "target.restore", "target.readiness"}
    assert all(
        s.parent_span_id == restore.span_id and restore.start_ns <= s.start_ns <= s.end_ns <= restore.end_ns for s in target
    )


def test_deleting_a_migration_mid_flight_leaves_the_pod_running(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    source = cluster.nodes[0].name
    kube.apply(warmup_pod(namespace, source, cluster.images["warmup"], warmup=1, ballast=200))
    pod = wait_for("app Ready", lambda: ready(kube, namespace, "app"), timeout=90)
    before = http("GET", f"http://{pod['status']['podIP']}:8080/state")
    kube.apply(migration(namespace, "app"))
    wait_for(
        "the checkpoint in flight",
        lambda: (podmigrate.migration(namespace, "move-app").get("status") or {}).get("step") == "Checkpoint",
        interval=0.05,
    )
    assert "podmigrate.io/pod-restored" in podmigrate.migration(namespace, "move-app")["metadata"]["finalizers"]
    kube.run("delete", "podmigration", "move-app", "-n", namespace, "--wait=false")
    wait_for(
        "the PodMigration gone (finalizer released)",
        lambda: kube.run("get", "podmigration", "move-app", "-n", namespace, check=False).returncode != 0,
        timeout=60,
    )
    after_pod = kube.get("pod", "app", namespace)
    assert after_pod["metadata"]["uid"] == pod["metadata"]["uid"], "the source pod was never removed"
    after = http("GET", f"http://{pod['status']['podIP']}:8080/state")
    assert after["boot_id"] == before["boot_id"], "and it is thawed: it answers"


class ReplicaWatch(threading.Thread):
    """Counts a controller's pods (not terminating) throughout a test, as a watcher would."""

    def __init__(self, kube: Kube, namespace: str, selector: str) -> None:
        super().__init__(daemon=True)
        self.kube, self.namespace, self.selector = kube, namespace, selector
        self.counts: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pods = json.loads(self.kube.run("get", "pods", "-n", self.namespace, "-l", self.selector, "-o", "json").stdout)[
                "items"
            ]
            self.counts.append(sum(1 for p in pods if not p["metadata"].get("deletionTimestamp")))
            time.sleep(0.1)


def _owned_counter(kind: str, namespace: str, image: str) -> str:
    extra = "  serviceName: db\n" if kind == "StatefulSet" else ""
    name = "db" if kind == "StatefulSet" else "web"
    return f"""apiVersion: apps/v1
kind: {kind}
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: {1 if kind == "StatefulSet" else 2}
{extra}  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: counter
        image: {image}
        resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
"""


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_controller_owned_pod_is_restored_by_its_own_controller(
    kind: str, kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    name = "db" if kind == "StatefulSet" else "web"
    replicas = 1 if kind == "StatefulSet" else 2
    kube.apply(_owned_counter(kind, namespace, cluster.images["counter"]))

    def running() -> list[dict[str, Any]]:
        pods = kube.get("pods", namespace=namespace)["items"]
        live = [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
        return live if len(live) == replicas else []

    pods = wait_for(f"{replicas} running pods", running, timeout=60)
    victim = pods[0]
    pod_name, source = victim["metadata"]["name"], victim["spec"]["nodeName"]
    target = next(n.name for n in cluster.nodes if n.name != source)
    owner_uid = next(o["uid"] for o in victim["metadata"]["ownerReferences"] if o.get("controller"))
    wait_for("counting", lambda: len(kube.logs(pod_name, namespace).split()) >= 3)
    watch = ReplicaWatch(kube, namespace, f"app={name}")
    watch.start()
    kube.apply(migration(namespace, pod_name, target=target, name="move-owned"))
    before = int(kube.logs(pod_name, namespace).split()[-1])
    status = podmigrate.wait_done(namespace, "move-owned")["status"]
    watch.done.set()
    watch.join(timeout=5)
    assert status["phase"] == "Succeeded", status
    new_name = status["newPod"]["name"]
    if kind == "StatefulSet":
        assert new_name == pod_name, "a StatefulSet pod keeps its name and identity"
    new = kube.get("pod", new_name, namespace)
    assert new["spec"]["nodeName"] == target
    assert [o["uid"] for o in new["metadata"]["ownerReferences"] if o.get("controller")] == [owner_uid], (
        "owned by the same controller"
    )
    assert new["status"]["containerStatuses"][0]["restartCount"] == 0
    first = wait_for("restored output", lambda: [int(x) for x in kube.logs(new_name, namespace).split()][:1])[0]
    assert first > before, "the controller's replacement is the restore, not a cold start"
    assert watch.counts and min(watch.counts) >= replicas - 1 and max(watch.counts) <= replicas + 1, watch.counts
    time.sleep(2)
    final = [p for p in kube.get("pods", namespace=namespace)["items"] if not p["metadata"].get("deletionTimestamp")]
    assert len(final) == replicas, "the controller kept its replica count (no cold duplicate, nothing deleted)"


def test_a_plain_kubectl_drain_migrates_opted_in_pods(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    source = cluster.nodes[0].name
    kube.run("label", "namespace", namespace, "podmigrate.io/migrate-on-evict=true")
    kube.apply(counter_pod(namespace, source, cluster.images["counter"]))
    wait_for("counting", lambda: len(kube.logs("counter", namespace).split()) >= 3)
    old_uid = kube.get("pod", "counter", namespace)["metadata"]["uid"]
    before = int(kube.logs("counter", namespace).split()[-1])
    try:
        # --force: kubectl drain insists on it for a pod without a controller (it would be lost; here it moves).
        drained = kube.run(
            "drain",
            source,
            "--ignore-daemonsets",
            "--force",
            "--pod-selector",
            "app=counter",
            "--timeout=150s",
            check=False,
        )
        assert drained.returncode == 0, drained.stderr
        assert "migrating pod counter instead of evicting it" in drained.stderr, (
            "kubectl drain saw the webhook's answer and retried"
        )
        # kubectl drain is done once the pod it knew (by UID) is gone; the restore follows within seconds.
        (created,) = kube.get("podmigrations", namespace=namespace)["items"]
        assert created["metadata"]["labels"]["podmigrate.io/instead-of-eviction"] == "true"
        status = podmigrate.wait_done(namespace, created["metadata"]["name"])["status"]
        assert status["phase"] == "Succeeded", status
        pod = kube.get("pod", "counter", namespace)
        assert pod["metadata"]["uid"] != old_uid and pod["spec"]["nodeName"] != source
        first = wait_for("restored output", lambda: [int(x) for x in kube.logs("counter", namespace).split()][:1])[0]
        assert first > before, "migrated with its state, not evicted and restarted"
    finally:
        kube.run("uncordon", source)
