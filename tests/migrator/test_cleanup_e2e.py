"""End to end: a checkpoint nobody will restore is deleted from the registry (docs/faults.md, "Cleanup").

The images hold the pod's process memory. The path tested here is the one that used to leave
them behind: a controller's replacement that did not pass the restore webhook (it was down: it
fails open) starts cold, so the migration ends ``Failed ReplacementNotRestored`` and its
checkpoint is never used. The registry must not keep it. A rollback (the restore refused on the
target, restored on the source) is checked the same way, read with the registry's credentials.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster import cluster as lc
from tests.conftest import Kube, Podmigrate, wait_for
from tests.migrator.test_faults_e2e import numbers
from tests.migrator.workloads import checkpoint_manifests, counter_pod, deployment, migration

pytestmark = pytest.mark.cluster

RESTORE_WEBHOOK = "restore.podmigrate.io"


@contextlib.contextmanager
def restore_webhook_blind_to(kube: Kube, namespace: str) -> Iterator[None]:
    """The restore webhook does not see ``namespace``'s pods: what the API server does when it is down (Ignore)."""
    config = kube.get("mutatingwebhookconfiguration", "podmigrate")
    index = next(i for i, hook in enumerate(config["webhooks"]) if hook["name"] == RESTORE_WEBHOOK)
    original = config["webhooks"][index]["namespaceSelector"]
    blind = {"matchExpressions": [*original.get("matchExpressions", []),
                                  {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [namespace]}]}  # fmt: skip

    def patch(selector: dict[str, Any]) -> None:
        ops = [{"op": "replace", "path": f"/webhooks/{index}/namespaceSelector", "value": selector}]
        kube.run("patch", "mutatingwebhookconfiguration", "podmigrate", "--type=json", "-p", json.dumps(ops))

    patch(blind)
    try:
        yield
    finally:
        patch(original)


def test_a_replacement_that_started_cold_leaves_no_checkpoint_image_in_the_registry(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    kube.apply(deployment(namespace, name="web", image=cluster.images["counter"], container="counter",
                          container_spec="        resources: {requests: {cpu: 10m, memory: 8Mi}}\n"))  # fmt: skip

    def running() -> list[dict[str, Any]]:
        pods = kube.get("pods", namespace=namespace)["items"]
        return [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]

    (victim,) = wait_for("the Deployment's pod running", running, timeout=60)
    pod, source = victim["metadata"]["name"], victim["spec"]["nodeName"]
    target = next(n.name for n in cluster.nodes if n.name != source)
    wait_for("counting", lambda: len(numbers(kube, namespace, pod)) >= 2)

    with restore_webhook_blind_to(kube, namespace):
        kube.apply(migration(namespace, pod, target=target, name="move-web"))
        wait_for(
            "the replacement awaited",
            lambda: podmigrate.migration(namespace, "move-web").get("status", {}).get("step") == "AwaitReplacement",
            timeout=120,
        )
        # (Within the grace the migration gives a replacement to turn out to be the restore after all.)
        assert checkpoint_manifests(cluster, podmigrate, namespace, pod), "the checkpoint is in the registry: the check sees it"
        try:
            status = podmigrate.wait_done(namespace, "move-web", timeout=180)["status"]
        except AssertionError as exc:  # say what the namespace looked like: which pods, which Events
            pods = kube.run("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
            events = kube.run("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
            step = podmigrate.migration(namespace, "move-web").get("status", {}).get("step")
            raise AssertionError(f"{exc}\nstep {step}\n{pods}\n{events}") from None
    print(f"\ncold replacement: {status['phase']} {status.get('reason', '')}: {status.get('message', '')}")
    assert (status["phase"], status.get("reason")) == ("Failed", "ReplacementNotRestored"), status
    assert status.get("containers"), "a checkpoint was pushed (and is what must be gone)"

    wait_for("no checkpoint image left", lambda: not checkpoint_manifests(cluster, podmigrate, namespace, pod), timeout=60)
    deleted = wait_for(
        "the deletion recorded",
        lambda: next((c for c in podmigrate.migration(namespace, "move-web")["status"].get("conditions") or []
                      if c["type"] == "CheckpointDeleted" and c["status"] == "True"), None),
    )  # fmt: skip
    assert deleted["reason"] == "Deleted"
    (replacement,) = wait_for("one copy running (cold)", lambda: c if len(c := running()) == 1 else None, timeout=60)
    assert replacement["metadata"]["name"] != pod
    kube.run("delete", "podmigration", "move-web", "-n", namespace, "--timeout=30s")  # its finalizer lets go


def test_a_rollback_that_restored_the_pod_on_its_source_leaves_no_checkpoint_image_in_the_registry(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str
) -> None:
    """The target's restore refused: the checkpoint is restored on the source (it is used once more), then deleted."""
    from localcluster.node.restoring import FAIL_RESTORES_ANNOTATION

    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    kube.apply(counter_pod(namespace, source, cluster.images["counter"]))
    wait_for("counting", lambda: len(numbers(kube, namespace, "counter")) >= 2)
    kube.run("annotate", "node", target, f"{FAIL_RESTORES_ANNOTATION}=refused (injected)", "--overwrite")
    try:
        kube.apply(migration(namespace, "counter", target=target))
        status = podmigrate.wait_done(namespace, "move-counter", timeout=180)["status"]
    finally:
        kube.run("annotate", "node", target, f"{FAIL_RESTORES_ANNOTATION}-")
    print(f"\nrollback: {status['phase']} {status.get('reason', '')}: {status.get('message', '')}")
    assert (status["phase"], status.get("reason")) == ("Failed", "RestoreFailed"), status
    assert "restored on its source node" in status["message"] and status.get("containers")
    wait_for("no checkpoint image left", lambda: not checkpoint_manifests(cluster, podmigrate, namespace, "counter"), timeout=60)
    conditions = podmigrate.migration(namespace, "move-counter")["status"].get("conditions") or []
    assert any(c["type"] == "CheckpointDeleted" and c["status"] == "True" for c in conditions), conditions
    kube.run("delete", "podmigration", "move-counter", "-n", namespace, "--timeout=30s")
