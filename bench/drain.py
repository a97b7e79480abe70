"""The drain row: N warm-up pods on node-1, one NodeDrain moving them to node-2, K at a time.

Why a row of its own: draining a node is what an operator runs, and its wall time is not N single migrations
laid end to end. With ``maxConcurrent`` K the drain should take about ceil(N/K) single migrations; the issue's goal
allows 1.2 times that. What it adds on top (the cordon, planning, a dry-run eviction per pod, PodMigrations created
one reconcile pass after another, restore slots on the target, two migrations sharing 2 cores and one registry) is
what this row measures, against the single-pod total of the same size measured earlier in the same run.

The NodeDrain (``manifests/crd/nodedrains.yaml``) selects only this run's pods (``podSelector``), so the control
service and the agents, which may run on node-1 too, are never part of it; ``targetNodes`` is node-2 and
``unmigratablePolicy`` is Block, so nothing is ever evicted. Its wall time is the drain's own status
(``startTime`` -> ``completionTime``), as a migration's total is its own. Deleting the NodeDrain afterwards
uncordons node-1 (its finalizer); the bench waits for that, then deletes the pods and the PodMigrations.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Final

from bench import cpu, stats
from bench.floor import http_json
from bench.migration import (
    APP_PORT,
    NAMESPACE,
    PODMIGRATIONS,
    PODS,
    Api,
    ApiError,
    app_pod,
    ready,
    wait_for,
)
from bench.results import DrainRun
from localcluster.cluster import Cluster

NODEDRAINS: Final = "/apis/podmigrate.io/v1alpha1/nodedrains"
LABEL: Final = "podmigrate-bench/drain"
TERMINAL: Final = ("Succeeded", "Failed", "Blocked", "Cancelled")


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def node_drain(*, name: str, node: str, target: str, selector: str, concurrency: int) -> dict[str, Any]:
    return {
        "apiVersion": "podmigrate.io/v1alpha1",
        "kind": "NodeDrain",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "targetNodes": [target],
            "podSelector": selector,
            "maxConcurrent": concurrency,
            "unmigratablePolicy": "Block",
            "timeoutSeconds": 900,
        },
    }


def measure(*, api: Api, cluster: Cluster, pods: int, concurrency: int, size_mib: int, warmup_seconds: float = 1.0) -> DrainRun:
    """Start the pods on node-1, drain it to node-2, read the drain and its PodMigrations; always clean up."""
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    tag = time.strftime("%H%M%S")
    run = DrainRun(pods=pods, concurrency=concurrency, size_mib=size_mib, name=f"bench-{tag}")
    names = [f"drain-{size_mib}m-{i}" for i in range(1, pods + 1)]
    path = PODS.format(ns=NAMESPACE)
    migrations: list[str] = []
    try:
        for name in names:
            image = cluster.images["warmup"]
            pod = app_pod(name=name, node=source, image=image, size_mib=size_mib, warmup_seconds=warmup_seconds)
            pod["metadata"]["labels"][LABEL] = tag
            api.create(path, pod)
        before: dict[str, Any] = {}
        for name in names:
            pod = wait_for(f"pod {name} Ready on {source}", lambda n=name: ready(api.get(f"{path}/{n}")),
                           timeout=180 + pods * size_mib / 5, interval=0.2)  # fmt: skip
            code, state = http_json(f"http://{pod['status']['podIP']}:{APP_PORT}/state", timeout=5)
            if code != 200 or not isinstance(state, dict):
                raise ApiError(f"GET /state of {name} answered {code} before the drain")
            before[name] = state.get("boot_id")

        created, busy = time.monotonic(), cpu.machine_busy_seconds()
        api.create(NODEDRAINS, node_drain(name=run.name, node=source, target=target, selector=f"{LABEL}={tag}",
                                          concurrency=concurrency))  # fmt: skip
        _log(f"{run.label}: NodeDrain {run.name} created ({source} -> {target})")

        def finished() -> dict[str, Any] | None:
            obj = api.get(f"{NODEDRAINS}/{run.name}") or {}
            return obj if (obj.get("status") or {}).get("phase") in TERMINAL else None

        status = wait_for(f"NodeDrain {run.name} to finish", finished, timeout=960)["status"]
        run.observed_s = time.monotonic() - created
        run.machine_cpu_s, run.cores = cpu.machine_busy_seconds() - busy, os.cpu_count()
        run.phase, run.message = str(status.get("phase", "")), str(status.get("message", ""))
        run.wall_s = stats.seconds_between(status.get("startTime"), status.get("completionTime"))
        run.migrated = int((status.get("counts") or {}).get("migrated") or 0)
        migrations = [str(e["migration"]) for e in status.get("pods") or [] if e.get("migration")]
        for name in migrations:
            pm = (api.get(f"{PODMIGRATIONS.format(ns=NAMESPACE)}/{name}") or {}).get("status") or {}
            if (total := stats.total_seconds(pm)) is not None:
                run.pod_totals.append(total)
            if (downtime := stats.downtime_seconds(pm)) is not None:
                run.pod_downtimes.append(downtime)
        if run.phase != "Succeeded":
            run.error = f"{run.phase}: {run.message}"
            return run

        lost = []
        for name in names:
            pod = api.get(f"{path}/{name}") or {}
            ip = (pod.get("status") or {}).get("podIP")
            code, state = http_json(f"http://{ip}:{APP_PORT}/state", timeout=5) if ip else (0, None)
            moved = (pod.get("spec") or {}).get("nodeName") == target and ready(pod) is not None
            if not (moved and isinstance(state, dict) and state.get("boot_id") == before[name]):
                lost.append(f"{name} (on {(pod.get('spec') or {}).get('nodeName')}, /state {code})")
        run.state_ok = not lost
        if lost:
            run.error = "not moved with its state: " + ", ".join(lost)
        return run
    except (ApiError, TimeoutError, OSError, KeyError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        return run
    finally:
        _clean_up(api, drain=run.name, node=source, pods=names, migrations=migrations)


def _cordoned(api: Api, node: str) -> bool:
    return bool(((api.get(f"/api/v1/nodes/{node}") or {}).get("spec") or {}).get("unschedulable"))


def _clean_up(api: Api, *, drain: str, node: str, pods: list[str], migrations: list[str]) -> None:
    """Delete the NodeDrain (its finalizer uncordons node-1: wait for it), then the PodMigrations and the pods."""
    try:
        api.delete(f"{NODEDRAINS}/{drain}")
        wait_for(f"NodeDrain {drain} gone", lambda: api.get(f"{NODEDRAINS}/{drain}") is None, timeout=120)
        wait_for(f"{node} uncordoned", lambda: not _cordoned(api, node), timeout=30)
    except (ApiError, TimeoutError, OSError) as exc:
        _log(f"NodeDrain {drain} not cleanly removed: {exc}")
    for name in migrations:
        with contextlib.suppress(ApiError, OSError):
            api.delete(f"{PODMIGRATIONS.format(ns=NAMESPACE)}/{name}")
    path = PODS.format(ns=NAMESPACE)
    for name in pods:
        with contextlib.suppress(ApiError, OSError):
            api.delete(f"{path}/{name}", grace=1)
    for name in pods:
        try:
            wait_for(f"pod {name} gone", lambda n=name: api.get(f"{path}/{n}") is None, timeout=90)
        except (ApiError, TimeoutError, OSError) as exc:
            _log(f"pod {name} not cleanly deleted ({exc}); forcing it")
            with contextlib.suppress(ApiError, OSError):
                api.delete(f"{path}/{name}", grace=0)
