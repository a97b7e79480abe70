"""What about a pod can move with it and what cannot: judged once, for every way a move starts.

A checkpoint carries a pod's processes: their memory, open descriptors, the files they changed
in their root filesystem; the files in its emptyDir volumes move beside it (captured while the
pod is frozen, in place on the target before its processes are restored). It does not carry
what lives on the node outside the pod: hostPath files, node-bound persistent volumes, devices,
the host's network. A move that silently left such state behind would report "moved with its
state" and be wrong, and a process holding a file open in a volume that is not on the target
fails to restore there. So every path that starts a move asks here first, before
anything is frozen: ``kubectl migrate pod`` (one-line CLI errors), the PodMigration's Validate
step (``status.reason``), drains (``drainplan.judge``: skip, block or unmigratable) and the
eviction webhook (which then lets the eviction through instead of starting a doomed move).

Each obstacle has a kind, because callers differ in what they do with it:

* ``skip``: not a pod to move at all (static, DaemonSet, finished, being deleted): a drain
  leaves it, a migration refuses it;
* ``never``: it cannot move (host network, hostPath volumes, persistent volumes that cannot be
  mounted on another node at the same time, devices, a pod that is not running, a controller
  whose replacement pods podmigrate cannot restore).

Persistent volumes are judged from their claims (``migrator.claims``, read by the caller):
shared storage (ReadWriteMany, ReadOnlyMany) follows the pod, and ``placement`` keeps the
target inside the volume's node affinity; anything else is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from migrator import claims as claim_facts
from migrator.api import OWNERS_RESTORED_BY_WEBHOOK
from migrator.claims import Claims

MIRROR_ANNOTATION: Final = "kubernetes.io/config.mirror"
# Resources a container may request that are not devices (everything else is an extended
# resource: a device plugin's GPU, FPGA, NIC... which a checkpoint cannot carry).
PLAIN_RESOURCES: Final = frozenset({"cpu", "memory", "ephemeral-storage"})

Kind = Literal["skip", "never"]


@dataclass(frozen=True, kw_only=True)
class Obstacle:
    reason: str  # CamelCase, as in a PodMigration's status.reason
    message: str  # says what and why, without the pod's name (callers add it)
    kind: Kind


def controller_of(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((o for o in pod["metadata"].get("ownerReferences") or [] if o.get("controller")), None)


def empty_dirs(pod: Mapping[str, Any]) -> list[str]:
    """The pod's emptyDir volumes (disk or memory backed), by name."""
    return [v["name"] for v in (pod.get("spec") or {}).get("volumes") or [] if "emptyDir" in v]


def _devices(spec: Mapping[str, Any]) -> list[str]:
    found: set[str] = set()
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        resources = container.get("resources") or {}
        for section in ("limits", "requests"):
            found |= {k for k in (resources.get(section) or {}) if k not in PLAIN_RESOURCES and not k.startswith("hugepages-")}
    return sorted(found)


# The labels of the control service's pods (manifests/deploy/controller.yaml).
CONTROL_SERVICE_LABELS: Final = {"app.kubernetes.io/name": "podmigrate", "app.kubernetes.io/component": "controller"}


def is_control_service(pod: Mapping[str, Any]) -> bool:
    """A replica of podmigrate's control service: stateless (all it knows is in status), never migrated."""
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in CONTROL_SERVICE_LABELS.items())


def obstacles(pod: Mapping[str, Any], *, claims: Claims | None = None) -> list[Obstacle]:
    """Everything that stands in the way of moving ``pod`` with its state, most fundamental first.

    ``claims`` holds the facts of the pod's persistent volume claims (``claims.read_for_pod``);
    without them a pod with claims is refused, since nothing says its volumes can follow it.
    """
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    phase = status.get("phase") or "Unknown"
    owner = controller_of(pod)
    found: list[Obstacle] = []

    def add(reason: str, message: str, kind: Kind) -> None:
        found.append(Obstacle(reason=reason, message=message, kind=kind))

    if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
        add("StaticPod", "is a static (mirror) pod: the kubelet owns it, it cannot be moved", "skip")
    if phase in ("Succeeded", "Failed"):
        add("PodNotRunning", f"is {phase}: nothing runs to move", "skip")
    if meta.get("deletionTimestamp"):
        add("PodTerminating", "is being deleted", "skip")
    if owner and owner.get("kind") == "DaemonSet":
        add("DaemonSetPod", f"belongs to DaemonSet {owner['name']}: it must stay on its node", "skip")
    if phase not in ("Running", "Succeeded", "Failed"):
        add("PodNotRunning", f"is {phase}, not Running: there is no process to checkpoint", "never")
    if owner and owner.get("kind") not in (*OWNERS_RESTORED_BY_WEBHOOK, "DaemonSet"):
        add(
            "UnsupportedController",
            f"is managed by {owner['kind']} {owner['name']}; only bare pods and pods of "
            f"{' and '.join(sorted(OWNERS_RESTORED_BY_WEBHOOK))}s can be moved",
            "never",
        )
    if is_control_service(pod):
        add("ControlService", "is podmigrate's own control service: it cannot checkpoint itself", "never")
    if spec.get("hostNetwork"):
        add("HostNetwork", "uses the host network: its sockets cannot move with it", "never")
    volumes = spec.get("volumes") or []
    host_paths = [v["name"] for v in volumes if "hostPath" in v]
    if host_paths:
        add(
            "HostPathVolume",
            f"mounts hostPath volume(s) {', '.join(host_paths)}: the target node's files are not the source's, and a "
            "process holding one open cannot be restored without it",
            "never",
        )
    for volume, claim in claim_facts.of_pod(pod, claims or {}).items():
        if claims is None:
            add("PersistentVolume", f"mounts persistent volume {volume}: its claim {claim.name} was not looked up", "never")
        elif not claim.found:
            add("PersistentVolume", f"mounts volume {volume} of claim {claim.name}, which does not exist", "never")
        elif not claim.bound:
            add("PersistentVolume", f"mounts volume {volume} of claim {claim.name}, which is not bound to a volume", "never")
        elif not claim.shared:
            modes = ", ".join(sorted(claim.access_modes)) or "no access mode"
            add(
                "PersistentVolume",
                f"mounts persistent volume {claim.volume} (claim {claim.name}, {modes}): only storage that every node "
                "mounts at once (ReadWriteMany, ReadOnlyMany) can follow a pod; moving a ReadWriteOnce volume between "
                "nodes (detach, attach) is not supported",
                "never",
            )
    devices = _devices(spec)
    if devices:
        add("DeviceResource", f"uses device resource(s) {', '.join(devices)}: device state cannot be checkpointed", "never")
    return found


def first_refusal(pod: Mapping[str, Any], *, claims: Claims | None = None) -> Obstacle | None:
    """Why a migration of ``pod`` must be refused, or None: the first obstacle of any kind."""
    found = obstacles(pod, claims=claims)
    return found[0] if found else None


def empty_dir_media(pod: Mapping[str, Any]) -> dict[str, str]:
    """The pod's emptyDir volumes: name -> medium ("" for node disk, "Memory" for tmpfs)."""
    return {
        v["name"]: (v["emptyDir"] or {}).get("medium") or ""
        for v in (pod.get("spec") or {}).get("volumes") or []
        if "emptyDir" in v
    }


def dropped_data(pod: Mapping[str, Any], *, delete_emptydir_data: bool) -> str:
    """What a move leaves behind, for the outcome's message ("" if nothing): emptyDir files only when told to."""
    dirs = empty_dirs(pod)
    if not dirs or not delete_emptydir_data:
        return ""
    return f"emptyDir volume(s) {', '.join(dirs)} started empty (deleteEmptyDirData)"
