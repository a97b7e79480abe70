"""bench/warmstart.py without a cluster: the Deployment and PodCheckpoint it creates, and how it reads the pods back."""

from __future__ import annotations

from typing import Any

import pytest

from bench import warmstart
from bench.migration import NAMESPACE, app_pod
from migrator import api


def test_the_deployment_runs_the_other_rows_app_on_the_stand_in_nodes_only() -> None:
    obj = warmstart.deployment(name="warm-1", image="reg/warmup:1", nodes=["node-1", "node-2"], size_mib=64, warmup_seconds=10)
    assert obj["apiVersion"] == "apps/v1" and obj["kind"] == "Deployment"
    assert obj["metadata"]["name"] == "warm-1" and obj["metadata"]["namespace"] == NAMESPACE
    spec = obj["spec"]
    assert spec["replicas"] == 1
    assert spec["selector"] == {"matchLabels": {warmstart.LABEL: "warm-1"}}, "its own pods only, never another row's"
    template = spec["template"]
    assert template["metadata"]["labels"][warmstart.LABEL] == "warm-1"
    pod = template["spec"]
    assert "nodeName" not in pod, "the scheduler and the warm-start webhook place the pods"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1", "node-2"]}]}]
    same = app_pod(name="x", node="node-1", image="reg/warmup:1", size_mib=64, warmup_seconds=10)["spec"]
    assert pod["containers"] == same["containers"], "the same container as the migration rows: env, probe every 1 s"
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env == {"WARMUP_SECONDS": "10", "BALLAST_MB": "64"}
    assert pod["containers"][0]["readinessProbe"]["periodSeconds"] == 1
    assert (
        warmstart.deployment(name="c", image="i", nodes=["n"], size_mib=0, warmup_seconds=2.5, replicas=3)["spec"]["replicas"]
        == 3
    )


def test_two_deployments_differ_only_in_their_labels() -> None:
    """The cold baseline is the same template: the webhook would refuse a checkpoint for other containers or images."""
    warm, cold = (
        warmstart.deployment(name=n, image="i", nodes=["node-1"], size_mib=64, warmup_seconds=10)["spec"]["template"]
        for n in ("warm-1", "cold-1")
    )
    assert warm["spec"] == cold["spec"]
    assert warm["metadata"]["labels"] != cold["metadata"]["labels"]


def test_the_pod_checkpoint_leaves_the_pod_running() -> None:
    obj = warmstart.pod_checkpoint(name="warm-1", pod="warm-1-abc-xyz")
    assert obj["apiVersion"] == api.API_VERSION and obj["kind"] == "PodCheckpoint"
    assert obj["metadata"] == {"name": "warm-1", "namespace": NAMESPACE}
    assert obj["spec"]["podName"] == "warm-1-abc-xyz" and obj["spec"]["mode"] == "Running"
    assert 10 <= obj["spec"]["timeoutSeconds"] <= 86400, "the CRD's bounds"


def _pod(*, created: str = "2026-11-30T16:00:00Z", ready_at: str | None = "2026-11-30T16:00:12Z", **annotations: str) -> Any:
    conditions = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": created}]
    if ready_at is not None:
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": ready_at})
    else:
        conditions.append({"type": "Ready", "status": "False", "lastTransitionTime": created})
    return {
        "metadata": {"name": "p", "creationTimestamp": created, "annotations": annotations},
        "status": {"conditions": conditions},
    }


def test_ready_after_reads_the_api_clock() -> None:
    assert warmstart.ready_after(_pod()) == 12.0
    assert warmstart.ready_after(_pod(ready_at="2026-11-30T16:01:02Z")) == 62.0
    assert warmstart.ready_after(_pod(ready_at=None)) is None, "not Ready: no time, not the False condition's"
    assert warmstart.ready_after({"metadata": {}}) is None


def test_a_warm_pod_must_carry_the_checkpoint_and_its_boot_id() -> None:
    restored = _pod(**{api.ANNOTATION_CHECKPOINT: f"{NAMESPACE}/warm-1"})
    assert warmstart.why_not_restored(pod=restored, checkpoint="warm-1", boot_id="b1", state={"boot_id": "b1"}) is None
    why = warmstart.why_not_restored(pod=restored, checkpoint="warm-1", boot_id="b1", state={"boot_id": "b2"})
    assert why == "boot_id b2, the checkpointed pod's is b1"
    assert "unread" in (warmstart.why_not_restored(pod=restored, checkpoint="warm-1", boot_id="b1", state=None) or "")
    skipped = _pod(**{api.ANNOTATION_WARM_START_SKIPPED: "PodCheckpoint warm-1 is not Available (Checkpointing)"})
    why = warmstart.why_not_restored(pod=skipped, checkpoint="warm-1", boot_id="b1", state={"boot_id": "b1"})
    assert why == "started cold: PodCheckpoint warm-1 is not Available (Checkpointing)", "the webhook's own reason"
    plain = _pod()
    assert warmstart.why_not_restored(pod=plain, checkpoint="warm-1", boot_id="b1", state={"boot_id": "b1"}) == (
        f"no {api.ANNOTATION_CHECKPOINT} annotation"
    )
    other = _pod(**{api.ANNOTATION_CHECKPOINT: f"{NAMESPACE}/another"})
    assert warmstart.why_not_restored(pod=other, checkpoint="warm-1", boot_id="b1", state={"boot_id": "b1"}) is not None


@pytest.mark.parametrize(
    ("reference", "parsed"),
    [
        (
            "127.0.0.1:5322/podmigrate-checkpoints/bench/warm-1-abc@sha256:0123",
            ("127.0.0.1:5322", "podmigrate-checkpoints/bench/warm-1-abc", "sha256:0123"),
        ),
        ("127.0.0.1:5322/podmigrate-checkpoints/bench/warm-1-abc:ck-1234", None),
        ("sha256:0123", None),
    ],
)
def test_image_manifest(reference: str, parsed: tuple[str, str, str] | None) -> None:
    assert warmstart.image_manifest(reference) == parsed
