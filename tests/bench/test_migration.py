"""bench/migration.py without a cluster: the app pod (and its toleration of the real nodes' taint), and which nodes
``measure`` moves it between."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bench import migration
from bench.migration import REAL_NODE_TAINT, ApiError, app_pod
from localcluster import cluster as lc


def test_app_pod_tolerates_the_real_nodes_only_when_asked() -> None:
    plain = app_pod(name="app", node="node-1", image="reg/warmup:1", size_mib=64, warmup_seconds=1)
    assert "tolerations" not in plain["spec"], "a stand-in pod is as before: nothing tolerated"
    pod = app_pod(name="app", node="real-1", image="reg/warmup:1", size_mib=64, warmup_seconds=1, tolerate_real_nodes=True)
    assert pod["spec"]["nodeName"] == "real-1"
    assert pod["spec"]["tolerations"] == [{"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
    assert REAL_NODE_TAINT == "podmigrate.io/real-node", "the taint tests/conftest.py puts on the real nodes"
    assert pod["spec"]["containers"] == plain["spec"]["containers"], "the same app as the stand-in rows"
    both = app_pod(name="a", node="real-1", image="i", size_mib=64, warmup_seconds=1, emptydir_mib=8, tolerate_real_nodes=True)
    assert both["spec"]["volumes"] == [{"name": "scratch", "emptyDir": {}}] and len(both["spec"]["tolerations"]) == 1


class _Api:
    """Records what ``measure`` creates, and refuses it: ``measure`` then reports the error and cleans up."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        raise ApiError(f"POST {path}: 403 refused by the test")

    def get(self, path: str) -> None:
        return None

    def delete(self, path: str, *, grace: int | None = None) -> None:
        self.deleted.append(path)


def _cluster() -> Any:
    nodes = [lc.NodeInfo(name=f"node-{i}", index=i, address=f"127.0.5.{i}", state_dir="/x") for i in (1, 2)]
    nodes += [lc.NodeInfo(name=f"real-{i}", index=i, address=f"127.0.5.{100 + i}", state_dir="/x", kind="real") for i in (1, 2)]
    return SimpleNamespace(nodes=nodes, images={"warmup": "reg/warmup:1"})


def test_measure_moves_between_the_first_two_nodes_unless_told() -> None:
    api, cluster = _Api(), _cluster()
    run = migration.measure(api=api, cluster=cluster, size_mib=64, run_index=1)  # type: ignore[arg-type]
    (pod,) = api.created
    assert pod["metadata"]["name"] == "app-64m-1" and pod["spec"]["nodeName"] == "node-1"
    assert "tolerations" not in pod["spec"]
    assert run.pod == "app-64m-1" and run.error is not None and "403 refused" in run.error and not run.ok
    assert api.deleted[-1].endswith("/pods/app-64m-1"), "what it made is deleted even when it failed"


def test_measure_between_the_real_nodes_tolerates_their_taint() -> None:
    api, cluster = _Api(), _cluster()
    run = migration.measure(api=api, cluster=cluster, size_mib=1024, run_index=2, source="real-1", target="real-2")  # type: ignore[arg-type]
    (pod,) = api.created
    assert pod["metadata"]["name"] == "app-1024m-2-real", "apart from a stand-in row's pod of the same size"
    assert pod["spec"]["nodeName"] == "real-1"
    assert pod["spec"]["tolerations"] == [migration.real_node_toleration()]
    assert run.pod == "app-1024m-2-real"
    assert migration.is_real(cluster, "node-1", "real-2") and not migration.is_real(cluster, "node-1", "node-2")
