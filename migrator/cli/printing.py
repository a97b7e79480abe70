"""Everything the CLI prints: tables, durations, ages, describe pages, progress lines.

Pure functions of the PodMigration dicts (as the API returns them) and an explicit ``now``,
so every rendering is testable without a cluster or a clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import yaml

from migrator import api
from migrator.units import NONE, format_bytes, format_duration, parse_time

RESOURCE: Final = f"{api.PLURAL[:-1]}.{api.GROUP}"  # podmigration.podmigrate.io, as kubectl names it
PADDING: Final = 3  # kubectl's tabwriter padding


# --- values ---------------------------------------------------------------------------------
def format_age(seconds: float) -> str:
    """An age as kubectl prints it (``HumanDuration``): ``45s``, ``4m10s``, ``15m``, ``3h20m``, ``5d``."""
    s = int(seconds)
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // (24 * 365)}y"


def age_of(obj: Mapping[str, Any], *, now: datetime) -> str:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return format_age((now - created).total_seconds()) if created else NONE


def downtime_of(status: Mapping[str, Any]) -> str:
    text = status.get("downtimeSeconds")
    try:
        return format_duration(float(text)) if text not in (None, "") else NONE
    except (TypeError, ValueError):
        return str(text)


def total_of(status: Mapping[str, Any]) -> float | None:
    start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    return (end - start).total_seconds() if start and end else None


def ref(obj: Mapping[str, Any]) -> str:
    return f"{RESOURCE}/{obj['metadata']['name']}"


# --- tables ---------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, indent: str = "") -> str:
    """Left-aligned columns, kubectl style; the last column is not padded."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i] + PADDING) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        lines.append((indent + "".join(cells)).rstrip())
    return "\n".join(lines)


def migrations_table(items: Sequence[Mapping[str, Any]], *, now: datetime, all_namespaces: bool) -> str:
    headers = ["NAME", "POD", "PHASE", "SOURCE", "TARGET", "DOWNTIME", "AGE"]
    rows = []
    for obj in sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])):
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        row = [
            obj["metadata"]["name"],
            spec.get("podName") or NONE,
            status.get("phase") or api.Phase.PENDING.value,
            status.get("sourceNode") or NONE,
            status.get("targetNode") or spec.get("targetNode") or NONE,
            downtime_of(status),
            age_of(obj, now=now),
        ]
        rows.append([obj["metadata"].get("namespace", ""), *row] if all_namespaces else row)
    return table(["NAMESPACE", *headers] if all_namespaces else headers, rows)


def without_managed_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """As kubectl does by default: managedFields are noise for people."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def render(data: Any, *, output: str, resource: str = RESOURCE) -> str:
    """``-o json|yaml|name`` for one object or a list of them; ``name`` prints ``<resource>/<name>``."""
    items = [without_managed_fields(o) for o in data] if isinstance(data, list) else None
    data = without_managed_fields(data) if items is None else data
    if output == "name":
        return "\n".join(f"{resource}/{o['metadata']['name']}" for o in (items if items is not None else [data]))
    document = (
        {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}} if items is not None else data
    )
    return dump(document, output=output)


def dump(document: Any, *, output: str) -> str:
    """A document as ``-o json`` (kubectl's four-space indent) or ``-o yaml`` prints it."""
    if output == "json":
        return json.dumps(document, indent=4)
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False).rstrip("\n")


# --- describe -------------------------------------------------------------------------------
def fields(pairs: Sequence[tuple[str, Any]], *, indent: str = "") -> list[str]:
    width = max(len(k) for k, _ in pairs) + 2
    return [f"{indent}{(k + ':').ljust(width)}{NONE if v in (None, '') else v}".rstrip() for k, v in pairs]


def phases_table(status: Mapping[str, Any], *, now: datetime) -> str:
    """One row per recorded phase: start offset from the migration's start, duration, error."""
    phases = status.get("phases") or []
    origin = parse_time(status.get("startTime")) or (parse_time(phases[0].get("start")) if phases else None)
    finished = status.get("phase") in api.TERMINAL_PHASES
    rows = []
    for record in phases:
        start, end = parse_time(record.get("start")), parse_time(record.get("end"))
        offset = f"+{format_duration((start - origin).total_seconds())}" if start and origin else NONE
        if start and end:
            duration = format_duration((end - start).total_seconds())
        elif start and not finished:
            duration = f"running ({format_duration((now - start).total_seconds())})"
        else:
            duration = NONE
        rows.append([record.get("name") or NONE, offset, duration, record.get("error") or ""])
    return table(["PHASE", "START", "DURATION", "ERROR"], rows, indent="  ")


def stages_table(status: Mapping[str, Any]) -> str:
    """One row per recorded stage (``status.stages``): offset from the migration's start, duration, bytes, who measured it."""
    origin = parse_time(status.get("startTime"))
    rows = []
    for record in status.get("stages") or []:
        start, end = parse_time(record.get("start")), parse_time(record.get("end"))
        offset = f"+{format_duration((start - origin).total_seconds())}" if start and origin else NONE
        duration = format_duration((end - start).total_seconds()) if start and end else NONE
        nbytes = record.get("bytes")
        rows.append([
            record.get("name") or NONE,
            record.get("container") or NONE,
            record.get("node") or NONE,
            offset,
            duration,
            format_bytes(nbytes) if isinstance(nbytes, int) else NONE,
            record.get("source") or NONE,
        ])  # fmt: skip
    return table(["STAGE", "CONTAINER", "NODE", "START", "DURATION", "BYTES", "SOURCE"], rows, indent="  ")


def event_time(event: Mapping[str, Any]) -> datetime | None:
    meta = event.get("metadata") or {}
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        if when := parse_time(event.get(key)):
            return when
    return parse_time(meta.get("creationTimestamp"))


def events_table(events: Sequence[Mapping[str, Any]], *, now: datetime) -> str:
    def key(event: Mapping[str, Any]) -> str:
        when = event_time(event)
        return when.isoformat() if when else ""

    rows = []
    for event in sorted(events, key=key):
        when = event_time(event)
        source = event.get("source") or {}
        rows.append([
            event.get("type") or NONE,
            event.get("reason") or NONE,
            format_age((now - when).total_seconds()) if when else NONE,
            source.get("component") or event.get("reportingComponent") or NONE,
            " ".join(str(event.get("message") or "").split()),
        ])  # fmt: skip
    return table(["TYPE", "REASON", "AGE", "FROM", "MESSAGE"], rows, indent="  ")


def describe(obj: Mapping[str, Any], *, events: Sequence[Mapping[str, Any]], now: datetime) -> str:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    created = parse_time(meta.get("creationTimestamp"))
    new_pod = status.get("newPod") or {}
    timeout = spec.get("timeoutSeconds")
    lines = fields([
        ("Name", meta["name"]),
        ("Namespace", meta.get("namespace")),
        ("Created", f"{meta.get('creationTimestamp')} ({format_age((now - created).total_seconds())} ago)" if created else None),
    ])  # fmt: skip
    lines.append("Spec:")
    lines += fields(
        [
            ("Pod", spec.get("podName")),
            ("Target Node", spec.get("targetNode") or "<any node that fits>"),
            ("Timeout", f"{timeout}s" if timeout is not None else None),
            ("On Failure", spec.get("onFailure")),
            ("Retain Checkpoint", str(bool(spec.get("retainCheckpoint"))).lower()),
        ],
        indent="  ",
    )
    lines.append("Status:")
    new_pod_text = None
    if new_pod.get("name"):
        new_pod_text = f"{new_pod['name']} on {new_pod.get('node') or '<scheduler>'} (uid {new_pod.get('uid') or NONE})"
    lines += fields(
        [
            ("Phase", status.get("phase") or f"{api.Phase.PENDING.value} (not picked up by the control service yet)"),
            ("Step", status.get("step")),
            ("Reason", status.get("reason")),
            ("Message", status.get("message")),
            ("Source Node", status.get("sourceNode")),
            ("Target Node", status.get("targetNode")),
            ("New Pod", new_pod_text),
            ("Downtime", downtime_of(status)),
            ("Duration", format_duration(total_of(status)) if total_of(status) is not None else None),
            ("Trace ID", status.get("traceID")),
        ],
        indent="  ",
    )
    if status.get("containers"):
        lines.append("Containers:")
        rows = [
            [
                c.get("name") or NONE,
                c.get("image") or NONE,
                format_bytes(c.get("archiveBytes")),
                format_bytes(c.get("imageBytes")),
            ]
            for c in status["containers"]
        ]
        lines.append(table(["NAME", "CHECKPOINT IMAGE", "ARCHIVE", "IMAGE"], rows, indent="  "))
    if data := status.get("volumeData"):
        volumes = ", ".join(data.get("volumes") or []) or NONE
        lines.append(f"emptyDir files:  {volumes} ({format_bytes(data.get('dataBytes'))}) in {data.get('image') or NONE}")
    lines.append("Phases:" if status.get("phases") else "Phases:  <none>")
    if status.get("phases"):
        lines.append(phases_table(status, now=now))
    if status.get("stages"):  # where the checkpoint's and the restore's time went (none before stages were recorded)
        lines.append("Stages:")
        lines.append(stages_table(status))
    lines += conditions_and_events(status, events=events, now=now)
    return "\n".join(lines)


def condition_lines(status: Mapping[str, Any]) -> list[str]:
    """The object's conditions as a ``describe`` section (none without conditions)."""
    if not status.get("conditions"):
        return []
    rows = [
        [c.get("type", ""), c.get("status", ""), c.get("reason") or NONE, c.get("message") or ""] for c in status["conditions"]
    ]
    return ["Conditions:", table(["TYPE", "STATUS", "REASON", "MESSAGE"], rows, indent="  ")]


def conditions_and_events(status: Mapping[str, Any], *, events: Sequence[Mapping[str, Any]], now: datetime) -> list[str]:
    """The closing sections of every ``describe``: the object's conditions and its Events."""
    lines = condition_lines(status)
    lines.append("Events:" if events else "Events:  <none>")
    if events:
        lines.append(events_table(events, now=now))
    return lines


# --- pod command lines ----------------------------------------------------------------------
def created_line(obj: Mapping[str, Any]) -> str:
    return f"{ref(obj)} created"


def progress_line(obj: Mapping[str, Any], *, when: datetime) -> str:
    """``<time> <phase> <step>`` for one observed change while waiting."""
    status = obj.get("status") or {}
    phase = status.get("phase") or api.Phase.PENDING.value
    step = status.get("step") or ("(waiting for the control service)" if not status else "")
    return f"{when.astimezone():%H:%M:%S} {phase} {step}".rstrip()


def outcome_line(obj: Mapping[str, Any]) -> str:
    """The last line of a successful --wait: the controller's message plus downtime and total time."""
    status = obj.get("status") or {}
    extras = [f"downtime {downtime_of(status)}"]
    if (total := total_of(status)) is not None:
        extras.append(f"total {format_duration(total)}")
    return f"{ref(obj)} {status.get('phase')}: {status.get('message') or ''} [{', '.join(extras)}]"


def failure_line(obj: Mapping[str, Any]) -> str:
    status = obj.get("status") or {}
    return f"{status.get('reason') or 'Failed'}: {status.get('message') or 'the migration failed'}"
