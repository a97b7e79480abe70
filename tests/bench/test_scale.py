"""bench/scale.py without a cluster: the objects it grows the cluster with, the figures it reads from the control
service's metrics, and how the report, the JSON and the history show them, with and without those metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bench import history, report, scale, stats
from bench.__main__ import parse_args
from bench.results import DrainRun, ScaleResult, ScaleSample
from tests.bench.test_history import _run, _size

MIB = 1 << 20
NOW = datetime(2026, 12, 1, 14, 5, 6, 789012, tzinfo=UTC)


def test_a_registration_only_node_is_tainted_labelled_and_big() -> None:
    node = scale.node_body("scale-node-003")
    assert node["apiVersion"] == "v1" and node["kind"] == "Node" and node["metadata"]["name"] == "scale-node-003"
    assert node["metadata"]["labels"][scale.LABEL] == "registration-only"
    assert node["spec"]["taints"] == [{"key": "podmigrate.io/bench-scale", "value": "registration-only", "effect": "NoSchedule"}]
    assert node["status"]["capacity"] == {"cpu": "32", "memory": "128Gi", "pods": "110"}
    assert node["status"]["allocatable"] == node["status"]["capacity"]
    status = scale.node_status(NOW)["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["lastHeartbeatTime"] == "2026-12-01T14:05:06Z"
    assert all(c["status"] == "False" for c in status["conditions"] if c["type"] != "Ready"), "no pressure"
    assert "addresses" not in status, "nothing (an agent client, the API server) ever dials it"
    assert status["capacity"]["pods"] == "110"


def test_its_lease_is_a_kubelets() -> None:
    assert scale.micro_time(NOW) == "2026-12-01T14:05:06.789012Z"
    lease = scale.lease_body("scale-node-003", NOW)
    assert lease["apiVersion"] == "coordination.k8s.io/v1" and lease["kind"] == "Lease"
    assert lease["metadata"]["name"] == "scale-node-003" and lease["metadata"]["namespace"] == "kube-node-lease"
    assert lease["metadata"]["labels"] == {scale.LABEL: scale.VALUE}, "deleted by label afterwards"
    assert lease["spec"] == {"holderIdentity": "scale-node-003", "leaseDurationSeconds": 40,
                             "renewTime": "2026-12-01T14:05:06.789012Z"}  # fmt: skip
    assert scale.lease_renewal("scale-node-003", NOW) == {"spec": lease["spec"]}
    assert scale.RENEW_SECONDS * 3 < scale.LEASE_SECONDS, "a missed renewal or two does not lose the node"


def test_a_registration_only_pod_is_bound_and_small() -> None:
    pod = scale.pod_body(name="scale-pod-00007", namespace="bench-scale-07", node="scale-node-008")
    assert pod["metadata"] == {"name": "scale-pod-00007", "namespace": "bench-scale-07", "labels": {scale.LABEL: scale.VALUE}}
    spec = pod["spec"]
    assert spec["nodeName"] == "scale-node-008", "bound: no scheduler"
    assert spec["terminationGracePeriodSeconds"] == 0, "no kubelet would confirm a graceful end"
    (container,) = spec["containers"]
    assert container["image"] == "registry.k8s.io/pause:3.10"
    assert container["resources"] == {"requests": {"cpu": "10m", "memory": "16Mi"}}
    assert scale.namespace_body("bench-scale-00")["metadata"] == {"name": "bench-scale-00", "labels": {scale.LABEL: scale.VALUE}}
    assert [scale.namespace_name(i) for i in (0, 49)] == ["bench-scale-00", "bench-scale-49"]
    assert scale.node_name(1) == "scale-node-001"


def test_pods_are_spread_round_robin() -> None:
    placed = scale.assignments(pods=7, nodes=["n1", "n2", "n3"], namespaces=["a", "b"])
    assert placed[:4] == [("scale-pod-00000", "a", "n1"), ("scale-pod-00001", "b", "n2"), ("scale-pod-00002", "a", "n3"),
                          ("scale-pod-00003", "b", "n1")]  # fmt: skip
    assert len({name for name, _, _ in placed}) == 7
    big = scale.assignments(pods=5000, nodes=[f"n{i}" for i in range(98)], namespaces=[f"ns{i}" for i in range(50)])
    per_node = [sum(1 for _, _, n in big if n == f"n{i}") for i in range(98)]
    assert min(per_node) == 51 and max(per_node) == 52, "under a node's 110 pods"
    assert {sum(1 for _, ns, _ in big if ns == f"ns{i}") for i in range(50)} == {100}
    assert scale.assignments(pods=0, nodes=[], namespaces=[]) == []
    with pytest.raises(ValueError):
        scale.assignments(pods=1, nodes=[], namespaces=["a"])


def test_counts_and_what_is_left_on_the_nodes() -> None:
    assert scale.total({"items": [{}], "metadata": {"remainingItemCount": 5099}}) == 5100
    assert scale.total({"items": [{}], "metadata": {}}) == 1
    assert scale.total({"items": [], "metadata": {}}) == 0
    assert scale.total(None) is None
    listing = {"items": [
        {"metadata": {"namespace": "podmigrate-system", "name": "agent-x"}, "spec": {"nodeName": "scale-node-001"}},
        {"metadata": {"namespace": "podmigrate-system", "name": "agent-y"}, "spec": {"nodeName": "node-1"}},
        {"metadata": {"namespace": "bench", "name": "pending"}, "spec": {}},
    ]}  # fmt: skip
    assert scale.on_registration_only_nodes(listing) == [("podmigrate-system", "agent-x")]
    assert scale.on_registration_only_nodes(None) == []
    assert scale.BY_LABEL == "labelSelector=podmigrate.io%2Fbench-scale%3Dregistration-only"


METRICS_BEFORE = """\
# TYPE podmigrate_kube_requests_total counter
podmigrate_kube_requests_total{resource="pods",verb="list"} 10.0
podmigrate_kube_requests_total{resource="pods",verb="get"} 100.0
podmigrate_kube_requests_total{resource="podmigrations/status",verb="patch"} 40.0
# TYPE podmigrate_informer_objects gauge
podmigrate_informer_objects{resource="pods"} 12.0
podmigrate_informer_objects{resource="nodes"} 2.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 20.5
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.048576e+08
"""
METRICS_AFTER = """\
# TYPE podmigrate_kube_requests_total counter
podmigrate_kube_requests_total{resource="pods",verb="list"} 14.0
podmigrate_kube_requests_total{resource="nodes",verb="list"} 2.0
podmigrate_kube_requests_total{resource="pods",verb="get"} 100.0
podmigrate_kube_requests_total{resource="podmigrations/status",verb="patch"} 64.0
# TYPE podmigrate_informer_objects gauge
podmigrate_informer_objects{resource="pods"} 16.0
podmigrate_informer_objects{resource="nodes"} 2.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 22.5
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.101004800e+08
# TYPE process_resident_memory_peak_bytes gauge
process_resident_memory_peak_bytes 1.2e+08
"""
WITHOUT = """\
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total {cpu}
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.048576e+08
"""


def _drain(migrated: int = 4, *, ok: bool = True) -> DrainRun:
    return DrainRun(pods=4, concurrency=2, size_mib=64, name="bench-1", phase="Succeeded" if ok else "Blocked", wall_s=9.0,
                    migrated=migrated, state_ok=ok)  # fmt: skip


def _sample(size: str, before: str, after: str, *, migrated: int = 4, nodes: int = 2, pods: int = 10) -> ScaleSample:
    sample = ScaleSample(size=size, nodes=nodes, pods=pods, drain=_drain(migrated), leader="pm-0_abc", window_s=20.0)
    scale.record(sample, stats.parse_prometheus(before), stats.parse_prometheus(after))
    return sample


def test_the_figures_are_deltas_of_the_control_services_counters() -> None:
    sample = _sample("small", METRICS_BEFORE, METRICS_AFTER)
    assert sample.requests == 30.0, "4 lists of pods + 2 of nodes + 24 patches; the gets did not move"
    assert sample.requests_by == {"patch podmigrations/status": 24.0, "list pods": 4.0, "list nodes": 2.0}
    assert sample.cpu_s == 2.0
    assert (sample.rss_before_bytes, sample.rss_after_bytes, sample.rss_peak_bytes) == (100 * MIB, 105 * MIB, 120_000_000)
    assert (sample.cache_pods, sample.cache_nodes) == (16.0, 2.0)
    n = report.scale_sample_numbers(sample)
    assert n["migrated"] == 4 and n["requests_per_pod"] == 7.5 and n["lists"] == 6 and n["lists_per_pod"] == 1.5
    assert n["cpu_per_pod_s"] == 0.5 and n["rss_delta_bytes"] == 5 * MIB


def test_missing_metrics_are_none_never_an_error() -> None:
    sample = _sample("small", WITHOUT.format(cpu=1.0), WITHOUT.format(cpu=3.0))
    assert sample.requests is None and sample.requests_by == {} and sample.cache_pods is None and sample.cache_nodes is None
    assert sample.cpu_s == 2.0 and sample.rss_peak_bytes is None
    n = report.scale_sample_numbers(sample)
    assert n["requests_per_pod"] is None and n["lists_per_pod"] is None and n["cpu_per_pod_s"] == 0.5
    nothing = ScaleSample(size="small", drain=_drain(0))
    scale.record(nothing, {}, {})
    assert report.scale_sample_numbers(nothing)["cpu_per_pod_s"] is None
    idle = ScaleSample(size="small")
    scale.record_idle(idle, stats.parse_prometheus(METRICS_BEFORE), stats.parse_prometheus(METRICS_AFTER), 10.0)
    assert (idle.idle_requests, idle.idle_cpu_s, idle.idle_s) == (30.0, 2.0, 10.0)
    assert report.scale_sample_numbers(idle)["idle_requests_per_s"] == 3.0
    assert report.scale_sample_numbers(None)["requests_per_pod"] is None


def test_nothing_migrated_gives_no_per_pod_figure() -> None:
    sample = _sample("small", METRICS_BEFORE, METRICS_AFTER, migrated=0)
    n = report.scale_sample_numbers(sample)
    assert n["requests"] == 30.0 and n["requests_per_pod"] is None and n["cpu_per_pod_s"] is None


LARGE_AFTER = METRICS_AFTER.replace('verb="patch"} 64.0', 'verb="patch"} 70.0').replace("22.5", "23.5")


def _result(*, metrics: bool = True) -> ScaleResult:
    before, after = (METRICS_BEFORE, METRICS_AFTER) if metrics else (WITHOUT.format(cpu=1.0), WITHOUT.format(cpu=3.0))
    large_after = LARGE_AFTER if metrics else WITHOUT.format(cpu=4.0)
    result = ScaleResult(nodes=100, pods=5000, drain_pods=4, concurrency=2, size_mib=64, added_nodes=98, added_pods=5000,
                         nodes_s=4.0, namespaces_s=2.5, pods_s=50.0, cache_wait_s=1.5 if metrics else None,
                         cache_pods_grown=5110.0 if metrics else None, rss_grown_bytes=125 * MIB)  # fmt: skip
    result.small = _sample("small", before, after)
    result.large = _sample("large", before, large_after, nodes=100, pods=5110)
    return result


def test_large_over_small_per_migrated_pod() -> None:
    n = report.scale_numbers(_result())
    assert n["small:requests_per_pod"] == 7.5 and n["large:requests_per_pod"] == 9.0
    assert n["requests_ratio"] == pytest.approx(1.2) and n["lists_ratio"] == 1.0
    assert n["cpu_ratio"] == pytest.approx(1.5), "3.0 s against 2.0 s for the same 4 pods"
    assert n["rss_delta_ratio"] == 1.0
    assert n["pods_per_s"] == 100.0 and n["added_pods"] == 5000
    assert n["rss_growth_bytes"] == 20 * MIB, "105 MiB after the small drain, 125 MiB with the cluster grown"
    assert n["rss_per_added_pod_bytes"] == pytest.approx(20 * MIB / 5000)


def test_the_scale_table_with_the_metrics() -> None:
    result = _result()
    lines = report.scale_table(result).splitlines()
    assert lines[0].split() == ["scale", "(NodeDrain", "node-1", "->", "node-2)", "nodes", "pods", "migrated",
                                "API_requests/pod", "pod+node_lists/pod", "CPU_s/pod", "RSS_MiB", "RSS_delta_MiB",
                                "cache_pods", "state"]  # fmt: skip
    assert lines[1].split() == ["small", "2", "10", "4", "7.5", "1.50", "0.500", "105.0", "5.0", "16", "OK"]
    assert lines[2].split() == ["large", "100", "5110", "4", "9.0", "1.50", "0.750", "105.0", "5.0", "16", "OK"]
    extra = report.scale_lines(result)
    assert extra[0] == "large/small per migrated pod: API requests 1.20x, pod+node lists 1.00x, CPU 1.50x; RSS delta 1.00x"
    assert extra[1].startswith(
        "growth: 98 registration-only nodes in 4.0s, their namespaces in 2.5s, 5000 pods in 50.0s (100 pods/s); "
    )
    assert "pod cache held 5110 1.5s later" in extra[1] and "105.0 -> 125.0 MiB (4.1 KiB per added pod)" in extra[1]
    assert "small drain's requests by verb and resource: patch podmigrations/status 24, list pods 4, list nodes 2" in extra
    text = report.render([_size(2.0)], scale=result)
    assert "scale (NodeDrain node-1 -> node-2)" in text and report.LEGEND_SCALE in text and "failures:" not in text
    assert text.splitlines()[-1].endswith(
        "scale 100 nodes+5000 pods, drain 4x64MiB k=2: large/small per migrated pod: API requests 1.20x, CPU 1.50x; "
        "state kept in 1/1 migrations"
    )


def test_the_scale_table_without_the_metrics_says_na() -> None:
    result = _result(metrics=False)
    lines = report.scale_table(result).splitlines()
    assert lines[1].split() == ["small", "2", "10", "4", "n/a", "n/a", "0.500", "100.0", "0.0", "n/a", "OK"]
    assert lines[2].split()[4:] == ["n/a", "n/a", "0.750", "100.0", "0.0", "n/a", "OK"]
    extra = report.scale_lines(result)
    assert extra[0] == "large/small per migrated pod: API requests n/a, pod+node lists n/a, CPU 1.50x; RSS delta n/a"
    assert "its pod cache: n/a (not seen reaching 5000)" in extra[1]
    assert "small drain's requests by verb and resource: n/a" in extra
    text = report.render([_size(2.0)], scale=result)
    assert "API requests n/a, CPU 1.50x" in text.splitlines()[-1]


def test_a_failed_growth_or_drain_fails_the_row() -> None:
    assert _result().ok
    grown_not = ScaleResult(nodes=100, pods=5000, drain_pods=4, concurrency=2, size_mib=64, error="ApiError: 3 of 98 Nodes")
    grown_not.small = _sample("small", METRICS_BEFORE, METRICS_AFTER)
    assert not grown_not.ok and grown_not.failures() == ["growing the cluster: ApiError: 3 of 98 Nodes"]
    lines = report.scale_table(grown_not).splitlines()
    assert lines[2].split() == ["large", *["-"] * 9, "not", "run"]
    blocked = _result()
    assert blocked.large is not None
    blocked.large.drain = _drain(ok=False)
    assert not blocked.ok and blocked.failures() == ["large NodeDrain bench-1: Blocked"]
    assert "scale 100 nodes+5000 pods, drain 4x64MiB k=2 large NodeDrain bench-1: Blocked" in report.render([_size(2.0)],
                                                                                                          scale=blocked)  # fmt: skip
    left = _result()
    left.cleanup_error = "pods still bound to registration-only nodes: podmigrate-system/agent-x"
    assert left.ok, "what clean-up left is reported, not a failure: the cluster goes down next"
    assert report.scale_lines(left)[-1] == f"clean-up left behind: {left.cleanup_error}"
    assert not ScaleResult(nodes=3, pods=0, drain_pods=1, concurrency=1, size_mib=64).ok, "no drain measured: not OK"


def test_the_json_holds_every_request_series() -> None:
    document = report.to_json([], meta={}, scale=_result())["scale"]
    assert document["ok"] is True and document["label"] == "scale 100 nodes+5000 pods, drain 4x64MiB k=2"
    assert document["small"]["requests_by"]["list pods"] == 4.0 and document["numbers"]["requests_ratio"] == pytest.approx(1.2)
    json.dumps(document)
    json.dumps(report.to_json([], meta={}, scale=_result(metrics=False)))
    assert report.to_json([], meta={})["scale"] is None


def test_the_scale_row_is_recorded_and_shown_in_the_history() -> None:
    out: list[dict[str, Any]] = []
    for i, result in enumerate((_result(), _result(metrics=False))):
        out += history.records(run=_run(f"2026-12-0{1 + i}T14:00:00+00:00", commit=f"c{i}"), results=[_size(2.0)], scale=result)
    record = out[1]
    assert record["kind"] == history.KIND_SCALE and record["row"] == "scale 100 nodes+5000 pods, drain 4x64MiB k=2"
    shape = (record["nodes"], record["pods"], record["drain_pods"], record["concurrency"], record["size_mib"])
    assert shape == (100, 5000, 4, 2, 64)
    m = record["medians"]
    assert m["small:requests_per_pod"] == 7.5 and m["large:requests_per_pod"] == 9.0 and m["requests_ratio"] == 1.2
    assert m["large:rss_after_bytes"] == 105 * MIB and isinstance(m["large:rss_after_bytes"], int)
    assert "requests_ratio" not in out[3]["medians"], "unmeasured: left out"
    back = history.parse("\n".join(json.dumps(r) for r in out))
    assert back == json.loads(json.dumps(out)), "read back as written"
    block = next(b for b in history.tables(back).split("\n\n") if b.startswith("scale"))
    lines = block.splitlines()
    assert lines[0] == "scale 100 nodes+5000 pods, drain 4x64MiB k=2: 2 of 2 recorded run(s)"
    assert lines[1].split()[3:] == ["req/pod_small", "req/pod_large", "req_large/small", "cpu/pod_small", "cpu/pod_large",
                                    "cpu_large/small", "rss_MiB_large", "pods/s", "state"]  # fmt: skip
    assert lines[2].split()[3:] == ["7.5", "9.0", "1.20x", "0.500", "0.750", "1.50x", "105.0", "100.0", "OK"]
    assert lines[3].split()[3:6] == ["-", "-", "-"]
    text = history.markdown(back)
    assert "scale 100 nodes+5000 pods, drain 4x64MiB k=2: the control service sent - API requests" in text
    first = history.markdown(back[:2])
    assert (
        "sent 7.5 API requests and used 0.500 CPU s per migrated pod in the cluster as brought up, 9.0 and 0.750 s with "
        "100 nodes and 5000 more pods: large/small 1.20x (requests), 1.50x (CPU)." in first
    )


def test_scale_options() -> None:
    args = parse_args([])
    assert (args.scale_nodes, args.scale_pods) == (100, 5000), "the issue's sizes by default"
    assert parse_args(["--scale-nodes", "0"]).scale_nodes == 0, "0 leaves the row out"
    assert (parse_args(["--scale-nodes", "20", "--scale-pods", "300"]).scale_pods) == 300
    for bad in (["--scale-nodes", "2"], ["--scale-nodes", "-1"], ["--scale-pods", "-1"], ["--scale-nodes", "x"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_sample_sum_and_counter_deltas() -> None:
    samples = stats.parse_prometheus(METRICS_AFTER)
    assert stats.sample_sum(samples, "podmigrate_kube_requests_total") == 180.0
    assert stats.sample_sum(samples, "podmigrate_kube_requests_total", verb="list") == 16.0
    assert stats.sample_sum(samples, "podmigrate_kube_requests_total", verb="watch") is None
    assert stats.sample_sum(samples, "no_such_metric") is None
    grew = stats.counter_deltas(stats.parse_prometheus(METRICS_BEFORE), samples, "podmigrate_kube_requests_total")
    assert grew[frozenset({("verb", "list"), ("resource", "nodes")})] == 2.0, "a new series counts from 0"
    assert frozenset({("verb", "get"), ("resource", "pods")}) not in grew
