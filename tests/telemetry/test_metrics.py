"""The agent's metrics and the shared pieces in telemetry.metrics, as a Prometheus server parses them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from node_agent.metrics import AgentMetrics
from telemetry.metrics import DURATION_BUCKETS, Counter, Histogram, PeakMemoryCollector, peak_resident_bytes


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_agent_checkpoints_phases_bytes_and_thaws() -> None:
    metrics = AgentMetrics()
    metrics.checkpoints.inc(outcome="success")
    metrics.checkpoints.inc(outcome="success")
    metrics.checkpoints.inc(outcome="push_failed")
    metrics.duration.observe(0.3, phase="total")
    metrics.duration.observe(0.004, phase="freeze")
    metrics.pushed_bytes.inc(5 * 1024 * 1024)
    metrics.archive_bytes.inc(1234)
    metrics.thaws.inc(2, reason="request")
    metrics.thaws.inc(reason="rollback")
    metrics.image_deletes.inc(outcome="not_found")
    got = samples(metrics.render())

    assert got[("podmigrate_agent_checkpoints_total", frozenset({("outcome", "success")}))] == 2
    assert got[("podmigrate_agent_checkpoints_total", frozenset({("outcome", "push_failed")}))] == 1
    assert got[("podmigrate_agent_checkpoint_duration_seconds_count", frozenset({("phase", "total")}))] == 1
    assert got[("podmigrate_agent_checkpoint_duration_seconds_sum", frozenset({("phase", "total")}))] == 0.3
    assert got[("podmigrate_agent_checkpoint_duration_seconds_bucket", frozenset({("phase", "total"), ("le", "0.25")}))] == 0
    assert got[("podmigrate_agent_checkpoint_duration_seconds_bucket", frozenset({("phase", "total"), ("le", "0.5")}))] == 1
    assert got[("podmigrate_agent_checkpoint_duration_seconds_bucket", frozenset({("phase", "total"), ("le", "+Inf")}))] == 1
    assert got[("podmigrate_agent_checkpoint_duration_seconds_bucket", frozenset({("phase", "freeze"), ("le", "0.01")}))] == 1
    assert got[("podmigrate_agent_pushed_bytes_total", frozenset())] == 5 * 1024 * 1024
    assert got[("podmigrate_agent_archive_bytes_total", frozenset())] == 1234
    assert got[("podmigrate_agent_thaws_total", frozenset({("reason", "request")}))] == 2
    assert got[("podmigrate_agent_thaws_total", frozenset({("reason", "rollback")}))] == 1
    assert got[("podmigrate_agent_image_deletes_total", frozenset({("outcome", "not_found")}))] == 1
    assert got[("process_resident_memory_bytes", frozenset())] > 0
    assert got[("process_resident_memory_peak_bytes", frozenset())] > 0
    # What the agent's tests read back without parsing.
    assert metrics.checkpoints.value(outcome="success") == 2
    assert metrics.checkpoints.value(outcome="rejected") == 0
    assert metrics.duration.count(phase="total") == 1
    assert metrics.duration.count(phase="push") == 0


def test_agent_names_types_and_help() -> None:
    families = {f.name: (f.type, f.documentation) for f in text_string_to_metric_families(AgentMetrics().render())}
    assert families["podmigrate_agent_checkpoints"] == (
        "counter",
        "Checkpoint requests by outcome (success, rejected, freeze_failed, checkpoint_failed, push_failed).",
    )
    assert families["podmigrate_agent_checkpoint_duration_seconds"] == (
        "histogram",
        "Checkpoint time by phase: freeze, checkpoint (kubelet, per container), pack, push, total (request).",
    )
    assert families["podmigrate_agent_pushed_bytes"] == ("counter", "Bytes uploaded to registries.")
    assert families["podmigrate_agent_archive_bytes"] == ("counter", "Bytes of checkpoint archives produced by the kubelet.")
    assert families["podmigrate_agent_thaws"] == ("counter", "Containers thawed, by reason (request, rollback).")
    assert families["podmigrate_agent_image_deletes"] == ("counter", "Image deletions by outcome.")
    assert families["process_resident_memory_bytes"] == ("gauge", "Resident memory size in bytes.")
    assert families["process_resident_memory_peak_bytes"] == ("gauge", "Peak resident memory size in bytes (VmHWM).")


def test_labels_are_declared_once_and_checked() -> None:
    registry = CollectorRegistry()
    counter = Counter(name="x_things_total", help_text="Things.", labels=("kind",), registry=registry)
    histogram = Histogram(name="x_seconds", help_text="Time.", labels=("phase",), registry=registry)
    with pytest.raises(ValueError):
        counter.inc(colour="red")  # not a declared label
    with pytest.raises(ValueError):
        histogram.observe(1.0)  # a labelled histogram needs its labels
    with pytest.raises(ValueError):
        counter.inc(-1, kind="a")  # counters only go up
    histogram.observe(0.07, phase="a")
    counter.inc(kind='we"ird\\\n')  # label values are escaped by the library and come back intact
    got = samples(generate_latest(registry).decode())
    assert got[("x_things_total", frozenset({("kind", 'we"ird\\\n')}))] == 1
    assert counter.value(kind='we"ird\\\n') == 1
    bounds = sorted(float(dict(labels)["le"]) for name, labels in got if name == "x_seconds_bucket")
    assert bounds == [*DURATION_BUCKETS, math.inf]


def test_peak_memory_comes_from_vmhwm_and_is_absent_without_it(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tagent\nVmPeak:\t  900000 kB\nVmHWM:\t   92160 kB\nVmRSS:\t   81920 kB\n")
    assert peak_resident_bytes(status=status) == 92160 * 1024
    registry = CollectorRegistry()
    registry.register(PeakMemoryCollector(status=status))
    assert registry.get_sample_value("process_resident_memory_peak_bytes") == 92160 * 1024

    status.write_text("Name:\tagent\n")
    assert peak_resident_bytes(status=status) is None
    assert registry.get_sample_value("process_resident_memory_peak_bytes") is None
    assert peak_resident_bytes(status=tmp_path / "missing") is None
