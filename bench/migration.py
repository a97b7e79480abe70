"""The pipeline: the warmup app as a pod on node-1 (or real-1), moved by a PodMigration, read back from its status.

Everything the benchmark asks the API server goes through a small stdlib HTTPS client with the
admin identity (``Api``) instead of ``kubectl``: polling a migration with a Go binary every
fraction of a second would take CPU from the migration being measured on a 2-core machine.
The times reported are the control service's own (``status.phases[]``, ``startTime``,
``completionTime``, ``downtimeSeconds``, and ``status.stages[]`` where it is written), so the
polling interval does not affect them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from agentapi import certificates
from bench import cpu, stats
from bench.floor import http_json
from bench.results import MigrationRun
from localcluster.cluster import REAL_NODE_TAINT, Cluster
from localcluster.podmigrate import AGENT_PORT

NAMESPACE: Final = "bench"
APP_PORT: Final = 8080
# The taint the bench puts on the local cluster's real nodes (as tests/conftest.py does), so that nothing scheduled
# lands there; only the containerd rows' pods tolerate it. podmigrate's placement honours taints for the target.
PODMIGRATIONS: Final = "/apis/podmigrate.io/v1alpha1/namespaces/{ns}/podmigrations"
PODS: Final = "/api/v1/namespaces/{ns}/pods"

T = TypeVar("T")


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


class ApiError(RuntimeError):
    pass


class Api:
    """Just enough of a Kubernetes client: JSON in and out, admin client certificate, no proxy."""

    def __init__(self, cluster: Cluster, *, workdir: Path) -> None:
        config = json.loads(Path(cluster.kubeconfig).read_text())
        user = config["users"][0]["user"]
        cert, key = workdir / "bench-admin.crt", workdir / "bench-admin.key"
        for path, field in ((cert, "client-certificate-data"), (key, "client-key-data")):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(user[field]))
        ctx = ssl.create_default_context(cafile=cluster.ca_cert)
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
        self.server = cluster.server
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json") -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with self._opener.open(req, timeout=30) as resp:
                return int(resp.status), json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read() or b"null")
            except ValueError:
                detail = None
            return int(exc.code), detail

    def get(self, path: str) -> dict[str, Any] | None:
        code, body = self.request("GET", path)
        if code == 404:
            return None
        if code != 200:
            raise ApiError(f"GET {path}: {code} {_message(body)}")
        return body  # type: ignore[no-any-return]

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        code, reply = self.request("POST", path, body)
        if code not in (200, 201):
            raise ApiError(f"POST {path}: {code} {_message(reply)}")
        return reply  # type: ignore[no-any-return]

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386), as ``kubectl annotate`` and ``kubectl scale`` send one."""
        code, reply = self.request("PATCH", path, body, content_type="application/merge-patch+json")
        if code != 200:
            raise ApiError(f"PATCH {path}: {code} {_message(reply)}")
        return reply  # type: ignore[no-any-return]

    def delete(self, path: str, *, grace: int | None = None) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": grace} if grace is not None else None
        code, reply = self.request("DELETE", path, body)
        if code not in (200, 202, 404):
            raise ApiError(f"DELETE {path}: {code} {_message(reply)}")


def _message(body: Any) -> str:
    return str(body.get("message", "")) if isinstance(body, dict) else ""


def wait_for(what: str, predicate: Callable[[], T | None], *, timeout: float, interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def ensure_namespace(api: Api) -> None:
    if api.get(f"/api/v1/namespaces/{NAMESPACE}") is None:
        api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    # Pods are admitted only once the namespace's default ServiceAccount exists.
    wait_for(
        "the bench namespace's default ServiceAccount",
        lambda: api.get(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"),
        timeout=60,
    )


def real_node_toleration() -> dict[str, str]:
    """Tolerates ``REAL_NODE_TAINT``: what a pod needs to run on, or be restored to, a tainted real node."""
    return {"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}


def is_real(cluster: Cluster, *names: str) -> bool:
    """Whether any of the named nodes is one of the cluster's real nodes (kubelet + containerd)."""
    return any(n.kind == "real" for n in cluster.nodes if n.name in names)


def app_pod(
    *,
    name: str,
    node: str,
    image: str,
    size_mib: int,
    warmup_seconds: float,
    emptydir_mib: int = 0,
    tolerate_real_nodes: bool = False,
) -> dict[str, Any]:
    """The warmup app as the e2e tests run it: readiness on /healthz every second; with ``emptydir_mib``,
    that much random data in a file it holds open in an emptyDir; with ``tolerate_real_nodes``, a toleration
    of the real nodes' taint (its source or its target is one)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bench"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "app",
                    "image": image,
                    "env": [
                        {"name": "WARMUP_SECONDS", "value": f"{warmup_seconds:g}"},
                        {"name": "BALLAST_MB", "value": str(size_mib)},
                    ],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": APP_PORT}, "periodSeconds": 1},
                }
            ],
        },
    }
    spec: dict[str, Any] = pod["spec"]  # type: ignore[assignment]
    if emptydir_mib:
        app = spec["containers"][0]
        app["env"] += [{"name": "SCRATCH_MB", "value": str(emptydir_mib)}, {"name": "SCRATCH_DIR", "value": "/scratch"}]
        app["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    if tolerate_real_nodes:
        spec["tolerations"] = [real_node_toleration()]
    return pod


def pod_migration(*, name: str, pod: str, target: str) -> dict[str, Any]:
    return {
        "apiVersion": "podmigrate.io/v1alpha1",
        "kind": "PodMigration",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"podName": pod, "targetNode": target, "timeoutSeconds": 900},
    }


def ready(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    if not pod:
        return None
    conditions = (pod.get("status") or {}).get("conditions") or []
    return pod if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None


class ServiceWatch(threading.Thread):
    """A client of the app during the move: when the source last answered, when the target first did.

    It polls GET /healthz on the source pod's IP until the replacement pod on the target node has
    an IP, then polls that until it answers. Its gap is the downtime a client saw; the status's
    ``downtimeSeconds`` ends later, when the Ready condition has travelled node -> API server ->
    control service. Wall-clock times (``time.time()``), comparable with the status's timestamps.
    """

    def __init__(self, *, api: Api, pod_path: str, source_ip: str, target_node: str, interval: float = 0.02) -> None:
        super().__init__(daemon=True, name="bench-service-watch")
        self.api, self.pod_path, self.source_ip, self.target_node, self.interval = api, pod_path, source_ip, target_node, interval
        self.last_source_ok: float | None = None
        self.first_target_ok: float | None = None
        self.target_ip: str | None = None
        self.stop = threading.Event()

    def _find_target(self) -> None:
        try:
            pod = self.api.get(self.pod_path) or {}
        except (ApiError, OSError):
            return
        ip = (pod.get("status") or {}).get("podIP")
        if (pod.get("spec") or {}).get("nodeName") == self.target_node and ip:
            self.target_ip = ip

    def run(self) -> None:
        next_lookup = 0.0
        while not self.stop.is_set():
            if self.target_ip is None:
                if http_json(f"http://{self.source_ip}:{APP_PORT}/healthz", timeout=0.3)[0] == 200:
                    self.last_source_ok = time.time()
                if time.monotonic() >= next_lookup:
                    self._find_target()
                    next_lookup = time.monotonic() + 0.1
            elif http_json(f"http://{self.target_ip}:{APP_PORT}/healthz", timeout=0.3)[0] == 200:
                self.first_target_ok = time.time()
                return
            self.stop.wait(self.interval)


def agent_ca(cluster: Cluster) -> str:
    """The CA of the agents' certificates: the podmigrate CA the control service keeps (migrator/certificates.py)."""
    result = cluster.controlplane().kubectl(
        "get", "secret", certificates.CA_SECRET, "-n", "podmigrate-system", "-o", "jsonpath={.data.tls\\.crt}"
    )
    return base64.b64decode(result.stdout).decode()


def agent_metrics(cluster: Cluster, node_name: str) -> stats.Samples:
    """Scrape a node agent's ``/metrics`` over HTTPS, verified with the CA that issued the agents' certificates."""
    node = next(n for n in cluster.nodes if n.name == node_name)
    ctx = ssl.create_default_context(cadata=agent_ca(cluster))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    with opener.open(f"https://{node.address}:{AGENT_PORT}/metrics", timeout=10) as resp:
        return stats.parse_prometheus(resp.read().decode())


def measure(
    *,
    api: Api,
    cluster: Cluster,
    size_mib: int,
    run_index: int,
    warmup_seconds: float = 1.0,
    emptydir_mib: int = 0,
    source: str | None = None,
    target: str | None = None,
) -> MigrationRun:
    """Create the app on ``source`` (node-1), move it to ``target`` (node-2), read the status, check the state;
    always delete what it made. A pod to or from a real node tolerates their taint, and is named ``...-real``."""
    source = source or cluster.nodes[0].name
    target = target or cluster.nodes[1].name
    real = is_real(cluster, source, target)
    name = f"app-{size_mib}m-{run_index}" + (f"-ed{emptydir_mib}m" if emptydir_mib else "") + ("-real" if real else "")
    migration_name = f"move-{name}"
    pods, migrations = PODS.format(ns=NAMESPACE), PODMIGRATIONS.format(ns=NAMESPACE)
    run = MigrationRun(pod=name)
    try:
        created = time.monotonic()
        api.create(
            pods,
            app_pod(
                name=name,
                node=source,
                image=cluster.images["warmup"],
                size_mib=size_mib,
                warmup_seconds=warmup_seconds,
                emptydir_mib=emptydir_mib,
                tolerate_real_nodes=real,
            ),
        )
        pod = wait_for(
            f"pod {name} Ready on {source}",
            lambda: ready(api.get(f"{pods}/{name}")),
            timeout=180 + (size_mib + emptydir_mib) / 5,
            interval=0.1,
        )
        run.cold_start_s = time.monotonic() - created
        ip = pod["status"]["podIP"]
        _post(f"http://{ip}:{APP_PORT}/write?key=bench&value={name}")
        code, before = http_json(f"http://{ip}:{APP_PORT}/state", timeout=5)
        if code != 200 or not isinstance(before, dict):
            raise ApiError(f"GET /state on {ip} answered {code} before the move")

        metrics_before = agent_metrics(cluster, source)
        watch = ServiceWatch(api=api, pod_path=f"{pods}/{name}", source_ip=ip, target_node=target)
        watch.start()
        busy = cpu.machine_busy_seconds()
        sampler = cpu.CpuSampler(registry_pid=cluster.registry_pid())
        sampler.start()

        def finished() -> dict[str, Any] | None:
            obj = api.get(f"{migrations}/{migration_name}") or {}
            return obj if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

        try:
            api.create(migrations, pod_migration(name=migration_name, pod=name, target=target))
            _log(f"{size_mib}MiB run {run_index}: PodMigration {migration_name} created ({source} -> {target})")
            status = wait_for(f"PodMigration {migration_name} to finish", finished, timeout=960)["status"]
            run.machine_cpu_s = cpu.machine_busy_seconds() - busy
            if status.get("phase") == "Succeeded":
                watch.join(timeout=10)  # the target answers before Ready is recorded; give a late one a moment
        finally:
            watch.stop.set()
            watch.join(timeout=5)
            samples = sampler.stop()
        metrics_after = agent_metrics(cluster, source)
        run.phase, run.reason = status.get("phase", ""), status.get("reason", "")
        run.total_s = stats.total_seconds(status)
        run.downtime_s = stats.downtime_seconds(status)
        run.phases = stats.phase_durations(status.get("phases") or [])
        run.downtime_phases = stats.downtime_phases(status)
        run.archive_bytes = stats.container_bytes(status, "archiveBytes")
        run.image_bytes = stats.container_bytes(status, "imageBytes")
        run.volume_bytes = int((status.get("volumeData") or {}).get("dataBytes") or 0) or None
        run.agent = stats.agent_phase_seconds(metrics_before, metrics_after)
        windows, run.stage_bytes = stats.stage_windows(status.get("stages"))  # absent before the streamed agent
        run.stages = {stage: end - start for stage, (start, end) in windows.items()}
        for stage, (start, end) in windows.items():
            if (spent := cpu.window(samples, start=start, end=end)) is not None:
                run.stage_cores[stage] = spent.cores
                if spent.registry_cpu_s is not None:
                    run.stage_registry_cpu_s[stage] = spent.registry_cpu_s
        if watch.last_source_ok is not None and watch.first_target_ok is not None:
            run.client_gap_s = watch.first_target_ok - watch.last_source_ok
        if watch.first_target_ok is not None and status.get("readyAt"):
            run.ready_lag_s = stats.parse_time(status["readyAt"]).timestamp() - watch.first_target_ok
        peak = stats.sample(metrics_after, stats.AGENT_PEAK_RSS)
        run.agent_peak_bytes = int(peak) if peak is not None else None
        if run.phase != "Succeeded":
            run.error = f"{run.phase} {run.reason}: {status.get('message', '')}"
            return run

        moved = wait_for(f"pod {name} Ready on {target}", lambda: ready(api.get(f"{pods}/{name}")), timeout=60, interval=0.1)
        new_ip = moved["status"]["podIP"]
        code, after = http_json(f"http://{new_ip}:{APP_PORT}/state", timeout=5)
        read_code, value = http_json(f"http://{new_ip}:{APP_PORT}/read?key=bench", timeout=5)
        same = isinstance(after, dict) and after.get("boot_id") == before.get("boot_id")
        kept = read_code == 200 and isinstance(value, dict) and value.get("value") == name
        files = True
        if emptydir_mib:  # the file it holds open came along: same bytes through the descriptor and the path
            _, digests = http_json(f"http://{new_ip}:{APP_PORT}/scratch", timeout=60)
            want = before.get("scratch_sha256")
            files = isinstance(digests, dict) and digests.get("open") == want and digests.get("path") == want
        run.state_ok = moved["spec"].get("nodeName") == target and same and kept and files
        if not run.state_ok:
            got = after.get("boot_id") if isinstance(after, dict) else f"HTTP {code}"
            run.error = (
                f"state lost on {moved['spec'].get('nodeName')} ({new_ip}): boot_id {got} (was {before.get('boot_id')}), "
                f"key written before the move {'kept' if kept else 'missing'}, emptyDir file {'kept' if files else 'changed'}"
            )
        return run
    except (ApiError, TimeoutError, OSError, KeyError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        return run
    finally:
        _delete(api, pods=pods, migrations=migrations, pod=name, migration=migration_name)


def _post(url: str) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, method="POST", data=b"")
    with opener.open(req, timeout=5) as resp:
        resp.read()


def _delete(api: Api, *, pods: str, migrations: str, pod: str, migration: str) -> None:
    """Delete the PodMigration and the pod, and wait until the node has stopped the pod (its memory is free again)."""
    with contextlib.suppress(ApiError, OSError):
        api.delete(f"{migrations}/{migration}")
    try:
        api.delete(f"{pods}/{pod}", grace=1)
        wait_for(f"pod {pod} gone", lambda: api.get(f"{pods}/{pod}") is None, timeout=90)
    except (ApiError, TimeoutError, OSError) as exc:
        _log(f"pod {pod} not cleanly deleted ({exc}); forcing it")
        with contextlib.suppress(ApiError, OSError):
            api.delete(f"{pods}/{pod}", grace=0)
