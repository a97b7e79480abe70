"""Retention: which of a schedule's PodCheckpoints go, by count per pod, total size and age, and which never do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from migrator import api
from migrator.retention import Deletion, Retention, kept, to_delete

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def stamp(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def checkpoint(
    name: str, *, pod: str = "web", minutes_ago: float = 0, phase: str | None = "Available", size: int = 100,
    pinned: bool = False, suspended: bool = False, deleting: bool = False, taken_minutes_ago: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "shop",
        "creationTimestamp": stamp(minutes_ago),
        "labels": {api.LABEL_SCHEDULE: "nightly", api.LABEL_CHECKPOINT_POD: pod},
    }
    if deleting:
        meta["deletionTimestamp"] = stamp(0)
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
    if phase == "Available":
        status["totalBytes"] = size
        status["checkpointTime"] = stamp(minutes_ago if taken_minutes_ago is None else taken_minutes_ago)
    if suspended:
        status["suspended"] = True
    return {"metadata": meta, "spec": {"podName": pod, "mode": "Running", "pinned": pinned}, "status": status}


def names(deletions: list[Deletion]) -> list[str]:
    return [d.name for d in deletions]


def test_no_retention_deletes_nothing() -> None:
    checkpoints = [checkpoint(f"c{i}", minutes_ago=i) for i in range(20)]
    assert to_delete(retention=None, checkpoints=checkpoints, now=NOW) == []
    assert to_delete(retention={}, checkpoints=checkpoints, now=NOW) == []


def test_from_spec() -> None:
    assert Retention.from_spec({"maxCountPerPod": 3, "maxAgeSeconds": 60}) == Retention(max_count_per_pod=3, max_age_seconds=60)
    assert Retention.from_spec(None) == Retention()


# --- count per pod --------------------------------------------------------------------------------
def test_count_keeps_the_newest_of_each_pod() -> None:
    checkpoints = [
        checkpoint("web-1", minutes_ago=40), checkpoint("web-2", minutes_ago=30), checkpoint("web-3", minutes_ago=20),
        checkpoint("web-4", minutes_ago=10), checkpoint("db-1", pod="db", minutes_ago=50),
        checkpoint("db-2", pod="db", minutes_ago=5),
        checkpoint("db-3", pod="db", minutes_ago=3),
    ]  # fmt: skip
    deletions = to_delete(retention={"maxCountPerPod": 2}, checkpoints=checkpoints, now=NOW)
    assert deletions == [
        Deletion("db-1", "more than 2 checkpoints of pod db"),
        Deletion("web-1", "more than 2 checkpoints of pod web"),
        Deletion("web-2", "more than 2 checkpoints of pod web"),
    ]


def test_pinned_ones_do_not_count_and_are_never_deleted() -> None:
    checkpoints = [
        checkpoint("old-pinned", minutes_ago=100, pinned=True),
        checkpoint("a", minutes_ago=30),
        checkpoint("b", minutes_ago=20),
        checkpoint("c", minutes_ago=10),
        checkpoint("new-pinned", minutes_ago=1, pinned=True),
    ]
    assert names(to_delete(retention={"maxCountPerPod": 2}, checkpoints=checkpoints, now=NOW)) == ["a"]
    assert names(to_delete(retention={"maxCountPerPod": 1, "maxAgeSeconds": 60}, checkpoints=checkpoints, now=NOW)) == [
        "a",
        "b",
        "c",
    ]


def test_suspended_ones_are_never_deleted() -> None:
    checkpoints = [
        checkpoint("frozen", minutes_ago=500, suspended=True),
        checkpoint("a", minutes_ago=2),
        checkpoint("b", minutes_ago=1),
    ]
    assert names(to_delete(retention={"maxCountPerPod": 1, "maxAgeSeconds": 60}, checkpoints=checkpoints, now=NOW)) == ["a"]


@pytest.mark.parametrize("phase", [None, "Pending", "Checkpointing", "Suspending"])
def test_checkpoints_in_flight_neither_count_nor_go(phase: str | None) -> None:
    checkpoints = [
        checkpoint("stuck", minutes_ago=600, phase=phase),
        checkpoint("a", minutes_ago=30),
        checkpoint("b", minutes_ago=20),
        checkpoint("running", minutes_ago=1, phase=phase),
    ]
    assert to_delete(retention={"maxCountPerPod": 2}, checkpoints=checkpoints, now=NOW) == []
    assert names(to_delete(retention={"maxAgeSeconds": 60}, checkpoints=checkpoints, now=NOW)) == ["a", "b"]


def test_ones_being_deleted_are_not_counted_nor_deleted_again() -> None:
    checkpoints = [
        checkpoint("going", minutes_ago=40, deleting=True),
        checkpoint("a", minutes_ago=30),
        checkpoint("b", minutes_ago=20),
    ]
    assert to_delete(retention={"maxCountPerPod": 2, "maxTotalBytes": 200}, checkpoints=checkpoints, now=NOW) == []
    assert kept(checkpoints=checkpoints, deleted=[]) == 2


# --- failed ones ----------------------------------------------------------------------------------
def test_failed_ones_go_once_a_newer_one_of_the_pod_is_available() -> None:
    checkpoints = [
        checkpoint("web-failed-old", minutes_ago=30, phase="Failed"),
        checkpoint("web-ok", minutes_ago=20),
        checkpoint("web-failed-new", minutes_ago=10, phase="Failed"),
        checkpoint("db-failed", pod="db", minutes_ago=50, phase="Failed"),
        checkpoint("web-pinned-failed", minutes_ago=40, phase="Failed", pinned=True),
    ]
    assert to_delete(retention={}, checkpoints=checkpoints, now=NOW) == [
        Deletion("web-failed-old", "failed, and a newer checkpoint of pod web is available")
    ]


def test_failures_do_not_push_out_good_checkpoints_but_are_bounded_themselves() -> None:
    checkpoints = [
        checkpoint("ok-1", minutes_ago=60),
        checkpoint("ok-2", minutes_ago=50),
        *(checkpoint(f"failed-{i}", minutes_ago=40 - i, phase="Failed") for i in range(4)),
    ]
    deletions = to_delete(retention={"maxCountPerPod": 2}, checkpoints=checkpoints, now=NOW)
    assert deletions == [
        Deletion("failed-0", "more than 2 failed checkpoints of pod web"),
        Deletion("failed-1", "more than 2 failed checkpoints of pod web"),
    ]


def test_failed_ones_go_by_age_too() -> None:
    checkpoints = [checkpoint("failed", minutes_ago=120, phase="Failed"), checkpoint("failed-new", minutes_ago=1, phase="Failed")]
    assert to_delete(retention={"maxAgeSeconds": 3600}, checkpoints=checkpoints, now=NOW) == [
        Deletion("failed", "older than 3600s")
    ]


# --- age ------------------------------------------------------------------------------------------
def test_age_deletes_older_than_max_age() -> None:
    checkpoints = [checkpoint("old", minutes_ago=61), checkpoint("edge", minutes_ago=60), checkpoint("new", minutes_ago=59)]
    assert to_delete(retention={"maxAgeSeconds": 3600}, checkpoints=checkpoints, now=NOW) == [Deletion("old", "older than 3600s")]


def test_age_is_from_the_checkpoint_time() -> None:
    # Created long ago but only checkpointed recently (it waited): its age is the checkpoint's.
    checkpoints = [checkpoint("slow", minutes_ago=120, taken_minutes_ago=10)]
    assert to_delete(retention={"maxAgeSeconds": 3600}, checkpoints=checkpoints, now=NOW) == []


# --- total size -----------------------------------------------------------------------------------
def test_total_bytes_deletes_the_oldest_first() -> None:
    checkpoints = [
        checkpoint("a", minutes_ago=40, size=400),
        checkpoint("b", minutes_ago=30, size=300),
        checkpoint("c", pod="db", minutes_ago=20, size=300),
        checkpoint("d", minutes_ago=10, size=200),
    ]
    assert to_delete(retention={"maxTotalBytes": 600}, checkpoints=checkpoints, now=NOW) == [
        Deletion("a", "the schedule's checkpoints exceed 600 bytes"),
        Deletion("b", "the schedule's checkpoints exceed 600 bytes"),
    ]
    assert to_delete(retention={"maxTotalBytes": 1200}, checkpoints=checkpoints, now=NOW) == []


def test_pinned_bytes_count_but_cannot_be_deleted() -> None:
    checkpoints = [
        checkpoint("pinned", minutes_ago=50, size=500, pinned=True),
        checkpoint("a", minutes_ago=40, size=200),
        checkpoint("b", minutes_ago=30, size=200),
    ]
    assert names(to_delete(retention={"maxTotalBytes": 700}, checkpoints=checkpoints, now=NOW)) == ["a"]
    # It can never fit: everything deletable goes, the pinned one stays.
    assert names(to_delete(retention={"maxTotalBytes": 100}, checkpoints=checkpoints, now=NOW)) == ["a", "b"]


def test_bytes_of_what_other_rules_delete_are_already_gone() -> None:
    checkpoints = [checkpoint("old", minutes_ago=120, size=500), checkpoint("a", minutes_ago=20, size=300)]
    assert to_delete(retention={"maxAgeSeconds": 3600, "maxTotalBytes": 400}, checkpoints=checkpoints, now=NOW) == [
        Deletion("old", "older than 3600s")
    ]


# --- all together ---------------------------------------------------------------------------------
def test_first_reason_wins_and_each_is_named_once() -> None:
    checkpoints = [
        checkpoint("ancient", minutes_ago=300, size=100),
        checkpoint("a", minutes_ago=50, size=100),
        checkpoint("b", minutes_ago=40, size=100),
        checkpoint("c", minutes_ago=30, size=100),
        checkpoint("d", minutes_ago=20, size=100),
    ]
    deletions = to_delete(
        retention={"maxAgeSeconds": 3600, "maxCountPerPod": 3, "maxTotalBytes": 200}, checkpoints=checkpoints, now=NOW
    )
    assert deletions == [
        Deletion("ancient", "older than 3600s"),
        Deletion("a", "more than 3 checkpoints of pod web"),
        Deletion("b", "the schedule's checkpoints exceed 200 bytes"),
    ]
    assert kept(checkpoints=checkpoints, deleted=deletions) == 2


def test_the_answer_does_not_depend_on_the_listing_order() -> None:
    checkpoints = [checkpoint(f"c{i}", minutes_ago=i % 7, size=10) for i in range(14)]
    retention = {"maxCountPerPod": 3, "maxTotalBytes": 50}
    assert to_delete(retention=retention, checkpoints=checkpoints, now=NOW) == to_delete(
        retention=retention, checkpoints=list(reversed(checkpoints)), now=NOW
    )


def test_a_checkpoint_of_a_pod_without_the_label_falls_back_to_its_spec() -> None:
    a, b = checkpoint("a", minutes_ago=20), checkpoint("b", minutes_ago=10)
    del a["metadata"]["labels"][api.LABEL_CHECKPOINT_POD]
    assert to_delete(retention={"maxCountPerPod": 1}, checkpoints=[a, b], now=NOW) == [
        Deletion("a", "more than 1 checkpoints of pod web")
    ]
