"""Which of a CheckpointSchedule's PodCheckpoints to delete: its retention, as one pure function.

A schedule creates checkpoints forever; its ``spec.retention`` bounds what they cost, by count
per pod, by total size and by age. Deciding is kept apart from deleting (the controller lists,
calls ``to_delete``, deletes) so that every rule can be tested on plain data, and so that the
answer depends only on what the API says now: a controller restarted half way through a pass
decides the same again.

What is never deleted, whatever the limits say:

* a pinned checkpoint (``spec.pinned``): someone wants to keep it; it does not count toward
  ``maxCountPerPod`` either (pinning one must not push another out);
* a suspended one (``status.suspended``): the pod exists only in that checkpoint;
* one in flight (phase empty, Pending, Checkpointing, Suspending): it is not in the registry yet,
  and whether it will be is not known: it neither counts nor can be deleted;
* one already being deleted (``metadata.deletionTimestamp``): it is going; it does not count.

The rules, each checkpoint deleted for the first that applies:

1. a Failed checkpoint goes once a newer checkpoint of the same pod is Available (it was kept
   only to tell why that run failed);
2. ``maxAgeSeconds``: Available or Failed, older than that (from ``status.checkpointTime``, or
   ``metadata.creationTimestamp`` for one that never got that far);
3. ``maxCountPerPod``: of each pod's Available checkpoints (not pinned, not suspended) the newest
   that many are kept. Failed ones do not count against Available ones (three failures in a row
   must not delete the last good checkpoints), but they are bounded the same way among
   themselves: a pod that keeps failing keeps only its newest ``maxCountPerPod`` failures;
4. ``maxTotalBytes``: the Available checkpoints' ``status.totalBytes`` added up (pinned and
   suspended ones included: their bytes are in the registry too, they just cannot be deleted)
   must not exceed it; the oldest deletable ones go first until it fits, or nothing is left to
   delete.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from migrator import api
from migrator.api import CheckpointPhase
from migrator.units import parse_time

DONE: Final = frozenset({CheckpointPhase.AVAILABLE, CheckpointPhase.FAILED})


class Deletion(NamedTuple):
    """A checkpoint to delete, and why (for the Event and the schedule's status)."""

    name: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Retention:
    """``spec.retention`` of a CheckpointSchedule; None is "no limit"."""

    max_count_per_pod: int | None = None
    max_total_bytes: int | None = None
    max_age_seconds: int | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> Retention:
        spec = spec or {}

        def limit(key: str) -> int | None:
            value = spec.get(key)
            return None if value is None else int(value)

        return cls(
            max_count_per_pod=limit("maxCountPerPod"),
            max_total_bytes=limit("maxTotalBytes"),
            max_age_seconds=limit("maxAgeSeconds"),
        )


@dataclass(frozen=True, kw_only=True)
class _Checkpoint:
    name: str
    pod: str
    phase: str
    taken: datetime  # checkpointTime, else creationTimestamp
    created: datetime
    bytes: int
    protected: bool  # pinned or suspended: never deleted
    pinned: bool

    @classmethod
    def of(cls, obj: Mapping[str, Any], *, now: datetime) -> _Checkpoint:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        spec = obj.get("spec") or {}
        # Without a timestamp (never from the API server) a checkpoint counts as new: kept the longest.
        created = parse_time(meta.get("creationTimestamp")) or now
        pinned = bool(spec.get("pinned"))
        return cls(
            name=str(meta["name"]),
            pod=str((meta.get("labels") or {}).get(api.LABEL_CHECKPOINT_POD) or spec.get("podName") or ""),
            phase=str(status.get("phase") or ""),
            taken=parse_time(status.get("checkpointTime")) or created,
            created=created,
            bytes=int(status.get("totalBytes") or 0),
            protected=pinned or bool(status.get("suspended")),
            pinned=pinned,
        )

    @property
    def order(self) -> tuple[datetime, str]:
        """Oldest first (ties by name, so the answer never depends on the order of a listing)."""
        return (self.taken, self.name)

    @property
    def deletable(self) -> bool:
        return not self.protected and self.phase in DONE


def to_delete(
    *, retention: Retention | Mapping[str, Any] | None, checkpoints: Iterable[Mapping[str, Any]], now: datetime
) -> list[Deletion]:
    """The checkpoints ``retention`` says to delete now, oldest first, each with its reason (see the module docstring)."""
    if not isinstance(retention, Retention):
        retention = Retention.from_spec(retention)
    now = now.astimezone(UTC)
    live = sorted(
        (_Checkpoint.of(c, now=now) for c in checkpoints if not (c.get("metadata") or {}).get("deletionTimestamp")),
        key=lambda c: c.order,
    )
    doomed: dict[str, str] = {}

    def delete(c: _Checkpoint, reason: str) -> None:
        if c.deletable and c.name not in doomed:
            doomed[c.name] = reason

    by_pod: dict[str, list[_Checkpoint]] = defaultdict(list)
    for c in live:
        by_pod[c.pod].append(c)

    # 1. Failed ones a newer Available checkpoint of their pod has made pointless.
    for pod, own in by_pod.items():
        available = [c.created for c in own if c.phase == CheckpointPhase.AVAILABLE]
        for c in own:
            if c.phase == CheckpointPhase.FAILED and any(when > c.created for when in available):
                delete(c, f"failed, and a newer checkpoint of pod {pod} is available")

    # 2. Age.
    if retention.max_age_seconds is not None:
        for c in live:
            if (now - c.taken).total_seconds() > retention.max_age_seconds:
                delete(c, f"older than {retention.max_age_seconds}s")

    # 3. Count per pod: the newest are kept (pinned and suspended ones do not count).
    if retention.max_count_per_pod is not None:
        keep = retention.max_count_per_pod
        for pod, own in by_pod.items():
            for phase, what in ((CheckpointPhase.AVAILABLE, "checkpoints"), (CheckpointPhase.FAILED, "failed checkpoints")):
                counted = [c for c in own if c.phase == phase and not c.protected and c.name not in doomed]
                for c in counted[: max(len(counted) - keep, 0)]:
                    delete(c, f"more than {keep} {what} of pod {pod}")

    # 4. Total size: the oldest go first until the rest fits.
    if retention.max_total_bytes is not None:
        limit = retention.max_total_bytes
        stored = [c for c in live if c.phase == CheckpointPhase.AVAILABLE and c.name not in doomed]
        total = sum(c.bytes for c in stored)
        for c in stored:
            if total <= limit:
                break
            if c.deletable:
                delete(c, f"the schedule's checkpoints exceed {limit} bytes")
                total -= c.bytes

    return [Deletion(c.name, doomed[c.name]) for c in live if c.name in doomed]


def kept(*, checkpoints: Iterable[Mapping[str, Any]], deleted: Iterable[Deletion]) -> int:
    """How many checkpoints remain: those not being deleted already and not among ``deleted``."""
    gone = {d.name for d in deleted}
    return sum(
        1
        for c in checkpoints
        if not (c.get("metadata") or {}).get("deletionTimestamp") and (c.get("metadata") or {}).get("name") not in gone
    )
