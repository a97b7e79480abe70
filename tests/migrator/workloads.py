"""Workloads and clients the end-to-end tests move and watch: the counter, the warm-up app, a writer.

Shared by the migration, drain and real-node tests. Pods tolerate the taint the test session puts
on real nodes (``tests/conftest.py``), so the same manifests run on stand-in and real nodes.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from typing import Any

from localcluster import cluster as lc
from localcluster import registryauth
from tests.conftest import REAL_NODE_TAINT, Kube, Podmigrate, wait_for

TOLERATE_REAL_NODES = f"  tolerations: [{{key: {REAL_NODE_TAINT}, operator: Exists, effect: NoSchedule}}]\n"


def counter_pod(namespace: str, node: str, image: str, name: str = "counter") -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}}}}}\n"
        f"spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n{TOLERATE_REAL_NODES}"
        f"  containers:\n  - name: counter\n    image: {image}\n    resources: {{requests: {{cpu: 50m, memory: 16Mi}}}}\n"
    )


def warmup_pod(namespace: str, node: str, image: str, *, warmup: int = 15, ballast: int = 0, name: str = "app") -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
{TOLERATE_REAL_NODES}  containers:
  - name: app
    image: {image}
    env: [{{name: WARMUP_SECONDS, value: "{warmup}"}}, {{name: BALLAST_MB, value: "{ballast}"}}]
    readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
"""


def deployment(
    namespace: str, *, name: str, image: str, container: str, replicas: int = 1, pod_spec: str = "", container_spec: str = ""
) -> str:
    """A Deployment whose pods are labelled ``app: <name>``; ``pod_spec`` and ``container_spec``: more YAML lines for each
    (indented as they go: six spaces and eight)."""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
{pod_spec}      containers:
      - name: {container}
        image: {image}
{container_spec}"""


def migration(namespace: str, pod: str, *, name: str | None = None, target: str | None = None, extra: str = "") -> str:
    target_line = f"  targetNode: {target}\n" if target else ""
    name = name or f"move-{pod}"
    return (
        f"apiVersion: podmigrate.io/v1alpha1\nkind: PodMigration\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  podName: {pod}\n{target_line}{extra}"
    )


def http(method: str, url: str, timeout: float = 2.0) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with opener.open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def ready(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    pod = kube.get("pod", name, namespace)
    conditions = pod["status"].get("conditions") or []
    return pod if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None


def pod_ip(kube: Kube, namespace: str, name: str) -> str:
    return str(kube.get("pod", name, namespace)["status"].get("podIP") or "")


class Writer(threading.Thread):
    """A client that keeps writing during the move and remembers what the app acknowledged."""

    def __init__(self, kube: Kube, namespace: str, pod: str) -> None:
        super().__init__(daemon=True)
        self.kube, self.namespace, self.pod = kube, namespace, pod
        self.acked: list[str] = []
        self.failed = 0
        self.done = threading.Event()

    def run(self) -> None:
        ip, i = pod_ip(self.kube, self.namespace, self.pod), 0
        while not self.done.is_set():
            key = f"w{i}"
            i += 1
            try:
                reply = http("POST", f"http://{ip}:8080/write?key={key}&value={i}", timeout=1.0)
                if reply.get("ok"):
                    self.acked.append(key)
            except (OSError, HTTPException, ValueError):
                # Not acknowledged: it may or may not have landed. A connection cut mid-reply
                # (the source frozen or killed) is an HTTPException such as IncompleteRead,
                # not an OSError; letting it escape ended the writer and failed CI once.
                self.failed += 1
                time.sleep(0.1)
                with contextlib.suppress(AssertionError):
                    ip = pod_ip(self.kube, self.namespace, self.pod) or ip
            time.sleep(0.02)


def migrate_while_writing(
    kube: Kube, podmigrate: Podmigrate, namespace: str, *, manifest: str, name: str = "move-app", pod: str = "app"
) -> tuple[dict[str, Any], Writer]:
    """Apply ``manifest`` (a PodMigration) while a client keeps writing; it succeeds and no acknowledged write is lost."""
    writer = Writer(kube, namespace, pod)
    writer.start()
    wait_for("writes flowing", lambda: len(writer.acked) >= 20)
    kube.apply(manifest)
    status = podmigrate.wait_done(namespace, name)["status"]
    assert status["phase"] == "Succeeded", status
    acked_at_end = len(writer.acked)
    wait_for("writes flowing to the restored pod", lambda: len(writer.acked) >= acked_at_end + 20, timeout=30)
    writer.done.set()
    writer.join(timeout=10)
    stored = http("GET", f"http://{pod_ip(kube, namespace, pod)}:8080/dump")
    lost = [k for k in writer.acked if k not in stored]
    assert not lost, f"{len(lost)} acknowledged writes lost (of {len(writer.acked)}): {lost[:10]}"
    return status, writer


MANIFEST_TYPES = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


def checkpoint_manifests(cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, pod: str) -> list[str]:
    """The tags of ``namespace/pod``'s checkpoint repository whose manifest still exists, read as a restored pod
    reads them (the pull-only credentials; none when the registry asks for none). A deleted manifest's tag may
    linger in the tag list of registry 2.8: each is looked up."""
    registry, _, path = podmigrate.installation.repository.partition("/")
    repository = f"{path}/{namespace}/{pod}"
    credentials = cluster.registry_credentials(registryauth.PULL_USER).for_registry(registry)
    headers = registryauth.bearer_headers(registry=registry, credentials=credentials, scope=f"repository:{repository}:pull")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def status(url: str, method: str) -> tuple[int, bytes]:
        request = urllib.request.Request(url, method=method, headers={**headers, "Accept": MANIFEST_TYPES})
        try:
            with opener.open(request, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    code, body = status(f"http://{registry}/v2/{repository}/tags/list", "GET")
    if code == 404:
        return []
    assert code == 200, f"listing {repository}: HTTP {code}"
    tags = json.loads(body).get("tags") or []
    return [tag for tag in tags if status(f"http://{registry}/v2/{repository}/manifests/{tag}", "HEAD")[0] == 200]
