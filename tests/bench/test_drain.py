"""bench/drain.py's NodeDrain: only this run's pods, to node-2, K at a time, and never an eviction."""

from __future__ import annotations

from bench import drain


def test_node_drain_spec() -> None:
    obj = drain.node_drain(name="bench-140000", node="node-1", target="node-2", selector=f"{drain.LABEL}=140000", concurrency=3)
    assert obj["apiVersion"] == "podmigrate.io/v1alpha1" and obj["kind"] == "NodeDrain"
    assert obj["metadata"] == {"name": "bench-140000"}, "cluster-scoped: no namespace"
    spec = obj["spec"]
    assert spec["nodeName"] == "node-1" and spec["targetNodes"] == ["node-2"]
    assert spec["podSelector"] == "podmigrate-bench/drain=140000", "the control service and agents on node-1 stay out of it"
    assert spec["maxConcurrent"] == 3
    assert spec["unmigratablePolicy"] == "Block", "a pod that cannot move stops the drain instead of being evicted"
    assert 30 <= spec["timeoutSeconds"] <= 604800


def test_the_selector_is_one_the_control_service_accepts() -> None:
    from migrator.drainplan import parse_selector

    requirements = parse_selector(f"{drain.LABEL}=140000")
    assert [r.matches({drain.LABEL: "140000"}) for r in requirements] == [True]
    assert [r.matches({"app": "bench"}) for r in requirements] == [False]
