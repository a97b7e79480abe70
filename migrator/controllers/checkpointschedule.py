"""The CheckpointSchedule reconciler: PodCheckpoints on a cron schedule, and old ones deleted.

A CheckpointSchedule names pods (``spec.podName``, or ``spec.selector`` in its namespace) and a
cron schedule (``migrator.cron``, UTC). Each time the schedule is due, every pod it names that is
Running on a node gets a PodCheckpoint of mode Running (the pod runs on); ``spec.retention``
then decides which of the schedule's checkpoints to delete (``migrator.retention``). The
PodCheckpoint controller does the checkpointing; this one only creates and deletes objects.

Level-triggered like the other reconcilers: each pass reads the schedule and its checkpoints,
does what is due now, records it in status and says when to look again. What keeps that safe
across restarts:

* ``status.lastScheduleTime`` is the time the schedule was *due*, not the wall clock of the
  pass, and the next run is computed from it: a pass that runs late, or a controller restarted
  after a run, does not fire the same run twice, nor drift.
* A run's checkpoint names are derived from the schedule, the pod and the due time
  (``<schedule>-<pod>-<YYYYMMDD-HHMMSS>``), so creating them is idempotent: a pass that created
  them and died before saving status creates the same names again, and 409 AlreadyExists is
  success. That is why the creations come before the status that records them.
* Missed runs fire once, as a CronJob does: a controller that was down for several periods (or
  a schedule that was suspended through them) fires once for the latest time it was due, not
  once per period; the Event says it missed runs.
* A pod whose previous checkpoint of this schedule is still in flight (no phase yet, Pending,
  Checkpointing) gets none this run: two CRIU dumps of one pod must not overlap, and a schedule
  shorter than a checkpoint takes would otherwise pile them up. It is logged and counted in
  ``status.skipped``.

The checkpoints carry no ownerReference to the schedule: they outlive it (a pinned one is kept
on purpose), and deleting a schedule (which holds no finalizer) leaves them where they are.
Retention only deletes: each PodCheckpoint's own finalizer removes its images from the registry.

An invalid schedule or selector sets condition ``Valid`` False with the reason and records a
Warning Event; nothing else happens (not even retention) until the spec changes, which the watch
brings back here.

Status written: ``lastScheduleTime``, ``nextScheduleTime`` (absent while suspended or invalid),
``kept`` (the schedule's checkpoints not being deleted), ``skipped`` and ``lastCreated`` (of the
last run), ``lastDeleted`` (the latest deletions, newest first, with their reasons), and the
``Valid`` condition.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from kubernetes_asyncio import client

from kubeclient.reading import plain, read_plain
from kubeclient.resources import Gone
from migrator import api, cron, retention
from migrator.api import CheckpointMode
from migrator.drainplan import SelectorError, parse_selector
from migrator.reconciling import Record, Recorder, set_condition
from migrator.units import iso, now, parse_time

log = logging.getLogger(__name__)

POLL: Final = 5.0  # while a checkpoint of the schedule is in flight: its outcome decides the next run and retention
MAX_WAIT: Final = 300.0  # the longest a schedule goes unlooked at: retention by age is re-checked at least this often
DELETED_HISTORY: Final = 10  # status.lastDeleted keeps this many
CREATED_HISTORY: Final = 50  # status.lastCreated names at most this many
SCHEDULE_PART: Final = 30  # a checkpoint's name: <schedule part>-<pod part>-<YYYYMMDD-HHMMSS>
POD_PART: Final = 20
LABEL_VALUE_LIMIT: Final = 63
VALID: Final = "Valid"
SELECTOR_OPERATORS: Final = {"In": "in", "NotIn": "notin", "Exists": "", "DoesNotExist": "!"}


# --- names and selectors ----------------------------------------------------------------------
def _name_part(text: str, limit: int) -> str:
    """``text`` lowercased with anything but ``[a-z0-9-]`` as ``-``; if longer than ``limit``, a prefix and a hash.

    The hash keeps truncated names apart: a StatefulSet's ``...-0`` and ``...-1`` share their
    first 20 characters, and the second checkpoint's 409 would otherwise pass for the first's.
    """
    safe = re.sub(r"[^a-z0-9-]", "-", text.lower())
    if len(safe) <= limit:
        return safe.strip("-")
    digest = hashlib.sha256(text.encode()).hexdigest()[:5]
    return f"{safe[: limit - len(digest) - 1].strip('-')}-{digest}"


def checkpoint_name(*, schedule: str, pod: str, when: datetime) -> str:
    """The PodCheckpoint a run of ``schedule`` due at ``when`` creates for ``pod``: the same every time it is asked."""
    stamp = when.strftime("%Y%m%d-%H%M%S")
    return f"{_name_part(schedule, SCHEDULE_PART)}-{_name_part(pod, POD_PART)}-{stamp}"


def label_selector(selector: Mapping[str, Any] | None) -> str | None:
    """A metav1.LabelSelector as the list call's ``label_selector`` string; None when it selects nothing.

    As the CRD says, an empty (or absent) selector selects no pods, not all of them: a schedule
    that checkpoints a whole namespace must say so (``matchExpressions: [{key: x, operator:
    DoesNotExist}]``, say). ``SelectorError`` for an operator, key or value the API would refuse.
    """
    selector = selector or {}
    terms = [f"{key}={value}" for key, value in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        key, operator = str(expression.get("key") or ""), expression.get("operator")
        values = [str(v) for v in expression.get("values") or []]
        if operator not in SELECTOR_OPERATORS:
            raise SelectorError(f"matchExpressions: unknown operator {operator!r} (In, NotIn, Exists, DoesNotExist)")
        if operator in ("In", "NotIn"):
            if not values:
                raise SelectorError(f"matchExpressions: {key} {operator} needs values")
            terms.append(f"{key} {SELECTOR_OPERATORS[operator]} ({','.join(values)})")
        else:
            if values:
                raise SelectorError(f"matchExpressions: {key} {operator} takes no values")
            terms.append(f"{SELECTOR_OPERATORS[operator]}{key}")
    if not terms:
        return None
    text = ",".join(terms)
    parse_selector(text)  # the same syntax checks kubectl makes: a bad key or value fails here, with its term
    return text


def checkpointable(pod: Mapping[str, Any]) -> bool:
    """Running on a node and not being deleted: a pod there is something to checkpoint of."""
    return (
        (pod.get("status") or {}).get("phase") == "Running"
        and bool((pod.get("spec") or {}).get("nodeName"))
        and not pod["metadata"].get("deletionTimestamp")
    )


def in_flight(checkpoint: Mapping[str, Any]) -> bool:
    """Not finished yet: no phase, Pending, Checkpointing (or Suspending); even if it is being deleted."""
    return (checkpoint.get("status") or {}).get("phase") not in retention.DONE


def _pod_of(checkpoint: Mapping[str, Any]) -> str:
    return str((checkpoint["metadata"].get("labels") or {}).get(api.LABEL_CHECKPOINT_POD) or "")


class Schedule(Record):
    """A CheckpointSchedule and the status being built for it."""

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.obj.get("spec") or {}

    @property
    def suspended(self) -> bool:
        return bool(self.spec.get("suspend"))

    def valid_condition(self) -> Mapping[str, Any] | None:
        return next((c for c in self.status.get("conditions") or [] if c.get("type") == VALID), None)


class Invalid(Exception):
    """The spec cannot be acted on: the ``Valid`` condition's reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class CheckpointScheduleReconciler:
    """Creates a schedule's PodCheckpoints when it is due and deletes what its retention says (module docstring)."""

    def __init__(
        self, *, core: client.CoreV1Api, custom: client.CustomObjectsApi, poll: float = POLL, max_wait: float = MAX_WAIT
    ) -> None:
        self.core = core
        self.custom = custom
        self.recorder = Recorder(core=core, custom=custom, resource=api.CHECKPOINTSCHEDULES)
        self.poll = poll
        self.max_wait = max_wait

    async def reconcile(self, obj: Mapping[str, Any]) -> float | None:
        """One pass: fire if due, apply retention, save status; seconds until the next look, None if none is needed."""
        s = Schedule(obj)
        if s.deleting:
            return None  # no finalizer, nothing to undo: its checkpoints stay
        try:
            try:
                schedule, selector = self._validate(s)
            except Invalid as invalid:
                await self._invalid(s, invalid)
                return None
            return await self._pass(s, schedule, selector)
        except Gone:
            return None

    # --- validation ---------------------------------------------------------------------------
    @staticmethod
    def _validate(s: Schedule) -> tuple[cron.Cron, str | None]:
        """The parsed schedule, and the pods' label selector (None: ``spec.podName``, or a selector that selects nothing)."""
        if len(s.name) > LABEL_VALUE_LIMIT:
            raise Invalid("InvalidName", f"the schedule's name is longer than {LABEL_VALUE_LIMIT} characters: "
                          f"its checkpoints could not carry it in label {api.LABEL_SCHEDULE}")  # fmt: skip
        try:
            schedule = cron.parse(str(s.spec.get("schedule") or ""))
        except cron.CronError as exc:
            raise Invalid("InvalidSchedule", f"spec.schedule {s.spec.get('schedule')!r}: {exc}") from None
        if s.spec.get("podName"):
            return schedule, None
        try:
            return schedule, label_selector(s.spec.get("selector"))
        except SelectorError as exc:
            raise Invalid("InvalidSelector", f"spec.selector: {exc}") from None

    async def _invalid(self, s: Schedule, invalid: Invalid) -> None:
        old = s.valid_condition()
        if not old or old.get("status") != "False" or old.get("message") != invalid.message:
            s.note(invalid.reason, invalid.message, warning=True)  # once per mistake, not once per pass
            log.warning("checkpointschedule %s/%s: %s", s.namespace, s.name, invalid.message)
        set_condition(s.status, kind=VALID, value=False, reason=invalid.reason, message=invalid.message)
        s.status.pop("nextScheduleTime", None)
        await self.recorder.save(s)

    # --- one pass -----------------------------------------------------------------------------
    async def _pass(self, s: Schedule, schedule: cron.Cron, selector: str | None) -> float:
        set_condition(s.status, kind=VALID, value=True, reason=VALID, message=f"checkpoints on schedule {schedule.text}")
        current = now()
        checkpoints = await self._checkpoints(s)
        anchor = parse_time(s.status.get("lastScheduleTime")) or parse_time(s.meta.get("creationTimestamp")) or current
        due = schedule.next_after(anchor)
        if due <= current and not s.suspended:
            fired = schedule.latest_until(current, after=anchor) or due
            checkpoints += await self._run(s, fired=fired, first_missed=due, selector=selector, checkpoints=checkpoints)
            s.status["lastScheduleTime"] = iso(fired)
            anchor = fired
        await self._retain(s, checkpoints, current)
        following = schedule.next_after(anchor)
        if s.suspended:
            s.status.pop("nextScheduleTime", None)
        else:
            s.status["nextScheduleTime"] = iso(following)
        await self.recorder.save(s)
        wait = self.max_wait if s.suspended else min((following - current).total_seconds(), self.max_wait)
        if any(in_flight(c) and not c["metadata"].get("deletionTimestamp") for c in checkpoints):
            wait = min(wait, self.poll)
        return max(wait, 0.0)

    async def _checkpoints(self, s: Schedule) -> list[dict[str, Any]]:
        listing = await self.custom.list_namespaced_custom_object(
            api.GROUP, api.VERSION, s.namespace, api.CHECKPOINT_PLURAL, label_selector=f"{api.LABEL_SCHEDULE}={s.name}"
        )
        return list(listing.get("items") or [])

    async def _pods(self, s: Schedule, selector: str | None) -> list[dict[str, Any]]:
        """The pods to checkpoint now: those named, Running on a node, not being deleted."""
        if s.spec.get("podName"):
            pod = await read_plain(self.core.read_namespaced_pod(str(s.spec["podName"]), s.namespace))
            pods = [pod] if pod else []
        elif selector is None:
            pods = []
        else:
            pods = plain(await self.core.list_namespaced_pod(s.namespace, label_selector=selector)).get("items") or []
        return sorted((p for p in pods if checkpointable(p)), key=lambda p: p["metadata"]["name"])

    async def _run(
        self, s: Schedule, *, fired: datetime, first_missed: datetime, selector: str | None, checkpoints: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Create this run's checkpoints (one per pod, none for a pod whose last one is in flight); the ones created."""
        created: list[dict[str, Any]] = []
        names: list[str] = []
        skipped: list[str] = []
        existing = {c["metadata"]["name"]: c for c in checkpoints}
        for pod in await self._pods(s, selector):
            pod_name = str(pod["metadata"]["name"])
            name = checkpoint_name(schedule=s.name, pod=pod_name, when=fired)
            if name in existing:  # created by an earlier pass that did not get to save status
                names.append(name)
                continue
            busy = [c["metadata"]["name"] for c in checkpoints if _pod_of(c) == pod_name and in_flight(c)]
            if busy:
                log.info("checkpointschedule %s/%s: pod %s skipped: its checkpoint %s is still in flight",
                         s.namespace, s.name, pod_name, busy[-1])  # fmt: skip
                skipped.append(pod_name)
                continue
            body = await self._create(s, name=name, pod=pod_name)
            if body is not None:
                created.append(body)
                names.append(name)
        s.status["skipped"] = len(skipped)
        s.status["lastCreated"] = names[:CREATED_HISTORY]
        missed = f" (missed runs since {iso(first_missed)}: fired once)" if fired != first_missed else ""
        parts = []
        if names:
            parts.append(f"created {', '.join(names)}")
        if skipped:
            parts.append(f"skipped {', '.join(skipped)}: previous checkpoint still in flight")
        summary = "; ".join(parts) or "no running pod to checkpoint"
        s.note("Scheduled", f"run due at {iso(fired)}{missed}: {summary}")
        log.info("checkpointschedule %s/%s: run due at %s%s: %s", s.namespace, s.name, iso(fired), missed, summary)
        return created

    async def _create(self, s: Schedule, *, name: str, pod: str) -> dict[str, Any] | None:
        """Create one checkpoint (AlreadyExists is success, if it is this schedule's); None if it cannot be."""
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.CHECKPOINT_KIND,
            "metadata": {
                "name": name,
                "namespace": s.namespace,
                "labels": {api.LABEL_SCHEDULE: s.name, api.LABEL_CHECKPOINT_POD: pod},
            },
            "spec": {"podName": pod, "mode": CheckpointMode.RUNNING.value},
        }
        try:
            return await self.custom.create_namespaced_custom_object(
                api.GROUP, api.VERSION, s.namespace, api.CHECKPOINT_PLURAL, body
            )
        except client.ApiException as exc:
            if exc.status == 409:
                found = await api.PODCHECKPOINTS.get(self.custom, name=name, namespace=s.namespace)
                labels = ((found or {}).get("metadata") or {}).get("labels") or {}
                if labels.get(api.LABEL_SCHEDULE) == s.name and labels.get(api.LABEL_CHECKPOINT_POD) == pod:
                    return found
                why = f"the name {name} is taken by another PodCheckpoint"
            elif exc.status in (400, 403, 422):  # this checkpoint cannot be created; the others may
                why = f"{exc.status} {exc.reason}: {_message(exc)}"
            else:
                raise  # the API server is unwell: the pass is retried, and creating is idempotent
        s.note("CreateFailed", f"no checkpoint of pod {pod} this run: {why}", warning=True)
        log.warning("checkpointschedule %s/%s: no checkpoint of pod %s: %s", s.namespace, s.name, pod, why)
        return None

    async def _retain(self, s: Schedule, checkpoints: list[dict[str, Any]], current: datetime) -> None:
        """Delete what ``spec.retention`` says (a delete is enough: each checkpoint's finalizer clears the registry)."""
        deletions = retention.to_delete(retention=s.spec.get("retention"), checkpoints=checkpoints, now=current)
        for deletion in deletions:
            try:
                await self.custom.delete_namespaced_custom_object(
                    api.GROUP, api.VERSION, s.namespace, api.CHECKPOINT_PLURAL, deletion.name
                )
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
            s.note("DeletedCheckpoint", f"Deleted checkpoint {deletion.name}: {deletion.reason}")
            log.info("checkpointschedule %s/%s: deleted checkpoint %s: %s", s.namespace, s.name, deletion.name, deletion.reason)
        s.status["kept"] = retention.kept(checkpoints=checkpoints, deleted=deletions)
        if deletions:
            latest = [{"name": d.name, "reason": d.reason, "time": iso(current)} for d in reversed(deletions)]
            s.status["lastDeleted"] = [*latest, *(s.status.get("lastDeleted") or [])][:DELETED_HISTORY]


def _message(exc: client.ApiException) -> str:
    """The API server's message from an error's Status body (or its reason)."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(exc.reason)
    return str(body.get("message") or exc.reason) if isinstance(body, dict) else str(exc.reason)
