"""The restore's stages on the target node (fetch, restore, ready), from what its kubelet tells the API.

For each container of the restored pod:

- **fetch**: the pod created (bound to its node at creation: the control service or the webhook
  sets ``nodeName``) -> its checkpoint image pulled (the ``Pulled`` Event). It includes the pod
  sandbox's setup before the pull, which no Event times.
- **restore**: pulled -> the container running again (``Started``; the stand-in node says
  ``Restored``): the runtime unpacking the checkpoint and CRIU restoring the processes.
- **ready**: running -> the pod seen Ready by the control service (``readyAt``, the same end the
  downtime has): readiness probes, and the control service's poll (every 0.1 s).

**Source: the pod's Events and status, read once, when the migration records ``readyAt``.** One
list call, which the restore phase's trace spans use too, and a restarted control service that
reads them again gets the same answer (Events live an hour, far longer than a restore). Watching
for each Event as it comes would not be more precise: Events reach the API through the kubelet's
asynchronous broadcaster, so a moment the control service saw one is later by that delay plus the
poll, it would cost a list per poll (ten a second) for the whole restore, and what a killed control
service had seen would be lost.

**Resolution.** Each boundary is a window in which it must lie, narrowed by every fact that bounds
it; an estimate inside what remains is recorded (below), in milliseconds as all status times:

- An Event's ``eventTime`` is microseconds: exact. The stand-in node (and anything recording
  Events as ``kubeclient.events`` does) sets it.
- The real kubelet records core/v1 Events with the old recorder: ``eventTime`` empty and
  ``firstTimestamp`` in whole seconds, so each of its Events is only known to lie in one second;
  ``containerStatuses[].state.running.startedAt`` is whole seconds too.
- Its ``Pulled`` message measures the pull to the millisecond ('Successfully pulled image "X" in
  1.234s (1.5s including waiting). Image size: N bytes.'): the pull ended that long after the
  ``Pulling`` Event's second, and after the pod existed. The image size becomes the fetch's bytes
  (else the checkpoint image's size the agent pushed, which is what was fetched).
- The control service's own moments bound the rest: a pod it created itself was created between
  its create-target phase's start and the restore phase's start (milliseconds apart); any pod was
  created before the control service first saw it; everything happened before ``readyAt``.

What is recorded is each boundary's expected moment given its window and the order the
boundaries come in (``ordered_estimates``): two Events of one second are not both put in its
middle, which would draw the stage between them as zero; with nothing else known they fall a
third and two thirds into it.

So on the stand-in every boundary is exact but fetch's start (the pod's creation: to a few
milliseconds for a bare pod; for a controller's replacement, within its second or the time the
control service took to see it, whichever is shorter). On a real kubelet each boundary lies in a
window of at most one second, often much less (``readyAt`` cuts the ``Started`` second short, the
pull's duration ties ``Pulled`` to ``Pulling`` and to the pod's creation); simulated against such
Events (the tests), boundaries and stage durations came out 0.1 to 0.2 s off on average, a
boundary never more than 0.5 s. Windows that contradict each other (a node's clock is not the
control service's) meet halfway, and ``readyAt`` stays the end: a node's clock ahead squeezes the
stages before it, never past it. A container without a ``Pulled`` Event or any sign of running
gets no stages: nothing would bound them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from migrator.controllers.podmigration.stages import (
    SOURCE_KUBELET,
    STAGE_FETCH,
    STAGE_READY,
    STAGE_RESTORE,
    stage_record,
)
from migrator.units import parse_time

PULLING: Final = "Pulling"
PULLED: Final = "Pulled"
STARTED: Final = "Started"
RESTORED: Final = "Restored"  # the stand-in node's Event for a container restored from a checkpoint
REASONS: Final = frozenset({PULLING, PULLED, STARTED, RESTORED})

# The kubelet's events name the container in involvedObject.fieldPath.
_FIELD_PATH: Final = re.compile(r"spec\.containers\{(?P<name>[^}]+)\}")
# Else the message does: 'Started container app', 'Created container: app', 'Restored container app from ...'.
_NAMED: Final = re.compile(r"\bcontainer:? (?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\b")
_IMAGE: Final = re.compile(r'\bimage "(?P<image>[^"]*)"', re.IGNORECASE)
# The real kubelet's: 'Successfully pulled image "X" in 1.234s (1.5s including waiting). Image size: 123 bytes.'
# (older kubelets: no size, or no waiting either).
_DURATION: Final = r"(?:\d+(?:\.\d*)?(?:ns|us|µs|μs|ms|s|m|h))+"
_PULLED_MESSAGE: Final = re.compile(
    rf'Successfully pulled image "(?P<image>[^"]*)" in (?P<pull>{_DURATION})'
    rf"(?: \((?P<waiting>{_DURATION}) including waiting\))?(?:\. Image size: (?P<size>\d+) bytes)?"
)
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS: Final = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float | None:
    """Seconds in a Go ``time.Duration`` as it prints (``850ms``, ``1.234s``, ``1m2.5s``); None if it is not one."""
    if not re.fullmatch(_DURATION, text):
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text))


@dataclass(frozen=True, kw_only=True)
class PullReport:
    """What a ``Pulled`` message says: how long the pull took (with the wait for the kubelet's puller), the size."""

    seconds: float | None
    size: int | None


def pull_report(message: str) -> PullReport:
    """The real kubelet's measured pull; nothing from a message without one (an image already present, the stand-in)."""
    found = _PULLED_MESSAGE.search(message)
    if not found:
        return PullReport(seconds=None, size=None)
    seconds = go_duration(found["waiting"] or found["pull"])
    return PullReport(seconds=seconds, size=int(found["size"]) if found["size"] else None)


@dataclass(frozen=True)
class Window:
    """Where a moment lies, in epoch seconds: ``lo`` <= moment <= ``hi`` (unbounded sides are infinite)."""

    lo: float = -math.inf
    hi: float = math.inf

    def within(self, lo: float = -math.inf, hi: float = math.inf) -> Window:
        """Narrowed by another bound; bounds that contradict each other (different machines' clocks) meet halfway."""
        new_lo, new_hi = max(self.lo, lo), min(self.hi, hi)
        if new_lo <= new_hi:
            return Window(new_lo, new_hi)
        point = (new_lo + new_hi) / 2
        return Window(point, point)

    @property
    def estimate(self) -> float | None:
        """The middle of the window (its one finite side if the other is open); None if it bounds nothing."""
        if math.isfinite(self.lo) and math.isfinite(self.hi):
            return (self.lo + self.hi) / 2
        if math.isfinite(self.lo):
            return self.lo
        return self.hi if math.isfinite(self.hi) else None


def ordered_estimates(first: Window, second: Window, *, steps: int = 256) -> tuple[float, float]:
    """The expected values of two moments, ``first`` <= ``second``, each anywhere in its (finite) window.

    Two Events of the same second are not both put in its middle (a stage of zero between them):
    with nothing else known, they are expected a third and two thirds into it.
    """
    if first.hi - first.lo < 1e-9:
        return first.lo, second.within(lo=first.lo).estimate or first.lo
    if second.hi - second.lo < 1e-9:
        return first.within(hi=second.lo).estimate or second.lo, second.lo
    width = (first.hi - first.lo) / steps
    area = mean_first = mean_second = 0.0
    for i in range(steps):  # over ``first``: the part of ``second``'s window after it, weighted by its length
        at = first.lo + (i + 0.5) * width
        after = max(second.lo, at)
        length = second.hi - after
        if length > 0:
            area += length
            mean_first += at * length
            mean_second += (after + second.hi) / 2 * length
    if area <= 0:  # (windows narrowed against each other always overlap; this is only a guard)
        one = first.estimate or first.lo
        return one, max(second.estimate or one, one)
    return mean_first / area, mean_second / area


def _second(text: Any) -> Window | None:
    """A whole-second API timestamp: the moment lies somewhere in that second."""
    when = parse_time(text)
    if when is None:
        return None
    start = math.floor(when.timestamp())
    return Window(start, start + 1)


def event_moment(event: Mapping[str, Any]) -> Window | None:
    """When an Event happened: exact from ``eventTime`` (microseconds), else within the second of ``firstTimestamp``."""
    exact = parse_time(event.get("eventTime"))
    if exact is not None:
        return Window(exact.timestamp(), exact.timestamp())
    for key in ("firstTimestamp", "lastTimestamp"):
        if (window := _second(event.get(key))) is not None:
            return window
    return _second((event.get("metadata") or {}).get("creationTimestamp"))


def event_containers(event: Mapping[str, Any], *, images: Mapping[str, str]) -> list[str]:
    """The containers of the pod (``images``: name -> image) an Event is about."""
    field_path = (event.get("involvedObject") or {}).get("fieldPath") or ""
    if field_path:  # the real kubelet's: exact (and an init container's is none of ours)
        found = _FIELD_PATH.fullmatch(field_path)
        return [found["name"]] if found and found["name"] in images else []
    message = str(event.get("message") or "")
    if event.get("reason") in (PULLING, PULLED) and (image := _IMAGE.search(message)):
        return [name for name, wanted in images.items() if wanted == image["image"]]
    if (named := _NAMED.search(message)) and named["name"] in images:
        return [named["name"]]
    return list(images) if len(images) == 1 else []


def _first_events(
    events: Iterable[Mapping[str, Any]], *, images: Mapping[str, str]
) -> dict[tuple[str, str], tuple[Window, Mapping[str, Any]]]:
    """The first Event of each reason for each container, with when it happened."""
    first: dict[tuple[str, str], tuple[Window, Mapping[str, Any]]] = {}
    for event in events:
        reason = event.get("reason")
        if reason not in REASONS or (moment := event_moment(event)) is None:
            continue
        for name in event_containers(event, images=images):
            known = first.get((name, reason))
            if known is None or moment.lo < known[0].lo:
                first[(name, reason)] = (moment, event)
    return first


def _running_since(pod: Mapping[str, Any]) -> dict[str, Window]:
    """``containerStatuses[].state.running.startedAt`` (whole seconds) per container."""
    out = {}
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        window = _second(((status.get("state") or {}).get("running") or {}).get("startedAt"))
        if window is not None:
            out[str(status.get("name"))] = window
    return out


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def derive(
    *,
    pod: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    ready_at: datetime,
    created_after: datetime | None = None,
    seen_at: datetime | None = None,
    image_bytes: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """The restored ``pod``'s stages (``status.stages`` records) from its Events, its status and the control service's moments.

    ``events``: the pod's Events (plain dicts); ``ready_at``: when the control service saw it Ready;
    ``created_after`` / ``seen_at``: what the control service knows of the pod's creation (after it
    began creating it, before it first saw it); ``image_bytes``: each container's checkpoint image size.
    """
    containers: Sequence[Mapping[str, Any]] = (pod.get("spec") or {}).get("containers") or []
    images = {str(c["name"]): str(c.get("image") or "") for c in containers}
    node = str((pod.get("spec") or {}).get("nodeName") or "")
    first = _first_events(list(events), images=images)
    running = _running_since(pod)
    ready = ready_at.timestamp()
    created = (_second((pod.get("metadata") or {}).get("creationTimestamp")) or Window()).within(
        created_after.timestamp() if created_after else -math.inf, seen_at.timestamp() if seen_at else math.inf
    )
    records: list[dict[str, Any]] = []
    for name in images:
        pulled_event = first.get((name, PULLED))
        starts = [first[(name, reason)][0] for reason in (STARTED, RESTORED) if (name, reason) in first]
        started = min(starts, key=lambda w: w.lo) if starts else None
        if pulled_event is None or (started is None and name not in running):
            continue
        pulled, event = pulled_event
        report = pull_report(str(event.get("message") or ""))
        wait = report.seconds
        born = created
        if wait is not None:
            pulled = pulled.within(born.lo + wait)  # the pull began once the pod existed
            if (pulling := first.get((name, PULLING))) is not None:
                pulled = pulled.within(pulling[0].lo + wait, pulling[0].hi + wait)
        up = started or Window()
        if name in running:
            up = up.within(running[name].lo, running[name].hi)
        up = up.within(pulled.lo, ready)
        pulled = pulled.within(hi=up.hi)
        born = born.within(hi=pulled.hi - (wait or 0.0))
        t1, t2 = ordered_estimates(pulled, up)
        t0 = born.estimate
        # In order, and all before readyAt, the end the downtime has too (a node's clock ahead squeezes them before it).
        t1 = max(t1, t0) if t0 is not None else t1
        t2 = min(max(t2, t1), ready)
        t1 = min(t1, t2)
        t0 = min(t0, t1) if t0 is not None else None
        t3 = ready
        fetch_bytes = report.size if report.size is not None else (image_bytes or {}).get(name)
        common = {"node": node, "source": SOURCE_KUBELET, "container": name}
        if t0 is not None:
            records.append(stage_record(name=STAGE_FETCH, start=_at(t0), end=_at(t1), nbytes=fetch_bytes, **common))
        records.append(stage_record(name=STAGE_RESTORE, start=_at(t1), end=_at(t2), **common))
        records.append(stage_record(name=STAGE_READY, start=_at(t2), end=_at(t3), **common))
    return records
