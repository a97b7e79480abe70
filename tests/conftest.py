"""Shared fixtures: one real local cluster per test session.

The cluster is the real thing (upstream API server, controllers, scheduler, registry, CRIU
nodes), started once per session because it takes ~10 s warm. Set PODMIGRATE_TEST_CLUSTER
to the state directory of a cluster you already started (``make cluster-up``) to reuse it
while iterating; otherwise the session starts its own and tears it down, checking that
nothing is left behind.

Every test that uses the cluster is a ``cluster`` test, and ``pytest -m "not cluster"`` can never
start one, whether or not a test module remembered ``pytestmark``:

* ``pytest_collection_modifyitems`` marks every test whose fixture closure contains ``cluster``
  (directly, or through ``kube``, ``namespace``, ``podmigrate``...), before ``-m`` deselects;
* while a test that is *not* marked runs (its fixtures' setup and teardown included), every
  process start of the local cluster (``localcluster.processes.Launcher.launch``, which the
  control plane, registry, nodes and podmigrate's daemons all go through) fails the test instead;
  so does asking for ``cluster`` dynamically (``request.getfixturevalue``), before anything exists.
  A module that starts a cluster of its own (``lc.up`` in a fixture) must therefore be marked.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import cluster as lc
from localcluster import processes, realnode

# The session cluster has stand-in nodes (node-1..3) and real nodes (real-1, real-2: kubelet +
# containerd). The real nodes carry this taint, so only tests that mean to run there do (their pods
# tolerate it, ``tests/migrator/workloads.py``) and everything else keeps to the stand-ins.
REAL_NODE_TAINT = lc.REAL_NODE_TAINT
STANDIN_NODES = 3
REAL_NODES = 2
# The host's kernel settings the real nodes' kubelets would rewrite, read before the session
# cluster starts; they must be the same while it runs and after it is down.
HOST_SYSCTLS: dict[str, str] = {}

# The shared fixtures that start the local cluster; every other cluster fixture here depends on
# one of these, and an item's ``fixturenames`` is the transitive closure of what it uses.
CLUSTER_FIXTURES = frozenset({"cluster"})

_CURRENT_ITEM = pytest.StashKey[pytest.Item]()


def _uses_the_cluster(item: pytest.Item) -> bool:
    return bool(CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ())))


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects anything
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _uses_the_cluster(item) and item.get_closest_marker("cluster") is None:
            item.add_marker(pytest.mark.cluster)


def _unmarked(item: pytest.Item, what: str) -> str:
    return (
        f"{item.nodeid} {what} but is not marked @pytest.mark.cluster: mark it (or its module: "
        'pytestmark = pytest.mark.cluster), so that `pytest -m "not cluster"` never starts a cluster'
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Remember the running test; while it is not a ``cluster`` test, refuse to start cluster processes."""
    item.config.stash[_CURRENT_ITEM] = item
    guard = None
    if item.get_closest_marker("cluster") is None:

        def refuse(self: processes.Launcher, *, name: str, argv: Any, env: Any = None) -> None:
            pytest.fail(_unmarked(item, f"starts a local-cluster process ({name})"), pytrace=False)

        guard = pytest.MonkeyPatch()
        guard.setattr(processes.Launcher, "launch", refuse)
    try:
        return (yield)
    finally:
        if guard is not None:
            guard.undo()
        del item.config.stash[_CURRENT_ITEM]


def _refuse_unmarked(request: pytest.FixtureRequest) -> None:
    """Fail, before anything is created, when the test that needs the cluster is not a ``cluster`` test."""
    item = request.config.stash.get(_CURRENT_ITEM, None)
    if item is not None and item.get_closest_marker("cluster") is None:
        pytest.fail(_unmarked(item, "needs the local cluster (asked for it dynamically?)"), pytrace=False)


class Kube:
    """kubectl against the test cluster, as a person would use it."""

    def __init__(self, c: lc.Cluster) -> None:
        self.cluster = c
        self.kubeconfig = c.kubeconfig

    def run(
        self, *args: str, check: bool = True, input: str | None = None, kubeconfig: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.cluster.kubectl, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(self, manifest: str) -> None:
        self.run("apply", "-f", "-", input=manifest)

    def get(self, kind: str, name: str = "", namespace: str = "default") -> dict[str, Any]:
        args = ["get", kind] + ([name] if name else []) + ["-n", namespace, "-o", "json"]
        return json.loads(self.run(*args).stdout)

    def logs(self, pod: str, namespace: str = "default", *extra: str) -> str:
        return self.run("logs", pod, "-n", namespace, *extra).stdout

    def token(self, service_account: str, namespace: str = "default") -> str:
        return self.run("create", "token", service_account, "-n", namespace).stdout.strip()


def wait_for(what: str, predicate: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.5) -> Any:
    """Poll until ``predicate()`` is truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (AssertionError, KeyError, IndexError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[lc.Cluster]:
    _refuse_unmarked(request)
    existing = os.environ.get("PODMIGRATE_TEST_CLUSTER")
    if existing:
        c = lc.Cluster.load(Path(existing).resolve())
        c.taint_real_nodes()
        yield c
        return
    state = tmp_path_factory.mktemp("cluster")
    started = time.monotonic()
    HOST_SYSCTLS.update(realnode.read_sysctls())
    # PODMIGRATE_TEST_INSTANCE lets a second test session share the machine (see localcluster.cluster.up).
    c = lc.up(
        state_dir=state, nodes=STANDIN_NODES, real_nodes=REAL_NODES, instance=int(os.environ.get("PODMIGRATE_TEST_INSTANCE", "0"))
    )
    print(f"\nlocal cluster up in {time.monotonic() - started:.1f}s")
    try:
        c.taint_real_nodes()
        # Into the test log even when everything passes: which nodes (and runtimes) this run had.
        _print_to_log(request, "\n$ kubectl get nodes -o wide\n" + c.controlplane().kubectl("get", "nodes", "-o", "wide").stdout)
        yield c
    finally:
        lc.down(state_dir=state)  # raises if a mount, netns, cgroup or process is left behind
        assert not state.exists(), "cluster down must remove its state directory"
        assert realnode.read_sysctls() == HOST_SYSCTLS, "the real nodes' kubelets must not change the host's kernel settings"


def _print_to_log(request: pytest.FixtureRequest, text: str) -> None:
    """Into the test log even when everything passes, past pytest's output capture."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(text)


@pytest.fixture(scope="session")
def kube(cluster: lc.Cluster) -> Kube:
    return Kube(cluster)


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (pods stopped with grace 0)."""
    import hashlib
    import re

    readable = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower().replace("_", "-"))[:40].strip("-")
    name = f"t-{readable}-{hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:6]}"
    kube.run("create", "namespace", name)
    wait_for("default ServiceAccount", lambda: kube.run("get", "sa", "default", "-n", name, check=False).returncode == 0)
    yield name
    kube.run("delete", "pods", "--all", "-n", name, "--grace-period=0", "--force", "--wait=false", check=False)
    kube.run("delete", "namespace", name, "--wait=false", check=False)


# --- podmigrate itself, installed on the local cluster ---------------------------------------


class Podmigrate:
    """podmigrate installed on the test cluster (``localcluster.podmigrate``), plus test conveniences."""

    def __init__(self, *, kube: Kube, installation: Any) -> None:
        self.kube = kube
        self.installation = installation

    def kill_controller(self, *, replica: int = 0) -> None:
        self.installation.kill_controller(replica=replica)

    def start_controller(self, *, replica: int = 0) -> None:
        self.installation.start_controller(replica=replica)

    def kill_agent(self, node: str) -> bool:
        """SIGKILL a node's agent (no clean-up); False if none was running."""
        return self.installation.kill_agent(node)

    def wait_agent(self, node: str) -> None:
        """Until the node's agent runs again (its DaemonSet pod restarted; as a process, started again)."""
        self.installation.wait_agent(node)

    def leader(self) -> str:
        """The Lease holder's identity (the leading replica)."""
        return self.installation.leader()

    def migration(self, namespace: str, name: str) -> dict[str, Any]:
        return self.kube.get("podmigration", name, namespace)

    def wait_done(self, namespace: str, name: str, *, timeout: float = 180) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            m = self.migration(namespace, name)
            return m if (m.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

        return wait_for(f"PodMigration {name} to finish", done, timeout=timeout)


@pytest.fixture(scope="session")
def otlp() -> Iterator[Any]:
    from tests.otlp import OtlpReceiver

    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def podmigrate(request: pytest.FixtureRequest, cluster: lc.Cluster, kube: Kube, otlp: Any) -> Iterator[Podmigrate]:
    from localcluster import podmigrate as install

    # The user's install (podmigrate's image, kubectl apply -k of the local overlay) unless a developer asks
    # for host processes (PODMIGRATE_INSTALL=processes: quicker to debug, not what CI proves).
    if os.environ.get("PODMIGRATE_INSTALL", "pods") == "processes":
        installation = install.install(cluster, otlp_endpoint=otlp.endpoint)
    else:
        installation = install.install_pods(cluster, otlp_endpoint=otlp.endpoint)
        _print_to_log(request, "\n$ kubectl get pods -n podmigrate-system -o wide\n" + kube.run(
            "get", "pods", "-n", "podmigrate-system", "-o", "wide").stdout)  # fmt: skip
    try:
        yield Podmigrate(kube=kube, installation=installation)
    finally:
        installation.stop()
