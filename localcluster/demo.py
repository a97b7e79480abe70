"""The demo: a slow-to-warm, stateful app moved between nodes with ``kubectl migrate``, state intact.

It brings up the local cluster, installs podmigrate the way the tests do (CRD, RBAC, the
control service and one agent per node, each with its own ServiceAccount token), starts the
warm-up app on node-1 and measures its cold start, writes some data into its memory, then runs
``kubectl migrate pod app --to node-2 --wait`` through kubectl's plugin mechanism, exactly as
an operator would. It checks that the moved app is the same process (same boot id, same data,
restartCount 0) and compares how long it took to serve again with the cold start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from localcluster import cluster as lc
from localcluster import podmigrate

APP = """apiVersion: v1
kind: Pod
metadata: {{name: app, namespace: default, labels: {{app: warmup}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {image}
    env: [{{name: WARMUP_SECONDS, value: "20"}}]
    readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
"""


class _Kubectl:
    """kubectl with the cluster's admin kubeconfig, and the venv's bin on PATH for the plugin."""

    def __init__(self, c: lc.Cluster) -> None:
        self.c = c
        self.env = dict(os.environ, KUBECONFIG=c.kubeconfig, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")

    def __call__(self, *args: str, stdin: str | None = None, show: bool = False) -> str:
        if show:
            print(f"$ kubectl {' '.join(args)}", flush=True)
        result = subprocess.run(
            [self.c.kubectl, *args], input=stdin, capture_output=not show, text=True, check=False, env=self.env
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {(result.stderr or '').strip()}")
        return result.stdout or ""

    def pod(self, name: str) -> dict:
        return json.loads(self("get", "pod", name, "-o", "json"))

    def wait_ready(self, name: str, timeout: float = 120) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            statuses = self.pod(name)["status"].get("containerStatuses") or []
            if statuses and statuses[0]["ready"]:
                return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"pod {name} not Ready after {timeout}s")


def _http(method: str, url: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, method=method, data=b"" if method == "POST" else None), timeout=5) as resp:
        return json.loads(resp.read())


def run(*, state_dir: Path, keep: bool, real_nodes: bool = False) -> None:
    """``real_nodes``: two upstream kubelets on containerd (``localcluster.realnode``) instead of stand-ins."""

    def say(text: str) -> None:
        print(f"demo: {text}", flush=True)

    fresh = not (state_dir / "cluster.json").exists()
    if fresh:
        c = lc.up(state_dir=state_dir, nodes=0, real_nodes=2) if real_nodes else lc.up(state_dir=state_dir, nodes=2)
    else:
        c = lc.Cluster.load(state_dir)
    installation = None
    try:
        installation = podmigrate.install_pods(c)  # make image + kubectl apply -k: the user's install
        kubectl = _Kubectl(c)
        kind = "real" if real_nodes else "standin"
        candidates = [n.name for n in c.nodes if n.kind == kind]
        if len(candidates) < 2:
            raise RuntimeError(f"the cluster at {state_dir} has fewer than two {kind} nodes: `localcluster down` it first")
        source, target = candidates[:2]
        runtimes = kubectl(
            "get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.nodeInfo.containerRuntimeVersion} {end}"
        )
        say(f"cluster up: {runtimes.strip()}; podmigrate installed (controller + {len(c.nodes)} agents)")
        kubectl("apply", "-f", "-", stdin=APP.format(node=source, image=c.images["warmup"]))
        cold = kubectl.wait_ready("app")
        say(f"app warmed up and Ready on {source} after a cold start of {cold:.1f}s")
        ip = kubectl.pod("app")["status"]["podIP"]
        for i in range(5):
            _http("POST", f"http://{ip}:8080/write?key=k{i}&value=v{i}")
        before = _http("GET", f"http://{ip}:8080/state")
        say(f"wrote 5 keys into its memory; process boot id {before['boot_id']}")
        kubectl("migrate", "pod", "app", "--to", target, "--wait", show=True)
        pod = kubectl.pod("app")
        after = _http("GET", f"http://{pod['status']['podIP']}:8080/state")
        values = [_http("GET", f"http://{pod['status']['podIP']}:8080/read?key=k{i}")["value"] for i in range(5)]
        restarts = pod["status"]["containerStatuses"][0]["restartCount"]
        (migration,) = json.loads(kubectl("get", "podmigrations", "-o", "json"))["items"]
        status = migration["status"]
        restore = next(p for p in status["phases"] if p["name"] == "restore")
        serving = (datetime.fromisoformat(restore["end"]) - datetime.fromisoformat(restore["start"])).total_seconds()
        say(f"now on {pod['spec']['nodeName']}: boot id {after['boot_id']}, keys {values}, restartCount {restarts}")
        say(
            f"served again {serving:.1f}s after the replacement pod was created (cold start: {cold:.1f}s); "
            f"downtime {float(status['downtimeSeconds']):.1f}s; trace {status['traceID']}"
        )
        kubectl("migrate", "describe", migration["metadata"]["name"], show=True)
        if after["boot_id"] != before["boot_id"] or values != [f"v{i}" for i in range(5)] or restarts != 0:
            raise RuntimeError("the moved app lost its state")
        say("OK: the app moved with its memory and did not warm up again")
    finally:
        if installation is not None and not keep:
            installation.stop()
        if fresh and not keep:
            lc.down(state_dir=state_dir)
