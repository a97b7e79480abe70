"""``kubectl migrate drain``, ``get drains`` and ``describe drain``, given an ``Api`` and an ``Io``.

``drain --dry-run`` plans on the client with the very functions the NodeDrain reconciler uses
(``migrator.drainplan``): it only reads nodes and pods, so it changes nothing, not even the
cordon. Without it, the command creates a NodeDrain and, with ``--wait``, follows it: on a
terminal a table of the pods redrawn in place, otherwise one line per change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, TextIO

from kubeclient.informing import group_by_node
from migrator import api, drainplan
from migrator.cli import drainprinting, following
from migrator.cli.commands import WAIT_GRACE, Io, terminal_columns
from migrator.cli.errors import EXIT_ERROR, EXIT_OK, EXIT_TIMEOUT, CliError
from migrator.cli.kubeapi import Api

CLEAR_BELOW: Final = "\x1b[J"


def drain_spec(
    *,
    node: str,
    pod_selector: str,
    timeout: float,
    dry_run: bool,
    ignore_daemonsets: bool,
    delete_emptydir_data: bool,
    max_concurrent: int,
    to: list[str],
    target_selector: Mapping[str, str],
    on_unmigratable: str,
) -> dict[str, Any]:
    """The NodeDrain spec the flags ask for (the one the dry run plans with, too)."""
    spec: dict[str, Any] = {
        "nodeName": node,
        "maxConcurrent": max_concurrent,
        "timeoutSeconds": math.ceil(timeout),
        "unmigratablePolicy": api.UnmigratablePolicy(on_unmigratable.capitalize()).value,
        "deleteEmptyDirData": delete_emptydir_data,
        "ignoreDaemonSets": ignore_daemonsets,
    }
    if pod_selector:
        spec["podSelector"] = pod_selector
    if to:
        spec["targetNodes"] = to
    if target_selector:
        spec["targetSelector"] = dict(target_selector)
    if dry_run:
        spec["dryRun"] = True
    return spec


async def check_can_drain(*, kube: Api, spec: Mapping[str, Any]) -> None:
    """The node and the --to nodes exist; the selector parses; nobody is draining the node already."""
    node = spec["nodeName"]
    if await kube.read_node(name=node) is None:
        raise CliError(f'node "{node}" not found')
    for target in spec.get("targetNodes") or []:
        if target == node:
            raise CliError(f"--to {target}: that is the node being drained")
        if await kube.read_node(name=target) is None:
            raise CliError(f'node "{target}" not found (--to)')
    try:
        drainplan.parse_selector(spec.get("podSelector") or "")
    except drainplan.SelectorError as exc:
        raise CliError(f"--pod-selector: {exc}") from None


async def dry_run(*, kube: Api, io: Io, spec: Mapping[str, Any]) -> int:
    """What a drain would do now, planned here; 0 if it would go ahead, 1 if it would stop Blocked."""
    nodes = await kube.list_nodes()
    pods = await kube.list_pods()
    by_node = group_by_node(pods)
    plan = drainplan.plan(
        spec=drainplan.DrainSpec.from_spec(spec), pods=by_node.get(spec["nodeName"], []), nodes=nodes, pods_by_node=by_node,
        claims=await kube.list_claims(),
    )  # fmt: skip
    for line in drainprinting.plan_lines(plan, node=spec["nodeName"]):
        io.print(line)
    io.print(drainprinting.plan_summary(plan))
    if plan.blocked:
        io.error(drainprinting.blocked_line(plan))
        return EXIT_ERROR
    return EXIT_OK


async def drain_node(*, kube: Api, io: Io, spec: dict[str, Any], wait: bool, wait_grace: float = WAIT_GRACE) -> int:
    await check_can_drain(kube=kube, spec=spec)
    if spec.get("dryRun"):
        return await dry_run(kube=kube, io=io, spec=spec)
    node = spec["nodeName"]
    for other in await kube.list_drains():
        if (other.get("spec") or {}).get("nodeName") == node and api.drain_running(other):
            phase = (other.get("status") or {}).get("phase") or api.DrainPhase.PENDING.value
            raise CliError(f'node "{node}" is already being drained by {drainprinting.ref(other)} ({phase})')
    body = {
        "apiVersion": api.API_VERSION,
        "kind": api.DRAIN_KIND,
        "metadata": {"generateName": drainplan.drain_generate_name(node)},
        "spec": spec,
    }
    created = await kube.create_drain(body=body)
    io.print(f"{drainprinting.ref(created)} created")
    if not wait:
        return EXIT_OK
    # In-flight migrations finish after the drain's own timeout; each has its own (at most api.DRAIN_MIGRATION_TIMEOUT).
    timeout = spec["timeoutSeconds"] + min(api.DRAIN_MIGRATION_TIMEOUT, spec["timeoutSeconds"]) + wait_grace
    live = LiveTable(io.out) if _is_terminal(io.out) else None
    return await wait_for_drain(kube=kube, io=io, name=created["metadata"]["name"], timeout=timeout, live=live)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LiveTable:
    """The drain's headline and its pods' table, redrawn in place on a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lines = 0

    def draw(self, obj: Mapping[str, Any], *, io: Io) -> None:
        width = terminal_columns(self.out) or 120
        status = obj.get("status") or {}
        text = [drainprinting.headline(obj, now=io.now())]
        if status.get("pods"):
            text += drainprinting.pods_table(status.get("pods") or []).splitlines()
        text = [line[: width - 1] for line in text]  # a wrapped line would break the redraw
        up = f"\x1b[{self.lines}F" if self.lines else ""
        self.out.write(up + CLEAR_BELOW + "\n".join(text) + "\n")
        self.out.flush()
        self.lines = len(text)


class PlainProgress:
    """Not a terminal: one line per change (the drain's phase, each pod's action, outcome, target or reason)."""

    def __init__(self) -> None:
        self.phase: tuple[str, str] | None = None
        self.pods: dict[tuple[str, str], tuple[Any, ...]] = {}

    def draw(self, obj: Mapping[str, Any], *, io: Io) -> None:
        status = obj.get("status") or {}
        phase = (str(status.get("phase") or ""), str(status.get("message") or ""))
        if phase != self.phase:
            io.print(drainprinting.phase_line(obj, when=io.now()))
            self.phase = phase
        for entry in status.get("pods") or []:
            key = (str(entry.get("namespace")), str(entry.get("name")))
            state = tuple(entry.get(k) for k in ("action", "outcome", "target", "reason"))
            if self.pods.get(key) != state:
                io.print(drainprinting.pod_line(entry, when=io.now()))
                self.pods[key] = state


async def wait_for_drain(*, kube: Api, io: Io, name: str, timeout: float, live: LiveTable | None = None) -> int:
    """Follow the NodeDrain; 0 Succeeded, 1 Blocked/Failed/Cancelled or deleted, 2 gave up waiting."""
    view: LiveTable | PlainProgress = live or PlainProgress()

    def on_change(obj: Mapping[str, Any]) -> int | None:
        view.draw(obj, io=io)
        phase = (obj.get("status") or {}).get("phase")
        if phase == api.DrainPhase.SUCCEEDED:
            io.print(drainprinting.outcome_line(obj, now=io.now()))
            return EXIT_OK
        if phase in api.DRAIN_TERMINAL_PHASES:
            first, *pods = drainprinting.failure_lines(obj)
            io.error(first)
            for line in pods:
                print(line, file=io.err, flush=True)
            return EXIT_ERROR
        return None

    code, status = await following.follow(
        kube.watch_drain(name=name), what=f'{drainprinting.RESOURCE} "{name}"', timeout=timeout, on_change=on_change
    )
    if code is not None:
        return code
    hint = f"still {status['phase']}" if status.get("phase") else "the control service has not picked it up (is it running?)"
    io.error(
        f"timed out waiting for {drainprinting.RESOURCE}/{name}: {hint}; it goes on in the cluster: "
        f"kubectl migrate describe drain {name}"
    )
    return EXIT_TIMEOUT


async def get_drains(*, kube: Api, io: Io, name: str | None, output: str | None) -> int:
    if name:
        items = [await _read_or_fail(kube=kube, name=name)]
    else:
        items = await kube.list_drains()
    if output:
        io.print(drainprinting.render(items[0] if name else items, output=output))
    elif not items:
        print("No resources found", file=io.err)
    else:
        io.print(drainprinting.drains_table(items, now=io.now()))
    return EXIT_OK


async def describe_drain(*, kube: Api, io: Io, name: str) -> int:
    obj = await _read_or_fail(kube=kube, name=name)
    uid = obj["metadata"].get("uid")
    events = [e for e in await kube.list_drain_events(name=name) if (e.get("involvedObject") or {}).get("uid") in (None, "", uid)]
    io.print(drainprinting.describe(obj, events=events, now=io.now()))
    return EXIT_OK


async def _read_or_fail(*, kube: Api, name: str) -> dict[str, Any]:
    obj = await kube.read_drain(name=name)
    if obj is None:
        raise CliError(f'nodedrain "{name}" not found')
    return obj
