"""What stands in the way of moving a pod (``migrator.movability``): one judgement for every way a move starts."""

from __future__ import annotations

from typing import Any

import pytest

from migrator import movability


def pod(**spec: Any) -> dict[str, Any]:
    meta = spec.pop("metadata", {})
    phase = spec.pop("phase", "Running")
    return {
        "metadata": {"name": "web", "namespace": "shop", **meta},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "img"}], **spec},
        "status": {"phase": phase},
    }


def reasons(p: dict[str, Any], **kw: Any) -> list[tuple[str, str]]:
    return [(o.reason, o.kind) for o in movability.obstacles(p, **kw)]


def test_a_plain_running_pod_can_move() -> None:
    assert movability.obstacles(pod()) == []
    assert movability.first_refusal(pod()) is None


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (pod(metadata={"annotations": {"kubernetes.io/config.mirror": "x"}}), ("StaticPod", "skip")),
        (pod(phase="Succeeded"), ("PodNotRunning", "skip")),
        (pod(metadata={"deletionTimestamp": "2026-01-01T00:00:00Z"}), ("PodTerminating", "skip")),
        (pod(metadata={"ownerReferences": [{"kind": "DaemonSet", "name": "ds", "controller": True}]}), ("DaemonSetPod", "skip")),
        (pod(phase="Pending"), ("PodNotRunning", "never")),
        (
            pod(metadata={"ownerReferences": [{"kind": "Job", "name": "j", "controller": True}]}),
            ("UnsupportedController", "never"),
        ),
        (pod(hostNetwork=True), ("HostNetwork", "never")),
        (pod(volumes=[{"name": "host", "hostPath": {"path": "/var/log"}}]), ("HostPathVolume", "never")),
        (pod(volumes=[{"name": "db", "persistentVolumeClaim": {"claimName": "db"}}]), ("PersistentVolume", "never")),
        (pod(volumes=[{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}}]), ("PersistentVolume", "never")),
        (pod(containers=[{"name": "app", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]), ("DeviceResource", "never")),
    ],
)
def test_each_obstacle_is_named_with_its_kind(p: dict[str, Any], expected: tuple[str, str]) -> None:
    assert reasons(p) == [expected]
    refusal = movability.first_refusal(p)
    assert refusal is not None and refusal.reason == expected[0] and refusal.message


def test_plain_resources_and_hugepages_are_not_devices() -> None:
    limits = {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi", "hugepages-2Mi": "64Mi"}
    assert movability.obstacles(pod(containers=[{"name": "app", "resources": {"limits": limits, "requests": limits}}])) == []


def test_emptydir_files_move_with_the_pod_unless_given_up_and_then_the_outcome_says_so() -> None:
    p = pod(volumes=[{"name": "data", "emptyDir": {}}, {"name": "shm", "emptyDir": {"medium": "Memory"}},
                     {"name": "cfg", "configMap": {"name": "c"}}])  # fmt: skip
    assert movability.obstacles(p) == []
    assert movability.empty_dir_media(p) == {"data": "", "shm": "Memory"}
    assert movability.dropped_data(p, delete_emptydir_data=False) == ""
    assert (
        movability.dropped_data(p, delete_emptydir_data=True) == "emptyDir volume(s) data, shm started empty (deleteEmptyDirData)"
    )
    assert movability.dropped_data(pod(), delete_emptydir_data=True) == ""


def test_the_first_refusal_is_the_most_fundamental() -> None:
    p = pod(hostNetwork=True, volumes=[{"name": "logs", "hostPath": {"path": "/l"}}], metadata={"deletionTimestamp": "t"})
    assert [r for r, _ in reasons(p)] == ["PodTerminating", "HostNetwork", "HostPathVolume"]
    assert movability.first_refusal(p).reason == "PodTerminating"  # type: ignore[union-attr]
