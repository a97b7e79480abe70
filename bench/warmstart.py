"""The warm start row: a Deployment scaled up with its new pods restored from a PodCheckpoint, against a cold one.

Why a row of its own: a warm start (``migrator/warmstart.py``, the README's "Checkpoints as objects") is a promise
about scale-up, not about moving a pod: a new replica of a slow-starting app should be Ready in about a restore's
time, not in its warm-up's. Neither a migration nor the drain measures that, so this row does what an operator
does. A Deployment of the warm-up app (one replica) starts cold; a ``PodCheckpoint`` (mode Running: the pod runs on)
is taken of that pod; the Deployment is annotated ``podmigrate.io/warm-start-from``; once its ReplicaSet carries
the annotation it is scaled from 1 to 1+N. Each new pod must really be a restore: the checkpoint's annotation
(``podmigrate.io/checkpoint``) on the pod and the checkpointed process's ``boot_id`` from its ``GET /state``, else
the row is FAILED (with ``podmigrate.io/warm-start-skipped``'s reason when the webhook left the pod cold).

The baseline is measured in the same run, on the same cluster, with the same template: a second Deployment without
the annotation, scaled from 1 to 1+N after the warm scale-up is done (not at the same time: the warm-up is real CPU
work, and cold pods burning both cores would slow the restores being measured). A new pod's time is what its
clients see: from the scale request until the pod first answers ``GET /healthz`` 200, polled by the bench every 50 ms
(the API's timestamps are whole seconds, too coarse for a restore well under one; the first pod's ``first_s`` is
still read from them). Pods are kept on the stand-in nodes (a required node affinity) so the scheduler and
the webhook choose among the nodes the other rows use.

Clean-up always runs: both Deployments are deleted and their pods waited for, then the PodCheckpoint, whose
finalizer deletes its images from the registry before it lets the object go; the bench then checks that the
images' manifests are gone.
"""

from __future__ import annotations

import contextlib
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Final

from bench import stats
from bench.floor import http_json
from bench.migration import APP_PORT, NAMESPACE, PODS, Api, ApiError, app_pod, ready, wait_for
from bench.results import WarmStartRun
from localcluster import registryauth
from localcluster.cluster import Cluster
from migrator import api as podmigrate

DEPLOYMENTS: Final = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
REPLICASETS: Final = f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets"
PODCHECKPOINTS: Final = f"/apis/{podmigrate.API_VERSION}/namespaces/{NAMESPACE}/podcheckpoints"
LABEL: Final = "podmigrate-bench/warmstart"
MANIFEST_TYPES: Final = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# --- pure: the objects, and what the API's timestamps and annotations say ------------------------


def deployment(
    *, name: str, image: str, nodes: Sequence[str], size_mib: int, warmup_seconds: float, replicas: int = 1
) -> dict[str, Any]:
    """The warm-up app as the other rows run it (``app_pod``), as a Deployment's template, on ``nodes`` only."""
    pod = app_pod(name=name, node="", image=image, size_mib=size_mib, warmup_seconds=warmup_seconds)
    spec = pod["spec"]
    del spec["nodeName"]  # the scheduler places the first pod; the warm-start webhook the restored ones
    spec["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": list(nodes)}]}
                ]
            }
        }
    }
    labels = {**pod["metadata"]["labels"], LABEL: name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {LABEL: name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {LABEL: name}},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def pod_checkpoint(*, name: str, pod: str) -> dict[str, Any]:
    """A PodCheckpoint of ``pod`` that leaves it running (paused only while CRIU dumps it)."""
    return {
        "apiVersion": podmigrate.API_VERSION,
        "kind": podmigrate.CHECKPOINT_KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"podName": pod, "mode": "Running", "timeoutSeconds": 600},
    }


def ready_after(pod: Mapping[str, Any]) -> float | None:
    """Seconds from the pod's creation to its Ready condition turning True, by the API's clock; None if not Ready."""
    created = (pod.get("metadata") or {}).get("creationTimestamp")
    conditions = (pod.get("status") or {}).get("conditions") or []
    became = next(
        (c.get("lastTransitionTime") for c in conditions if c.get("type") == "Ready" and c.get("status") == "True"), None
    )
    return stats.seconds_between(created, became)


def why_not_restored(*, pod: Mapping[str, Any], checkpoint: str, boot_id: str, state: Any) -> str | None:
    """None when the pod is a restore of ``checkpoint`` (its annotation, and the checkpointed process's boot_id in
    its ``GET /state``); otherwise why not, with the webhook's own reason when it started the pod cold."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get(podmigrate.ANNOTATION_CHECKPOINT) != f"{NAMESPACE}/{checkpoint}":
        skipped = annotations.get(podmigrate.ANNOTATION_WARM_START_SKIPPED)
        return f"started cold: {skipped}" if skipped else f"no {podmigrate.ANNOTATION_CHECKPOINT} annotation"
    got = state.get("boot_id") if isinstance(state, dict) else None
    if got != boot_id:
        return f"boot_id {got or 'unread'}, the checkpointed pod's is {boot_id}"
    return None


def image_manifest(reference: str) -> tuple[str, str, str] | None:
    """``registry/repo/path@sha256:...`` as (registry, repository, digest); None for a reference without a digest."""
    name, at, digest = reference.partition("@")
    registry, slash, repository = name.partition("/")
    return (registry, repository, digest) if at and slash and digest else None


# --- against the cluster ---------------------------------------------------------------------------


def _pods(api: Api, deployment_name: str) -> list[dict[str, Any]]:
    selector = urllib.parse.quote(f"{LABEL}={deployment_name}")
    listed = api.get(f"{PODS.format(ns=NAMESPACE)}?labelSelector={selector}") or {}
    return [p for p in listed.get("items") or [] if not p["metadata"].get("deletionTimestamp")]


def _all_ready(api: Api, deployment_name: str, count: int) -> list[dict[str, Any]] | None:
    found = _pods(api, deployment_name)
    return found if len(found) == count and all(ready(p) for p in found) else None


def _describe(pods: Sequence[Mapping[str, Any]]) -> str:
    """What the pods are doing, for a timeout's message: name, node, phase, Ready, the warm-start verdict."""
    out = []
    for p in pods:
        annotations = p["metadata"].get("annotations") or {}
        verdict = annotations.get(podmigrate.ANNOTATION_CHECKPOINT) or annotations.get(podmigrate.ANNOTATION_WARM_START_SKIPPED)
        out.append(
            f"{p['metadata']['name']} on {p['spec'].get('nodeName') or '-'} {(p.get('status') or {}).get('phase')}"
            f"{' Ready' if ready(p) else ''}" + (f" ({verdict})" if verdict else "")
        )
    return ", ".join(out) or "no pods"


def _scale(api: Api, name: str, *, replicas: int, timeout: float) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Scale up and wait until every pod is Ready; also, per new pod (by UID), the seconds from the scale request
    until it first answered ``GET /healthz`` 200, timed by this client every 50 ms (the API's own timestamps are
    whole seconds, too coarse for a restore that takes well under one)."""
    known = {p["metadata"]["uid"] for p in _pods(api, name)}
    scaled_at = time.monotonic()
    api.patch(f"{DEPLOYMENTS}/{name}", {"spec": {"replicas": replicas}})
    served: dict[str, float] = {}
    deadline = scaled_at + timeout
    while time.monotonic() < deadline:
        found = _pods(api, name)
        for pod in found:
            uid, ip = pod["metadata"]["uid"], (pod.get("status") or {}).get("podIP")
            if uid in known or uid in served or not ip:
                continue
            if http_json(f"http://{ip}:{APP_PORT}/healthz", timeout=0.5)[0] == 200:
                served[uid] = time.monotonic() - scaled_at
        if len(served) >= replicas - len(known) and len(found) == replicas and all(ready(p) for p in found):
            return found, served
        time.sleep(0.05)
    raise TimeoutError(f"Deployment {name}: {replicas} pods Ready not within {timeout:.0f}s: {_describe(_pods(api, name))}")


def _start(api: Api, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Create a one-replica Deployment and wait for its pod to be Ready."""
    name = body["metadata"]["name"]
    api.create(DEPLOYMENTS, body)
    try:
        (first,) = wait_for(f"Deployment {name}'s first pod Ready", lambda: _all_ready(api, name, 1), timeout=timeout)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: {_describe(_pods(api, name))}") from None
    return first


def _new_pods(pods: Sequence[dict[str, Any]], first: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [p for p in pods if p["metadata"]["uid"] != first["metadata"]["uid"]]


def measure(*, api: Api, cluster: Cluster, pods: int, size_mib: int, warmup_seconds: float, run_index: int) -> WarmStartRun:
    """One warm scale-up (1 -> 1+pods, restored from a PodCheckpoint of the first pod) and one cold scale-up of the
    same template; always deletes the Deployments and the PodCheckpoint (and waits for its images to go)."""
    tag = f"{time.strftime('%H%M%S')}-{run_index}"
    warm, cold = f"warm-{tag}", f"cold-{tag}"
    run = WarmStartRun(pods=pods, checkpoint=f"warm-{tag}")
    nodes = [n.name for n in cluster.nodes if n.kind == "standin"]
    image = cluster.images["warmup"]
    start_timeout = 180 + warmup_seconds + size_mib / 5
    scale_timeout = 180 + 2 * warmup_seconds + pods * size_mib / 5
    images: list[str] = []
    try:
        first = _start(api, deployment(name=warm, image=image, nodes=nodes, size_mib=size_mib, warmup_seconds=warmup_seconds),
                       timeout=start_timeout)  # fmt: skip
        run.first_s = ready_after(first)
        code, state = http_json(f"http://{first['status']['podIP']}:{APP_PORT}/state", timeout=5)
        if code != 200 or not isinstance(state, dict) or not state.get("boot_id"):
            raise ApiError(f"GET /state of {first['metadata']['name']} answered {code} before the checkpoint")
        boot_id = str(state["boot_id"])
        _log(f"warm start run {run_index}: {first['metadata']['name']} Ready after {stats.fmt_seconds(run.first_s)}s cold")

        api.create(PODCHECKPOINTS, pod_checkpoint(name=run.checkpoint, pod=first["metadata"]["name"]))

        def finished() -> dict[str, Any] | None:
            obj = api.get(f"{PODCHECKPOINTS}/{run.checkpoint}") or {}
            return obj if (obj.get("status") or {}).get("phase") in ("Available", "Failed") else None

        status = wait_for(f"PodCheckpoint {run.checkpoint} Available", finished, timeout=660)["status"]
        images = [str(c["image"]) for c in status.get("containers") or [] if c.get("image")]
        run.checkpoint_s = stats.seconds_between(status.get("startTime"), status.get("completionTime"))
        run.checkpoint_bytes = int(status["totalBytes"]) if status.get("totalBytes") is not None else None
        if status.get("phase") != "Available":
            run.error = (
                f"PodCheckpoint {run.checkpoint} {status.get('phase')} {status.get('reason', '')}: {status.get('message', '')}"
            )
            return run
        _log(f"warm start run {run_index}: PodCheckpoint {run.checkpoint} Available in {stats.fmt_seconds(run.checkpoint_s)}s")

        api.patch(f"{DEPLOYMENTS}/{warm}", {"metadata": {"annotations": {podmigrate.ANNOTATION_WARM_START: run.checkpoint}}})

        def annotated() -> bool:
            listed = api.get(f"{REPLICASETS}?labelSelector={urllib.parse.quote(f'{LABEL}={warm}')}") or {}
            sets = listed.get("items") or []
            return any((rs["metadata"].get("annotations") or {}).get(podmigrate.ANNOTATION_WARM_START) == run.checkpoint
                       for rs in sets)  # fmt: skip

        wait_for(f"Deployment {warm}'s ReplicaSet to carry the annotation", annotated, timeout=60)
        scaled, served = _scale(api, warm, replicas=1 + pods, timeout=scale_timeout)
        for pod in _new_pods(scaled, first):
            name, seconds = pod["metadata"]["name"], served.get(pod["metadata"]["uid"])
            if seconds is not None:
                run.warm_pods.append(seconds)
            _, state = http_json(f"http://{pod['status']['podIP']}:{APP_PORT}/state", timeout=5)
            why = why_not_restored(pod=pod, checkpoint=run.checkpoint, boot_id=boot_id, state=state)
            if why is None:
                run.restored += 1
            else:
                run.not_restored.append(f"{name} ({why})")
            verdict = "restored" if why is None else f"NOT restored: {why}"
            _log(f"warm start run {run_index}: {name} on {pod['spec'].get('nodeName')} Ready after "
                 f"{stats.fmt_seconds(seconds)}s, {verdict}")  # fmt: skip

        # The baseline, after the warm pods are up: the same template, no annotation, the same scale-up.
        first_cold = _start(api, deployment(name=cold, image=image, nodes=nodes, size_mib=size_mib,
                                            warmup_seconds=warmup_seconds), timeout=start_timeout)  # fmt: skip
        scaled, served = _scale(api, cold, replicas=1 + pods, timeout=scale_timeout)
        for pod in _new_pods(scaled, first_cold):
            if (seconds := served.get(pod["metadata"]["uid"])) is not None:
                run.cold_pods.append(seconds)
            _log(f"warm start run {run_index}: {pod['metadata']['name']} Ready after {stats.fmt_seconds(seconds)}s cold")
        return run
    except (ApiError, TimeoutError, OSError, KeyError, ValueError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        return run
    finally:
        left = _clean_up(api, cluster, deployments=[warm, cold], checkpoint=run.checkpoint, images=images)
        if left and run.error is None:
            run.error = f"clean-up: {left}"


def _clean_up(api: Api, cluster: Cluster, *, deployments: Sequence[str], checkpoint: str, images: Sequence[str]) -> str | None:
    """Delete the Deployments (and wait for their pods), then the PodCheckpoint (its finalizer deletes the images);
    what was left behind, or None."""
    background = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    for name in deployments:
        with contextlib.suppress(ApiError, OSError):
            api.request("DELETE", f"{DEPLOYMENTS}/{name}", background)
    for name in deployments:
        try:
            wait_for(f"Deployment {name}'s pods gone", lambda n=name: not _pods(api, n), timeout=90)
        except (ApiError, TimeoutError, OSError) as exc:
            _log(f"Deployment {name}'s pods not cleanly deleted ({exc}); forcing them")
            with contextlib.suppress(ApiError, OSError):
                for pod in _pods(api, name):
                    api.delete(f"{PODS.format(ns=NAMESPACE)}/{pod['metadata']['name']}", grace=0)
    try:
        api.delete(f"{PODCHECKPOINTS}/{checkpoint}")
        path = f"{PODCHECKPOINTS}/{checkpoint}"
        wait_for(f"PodCheckpoint {checkpoint} gone (its images deleted)", lambda: api.get(path) is None, timeout=120)
    except (ApiError, TimeoutError, OSError) as exc:
        _log(f"PodCheckpoint {checkpoint} not cleanly removed: {exc}")
        return f"PodCheckpoint {checkpoint} not removed: {exc}"
    present = [ref for ref in images if _manifest_exists(cluster, ref)]
    if present:
        _log(f"PodCheckpoint {checkpoint} is gone but its images are not: {', '.join(present)}")
        return f"images left in the registry: {', '.join(present)}"
    return None


def _manifest_exists(cluster: Cluster, reference: str) -> bool:
    """HEAD of the image's manifest by digest, with the pull-only credentials a restored pod uses."""
    parsed = image_manifest(reference)
    if parsed is None:
        return False
    registry, repository, digest = parsed
    try:
        credentials = cluster.registry_credentials(registryauth.PULL_USER).for_registry(registry)
        headers = registryauth.bearer_headers(registry=registry, credentials=credentials, scope=f"repository:{repository}:pull")
        request = urllib.request.Request(f"http://{registry}/v2/{repository}/manifests/{digest}", method="HEAD",
                                         headers={**headers, "Accept": MANIFEST_TYPES})  # fmt: skip
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        _log(f"checking {reference} in the registry: HTTP {exc.code}")
        return False
    except (OSError, ValueError) as exc:
        _log(f"checking {reference} in the registry: {exc}")
        return False
