"""``checkpoint``, ``restore``, ``checkpoints``, ``inspect`` and ``get checkpoints|restores|schedules``.

Checkpoints are objects of their own here: a PodCheckpoint keeps a pod's checkpoint in the
registry until it is deleted, a PodRestore starts a pod from one, a CheckpointSchedule makes
them on a cron schedule. The commands only create and read those objects; the control service
does the work and records it in status, which ``--wait`` follows. The one exception is ``inspect
--from-registry``, which reads a checkpoint's images from the registry itself (``registryinspection``).

The checks before anything is created are, as for ``pod``, the ones a person gets wrong by
typing: a pod or checkpoint name, a pod that is not running, a suspend its controller would undo,
a checkpoint that failed, a node that cannot take pods, a restore under the name of a pod that
runs on. A checkpoint still being taken can be restored already: the PodRestore waits for it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Final

from kubeclient.resources import CustomResource
from migrator import api
from migrator.cli import checkpointprinting as cp
from migrator.cli import following, printing, registryinspection
from migrator.cli.commands import WAIT_GRACE, Io, check_node_takes_pods
from migrator.cli.errors import EXIT_ERROR, EXIT_OK, EXIT_TIMEOUT, CliError
from migrator.cli.kubeapi import Api
from migrator.cli.registryinspection import RegistryOptions

MAX_NAME: Final = 253  # a DNS subdomain, what object names are
RESTORE_PREFIX_CHARS: Final = 40  # of the checkpoint's name, in the generated name of its PodRestore
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
MAX_LABEL_VALUE: Final = 63


@dataclass(frozen=True, kw_only=True)
class Kind:
    """What ``get`` and ``--wait`` need to know about one of the three kinds."""

    resource: CustomResource
    printed: str  # podcheckpoint.podmigrate.io: how kubectl names it in "created" lines and -o name
    table: Callable[..., str]


KINDS: Final = {
    "checkpoints": Kind(resource=api.PODCHECKPOINTS, printed=cp.CHECKPOINT_RESOURCE, table=cp.checkpoints_table),
    "restores": Kind(resource=api.PODRESTORES, printed=cp.RESTORE_RESOURCE, table=cp.restores_table),
    "schedules": Kind(resource=api.CHECKPOINTSCHEDULES, printed=cp.SCHEDULE_RESOURCE, table=cp.schedules_table),
}


def label_value_ok(text: str) -> bool:
    return len(text) <= MAX_LABEL_VALUE and bool(_LABEL_VALUE.fullmatch(text))


def default_checkpoint_name(pod_name: str, *, io: Io) -> str:
    """``<pod>-<YYYYMMDD-HHMMSS>`` in UTC, the pod's part shortened so that the whole stays a valid name."""
    stamp = f"{io.now().astimezone(UTC):%Y%m%d-%H%M%S}"
    return f"{pod_name[: MAX_NAME - len(stamp) - 1].rstrip('-.')}-{stamp}"


def restore_generate_name(checkpoint: str) -> str:
    """``<checkpoint[:40]>-restore-``: the API server appends five random characters."""
    return f"{checkpoint[:RESTORE_PREFIX_CHARS].rstrip('-.')}-restore-"


async def _read(*, kube: Api, kind: str, namespace: str, name: str) -> dict[str, Any]:
    obj = await kube.read_object(resource=KINDS[kind].resource, namespace=namespace, name=name)
    if obj is None:
        raise CliError(f'{KINDS[kind].resource.kind.lower()} "{name}" not found in namespace "{namespace}"')
    return obj


# --- kubectl migrate checkpoint POD ----------------------------------------------------------
async def check_can_checkpoint(*, kube: Api, namespace: str, pod_name: str, suspend: bool) -> dict[str, Any]:
    """The pod exists and runs; a pod a controller owns is not suspended (its controller would replace it at once)."""
    pod = await kube.read_pod(namespace=namespace, name=pod_name)
    if pod is None:
        raise CliError(f'pod "{pod_name}" not found in namespace "{namespace}"')
    if pod["metadata"].get("deletionTimestamp"):
        raise CliError(f'pod "{pod_name}" is being deleted')
    phase = (pod.get("status") or {}).get("phase")
    if phase != "Running":
        raise CliError(f'pod "{pod_name}" is {phase or "not running"}: only a Running pod can be checkpointed')
    owner = next((o for o in pod["metadata"].get("ownerReferences") or [] if o.get("controller")), None)
    if suspend and owner:
        raise CliError(
            f'pod "{pod_name}" is owned by {owner.get("kind")} {owner.get("name")}, which would replace it at once: '
            f"checkpoint it without --suspend, scale the workload down, and scale it up again with the annotation "
            f"{api.ANNOTATION_WARM_START}=<checkpoint>"
        )
    return pod


def checkpoint_body(*, namespace: str, pod_name: str, name: str, suspend: bool, pin: bool, timeout: float) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if label_value_ok(pod_name):  # a pod name longer than a label value can hold is found by spec.podName instead
        metadata["labels"] = {api.LABEL_CHECKPOINT_POD: pod_name}
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.CHECKPOINT_KIND,
        "metadata": metadata,
        "spec": {
            "podName": pod_name,
            "mode": (api.CheckpointMode.SUSPEND if suspend else api.CheckpointMode.RUNNING).value,
            "pinned": pin,
            "timeoutSeconds": math.ceil(timeout),
        },
    }


async def checkpoint_pod(
    *,
    kube: Api,
    io: Io,
    namespace: str,
    pod_name: str,
    name: str | None,
    suspend: bool,
    pin: bool,
    timeout: float,
    wait: bool,
    wait_grace: float = WAIT_GRACE,
) -> int:
    await check_can_checkpoint(kube=kube, namespace=namespace, pod_name=pod_name, suspend=suspend)
    body = checkpoint_body(
        namespace=namespace,
        pod_name=pod_name,
        name=name or default_checkpoint_name(pod_name, io=io),
        suspend=suspend,
        pin=pin,
        timeout=timeout,
    )
    created = await kube.create_object(resource=api.PODCHECKPOINTS, namespace=namespace, body=body)
    io.print(f"{cp.ref(created, resource=cp.CHECKPOINT_RESOURCE)} created")
    if not wait:
        return EXIT_OK
    return await follow(
        kube=kube,
        io=io,
        kind="checkpoints",
        namespace=namespace,
        name=created["metadata"]["name"],
        timeout=timeout + wait_grace,
    )


# --- kubectl migrate checkpoint POD --schedule CRON ------------------------------------------
def schedule_body(
    *,
    namespace: str,
    pod_name: str,
    name: str,
    schedule: str,
    keep: int | None,
    max_age: float | None,
    max_bytes: int | None,
) -> dict[str, Any]:
    retention = {
        key: value
        for key, value in (
            ("maxCountPerPod", keep),
            ("maxAgeSeconds", math.ceil(max_age) if max_age else None),
            ("maxTotalBytes", max_bytes),
        )
        if value
    }
    spec: dict[str, Any] = {"podName": pod_name, "schedule": schedule}
    if retention:
        spec["retention"] = retention
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.SCHEDULE_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


async def schedule_checkpoints(
    *,
    kube: Api,
    io: Io,
    namespace: str,
    pod_name: str,
    name: str | None,
    schedule: str,
    keep: int | None,
    max_age: float | None,
    max_bytes: int | None,
) -> int:
    if await kube.read_pod(namespace=namespace, name=pod_name) is None:
        raise CliError(f'pod "{pod_name}" not found in namespace "{namespace}"')
    body = schedule_body(
        namespace=namespace,
        pod_name=pod_name,
        name=name or pod_name,
        schedule=schedule,
        keep=keep,
        max_age=max_age,
        max_bytes=max_bytes,
    )
    created = await kube.create_object(resource=api.CHECKPOINTSCHEDULES, namespace=namespace, body=body)
    io.print(f"{cp.ref(created, resource=cp.SCHEDULE_RESOURCE)} created")
    return EXIT_OK


# --- kubectl migrate restore CHECKPOINT ------------------------------------------------------
async def check_can_restore(
    *, kube: Api, namespace: str, checkpoint: str, target: str | None, new_name: str | None
) -> dict[str, Any]:
    """The checkpoint did not fail; the node, if given, takes pods; no pod runs (or will) under the restored pod's name.

    A checkpoint still being taken is fine: the restore waits for it (within its own timeout), so
    ``checkpoint POD --suspend`` and ``restore`` can follow each other at once.
    """
    obj = await _read(kube=kube, kind="checkpoints", namespace=namespace, name=checkpoint)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    kind = api.CHECKPOINT_KIND.lower()
    if status.get("phase") == api.CheckpointPhase.FAILED:
        raise CliError(f'{kind} "{checkpoint}" Failed ({cp.failure_line(obj)}): there is nothing to restore')
    if obj["metadata"].get("deletionTimestamp"):
        raise CliError(f'{kind} "{checkpoint}" is being deleted (its images are going)')
    if target is not None:
        node = await kube.read_node(name=target)
        if node is None:
            raise CliError(f'node "{target}" not found')
        check_node_takes_pods(node)
    pod_name = new_name or spec.get("podName")
    # Until a Suspend checkpoint is Available, its pod still exists: it is removed once checkpointed.
    phase = cp.checkpoint_phase(status)
    leaving = not new_name and spec.get("mode") == api.CheckpointMode.SUSPEND and phase != api.CheckpointPhase.AVAILABLE
    if pod_name and not leaving and await kube.read_pod(namespace=namespace, name=pod_name) is not None:
        hint = "pick another --name" if new_name else "give the copy a name with --name NEWNAME, or delete the pod"
        raise CliError(f'pod "{pod_name}" exists in namespace "{namespace}": a restore under its name is refused ({hint})')
    return obj


def restore_body(*, namespace: str, checkpoint: str, target: str | None, new_name: str | None, timeout: float) -> dict[str, Any]:
    spec: dict[str, Any] = {"checkpointName": checkpoint, "timeoutSeconds": math.ceil(timeout)}
    if target:
        spec["targetNode"] = target
    if new_name:
        spec["podName"] = new_name
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.RESTORE_KIND,
        "metadata": {"generateName": restore_generate_name(checkpoint), "namespace": namespace},
        "spec": spec,
    }


async def restore_checkpoint(
    *,
    kube: Api,
    io: Io,
    namespace: str,
    checkpoint: str,
    target: str | None,
    new_name: str | None,
    timeout: float,
    wait: bool,
    wait_grace: float = WAIT_GRACE,
) -> int:
    await check_can_restore(kube=kube, namespace=namespace, checkpoint=checkpoint, target=target, new_name=new_name)
    body = restore_body(namespace=namespace, checkpoint=checkpoint, target=target, new_name=new_name, timeout=timeout)
    created = await kube.create_object(resource=api.PODRESTORES, namespace=namespace, body=body)
    io.print(f"{cp.ref(created, resource=cp.RESTORE_RESOURCE)} created")
    if not wait:
        return EXIT_OK
    return await follow(
        kube=kube, io=io, kind="restores", namespace=namespace, name=created["metadata"]["name"], timeout=timeout + wait_grace
    )


# --- --wait ----------------------------------------------------------------------------------
# Per kind followed: the phase that ends it well, the one that ends it badly, what to print at the end, and
# the command that shows it later.
_SUCCEEDED: Final = {"checkpoints": api.CheckpointPhase.AVAILABLE, "restores": api.RestorePhase.SUCCEEDED}
_FAILED: Final = {"checkpoints": api.CheckpointPhase.FAILED, "restores": api.RestorePhase.FAILED}
_OUTCOME: Final = {"checkpoints": cp.checkpoint_outcome_lines, "restores": cp.restore_outcome_lines}
_LATER: Final = {
    "checkpoints": "kubectl migrate inspect {name} -n {namespace}",
    "restores": "kubectl migrate get restores {name} -n {namespace}",
}


async def follow(*, kube: Api, io: Io, kind: str, namespace: str, name: str, timeout: float) -> int:
    """Watch a PodCheckpoint or PodRestore, print each phase change; 0 Available/Succeeded, 1 Failed, 2 gave up."""
    printed = KINDS[kind].printed
    seen: tuple[str, str] | None = None

    def on_change(obj: Mapping[str, Any]) -> int | None:
        nonlocal seen
        status = obj.get("status") or {}
        state = (str(status.get("phase") or ""), str(status.get("message") or ""))
        if state != seen:
            io.print(cp.progress_line(obj, when=io.now()))
            seen = state
        if state[0] == _SUCCEEDED[kind]:
            for line in _OUTCOME[kind](obj):
                io.print(line)
            return EXIT_OK
        if state[0] == _FAILED[kind]:
            io.error(cp.failure_line(obj))
            return EXIT_ERROR
        return None

    code, status = await following.follow(
        kube.watch_object(resource=KINDS[kind].resource, namespace=namespace, name=name), what=f'{printed} "{name}"',
        timeout=timeout, on_change=on_change,
    )  # fmt: skip
    if code is not None:
        return code
    hint = f"still {status['phase']}" if status.get("phase") else "the control service has not picked it up (is it running?)"
    io.error(
        f"timed out after {printing.format_duration(timeout)} waiting for {printed}/{name}: {hint}; "
        f"it goes on in the cluster: {_LATER[kind].format(name=name, namespace=namespace)}"
    )
    return EXIT_TIMEOUT


# --- kubectl migrate checkpoints [POD] / get checkpoints|restores|schedules [NAME] -----------
async def list_checkpoints(
    *, kube: Api, io: Io, namespace: str, pod: str | None, all_namespaces: bool, output: str | None
) -> int:
    """The PodCheckpoints of the namespace (or all), only ``pod``'s when given (by label, else by spec.podName)."""
    where = None if all_namespaces else namespace
    selector = f"{api.LABEL_CHECKPOINT_POD}={pod}" if pod and label_value_ok(pod) else None
    items = await kube.list_objects(resource=api.PODCHECKPOINTS, namespace=where, label_selector=selector)
    if pod:
        items = [o for o in items if (o.get("spec") or {}).get("podName") == pod]
    return _print_list(io=io, kind="checkpoints", items=items, namespace=namespace, all_namespaces=all_namespaces, output=output)


async def get_objects(
    *, kube: Api, io: Io, kind: str, namespace: str, name: str | None, all_namespaces: bool, output: str | None
) -> int:
    if name:
        obj = await _read(kube=kube, kind=kind, namespace=namespace, name=name)
        io.print(
            printing.render(obj, output=output, resource=KINDS[kind].printed)
            if output
            else KINDS[kind].table([obj], now=io.now(), all_namespaces=False)
        )
        return EXIT_OK
    items = await kube.list_objects(resource=KINDS[kind].resource, namespace=None if all_namespaces else namespace)
    return _print_list(io=io, kind=kind, items=items, namespace=namespace, all_namespaces=all_namespaces, output=output)


def _print_list(
    *, io: Io, kind: str, items: list[dict[str, Any]], namespace: str, all_namespaces: bool, output: str | None
) -> int:
    if output:
        io.print(printing.render(items, output=output, resource=KINDS[kind].printed))
    elif not items:
        where = "" if all_namespaces else f" in {namespace} namespace"
        print(f"No resources found{where}.", file=io.err)
    else:
        io.print(KINDS[kind].table(items, now=io.now(), all_namespaces=all_namespaces))
    return EXIT_OK


# --- kubectl migrate inspect CHECKPOINT [--from-registry] -------------------------------------
async def inspect_checkpoint(
    *, kube: Api, io: Io, namespace: str, name: str, output: str | None, registry: RegistryOptions | None = None
) -> int:
    """The PodCheckpoint's page (``-o``: the object); with ``registry``, its CRIU images read from the images
    themselves (``registryinspection``: ``-o`` then prints those inspections, container name -> JSON)."""
    obj = await _read(kube=kube, kind="checkpoints", namespace=namespace, name=name)
    if registry is None:
        io.print(printing.render(obj, output=output) if output else cp.inspect_page(obj, now=io.now()))
        return EXIT_OK
    status = obj.get("status") or {}
    containers = [c for c in status.get("containers") or [] if c.get("image")]
    if not containers:
        raise CliError(
            f'{api.CHECKPOINT_KIND.lower()} "{name}" has no image in the registry yet '
            f"(it is {cp.checkpoint_phase(status)}): there is nothing to read"
        )
    read = await registryinspection.read_images(containers=containers, options=registry)
    if output:
        io.print(printing.dump({r.container: r.inspection.to_json() for r in read}, output=output))
    else:
        inspections = {r.container: r.inspection for r in read}
        io.print(cp.inspect_page(obj, now=io.now(), read=inspections, source=registryinspection.source_of(read)))
    return EXIT_OK
