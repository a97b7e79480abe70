"""Everything ``checkpoint``, ``restore``, ``checkpoints``, ``inspect`` and ``get checkpoints|restores|schedules`` print.

Pure functions of the PodCheckpoint, PodRestore and CheckpointSchedule dicts (as the API returns
them) and an explicit ``now``, like ``printing`` is for PodMigrations, whose table, field and age
helpers these reuse.

``inspect`` shows what CRIU's images hold through ``ocicheckpoint.criuimages``, the one reader of
that format: the node agent reads the images when it takes the checkpoint and records the result
in ``status.inspection`` (container name -> ``Inspection`` as JSON); here it is only rendered, so
inspecting a checkpoint needs neither the registry nor the archive. A checkpoint taken by an agent
that predates inspection has no such field, and the page says so in one line. ``inspect
--from-registry`` prints the same page with inspections it read from the images themselves
(``registryinspection``), and says so in the section's header.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from migrator import api
from migrator.cli.printing import age_of, condition_lines, fields, format_age, table
from migrator.units import NONE, format_bytes, format_duration, parse_time
from ocicheckpoint import criuimages

CHECKPOINT_RESOURCE: Final = f"{api.CHECKPOINT_KIND.lower()}.{api.GROUP}"  # podcheckpoint.podmigrate.io
RESTORE_RESOURCE: Final = f"{api.RESTORE_KIND.lower()}.{api.GROUP}"  # podrestore.podmigrate.io
SCHEDULE_RESOURCE: Final = f"{api.SCHEDULE_KIND.lower()}.{api.GROUP}"  # checkpointschedule.podmigrate.io
TREE_INDENT: Final = "    "


def ref(obj: Mapping[str, Any], *, resource: str) -> str:
    return f"{resource}/{obj['metadata']['name']}"


def _sorted(items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))


def _with_namespace(rows: list[list[str]], items: Sequence[Mapping[str, Any]], *, all_namespaces: bool) -> list[list[str]]:
    return [[o["metadata"].get("namespace", ""), *row] for o, row in zip(items, rows, strict=True)] if all_namespaces else rows


def _headers(headers: list[str], *, all_namespaces: bool) -> list[str]:
    return ["NAMESPACE", *headers] if all_namespaces else headers


def seconds_text(value: Any) -> str:
    """A status field holding seconds as a string (``readySeconds: "2.304"``), as a duration."""
    try:
        return format_duration(float(value)) if value not in (None, "") else NONE
    except (TypeError, ValueError):
        return str(value)


# --- PodCheckpoints ---------------------------------------------------------------------------
def size_of(status: Mapping[str, Any]) -> str:
    """``status.size`` as the control service spelt it, else ``totalBytes``, else the containers' image bytes summed."""
    if status.get("size"):
        return str(status["size"])
    if isinstance(status.get("totalBytes"), int):
        return format_bytes(status["totalBytes"])
    sizes = [c.get("imageBytes") for c in status.get("containers") or []]
    return format_bytes(sum(sizes)) if sizes and all(isinstance(n, int) for n in sizes) else NONE


def checkpoint_phase(status: Mapping[str, Any]) -> str:
    return str(status.get("phase") or api.CheckpointPhase.PENDING.value)


def checkpoints_table(items: Sequence[Mapping[str, Any]], *, now: datetime, all_namespaces: bool) -> str:
    items = _sorted(items)
    rows = []
    for obj in items:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        rows.append([
            obj["metadata"]["name"], spec.get("podName") or NONE, spec.get("mode") or api.CheckpointMode.RUNNING.value,
            checkpoint_phase(status), status.get("sourceNode") or NONE, size_of(status),
            str(bool(spec.get("pinned"))).lower(), age_of(obj, now=now),
        ])  # fmt: skip
    headers = ["NAME", "POD", "MODE", "PHASE", "NODE", "SIZE", "PINNED", "AGE"]
    return table(_headers(headers, all_namespaces=all_namespaces), _with_namespace(rows, items, all_namespaces=all_namespaces))


def checkpoint_outcome_lines(obj: Mapping[str, Any]) -> list[str]:
    """The end of ``checkpoint --wait``: the size, whether the pod was removed, then each container's image."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers = status.get("containers") or []
    suspended = "; the pod was removed (resume it with kubectl migrate restore)" if status.get("suspended") else ""
    lines = [f"{ref(obj, resource=CHECKPOINT_RESOURCE)} {checkpoint_phase(status)}: {size_of(status)} in {len(containers)} "
             f"image(s) of pod {spec.get('podName')}{suspended}"]  # fmt: skip
    rows = [[c.get("name") or NONE, c.get("image") or NONE, format_bytes(c.get("imageBytes"))] for c in containers]
    if rows:
        lines += table(["CONTAINER", "IMAGE", "SIZE"], rows, indent="  ").splitlines()
    return lines


# --- PodRestores ------------------------------------------------------------------------------
def restored_pod(status: Mapping[str, Any]) -> str:
    return str((status.get("pod") or {}).get("name") or NONE)


def restores_table(items: Sequence[Mapping[str, Any]], *, now: datetime, all_namespaces: bool) -> str:
    items = _sorted(items)
    rows = []
    for obj in items:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        rows.append([
            obj["metadata"]["name"], spec.get("checkpointName") or NONE,
            restored_pod(status) if status.get("pod") else spec.get("podName") or NONE,
            status.get("phase") or api.RestorePhase.PENDING.value, status.get("targetNode") or spec.get("targetNode") or NONE,
            seconds_text(status.get("readySeconds")), age_of(obj, now=now),
        ])  # fmt: skip
    headers = ["NAME", "CHECKPOINT", "POD", "PHASE", "NODE", "READY IN", "AGE"]
    return table(_headers(headers, all_namespaces=all_namespaces), _with_namespace(rows, items, all_namespaces=all_namespaces))


def restore_outcome_lines(obj: Mapping[str, Any]) -> list[str]:
    status = obj.get("status") or {}
    ready = seconds_text(status.get("readySeconds"))
    return [
        f"{ref(obj, resource=RESTORE_RESOURCE)} {status.get('phase')}: pod {restored_pod(status)} on "
        f"{status.get('targetNode') or NONE}, Ready {ready} after the restore started"
    ]


# --- CheckpointSchedules ----------------------------------------------------------------------
def schedule_target(spec: Mapping[str, Any]) -> str:
    """The one pod, or the selector's labels (``app=web``), or ``<selector>`` when it has expressions."""
    if spec.get("podName"):
        return str(spec["podName"])
    selector = spec.get("selector") or {}
    labels = ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))
    return labels if labels and not selector.get("matchExpressions") else "<selector>"


def _relative(text: Any, *, now: datetime) -> str:
    """A future time as ``in 4m``, a past one as its age; whatever else as it is."""
    when = parse_time(text)
    if when is None:
        return str(text or NONE)
    seconds = (when - now).total_seconds()
    return f"in {format_age(seconds)}" if seconds > 0 else f"{format_age(-seconds)} ago"


def schedules_table(items: Sequence[Mapping[str, Any]], *, now: datetime, all_namespaces: bool) -> str:
    items = _sorted(items)
    rows = []
    for obj in items:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        rows.append([
            obj["metadata"]["name"], schedule_target(spec), spec.get("schedule") or NONE,
            str(bool(spec.get("suspend"))).lower(), _relative(status.get("lastScheduleTime"), now=now),
            _relative(status.get("nextScheduleTime"), now=now), str(status.get("kept", NONE)), age_of(obj, now=now),
        ])  # fmt: skip
    headers = ["NAME", "POD", "SCHEDULE", "SUSPEND", "LAST", "NEXT", "KEPT", "AGE"]
    return table(_headers(headers, all_namespaces=all_namespaces), _with_namespace(rows, items, all_namespaces=all_namespaces))


# --- following one (--wait) -------------------------------------------------------------------
def progress_line(obj: Mapping[str, Any], *, when: datetime) -> str:
    """``<time> <phase>[: message]`` for one observed change while waiting."""
    status = obj.get("status") or {}
    phase = status.get("phase") or "Pending (waiting for the control service)"
    message = f": {status['message']}" if status.get("message") else ""
    return f"{when.astimezone():%H:%M:%S} {phase}{message}"


def failure_line(obj: Mapping[str, Any]) -> str:
    status = obj.get("status") or {}
    return f"{status.get('reason') or 'Failed'}: {status.get('message') or 'no message'}"


# --- inspect ----------------------------------------------------------------------------------
def _indented(text: str, *, indent: str) -> list[str]:
    return [f"{indent}{line}".rstrip() for line in text.rstrip("\n").splitlines()]


def criu_lines(
    status: Mapping[str, Any], *, read: Mapping[str, criuimages.Inspection] | None = None, source: str = ""
) -> list[str]:
    """What each container's CRIU images hold (rendered by ``criuimages``): from ``status.inspection``, or
    ``read`` from the images themselves (``inspect --from-registry``), with ``source`` saying where in the header."""
    inspection: Mapping[str, Any] | None = read if read is not None else status.get("inspection")
    if not isinstance(inspection, Mapping):
        phase = checkpoint_phase(status)
        if phase != api.CheckpointPhase.AVAILABLE:
            return [f"CRIU Images:  <none: the checkpoint is {phase}>"]
        return ["CRIU Images:  <not recorded: the node agent that took this checkpoint predates inspection>"]
    names = [str(c.get("name")) for c in status.get("containers") or [] if c.get("name")]
    names += sorted(str(n) for n in inspection if n not in names)
    lines = [f"CRIU Images ({source}):" if source else "CRIU Images:"]
    for name in names:
        if name not in inspection:
            lines.append(f"  {name}:  <not recorded>")
            continue
        lines.append(f"  {name}:")
        found = inspection[name]
        try:
            parsed = found if isinstance(found, criuimages.Inspection) else criuimages.Inspection.from_json(found)
            tree = criuimages.render_tree(parsed)
        except criuimages.CriuImageError as exc:  # the one exception it raises, for any malformed JSON
            lines.append(f"{TREE_INDENT}<cannot read it: {exc}>")
            continue
        lines += _indented(tree, indent=TREE_INDENT) or [f"{TREE_INDENT}<empty>"]
    return lines


def container_lines(status: Mapping[str, Any]) -> list[str]:
    containers = status.get("containers") or []
    if not containers:
        return ["Containers:  <none>"]
    lines = ["Containers:"]
    for c in containers:
        lines.append(f"  {c.get('name') or NONE}:")
        lines += fields(
            [
                ("Image", c.get("image")),
                ("Digest", c.get("digest")),
                ("Base Image", c.get("baseImage")),
                ("Archive", format_bytes(c.get("archiveBytes"))),
                ("Image Size", format_bytes(c.get("imageBytes"))),
            ],
            indent="    ",
        )
    return lines


def inspect_page(
    obj: Mapping[str, Any], *, now: datetime, read: Mapping[str, criuimages.Inspection] | None = None, source: str = ""
) -> str:
    """``kubectl migrate inspect``: the checkpoint, its containers' images, then what CRIU saved of each
    (``read``: as read from the images themselves, ``source`` saying how; else as the agent recorded it)."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    created = parse_time(meta.get("creationTimestamp"))
    pod = spec.get("podName")
    mode = spec.get("mode") or api.CheckpointMode.RUNNING.value
    suspended = []  # only a Suspend checkpoint removes its pod
    if mode == api.CheckpointMode.SUSPEND:
        removed, resumed = status.get("suspended"), (status.get("resumedBy") or {}).get("restore")
        text = "yes (restore it to resume it)" if removed else f"no (resumed by PodRestore {resumed})" if resumed else "no"
        suspended = [("Suspended", None if removed is None else text)]
    phase = status.get("phase") or f"{api.CheckpointPhase.PENDING.value} (not picked up by the control service yet)"
    lines = fields([
        ("Name", meta["name"]),
        ("Namespace", meta.get("namespace")),
        ("Created", f"{meta.get('creationTimestamp')} ({format_age((now - created).total_seconds())} ago)" if created else None),
        ("Pod", f"{pod} (uid {status['podUID']})" if status.get("podUID") else pod),
        ("Mode", mode),
        *suspended,
        ("Pinned", str(bool(spec.get("pinned"))).lower()),
        ("Schedule", (meta.get("labels") or {}).get(api.LABEL_SCHEDULE)),
        ("Phase", phase),
        ("Reason", status.get("reason")),
        ("Message", status.get("message")),
        ("Node", status.get("sourceNode")),
        ("Checkpoint Time", status.get("checkpointTime")),
        ("CRIU Version", status.get("criuVersion")),
        ("Size", size_of(status)),
    ])  # fmt: skip
    lines += container_lines(status)
    lines += criu_lines(status, read=read, source=source)
    lines += condition_lines(status)
    return "\n".join(lines)
