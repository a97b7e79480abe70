"""PodMigrations as the controller writes them, for the timeline's tests: succeeded, failed, running, refused, staged.

Shared by the model's, the renderers' and the command's tests, so that all of them draw the same migrations.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from migrator import timeline

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
RESTORE_ERROR = (
    "restore on node-2 failed: container db: CreateContainerError: cannot restore: "
    "bind mount /data of the original container is missing on node-2"
)


def ts(seconds: float) -> str:
    """A timestamp ``seconds`` after NOW - 10 minutes, as the controller writes it (milliseconds, Z)."""
    return (NOW - timedelta(minutes=10) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def recorded(steps: list[tuple[str, float | None, str | None]], *, at: float = 0.0) -> tuple[list[dict[str, Any]], float]:
    """Phases back to back as the controller records them; a None duration is the phase still running."""
    phases, t = [], at
    for i, (name, duration, error) in enumerate(steps):
        phase: dict[str, Any] = {"name": name, "spanID": f"{i:016x}", "start": ts(t)}
        if duration is not None:
            t += duration
            phase["end"] = ts(t)
        if error:
            phase["error"] = error
        phases.append(phase)
    return phases, t


def migration(name: str, pod: str, status: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "podmigrate.io/v1alpha1",
        "kind": "PodMigration",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "creationTimestamp": ts(0)[:19] + "Z"},
        "spec": {"podName": pod, "targetNode": "node-2", "timeoutSeconds": 300, "onFailure": "RestoreSource"},
        "status": status,
    }


def succeeded() -> dict[str, Any]:
    """As the demo's: the freeze starts with the checkpoint, Ready ends the restore; two containers."""
    phases, end = recorded(
        [("validate", 0.046, None), ("prepare-target", 1.184, None), ("checkpoint", 1.342, None), ("remove-source", 0.351, None),
         ("create-target", 0.087, None), ("restore", 0.612, None), ("cleanup", 0.233, None)]
    )  # fmt: skip
    return migration(
        "web-x7k2p",
        "web",
        {
            "phase": "Succeeded", "step": "Done", "reason": "Migrated",
            "message": "pod web moved from node-1 to node-2 with its state; downtime 2.39s",
            "sourceNode": "node-1", "targetNode": "node-2", "traceID": TRACE,
            "startTime": ts(0), "completionTime": ts(end),
            "frozenAt": phases[2]["start"], "readyAt": phases[5]["end"], "downtimeSeconds": "2.392",
            "containers": [
                {"name": "web", "image": "reg/ckpt/shop/web:pm-1", "archiveBytes": 47 * 1024**2, "imageBytes": 47 * 1024**2 + 4096},
                {"name": "sidecar", "image": "reg/ckpt/shop/web:pm-1-sidecar", "archiveBytes": 2 * 1024**2, "imageBytes": 2 * 1024**2},
            ],
            "phases": phases,
        },
    )  # fmt: skip


def failed() -> dict[str, Any]:
    """The restore on the target failed, restoring on the source too; the pod was recreated (state lost)."""
    phases, end = recorded(
        [("validate", 0.051, None), ("prepare-target", 0.95, None), ("checkpoint", 1.41, None), ("remove-source", 0.33, None),
         ("create-target", 0.09, None), ("restore", 4.2, RESTORE_ERROR),
         ("rollback-restore-on-source", 3.1, "restore on the source node failed"), ("rollback-recreate", 1.7, None)]
    )  # fmt: skip
    return migration(
        "db-q9w8e",
        "db",
        {
            "phase": "Failed", "step": "Done", "reason": "RestoreFailed",
            "message": f"{RESTORE_ERROR}; restoring on node-1 failed too; the pod was recreated from its original spec",
            "sourceNode": "node-1", "targetNode": "node-2", "traceID": "0af7651916cd43dd8448eb211c80319c",
            "startTime": ts(0), "completionTime": ts(end), "frozenAt": phases[2]["start"],
            "containers": [{"name": "db", "image": "reg/ckpt/shop/db:pm-1", "archiveBytes": 310_000_000, "imageBytes": 310_500_000}],
            "phases": phases,
        },
    )  # fmt: skip


def running() -> dict[str, Any]:
    """Still checkpointing (frozen) at NOW, 3.9 s after it started."""
    start = 600 - 3.9
    phases, _ = recorded([("validate", 0.04, None), ("prepare-target", 1.1, None), ("checkpoint", None, None)], at=start)
    return migration(
        "api-abcde",
        "api",
        {
            "phase": "Checkpointing", "step": "Checkpoint", "sourceNode": "node-1", "targetNode": "node-3",
            "traceID": "11112222333344445555666677778888", "startTime": ts(start), "frozenAt": phases[2]["start"],
            "phases": phases,
        },
    )  # fmt: skip


def refused() -> dict[str, Any]:
    """Failed in Validate: nothing was touched, never frozen."""
    phases, end = recorded([("validate", 0.02, "pod web is Pending, not Running"), ("rollback-thaw-source", 0.01, None)])
    return migration(
        "web-refused",
        "web",
        {"phase": "Failed", "step": "Done", "reason": "PodNotRunning", "message": "pod web is Pending, not Running",
         "traceID": TRACE, "startTime": ts(0), "completionTime": ts(end), "phases": phases},
    )  # fmt: skip


def stage(
    name: str, start: float, end: float, *, source: str, node: str, container: str = "", nbytes: int | None = None
) -> dict[str, Any]:
    """One ``status.stages`` record as the controller writes it."""
    record: dict[str, Any] = {"name": name, "node": node, "start": ts(start), "end": ts(end), "source": source}
    if container:
        record["container"] = container
    if nbytes is not None:
        record["bytes"] = nbytes
    return record


def staged() -> dict[str, Any]:
    """The succeeded migration with its stages: the agent's inside the checkpoint, the kubelet's inside the restore."""
    obj = succeeded()
    web, sidecar = 47 * 1024**2 + 4096, 2 * 1024**2
    obj["status"]["stages"] = [
        stage("freeze", 1.25, 1.254, source="agent", node="node-1"),
        stage("dump", 1.254, 1.8, source="agent", node="node-1", container="web"),
        stage("dump", 1.8, 1.95, source="agent", node="node-1", container="sidecar"),
        stage("upload", 1.8, 2.3, source="agent", node="node-1", container="web", nbytes=web),
        stage("upload", 2.3, 2.4, source="agent", node="node-1", container="sidecar", nbytes=sidecar),
        stage("fetch", 3.005, 3.1, source="kubelet", node="node-2", container="sidecar", nbytes=sidecar),
        stage("fetch", 3.005, 3.3, source="kubelet", node="node-2", container="web", nbytes=web),
        stage("restore", 3.1, 3.2, source="kubelet", node="node-2", container="sidecar"),
        stage("ready", 3.2, 3.622, source="kubelet", node="node-2", container="sidecar"),
        stage("restore", 3.3, 3.55, source="kubelet", node="node-2", container="web"),
        stage("ready", 3.55, 3.622, source="kubelet", node="node-2", container="web"),
    ]
    return obj


def single_staged() -> dict[str, Any]:
    """The staged migration of a pod with one container (the common case: stage names without a container)."""
    obj = staged()
    obj["status"]["containers"] = obj["status"]["containers"][:1]
    obj["status"]["stages"] = [s for s in obj["status"]["stages"] if s.get("container") != "sidecar"]
    return obj


SAMPLES = {"succeeded": succeeded, "failed": failed, "running": running, "refused": refused, "staged": staged}


def build(name: str) -> timeline.Timeline:
    return timeline.build(SAMPLES[name](), now=NOW)
