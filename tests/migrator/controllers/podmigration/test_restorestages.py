"""The restore's stages from a target node's Events: the real kubelet's (whole seconds, a measured pull) and the stand-in's."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from migrator.controllers.podmigration import restorestages
from migrator.controllers.podmigration.restorestages import Window, derive, event_containers, go_duration, pull_report
from migrator.units import parse_time

T0 = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
IMAGE = "registry.local:5000/checkpoints/shop/web@sha256:" + "a" * 64
SIDECAR = "registry.local:5000/checkpoints/shop/web@sha256:" + "b" * 64


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def whole(seconds: float) -> str:
    """An API server's metav1.Time: whole seconds (cut, not rounded)."""
    return at(math.floor(seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro(seconds: float) -> str:
    """An eventTime (metav1.MicroTime) as the API returns it."""
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pod(*, created: float, started: dict[str, float] | None = None, images: dict[str, str] | None = None) -> dict[str, Any]:
    images = images or {"app": IMAGE}
    statuses = [{"name": name, "state": {"running": {"startedAt": whole(when)}}} for name, when in (started or {}).items()]
    return {
        "metadata": {"name": "web", "namespace": "shop", "uid": "uid-new", "creationTimestamp": whole(created)},
        "spec": {"nodeName": "node-2", "containers": [{"name": n, "image": i} for n, i in images.items()]},
        "status": {"containerStatuses": statuses},
    }


def kubelet_event(reason: str, message: str, *, when: float, container: str = "app") -> dict[str, Any]:
    """As the real kubelet records it: the container in fieldPath, whole seconds, no eventTime."""
    return {
        "reason": reason, "message": message, "type": "Normal", "firstTimestamp": whole(when), "lastTimestamp": whole(when),
        "involvedObject": {"kind": "Pod", "name": "web", "uid": "uid-new", "fieldPath": f"spec.containers{{{container}}}"},
        "source": {"component": "kubelet", "host": "node-2"},
    }  # fmt: skip


def standin_event(reason: str, message: str, *, when: float) -> dict[str, Any]:
    """As the local stand-in node records it (kubeclient.events): eventTime in microseconds, no fieldPath."""
    return {
        "reason": reason, "message": message, "type": "Normal", "eventTime": micro(when), "firstTimestamp": whole(when),
        "lastTimestamp": whole(when), "involvedObject": {"kind": "Pod", "name": "web", "uid": "uid-new"},
        "source": {"component": "kubelet", "host": "node-2"},
    }  # fmt: skip


def go(seconds: float) -> str:
    """A duration as Go prints one the kubelet cut to milliseconds."""
    ms = math.floor(seconds * 1000 + 1e-6)
    return f"{ms}ms" if ms < 1000 else f"{ms / 1000:g}s"


def pulled_message(image: str, *, pull: float, waiting: float, size: int) -> str:
    return f'Successfully pulled image "{image}" in {go(pull)} ({go(waiting)} including waiting). Image size: {size} bytes.'


def moments(records: list[dict[str, Any]], container: str = "app") -> dict[str, tuple[float, float]]:
    """Each stage of ``container`` as (start, end) seconds after T0."""
    out = {}
    for r in records:
        if r.get("container") == container:
            start, end = parse_time(r["start"]), parse_time(r["end"])
            assert start is not None and end is not None
            out[r["name"]] = ((start - T0).total_seconds(), (end - T0).total_seconds())
    return out


# --- parsing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("850ms", 0.85), ("1.594s", 1.594), ("1m2.5s", 62.5), ("2h0m1s", 7201.0), ("0s", 0.0), ("1.5", None), ("", None),
     ("fast", None)],
)  # fmt: skip
def test_go_durations(text: str, seconds: float | None) -> None:
    assert go_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(
    ("message", "seconds", "size"),
    [
        ('Successfully pulled image "reg/x@sha256:1" in 796ms (1.594s including waiting). Image size: 543804759 bytes.',
         1.594, 543804759),
        ('Successfully pulled image "busybox" in 1.661s (1.661s including waiting)', 1.661, None),  # kubelets before 1.30
        ('Successfully pulled image "busybox" in 1.661s', 1.661, None),  # before 1.28
        ('Container image "reg/x@sha256:1" already present on machine', None, None),
        ('Container image "reg/x@sha256:1" already present on machine and can be accessed by the pod', None, None),
        (f'Container image "{IMAGE}" present: sha256:{"c" * 64}', None, None),  # the stand-in's
    ],
)  # fmt: skip
def test_what_a_pulled_message_says(message: str, seconds: float | None, size: int | None) -> None:
    report = pull_report(message)
    assert report.size == size
    assert report.seconds == (pytest.approx(seconds) if seconds is not None else None)


def test_which_container_an_event_is_about() -> None:
    images = {"app": IMAGE, "sidecar": SIDECAR}
    real = kubelet_event("Started", "Container started", when=1, container="sidecar")  # 1.36's message names none
    assert event_containers(real, images=images) == ["sidecar"]
    init = kubelet_event("Started", "Started container setup", when=1)
    init["involvedObject"]["fieldPath"] = "spec.initContainers{setup}"
    assert event_containers(init, images=images) == []
    pulled = standin_event("Pulled", f'Container image "{SIDECAR}" present: sha256:{"c" * 64}', when=1)
    assert event_containers(pulled, images=images) == ["sidecar"]
    restored = standin_event("Restored", f"Restored container app from checkpoint sha256:{'c' * 64}", when=1)
    assert event_containers(restored, images=images) == ["app"]
    assert event_containers(standin_event("Created", "Created container: sidecar", when=1), images=images) == ["sidecar"]
    anonymous = standin_event("Started", "Container started", when=1)
    assert event_containers(anonymous, images=images) == [] and event_containers(anonymous, images={"app": IMAGE}) == ["app"]


def test_when_an_event_happened() -> None:
    assert restorestages.event_moment(standin_event("Pulled", "x", when=1.234567)) == Window(at(1.234567).timestamp(),
                                                                                             at(1.234567).timestamp())  # fmt: skip
    assert restorestages.event_moment(kubelet_event("Pulled", "x", when=1.7)) == Window(at(1).timestamp(), at(2).timestamp())


# --- the real kubelet ---------------------------------------------------------------------------------
def test_the_real_kubelets_whole_seconds_are_narrowed_by_the_measured_pull_and_the_control_services_moments() -> None:
    # True: created 3.110 (a bare pod: the control service's create ran 3.100..3.120), pull queued 3.300 and took
    # 1.25s with waiting (Pulled at 4.550), running at 5.020, seen Ready at 5.300.
    events = [
        kubelet_event("Pulling", f'Pulling image "{IMAGE}"', when=3.3),
        kubelet_event("Pulled", pulled_message(IMAGE, pull=1.2, waiting=1.25, size=5000), when=4.55),
        kubelet_event("Created", "Created container: app", when=4.9),
        kubelet_event("Started", "Started container app", when=5.02),
    ]
    records = derive(pod=pod(created=3.11, started={"app": 5.02}), events=events, ready_at=at(5.3), created_after=at(3.1),
                     seen_at=at(3.12), image_bytes={"app": 4096})  # fmt: skip
    assert [r["name"] for r in records] == ["fetch", "restore", "ready"]
    assert all(r["node"] == "node-2" and r["source"] == "kubelet" and r["container"] == "app" for r in records)
    # Pulled lies in [max(4, 3.1 + 1.25), min(5, 3 + 1 + 1.25)] = [4.35, 5]; Started in [5, min(6, readyAt 5.3)].
    assert moments(records) == {"fetch": (3.11, 4.675), "restore": (4.675, 5.15), "ready": (5.15, 5.3)}
    assert records[0]["bytes"] == 5000, "the kubelet's image size, not the pushed image's"


def test_two_moments_in_one_window_fall_a_third_and_two_thirds_into_it() -> None:
    first, second = restorestages.ordered_estimates(Window(7.0, 7.9), Window(7.0, 7.9))
    assert (first, second) == (pytest.approx(7.3, abs=1e-3), pytest.approx(7.6, abs=1e-3))
    assert restorestages.ordered_estimates(Window(4.35, 5.0), Window(5.0, 5.3)) == (pytest.approx(4.675), pytest.approx(5.15))
    assert restorestages.ordered_estimates(Window(4.5, 4.5), Window(4.0, 5.0)) == (4.5, 4.75)
    assert restorestages.ordered_estimates(Window(4.0, 5.0), Window(4.2, 4.2)) == (4.1, 4.2)


def test_estimates_stay_within_half_a_second_of_the_truth_and_in_order() -> None:
    rng = random.Random(7)
    restore_errors = []
    for _ in range(300):
        created = 3 + rng.random()
        queued = created + rng.uniform(0.0, 0.5)  # the sandbox first
        waiting = rng.uniform(0.05, 3.0)
        pulled = queued + waiting
        running = pulled + rng.uniform(0.05, 1.5)
        ready = running + rng.uniform(0.01, 1.0)
        events = [
            kubelet_event("Pulling", f'Pulling image "{IMAGE}"', when=queued),
            kubelet_event("Pulled", pulled_message(IMAGE, pull=waiting, waiting=waiting, size=1), when=pulled),
            kubelet_event("Started", "Started container app", when=running),
        ]
        records = derive(pod=pod(created=created, started={"app": running}), events=events, ready_at=at(ready),
                         created_after=at(created - 0.005), seen_at=at(created + 0.005))  # fmt: skip
        got = moments(records)
        assert got["fetch"][0] == pytest.approx(created, abs=0.006)
        assert got["fetch"][1] == pytest.approx(pulled, abs=0.502)
        assert got["restore"][1] == pytest.approx(running, abs=0.502)
        assert got["ready"][1] == pytest.approx(ready, abs=0.001)
        ends = [got["fetch"][0], got["fetch"][1], got["restore"][1], got["ready"][1]]
        assert ends == sorted(ends) and got["restore"][0] == got["fetch"][1] and got["ready"][0] == got["restore"][1]
        restore_errors.append(abs(got["restore"][1] - got["restore"][0] - (running - pulled)))
    assert sum(restore_errors) / len(restore_errors) < 0.25, "the restore's duration, on average"


def test_an_image_already_present_and_a_replacement_created_by_its_controller() -> None:
    # No measured pull; the pod's creation known only to its second and to when the control service first saw it.
    events = [
        kubelet_event("Pulled", f'Container image "{IMAGE}" already present on machine', when=7.2),
        kubelet_event("Started", "Container started", when=7.6),
    ]
    records = derive(pod=pod(created=6.8, started={"app": 7.6}), events=events, ready_at=at(7.9), seen_at=at(6.4 + 0.2),
                     image_bytes={"app": 4096})  # fmt: skip
    got = moments(records)
    # Created within [6, 6.6]; Pulled and Started both within [7, 7.9] (readyAt cuts their second), in that order.
    assert got == {"fetch": (6.3, 7.3), "restore": (7.3, 7.6), "ready": (7.6, 7.9)}
    assert records[0]["bytes"] == 4096, "no size in the message: the checkpoint image's"


def test_a_node_clock_ahead_of_the_control_service_still_gives_stages_in_order() -> None:
    events = [
        kubelet_event("Pulled", pulled_message(IMAGE, pull=0.2, waiting=0.2, size=1), when=12.0),  # 2 s ahead
        kubelet_event("Started", "Started container app", when=12.5),
    ]
    records = derive(pod=pod(created=10.0, started={"app": 12.5}), events=events, ready_at=at(10.9), created_after=at(10.0),
                     seen_at=at(10.01))  # fmt: skip
    got = moments(records)
    ends = [got["fetch"][0], got["fetch"][1], got["restore"][1], got["ready"][1]]
    assert ends == sorted(ends) and got["fetch"][0] == pytest.approx(10.005)
    assert got["ready"][1] == pytest.approx(10.9), "readyAt stays the end: the stages are squeezed before it"


def test_a_container_without_its_events_gets_no_stages() -> None:
    events = [kubelet_event("Started", "Started container app", when=5.0)]  # the Pulled Event lost
    assert derive(pod=pod(created=3.0, started={"app": 5.0}), events=events, ready_at=at(5.5)) == []
    pulled_only = [kubelet_event("Pulled", f'Container image "{IMAGE}" already present on machine', when=4.0)]
    assert derive(pod=pod(created=3.0), events=pulled_only, ready_at=at(5.5)) == [], "never seen running"
    assert derive(pod=pod(created=3.0), events=[], ready_at=at(5.5)) == []


# --- the stand-in -------------------------------------------------------------------------------------
def test_the_stand_ins_events_are_exact_for_each_container() -> None:
    images = {"app": IMAGE, "sidecar": SIDECAR}
    digest = "sha256:" + "c" * 64
    events = [
        standin_event("Pulled", f'Container image "{IMAGE}" present: {digest}', when=3.412345),
        standin_event("Restored", f"Restored container app from checkpoint {digest}", when=3.701),
        standin_event("Pulled", f'Container image "{SIDECAR}" present: {digest}', when=3.8),
        standin_event("Restored", f"Restored container sidecar from checkpoint {digest}", when=3.95),
        standin_event("Unhealthy", "Readiness probe failed: connection refused", when=3.96),
    ]
    records = derive(pod=pod(created=3.2, started={"app": 3.701, "sidecar": 3.95}, images=images), events=events,
                     ready_at=at(4.25), created_after=at(3.2), seen_at=at(3.21), image_bytes={"app": 4096, "sidecar": 512},
                     )  # fmt: skip
    assert moments(records, "app") == {"fetch": (3.205, 3.412), "restore": (3.412, 3.701), "ready": (3.701, 4.25)}
    assert moments(records, "sidecar") == {"fetch": (3.205, 3.8), "restore": (3.8, 3.95), "ready": (3.95, 4.25)}
    assert {r["container"]: r["bytes"] for r in records if r["name"] == "fetch"} == {"app": 4096, "sidecar": 512}
