"""One PodMigration's phases as numbers on the migration's clock: the data both renderers draw.

``build`` turns a PodMigration (the dict the API returns) into a ``Timeline``: pure, no I/O,
``now`` passed in for a migration that is still running. The controller records its phases
back to back (each one starts when the previous one ends, the first at ``startTime``, the last
ends at ``completionTime``), so the bars tile the whole migration; the downtime is the
``frozenAt`` -> ``readyAt`` interval, which spans several phases (checkpoint to restore).

The checkpoint and restore phases are split further by ``status.stages`` where the control
service recorded them: freeze, dump, upload (and volumes) as the source node's agent timed them,
fetch, restore, ready as the target node's kubelet told them. Stages do not tile anything: they
may overlap (containers in parallel), leave gaps (the control service's own work between them), or
start before their phase (a controller's replacement pod created before the control service saw
it), so they are kept apart from the bars and drawn under the phase they detail. A migration
recorded before stages existed has none, and draws as it always did.

It is apart from the renderers because it is the part with the rules (which clock, what
"running" means, how long the pod was down when a rollback ended it) and the part other code
needs without drawing anything: the end-to-end test checks that the phases add up to the total,
and the renderers only lay out what it says. Every string from the API is cleaned here once, so
no renderer ever sees a control character or a line break.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from migrator import api
from migrator.units import NONE, parse_time


def clean(value: Any) -> str:
    """Text from the API on one line, without the control characters XML cannot carry."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in str(value)).split())


def _optional(value: Any) -> str | None:
    return clean(value) if value else None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, kw_only=True)
class Bar:
    """One phase: where it starts on the migration's clock, how long it took, how it ended."""

    name: str
    start: float  # seconds after the migration started
    duration: float
    error: str | None = None
    running: bool = False  # not ended yet: measured up to ``now``

    @property
    def end(self) -> float:
        return self.start + self.duration


# Which phase a stage details: by who recorded it, else by its name (a source this code does not know).
STAGE_PHASE_BY_SOURCE: Final = {"agent": "checkpoint", "kubelet": "restore"}
CHECKPOINT_STAGES: Final = ("freeze", "dump", "upload", "volumes")  # agentapi.contract.CHECKPOINT_STAGES
RESTORE_STAGES: Final = ("fetch", "restore", "ready")
STAGE_ORDER: Final = (*CHECKPOINT_STAGES, *RESTORE_STAGES)


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One stage of a phase (``status.stages``): where it starts on the migration's clock, how long, how big."""

    name: str
    phase: str  # the phase it details: checkpoint or restore
    start: float  # seconds after the migration started
    duration: float
    container: str | None = None  # None: the whole pod (freeze, volumes)
    node: str | None = None
    source: str | None = None  # agent or kubelet
    bytes: int | None = None

    @property
    def end(self) -> float:
        return self.start + self.duration


class DowntimeKind(StrEnum):
    MEASURED = "measured"  # frozenAt -> readyAt: the pod served again on the target
    ONGOING = "ongoing"  # frozen and not Ready yet: up to now
    UNTIL_ROLLBACK = "until-rollback"  # Failed after the freeze: no readyAt, frozen until the rollback ended


@dataclass(frozen=True, kw_only=True)
class Downtime:
    start: float
    duration: float
    kind: DowntimeKind

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True, kw_only=True)
class ContainerBytes:
    name: str
    archive_bytes: int | None
    image_bytes: int | None


@dataclass(frozen=True, kw_only=True)
class Timeline:
    name: str
    namespace: str
    pod: str
    source: str | None
    target: str | None
    phase: str  # status.phase: Succeeded, Failed, or where a running one is
    reason: str | None
    message: str | None
    trace_id: str | None
    started: datetime | None
    total: float  # startTime -> completionTime (or now while running)
    bars: tuple[Bar, ...]
    downtime: Downtime | None
    containers: tuple[ContainerBytes, ...]
    volume_bytes: int | None = None  # the emptyDir files that moved beside the checkpoint (status.volumeData)
    stages: tuple[Stage, ...] = ()  # status.stages, in time order; none for a migration recorded before them

    @property
    def finished(self) -> bool:
        return self.phase in api.TERMINAL_PHASES

    @property
    def failed(self) -> bool:
        return self.phase == api.Phase.FAILED

    @property
    def span(self) -> float:
        """The length of the time axis: the total, or more if a bar or the downtime reaches further."""
        ends = [self.total, *(b.end for b in self.bars), *(s.end for s in self.stages)]
        if self.downtime:
            ends.append(self.downtime.end)
        return max(max(ends), 0.001)

    @property
    def rows(self) -> tuple[Bar | Stage, ...]:
        """What the charts draw, top to bottom: each bar, then the stages of its phase (under its last bar of that
        name); stages whose phase has no bar come last."""
        last = {bar.name: i for i, bar in enumerate(self.bars)}
        under: dict[int | None, list[Stage]] = {}
        for stage in self.stages:
            under.setdefault(last.get(stage.phase), []).append(stage)
        rows: list[Bar | Stage] = []
        for i, bar in enumerate(self.bars):
            rows += [bar, *under.get(i, [])]
        return (*rows, *under.get(None, []))

    @property
    def stage_containers(self) -> tuple[str, ...]:
        """The containers the stages name, in the order they first appear."""
        return tuple(dict.fromkeys(s.container for s in self.stages if s.container))

    @property
    def archive_bytes(self) -> int | None:
        counts = [c.archive_bytes for c in self.containers if c.archive_bytes is not None]
        return sum(counts) if counts else None

    @property
    def image_bytes(self) -> int | None:
        counts = [c.image_bytes for c in self.containers if c.image_bytes is not None]
        return sum(counts) if counts else None


def _bar(record: Mapping[str, Any], start: datetime, *, origin: datetime, stop: datetime | None, finished: bool) -> Bar:
    end = parse_time(record.get("end"))
    return Bar(
        name=clean(record.get("name") or NONE),
        start=max((start - origin).total_seconds(), 0.0),
        duration=max(((end or stop or start) - start).total_seconds(), 0.0),
        error=_optional(record.get("error")),
        running=end is None and not finished,
    )


def _stage(record: Mapping[str, Any], *, origin: datetime) -> Stage | None:
    start, end = parse_time(record.get("start")), parse_time(record.get("end"))
    if start is None or end is None:
        return None
    name, source = clean(record.get("name") or NONE), _optional(record.get("source"))
    phase = STAGE_PHASE_BY_SOURCE.get(source or "") or ("restore" if name in RESTORE_STAGES else "checkpoint")
    nbytes = _int(record.get("bytes"))
    return Stage(
        name=name,
        phase=phase,
        start=max((start - origin).total_seconds(), 0.0),
        duration=max((end - start).total_seconds(), 0.0),
        container=_optional(record.get("container")),
        node=_optional(record.get("node")),
        source=source,
        bytes=nbytes if nbytes is not None and nbytes >= 0 else None,
    )


def _stages(records: Any, *, origin: datetime | None) -> tuple[Stage, ...]:
    if not origin or not isinstance(records, list):
        return ()
    found = [s for r in records if isinstance(r, Mapping) and (s := _stage(r, origin=origin)) is not None]
    rank = {name: i for i, name in enumerate(STAGE_ORDER)}
    return tuple(sorted(found, key=lambda s: (round(s.start, 3), rank.get(s.name, len(rank)), s.container or "")))


def build(obj: Mapping[str, Any], *, now: datetime) -> Timeline:
    """The timeline of one PodMigration as the API returns it; ``now`` ends what is still running."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    phase = clean(status.get("phase") or api.Phase.PENDING.value)
    finished = phase in api.TERMINAL_PHASES
    records = [(p, start) for p in status.get("phases") or [] if (start := parse_time(p.get("start")))]
    origin = parse_time(status.get("startTime")) or (records[0][1] if records else None)
    # A finished migration's clock stops at completionTime (or its last phase's end); a running one's is now.
    last_end = parse_time(records[-1][0].get("end")) if records else None
    stop = (parse_time(status.get("completionTime")) or last_end) if finished else now
    bars = tuple(_bar(record, start, origin=origin, stop=stop, finished=finished) for record, start in records) if origin else ()
    downtime = None
    frozen, ready = parse_time(status.get("frozenAt")), parse_time(status.get("readyAt"))
    if frozen and origin:
        if ready:
            kind, until = DowntimeKind.MEASURED, ready
        elif not finished:
            kind, until = DowntimeKind.ONGOING, now
        else:
            kind, until = DowntimeKind.UNTIL_ROLLBACK, stop or frozen
        downtime = Downtime(
            start=max((frozen - origin).total_seconds(), 0.0), duration=max((until - frozen).total_seconds(), 0.0), kind=kind
        )
    containers = tuple(
        ContainerBytes(
            name=clean(c.get("name") or NONE), archive_bytes=_int(c.get("archiveBytes")), image_bytes=_int(c.get("imageBytes"))
        )
        for c in status.get("containers") or []
    )
    return Timeline(
        volume_bytes=_int((status.get("volumeData") or {}).get("dataBytes")),
        name=clean(meta.get("name") or NONE),
        namespace=clean(meta.get("namespace") or ""),
        pod=clean(spec.get("podName") or NONE),
        source=_optional(status.get("sourceNode")),
        target=_optional(status.get("targetNode") or spec.get("targetNode")),
        phase=phase,
        reason=_optional(status.get("reason")),
        message=_optional(status.get("message")),
        trace_id=_optional(status.get("traceID")),
        started=origin,
        total=max(((stop or origin) - origin).total_seconds(), 0.0) if origin else 0.0,
        bars=bars,
        downtime=downtime,
        containers=containers,
        stages=_stages(status.get("stages"), origin=origin),
    )
