"""The scale row: does a drain cost the control service more when the cluster is larger?

Why a row of its own: every other row runs in a cluster of two nodes and a handful of pods, where a control service
that lists every pod and node on each reconcile pass costs next to nothing. The issue's goal is that a drain of one
node costs the control service the same memory, CPU and API requests *per migrated pod* with 100 nodes and 5,000
pods as with two nodes (informer caches, no full list per pass). So this row runs the drain row's drain
(``bench.drain.measure``, as it is) twice: in the cluster as brought up ("small"), and again after growing the
cluster through the API ("large"). Around each it scrapes the leading control service's ``/metrics``:

* ``podmigrate_kube_requests_total{verb, resource}``: the requests it sent to the API server (the sum over every
  series, and which series moved, e.g. ``list pods``);
* ``process_cpu_seconds_total`` and ``process_resident_memory_bytes``: its CPU and memory;
* ``podmigrate_informer_objects{resource}``: what its caches hold.

A metric it does not export is recorded as None and printed as ``n/a``; the row still runs.

**Registration-only nodes and pods.** The growth is objects, not machines: ``nodes - 2`` Node objects
(``scale-node-NNN``, 32 CPUs, 128 GiB, 110 pods each, Ready, no addresses, so nothing ever dials them) and
``pods`` Pods of ``registry.k8s.io/pause`` bound to them round-robin by ``spec.nodeName`` (no scheduler) in 50
namespaces ``bench-scale-NN``. No kubelet runs them: they stay Pending, but bound, which is all a list of pods
or nodes sees. The nodes carry the taint ``podmigrate.io/bench-scale=registration-only:NoSchedule``, so no
placement (the scheduler's or podmigrate's, which honours taints) ever picks one. What keeps them Ready is what
keeps a kubelet's node Ready: a Lease in ``kube-node-lease`` renewed every 10 s (here by a background thread of
the bench), without which the node-lifecycle controller would mark them NotReady and evict their pods. The
agent DaemonSet tolerates every taint, so it gets a (Pending) pod on each of them too, as it would in a real
cluster of that size.

Everything grown is deleted afterwards, always: the namespaces (their pods with no grace period: no kubelet
would confirm their end), the Nodes and their Leases, and the agent pods left on them.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from typing import Any, Final

from bench import drain, stats
from bench.migration import Api, ApiError, wait_for
from bench.results import ScaleResult, ScaleSample
from localcluster.cluster import Cluster
from localcluster.podmigrate import PodInstallation

LABEL: Final = "podmigrate.io/bench-scale"
VALUE: Final = "registration-only"
SELECTOR: Final = f"{LABEL}={VALUE}"
BY_LABEL: Final = "labelSelector=" + urllib.parse.quote(SELECTOR, safe="")
NODE_PREFIX: Final = "scale-node-"
NAMESPACE_PREFIX: Final = "bench-scale-"
NAMESPACES: Final = 50
PAUSE_IMAGE: Final = "registry.k8s.io/pause:3.10"
LEASE_NAMESPACE: Final = "kube-node-lease"
LEASE_SECONDS: Final = 40  # a kubelet's
RENEW_SECONDS: Final = 10.0  # a kubelet's
THREADS: Final = 8
IDLE_SECONDS: Final = 10.0
NAMESPACES_GONE_S: Final = 300.0

NODES: Final = "/api/v1/nodes"
LEASES: Final = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"

KUBE_REQUESTS: Final = "podmigrate_kube_requests_total"
CACHED: Final = "podmigrate_informer_objects"
CPU: Final = "process_cpu_seconds_total"
RSS: Final = "process_resident_memory_bytes"
PEAK_RSS: Final = stats.AGENT_PEAK_RSS  # process_resident_memory_peak_bytes: the same collector in every podmigrate process


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# --- what the growth creates (pure) ---------------------------------------------------------------


def micro_time(now: datetime) -> str:
    """A Lease's ``renewTime`` (``MicroTime``): RFC 3339 with microseconds and a ``Z``."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_name(index: int) -> str:
    return f"{NODE_PREFIX}{index:03d}"


def namespace_name(index: int) -> str:
    return f"{NAMESPACE_PREFIX}{index:02d}"


def pod_name(index: int) -> str:
    return f"scale-pod-{index:05d}"


RESOURCES: Final = {"cpu": "32", "memory": "128Gi", "pods": "110"}


def node_body(name: str) -> dict[str, Any]:
    """A registration-only Node: labelled and tainted as the bench's, so no placement ever chooses it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {LABEL: VALUE, "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
        },
        "spec": {"taints": [{"key": LABEL, "value": VALUE, "effect": "NoSchedule"}]},
        "status": {"capacity": dict(RESOURCES), "allocatable": dict(RESOURCES)},
    }


def node_status(now: datetime) -> dict[str, Any]:
    """The merge patch of ``/status`` that makes it Ready (what a kubelet posts; no addresses: nothing dials it)."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [
        {"type": kind, "status": "False", "reason": reason, "message": f"{VALUE} node (podmigrate bench)",
         "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
        for kind, reason in (("MemoryPressure", "KubeletHasSufficientMemory"), ("DiskPressure", "KubeletHasNoDiskPressure"),
                             ("PIDPressure", "KubeletHasSufficientPID"))
    ]  # fmt: skip
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": f"{VALUE} node (podmigrate bench)",
                       "lastHeartbeatTime": stamp, "lastTransitionTime": stamp})  # fmt: skip
    return {"status": {"capacity": dict(RESOURCES), "allocatable": dict(RESOURCES), "conditions": conditions}}


def lease_body(name: str, now: datetime) -> dict[str, Any]:
    """The node's heartbeat Lease, as a kubelet keeps it."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "labels": {LABEL: VALUE}},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro_time(now)},
    }


def lease_renewal(name: str, now: datetime) -> dict[str, Any]:
    """The merge patch that renews it."""
    return {"spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro_time(now)}}


def namespace_body(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {LABEL: VALUE}}}


def pod_body(*, name: str, namespace: str, node: str) -> dict[str, Any]:
    """A pause pod bound to ``node`` (no scheduler); no grace period, since no kubelet would ever confirm its end."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL: VALUE}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "pause",
                    "image": PAUSE_IMAGE,
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }
            ],
        },
    }


def assignments(*, pods: int, nodes: Sequence[str], namespaces: Sequence[str]) -> list[tuple[str, str, str]]:
    """(pod, namespace, node) for every pod: nodes and namespaces round-robin, so each fills evenly as they are made."""
    if pods and (not nodes or not namespaces):
        raise ValueError("pods need at least one node and one namespace")
    return [(pod_name(i), namespaces[i % len(namespaces)], nodes[i % len(nodes)]) for i in range(pods)]


# --- what the control service said (pure) ---------------------------------------------------------


def _int(value: float | None) -> int | None:
    return int(value) if value is not None else None


def requests_by(before: stats.Samples, after: stats.Samples) -> dict[str, float]:
    """``"verb resource" -> requests`` sent between two scrapes, for the series that moved."""
    out: dict[str, float] = {}
    for labels, grew in stats.counter_deltas(before, after, KUBE_REQUESTS).items():
        have = dict(labels)
        key = f"{have.get('verb', '?')} {have.get('resource', '?')}"
        out[key] = out.get(key, 0.0) + grew
    return dict(sorted(out.items(), key=lambda item: (-item[1], item[0])))


def _delta(before: stats.Samples, after: stats.Samples, name: str) -> float | None:
    first, last = stats.sample_sum(before, name), stats.sample_sum(after, name)
    return last - first if first is not None and last is not None else None


def record(sample: ScaleSample, before: stats.Samples, after: stats.Samples) -> None:
    """Fill ``sample``'s figures from a scrape before and one after its drain; a missing metric stays None."""
    sample.requests = _delta(before, after, KUBE_REQUESTS)
    sample.requests_by = requests_by(before, after) if sample.requests is not None else {}
    sample.cpu_s = _delta(before, after, CPU)
    sample.rss_before_bytes = _int(stats.sample_sum(before, RSS))
    sample.rss_after_bytes = _int(stats.sample_sum(after, RSS))
    sample.rss_peak_bytes = _int(stats.sample_sum(after, PEAK_RSS))
    sample.cache_pods = stats.sample_sum(after, CACHED, resource="pods")
    sample.cache_nodes = stats.sample_sum(after, CACHED, resource="nodes")


def record_idle(sample: ScaleSample, before: stats.Samples, after: stats.Samples, seconds: float) -> None:
    sample.idle_s = seconds
    sample.idle_requests = _delta(before, after, KUBE_REQUESTS)
    sample.idle_cpu_s = _delta(before, after, CPU)


def on_registration_only_nodes(listing: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(namespace, name) of the listed pods bound to a registration-only node."""
    items = (listing or {}).get("items") or []
    return [
        (p["metadata"]["namespace"], p["metadata"]["name"])
        for p in items
        if str((p.get("spec") or {}).get("nodeName") or "").startswith(NODE_PREFIX)
    ]


def total(listing: dict[str, Any] | None) -> int | None:
    """How many objects a ``?limit=1`` list says there are: its items plus ``metadata.remainingItemCount``."""
    if listing is None:
        return None
    return len(listing.get("items") or []) + int((listing.get("metadata") or {}).get("remainingItemCount") or 0)


# --- the control service's /metrics ----------------------------------------------------------------


class MetricsError(RuntimeError):
    pass


class ControlService:
    """The leading control-service replica's ``/metrics`` (plain HTTP on its health address), and who that is."""

    def __init__(self, installation: PodInstallation) -> None:
        self.installation = installation
        self.address: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def leader(self) -> str:
        """The Lease's holder identity, ``<pod>_<random per process>``: a restarted replica is another leader."""
        try:
            return self.installation.leader()
        except Exception as exc:  # ClusterError, a failed kubectl
            raise MetricsError(f"no control-service leader: {exc}") from exc

    def scrape(self) -> stats.Samples:
        for attempt in (1, 2):
            if self.address is None or attempt == 2:  # again after a failure: the leader may have moved
                try:
                    self.address = self.installation.health_address
                except Exception as exc:  # ClusterError, a failed kubectl: no leader to ask
                    raise MetricsError(f"no control service to scrape: {exc}") from exc
            try:
                with self._opener.open(f"http://{self.address}/metrics", timeout=10) as resp:
                    return stats.parse_prometheus(resp.read().decode())
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if attempt == 2:
                    raise MetricsError(f"GET http://{self.address}/metrics: {exc}") from exc
        raise AssertionError("unreachable")


# --- keeping the nodes alive -----------------------------------------------------------------------


class LeaseKeeper(threading.Thread):
    """Creates, then every ``RENEW_SECONDS`` renews, each registration-only node's Lease, as its kubelet would."""

    def __init__(self, api: Api, nodes: Sequence[str]) -> None:
        super().__init__(daemon=True, name="bench-scale-leases")
        self.api, self.nodes = api, list(nodes)
        self.stop = threading.Event()
        self.passes = 0
        self.failed: str | None = None  # the last pass's first error, if it had one

    def renew(self, name: str) -> None:
        now = datetime.now(UTC)
        code, reply = self.api.request("PATCH", f"{LEASES}/{name}", lease_renewal(name, now),
                                       content_type="application/merge-patch+json")  # fmt: skip
        if code == 404:
            code, reply = self.api.request("POST", LEASES, lease_body(name, now))
        if code not in (200, 201):
            raise ApiError(f"Lease {name}: {code} {reply.get('message', '') if isinstance(reply, dict) else ''}")

    def renew_all(self, pool: ThreadPoolExecutor) -> None:
        errors = [str(exc) for exc in _run_all(pool, self.renew, self.nodes)]
        self.passes += 1
        if errors and errors[0] != self.failed:
            _log(f"scale: {len(errors)} of {len(self.nodes)} node Leases not renewed: {errors[0]}")
        self.failed = errors[0] if errors else None

    def run(self) -> None:
        with ThreadPoolExecutor(THREADS, thread_name_prefix="bench-scale-lease") as pool:
            while not self.stop.is_set():
                started = time.monotonic()
                self.renew_all(pool)
                self.stop.wait(max(0.0, RENEW_SECONDS - (time.monotonic() - started)))


# --- growing and shrinking the cluster ------------------------------------------------------------


def _run_all(pool: ThreadPoolExecutor, task: Callable[[str], None], items: Iterable[str]) -> list[BaseException]:
    """Run ``task`` on every item in the pool; the exceptions raised, in no particular order."""
    futures = [pool.submit(task, item) for item in items]
    return [exc for f in as_completed(futures) if (exc := f.exception()) is not None]


def _create(api: Api, path: str, body: dict[str, Any]) -> None:
    """POST, retried on a dropped connection or an overloaded server; AlreadyExists is success (a retried create)."""
    for attempt in range(1, 5):
        try:
            code, reply = api.request("POST", path, body)
        except OSError as exc:
            if attempt == 4:
                raise
            _log(f"scale: POST {path}: {exc}; retrying")
            time.sleep(0.5 * attempt)
            continue
        if code in (200, 201, 409):
            return
        if code not in (429, 500, 503, 504) or attempt == 4:
            raise ApiError(f"POST {path}: {code} {reply.get('message', '') if isinstance(reply, dict) else ''}")
        time.sleep(0.5 * attempt)


def grow_nodes(api: Api, names: Sequence[str], pool: ThreadPoolExecutor) -> None:
    def make(name: str) -> None:
        _create(api, NODES, node_body(name))
        api.patch(f"{NODES}/{name}/status", node_status(datetime.now(UTC)))

    errors = _run_all(pool, make, names)
    if errors:
        raise ApiError(f"{len(errors)} of {len(names)} Nodes not registered: {errors[0]}")


def grow_namespaces(api: Api, names: Sequence[str], pool: ThreadPoolExecutor) -> None:
    """Create them, and wait for each one's default ServiceAccount: pods are admitted only once it exists."""

    def make(name: str) -> None:
        _create(api, "/api/v1/namespaces", namespace_body(name))
        wait_for(f"ServiceAccount {name}/default", lambda: api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
                 timeout=120, interval=0.5)  # fmt: skip

    errors = _run_all(pool, make, names)
    if errors:
        raise ApiError(f"{len(errors)} of {len(names)} namespaces not ready: {errors[0]}")


def grow_pods(api: Api, placed: Sequence[tuple[str, str, str]], pool: ThreadPoolExecutor) -> None:
    """Create the pods, logging the rate every few seconds; stops at the first error (the rest are cancelled)."""
    started = last = time.monotonic()
    futures = [
        pool.submit(_create, api, f"/api/v1/namespaces/{ns}/pods", pod_body(name=name, namespace=ns, node=node))
        for name, ns, node in placed
    ]
    done = 0
    try:
        for future in as_completed(futures):
            future.result()
            done += 1
            if time.monotonic() - last >= 5 and done < len(placed):
                last = time.monotonic()
                _log(f"scale: {done}/{len(placed)} pods ({done / (last - started):.0f} pods/s)")
    except (ApiError, OSError) as exc:
        for future in futures:
            future.cancel()
        raise ApiError(f"{done} of {len(placed)} Pods created, then: {exc}") from exc


def clean_up(api: Api, *, nodes: Sequence[str], namespaces: Sequence[str], pool: ThreadPoolExecutor) -> str | None:
    """Delete what the growth made; what could not be removed, as text (None: everything is gone)."""
    problems: list[str] = []
    # No kubelet: only a grace period of 0 ends these pods (the namespace controller's deletion would wait for one).
    _run_all(pool, lambda ns: api.delete(f"/api/v1/namespaces/{ns}/pods?{BY_LABEL}", grace=0), namespaces)
    errors = _run_all(pool, lambda ns: api.delete(f"/api/v1/namespaces/{ns}"), namespaces)
    if errors:
        problems.append(f"{len(errors)} namespaces not deleted: {errors[0]}")
    try:
        wait_for(f"the {len(namespaces)} {NAMESPACE_PREFIX}NN namespaces gone",
                 lambda: total(api.get(f"/api/v1/namespaces?{BY_LABEL}&limit=1")) == 0,
                 timeout=NAMESPACES_GONE_S, interval=2)  # fmt: skip
    except (ApiError, TimeoutError, OSError) as exc:
        problems.append(str(exc))
    for what, path in (("Nodes", NODES), ("Leases", LEASES)):
        try:
            api.delete(f"{path}?{BY_LABEL}")
        except (ApiError, OSError) as exc:
            problems.append(f"{what}: {exc}")
    if nodes:
        try:
            wait_for("the registration-only Nodes gone", lambda: total(api.get(f"{NODES}?{BY_LABEL}&limit=1")) == 0,
                     timeout=60, interval=1)  # fmt: skip
            # What other controllers put on them (the agent DaemonSet's pods): no kubelet ends those either.
            for _ in range(3):
                left = on_registration_only_nodes(api.get("/api/v1/pods"))
                if not left:
                    break
                for ns, name in left:
                    with contextlib.suppress(ApiError, OSError):
                        api.delete(f"/api/v1/namespaces/{ns}/pods/{name}", grace=0)
                time.sleep(2)
            else:
                problems.append(f"pods still bound to registration-only nodes: {', '.join(f'{ns}/{n}' for ns, n in left[:5])}")
        except (ApiError, TimeoutError, OSError) as exc:
            problems.append(str(exc))
    return "; ".join(problems) or None


# --- the row ---------------------------------------------------------------------------------------


def _count(api: Api, path: str) -> int | None:
    try:
        return total(api.get(f"{path}?limit=1"))
    except (ApiError, OSError):
        return None


def _drain(
    *, api: Api, cluster: Cluster, control: ControlService, size: str, drain_pods: int, concurrency: int, size_mib: int,
    warmup_seconds: float, idle_seconds: float,
) -> ScaleSample:  # fmt: skip
    """An idle window, then ``drain.measure``, with the control service's metrics scraped around each."""
    sample = ScaleSample(size=size, nodes=_count(api, NODES), pods=_count(api, "/api/v1/pods"))
    before: stats.Samples | None = None
    try:
        sample.leader = control.leader()
        idle = control.scrape()
        t0 = time.monotonic()
        time.sleep(idle_seconds)
        before = control.scrape()
        record_idle(sample, idle, before, time.monotonic() - t0)
    except MetricsError as exc:
        sample.metrics_error = str(exc)
    started = time.monotonic()
    sample.drain = drain.measure(api=api, cluster=cluster, pods=drain_pods, concurrency=concurrency, size_mib=size_mib,
                                 warmup_seconds=warmup_seconds)  # fmt: skip
    if before is not None:
        try:
            after = control.scrape()
            sample.window_s = time.monotonic() - started
            leader = control.leader()
            if leader != sample.leader:
                sample.metrics_error = f"the leader changed during the drain ({sample.leader} -> {leader}): no deltas"
                sample.leader = leader
            else:
                record(sample, before, after)
        except MetricsError as exc:
            sample.metrics_error = str(exc)
    return sample


def _wait_for_cache(control: ControlService, result: ScaleResult, *, pods: int) -> None:
    """Until the control service's pod cache holds at least ``pods`` (10 s if it has no such gauge); its RSS then."""
    started = time.monotonic()
    deadline = started + 60 + pods / 20
    samples: stats.Samples = {}
    try:
        while True:
            samples = control.scrape()
            cached = stats.sample_sum(samples, CACHED, resource="pods")
            if cached is None:
                _log(f"scale: the control service exports no {CACHED}: waiting 10 s instead")
                time.sleep(10)
                samples = control.scrape()
                break
            if cached >= pods:
                result.cache_wait_s = time.monotonic() - started
                break
            if time.monotonic() > deadline:
                _log(f"scale: the control service's pod cache holds {cached:.0f} after {deadline - started:.0f}s, not {pods}")
                break
            time.sleep(1)
    except MetricsError as exc:
        _log(f"scale: {exc}")
    result.cache_pods_grown = stats.sample_sum(samples, CACHED, resource="pods")
    result.rss_grown_bytes = _int(stats.sample_sum(samples, RSS))


def measure(
    *,
    api: Api,
    cluster: Cluster,
    installation: PodInstallation,
    nodes: int,
    pods: int,
    drain_pods: int,
    concurrency: int,
    size_mib: int,
    warmup_seconds: float,
    idle_seconds: float = IDLE_SECONDS,
) -> ScaleResult:
    """The drain in the cluster as it is, then grown to ``nodes`` nodes and ``pods`` more pods; always shrunk back."""
    result = ScaleResult(nodes=nodes, pods=pods, drain_pods=drain_pods, concurrency=concurrency, size_mib=size_mib)
    control = ControlService(installation)
    common: dict[str, Any] = {"api": api, "cluster": cluster, "control": control, "drain_pods": drain_pods,
                              "concurrency": concurrency, "size_mib": size_mib, "warmup_seconds": warmup_seconds,
                              "idle_seconds": idle_seconds}  # fmt: skip
    result.small = _drain(size="small", **common)
    _log(f"scale: small drain {result.small.drain.phase if result.small.drain else '?'}: "
         f"{_figures(result.small)}")  # fmt: skip
    names = [node_name(i) for i in range(1, nodes - len(cluster.nodes) + 1)]
    namespaces = [namespace_name(i) for i in range(NAMESPACES)] if pods else []
    keeper = LeaseKeeper(api, names)
    with ThreadPoolExecutor(THREADS, thread_name_prefix="bench-scale") as pool:
        try:
            t0 = time.monotonic()
            grow_nodes(api, names, pool)
            keeper.start()
            result.added_nodes = len(names)
            result.nodes_s = time.monotonic() - t0
            _log(f"scale: {len(names)} registration-only Nodes registered in {result.nodes_s:.1f}s")
            t0 = time.monotonic()
            grow_namespaces(api, namespaces, pool)
            result.namespaces_s = time.monotonic() - t0
            t0 = time.monotonic()
            grow_pods(api, assignments(pods=pods, nodes=names, namespaces=namespaces), pool)
            result.added_pods = pods
            result.pods_s = time.monotonic() - t0
            rate = result.pods_per_s
            _log(f"scale: {len(namespaces)} namespaces in {result.namespaces_s:.1f}s, then {pods} Pods in {result.pods_s:.1f}s"
                 + (f" ({rate:.0f} pods/s)" if rate else ""))  # fmt: skip
            _wait_for_cache(control, result, pods=pods)
            if keeper.failed:
                raise ApiError(f"node Leases not renewed: {keeper.failed}")
            result.large = _drain(size="large", **common)
            _log(f"scale: large drain {result.large.drain.phase if result.large.drain else '?'}: {_figures(result.large)}")
        except (ApiError, TimeoutError, OSError, ValueError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            _log(f"scale: growing the cluster failed: {result.error}")
        finally:
            keeper.stop.set()
            if keeper.is_alive():
                keeper.join(timeout=RENEW_SECONDS + 30)
            t0 = time.monotonic()
            result.cleanup_error = clean_up(api, nodes=names, namespaces=namespaces, pool=pool)
            _log(f"scale: registration-only nodes and pods deleted in {time.monotonic() - t0:.1f}s"
                 + (f"; left behind: {result.cleanup_error}" if result.cleanup_error else ""))  # fmt: skip
    return result


def _figures(sample: ScaleSample) -> str:
    """A progress line's figures."""
    if sample.metrics_error:
        return f"no figures ({sample.metrics_error})"
    requests = "n/a" if sample.requests is None else f"{sample.requests:.0f}"
    cpu = "n/a" if sample.cpu_s is None else f"{sample.cpu_s:.2f}s"
    return f"{requests} API requests, CPU {cpu}, RSS {stats.fmt_mib(sample.rss_after_bytes)} MiB, in {sample.window_s or 0:.0f}s"
