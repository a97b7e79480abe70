"""Everything ``kubectl migrate drain|get drains|describe drain`` prints: plans, tables, progress, describe pages.

Pure functions of the NodeDrain dicts (as the API returns them), a plan, and an explicit ``now``,
like ``printing`` is for PodMigrations, whose table, field and event helpers these reuse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import yaml

from migrator import api, drainplan
from migrator.api import PodAction
from migrator.cli.printing import age_of, conditions_and_events, fields, format_age, table, without_managed_fields
from migrator.units import NONE, format_duration, parse_time

RESOURCE: Final = f"{api.DRAIN_PLURAL[:-1]}.{api.GROUP}"  # nodedrain.podmigrate.io, as kubectl names it


def ref(obj: Mapping[str, Any]) -> str:
    return f"{RESOURCE}/{obj['metadata']['name']}"


def pod_name(entry: Mapping[str, Any]) -> str:
    return f"{entry.get('namespace', '')}/{entry.get('name', '')}"


# --- dry run -----------------------------------------------------------------------------------
def plan_lines(plan: drainplan.Plan, *, node: str) -> list[str]:
    """``kubectl migrate drain --dry-run``: one line per pod, kubectl drain's dry-run style, then a summary."""
    lines = [f"node/{node} cordoned (dry run)"]
    width = max([len(p.namespace) + len(p.name) + 1 for p in plan.pods] or [0])
    for p in plan.pods:
        name = f"{p.namespace}/{p.name}".ljust(width)
        if p.blocks:
            lines.append(f"blocked {name}  {p.reason}")
        elif p.action == PodAction.MIGRATE:
            lines.append(f"migrate {name}  -> {p.target}" + (f"  ({p.reason})" if p.reason else ""))
        elif p.action == PodAction.EVICT:
            lines.append(f"evict   {name}  {p.reason}")
        else:
            lines.append(f"skip    {name}  {p.reason}")
    return lines


def plan_summary(plan: drainplan.Plan) -> str:
    text = (
        f"dry run: {plan.count(PodAction.MIGRATE)} pod(s) would be migrated, {plan.count(PodAction.EVICT)} evicted, "
        f"{plan.count(PodAction.SKIP)} left alone"
    )
    if plan.unselected:
        text += f" ({plan.unselected} more not selected by --pod-selector)"
    return text + "; nothing was changed"


def blocked_line(plan: drainplan.Plan) -> str:
    return f"the drain would stop Blocked, moving nothing: {'; '.join(plan.blocked)}"


# --- tables ------------------------------------------------------------------------------------
def counts_of(status: Mapping[str, Any]) -> Mapping[str, int]:
    return status.get("counts") or {}


def drains_table(items: Sequence[Mapping[str, Any]], *, now: datetime) -> str:
    rows = []
    for obj in sorted(items, key=lambda o: o["metadata"]["name"]):
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        c = counts_of(status)
        rows.append([
            obj["metadata"]["name"], spec.get("nodeName") or NONE, status.get("phase") or api.DrainPhase.PENDING.value,
            str(c.get("migrated", 0)), str(c.get("evicted", 0)), str(c.get("skipped", 0)), str(c.get("failed", 0)),
            str(c.get("total", 0)), age_of(obj, now=now),
        ])  # fmt: skip
    return table(["NAME", "NODE", "PHASE", "MIGRATED", "EVICTED", "SKIPPED", "FAILED", "TOTAL", "AGE"], rows)


def pods_rows(entries: Sequence[Mapping[str, Any]], *, migration: bool = False) -> list[list[str]]:
    rows = []
    for e in entries:
        row = [pod_name(e), e.get("action") or NONE, e.get("outcome") or NONE, e.get("target") or NONE]
        if migration:
            row.append(e.get("migration") or NONE)
        rows.append([*row, " ".join(str(e.get("reason") or "").split())])
    return rows


def pods_table(entries: Sequence[Mapping[str, Any]], *, indent: str = "", migration: bool = False) -> str:
    headers = ["POD", "ACTION", "OUTCOME", "TARGET", *(["PODMIGRATION"] if migration else []), "REASON"]
    return table(headers, pods_rows(entries, migration=migration), indent=indent)


def render(data: Any, *, output: str) -> str:
    """``-o json|yaml|name`` for one NodeDrain or a list of them."""
    items = [without_managed_fields(o) for o in data] if isinstance(data, list) else None
    if output == "name":
        return "\n".join(ref(o) for o in (items if items is not None else [data]))
    document = (
        {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}
        if items is not None
        else without_managed_fields(data)
    )
    if output == "json":
        return json.dumps(document, indent=4)
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False).rstrip("\n")


# --- progress ----------------------------------------------------------------------------------
def elapsed(status: Mapping[str, Any], *, now: datetime) -> float | None:
    start = parse_time(status.get("startTime"))
    end = parse_time(status.get("completionTime")) or now
    return (end - start).total_seconds() if start else None


def headline(obj: Mapping[str, Any], *, now: datetime) -> str:
    """``node-1-x7k2p on node-1: Draining  2/5 migrated, 0 evicted, 1 skipped, 0 failed  1m20s`` (short: a terminal's width)"""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    c = counts_of(status)
    phase = status.get("phase") or f"{api.DrainPhase.PENDING.value} (waiting for the control service)"
    tally = (
        f"{c.get('migrated', 0)}/{c.get('total', 0)} migrated, {c.get('evicted', 0)} evicted, "
        f"{c.get('skipped', 0)} skipped, {c.get('failed', 0)} failed"
    )
    took = elapsed(status, now=now)
    return f"{obj['metadata']['name']} on {spec.get('nodeName')}: {phase}  {tally}" + (
        f"  {format_duration(took)}" if took else ""
    )


def pod_line(entry: Mapping[str, Any], *, when: datetime) -> str:
    """One pod's change while waiting (no terminal): ``12:00:01 shop/web migrate in-progress -> node-2: reason``."""
    target = f" -> {entry['target']}" if entry.get("target") else ""
    reason = f": {entry['reason']}" if entry.get("reason") else ""
    return f"{when.astimezone():%H:%M:%S} {pod_name(entry)} {entry.get('action')} {entry.get('outcome')}{target}{reason}"


def phase_line(obj: Mapping[str, Any], *, when: datetime) -> str:
    status = obj.get("status") or {}
    phase = status.get("phase") or "(waiting for the control service)"
    message = f": {status['message']}" if status.get("message") else ""
    return f"{when.astimezone():%H:%M:%S} {ref(obj)} {phase}{message}"


def outcome_line(obj: Mapping[str, Any], *, now: datetime) -> str:
    status = obj.get("status") or {}
    took = elapsed(status, now=now)
    return f"{ref(obj)} {status.get('phase')}: {status.get('message') or ''}" + (f" [{format_duration(took)}]" if took else "")


def failure_lines(obj: Mapping[str, Any]) -> list[str]:
    """Why a drain ended Blocked, Failed or Cancelled: its reason, then each pod that failed."""
    status = obj.get("status") or {}
    lines = [f"{status.get('phase')}: {status.get('reason') or ''}: {status.get('message') or ''}"]
    for entry in status.get("pods") or []:
        if entry.get("outcome") == api.PodOutcome.FAILED:
            lines.append(f"  {pod_name(entry)}: {entry.get('reason') or 'failed'}")
    return lines


# --- describe ----------------------------------------------------------------------------------
def describe(obj: Mapping[str, Any], *, events: Sequence[Mapping[str, Any]], now: datetime) -> str:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    created = parse_time(meta.get("creationTimestamp"))
    if spec.get("targetNodes"):
        targets = ", ".join(spec["targetNodes"])
    elif spec.get("targetSelector"):
        targets = "nodes with " + ",".join(f"{k}={v}" for k, v in sorted(spec["targetSelector"].items()))
    else:
        targets = "<any other node that fits>"
    lines = fields([
        ("Name", meta["name"]),
        ("Node", spec.get("nodeName")),
        ("Created", f"{meta.get('creationTimestamp')} ({format_age((now - created).total_seconds())} ago)" if created else None),
    ])  # fmt: skip
    lines.append("Spec:")
    lines += fields(
        [
            ("Targets", targets),
            ("Pod Selector", spec.get("podSelector") or "<every pod>"),
            ("Max Concurrent", spec.get("maxConcurrent")),
            ("Timeout", f"{spec['timeoutSeconds']}s" if spec.get("timeoutSeconds") is not None else None),
            ("Unmigratable Policy", spec.get("unmigratablePolicy")),
            ("Ignore DaemonSets", str(spec.get("ignoreDaemonSets", True)).lower()),
            ("Delete EmptyDir Data", str(bool(spec.get("deleteEmptyDirData"))).lower()),
            ("Dry Run", str(bool(spec.get("dryRun"))).lower()),
        ],
        indent="  ",
    )
    c = counts_of(status)
    cordon = None
    if "cordonedByDrain" in status:
        cordon = "yes (uncordoned when this drain is deleted)" if status["cordonedByDrain"] else "no (it was cordoned already)"
    took = elapsed(status, now=now)
    lines.append("Status:")
    lines += fields(
        [
            ("Phase", status.get("phase") or f"{api.DrainPhase.PENDING.value} (not picked up by the control service yet)"),
            ("Reason", status.get("reason")),
            ("Message", status.get("message")),
            ("Cordoned By Drain", cordon),
            ("Pods", f"{c.get('total', 0)} total: {c.get('migrated', 0)} migrated, {c.get('evicted', 0)} evicted, "
                     f"{c.get('skipped', 0)} skipped, {c.get('failed', 0)} failed" if c else None),
            ("Duration", (format_duration(took) + ("" if status.get("completionTime") else " (running)")) if took else None),
        ],
        indent="  ",
    )  # fmt: skip
    if status.get("blockedReasons"):
        lines.append("Blocked By:")
        lines += [f"  {reason}" for reason in status["blockedReasons"]]
    if status.get("budgets"):
        lines.append("Disruption Budgets In Use:")
        lines += [f"  {b['namespace']}/{b['name']}: {b['disruptionsAllowed']} allowed" for b in status["budgets"]]
    entries = status.get("pods") or []
    lines.append("Pods:" if entries else "Pods:  <none>")
    if entries:
        lines.append(pods_table(entries, indent="  ", migration=True))
    lines += conditions_and_events(status, events=events, now=now)
    return "\n".join(lines)
