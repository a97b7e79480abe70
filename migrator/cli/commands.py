"""What each command does, given an ``Api`` and an ``Io``: checks, the PodMigration body, waiting.

The checks before a PodMigration is created are the ones a person gets wrong by typing (a
pod or node name, a pod that is not running, a node that cannot take pods); everything that
needs the cluster's full picture (placement, owners, host network) stays with the control
service, which records its verdict in status.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from migrator import api, movability, placement, timeline
from migrator.cli import following, printing
from migrator.cli.errors import EXIT_ERROR, EXIT_OK, EXIT_TIMEOUT, CliError
from migrator.cli.kubeapi import Api

WAIT_GRACE: Final = 30.0  # --wait outlasts spec.timeoutSeconds by this, so the controller's own timeout and rollback are seen


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Io:
    """Where output goes and what time it is: injectable so tests need neither a terminal nor a clock."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    now: Callable[[], datetime] = _now

    def print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        print(f"error: {text}", file=self.err, flush=True)


# --- kubectl migrate pod --------------------------------------------------------------------
def _node_ready(node: Mapping[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def check_node_takes_pods(node: Mapping[str, Any]) -> None:
    """A node asked for by name (``--to``) is Ready and not cordoned."""
    name = node["metadata"]["name"]
    if not _node_ready(node):
        raise CliError(f'node "{name}" is not Ready')
    if (node.get("spec") or {}).get("unschedulable"):
        raise CliError(f'node "{name}" is cordoned (unschedulable): uncordon it or pick another node')


async def check_can_start(*, kube: Api, namespace: str, pod_name: str, target: str | None) -> dict[str, Any]:
    """The pod exists and can move (``migrator.movability``); the target, if given, is another node, Ready, not cordoned."""
    pod = await kube.read_pod(namespace=namespace, name=pod_name)
    if pod is None:
        raise CliError(f'pod "{pod_name}" not found in namespace "{namespace}"')
    claims = await kube.read_claims(pod=pod)
    # Claims this user may not read are judged by the controller (its Validate step) instead.
    found = [o for o in movability.obstacles(pod, claims=claims) if claims is not None or o.reason != "PersistentVolume"]
    if found:
        raise CliError(f'pod "{pod_name}" {found[0].message}')
    moving = api.unfinished_migrations_of(await kube.list_migrations(namespace=namespace), pod=pod_name)
    if moving:
        raise CliError(f'pod "{pod_name}" is already being moved by {printing.RESOURCE} "{moving[0]["metadata"]["name"]}"')
    if target is None:
        return pod
    node = await kube.read_node(name=target)
    if node is None:
        raise CliError(f'node "{target}" not found')
    if (pod.get("spec") or {}).get("nodeName") == target:
        raise CliError(f'pod "{pod_name}" already runs on node "{target}"')
    check_node_takes_pods(node)
    if why := placement.volume_misfit(pod=pod, node=node, claims=claims):
        raise CliError(f'pod "{pod_name}" cannot move there: {why}')
    return pod


def migration_body(
    *,
    namespace: str,
    pod_name: str,
    target: str | None,
    timeout: float,
    on_failure: str,
    retain_checkpoint: bool,
    delete_emptydir_data: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "podName": pod_name,
        "timeoutSeconds": math.ceil(timeout),
        "onFailure": on_failure,
        "retainCheckpoint": retain_checkpoint,
    }
    if delete_emptydir_data:
        spec["deleteEmptyDirData"] = True
    if target:
        spec["targetNode"] = target
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"generateName": f"{pod_name}-", "namespace": namespace},
        "spec": spec,
    }


async def wait_for_outcome(*, kube: Api, io: Io, namespace: str, name: str, timeout: float) -> int:
    """Watch the PodMigration, print each (phase, step) change; 0 Succeeded, 1 Failed, 2 gave up."""
    seen: tuple[str, str] | None = None

    def on_change(obj: Mapping[str, Any]) -> int | None:
        nonlocal seen
        status = obj.get("status") or {}
        state = (str(status.get("phase") or ""), str(status.get("step") or ""))
        if state != seen:
            io.print(printing.progress_line(obj, when=io.now()))
            seen = state
        if state[0] == api.Phase.SUCCEEDED:
            io.print(printing.outcome_line(obj))
            return EXIT_OK
        if state[0] == api.Phase.FAILED:
            io.error(printing.failure_line(obj))
            return EXIT_ERROR
        return None

    code, status = await following.follow(
        kube.watch_migration(namespace=namespace, name=name), what=f'{printing.RESOURCE} "{name}"', timeout=timeout,
        on_change=on_change,
    )  # fmt: skip
    if code is not None:
        return code
    if status.get("phase"):
        hint = f"still {status['phase']} ({status.get('step') or '-'})"
    else:
        hint = "the control service has not picked it up (is podmigrate-controller running?)"
    io.error(
        f"timed out after {printing.format_duration(timeout)} waiting for {printing.RESOURCE}/{name}: {hint}; "
        f"it goes on in the cluster: kubectl migrate describe {name} -n {namespace}"
    )
    return EXIT_TIMEOUT


async def migrate_pod(
    *,
    kube: Api,
    io: Io,
    namespace: str,
    pod_name: str,
    target: str | None,
    wait: bool,
    timeout: float,
    on_failure: str,
    retain_checkpoint: bool,
    delete_emptydir_data: bool = False,
    wait_grace: float = WAIT_GRACE,
) -> int:
    await check_can_start(kube=kube, namespace=namespace, pod_name=pod_name, target=target)
    body = migration_body(
        namespace=namespace,
        pod_name=pod_name,
        target=target,
        timeout=timeout,
        on_failure=on_failure,
        retain_checkpoint=retain_checkpoint,
        delete_emptydir_data=delete_emptydir_data,
    )
    created = await kube.create_migration(namespace=namespace, body=body)
    io.print(printing.created_line(created))
    if not wait:
        return EXIT_OK
    return await wait_for_outcome(
        kube=kube,
        io=io,
        namespace=namespace,
        name=created["metadata"]["name"],
        timeout=timeout + wait_grace,
    )


# --- kubectl migrate get / describe ---------------------------------------------------------
async def _read_or_fail(*, kube: Api, namespace: str, name: str) -> dict[str, Any]:
    obj = await kube.read_migration(namespace=namespace, name=name)
    if obj is None:
        raise CliError(f'{api.PLURAL[:-1]} "{name}" not found in namespace "{namespace}"')
    return obj


async def get_migrations(*, kube: Api, io: Io, namespace: str, name: str | None, all_namespaces: bool, output: str | None) -> int:
    if name:
        obj = await _read_or_fail(kube=kube, namespace=namespace, name=name)
        io.print(
            printing.render(obj, output=output)
            if output
            else printing.migrations_table([obj], now=io.now(), all_namespaces=False)
        )
        return EXIT_OK
    items = await kube.list_migrations(namespace=None if all_namespaces else namespace)
    if output:
        io.print(printing.render(items, output=output))
    elif not items:
        where = "" if all_namespaces else f" in {namespace} namespace"
        print(f"No resources found{where}.", file=io.err)
    else:
        io.print(printing.migrations_table(items, now=io.now(), all_namespaces=all_namespaces))
    return EXIT_OK


async def describe_migration(*, kube: Api, io: Io, namespace: str, name: str) -> int:
    obj = await _read_or_fail(kube=kube, namespace=namespace, name=name)
    uid = obj["metadata"].get("uid")
    events = [
        e
        for e in await kube.list_events(namespace=namespace, name=name)
        if not uid or (e.get("involvedObject") or {}).get("uid") in (None, "", uid)
    ]
    io.print(printing.describe(obj, events=events, now=io.now()))
    return EXIT_OK


# --- kubectl migrate timeline ---------------------------------------------------------------
def utf8_terminal(stream: TextIO) -> bool:
    """Unicode blocks only where they show: a terminal that decodes UTF-8."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    encoding = str(getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    return tty and encoding == "utf8"


def terminal_columns(stream: TextIO) -> int | None:
    try:
        return (os.get_terminal_size(stream.fileno()).columns or None) if stream.isatty() else None
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is both
        return None


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f'cannot write "{path}": {exc.strerror or exc}') from None


async def migration_timeline(
    *,
    kube: Api,
    io: Io,
    namespace: str,
    name: str,
    output: str,
    path: str | None,
    width: int | None,
    ascii_only: bool,
) -> int:
    """Draw the PodMigration's phases: text on stdout (or --file), svg/html into NAME-timeline.<output> (or --file)."""
    obj = await _read_or_fail(kube=kube, namespace=namespace, name=name)
    chart = timeline.build(obj, now=io.now())
    if output == "text":
        columns = width or terminal_columns(io.out) or timeline.DEFAULT_COLUMNS
        document = timeline.render_text(chart, width=columns, unicode=not ascii_only and utf8_terminal(io.out))
    elif output == "svg":
        document = timeline.render_svg(chart, width=width or timeline.DEFAULT_SVG_WIDTH)
    else:
        document = timeline.render_html(chart, width=width or timeline.DEFAULT_SVG_WIDTH)
    path = path or (None if output == "text" else f"{name}-timeline.{output}")
    if path in (None, "-"):
        io.print(document.rstrip("\n"))
        return EXIT_OK
    _write(path, document.rstrip("\n") + "\n")
    io.print(f"{printing.ref(obj)} timeline written to {path}")
    return EXIT_OK
