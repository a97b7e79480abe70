"""Spans leave over real OTLP (HTTP and gRPC) and arrive with the ids status recorded."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from migrator import tracing
from telemetry.setup import exporter_from_env
from tests.otlp import GrpcOtlpReceiver, OtlpReceiver


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_migration_trace_under_a_drain_span_reaches_a_real_receiver(protocol: str) -> None:
    receiver = GrpcOtlpReceiver() if protocol == "grpc" else OtlpReceiver()
    try:
        exporter = exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol})
        assert exporter is not None
        provider = TracerProvider(
            resource=Resource({"service.name": "podmigrate-controller"}), id_generator=tracing.StoredIdGenerator()
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test")
        drain = tracing.parse_traceparent(tracing.traceparent(trace_id=tracing.new_trace_id(), span_id=tracing.new_span_id()))
        assert drain is not None
        trace_id, drain_span = drain
        root, phase = tracing.new_span_id(), tracing.new_span_id()
        start = datetime.now(UTC)
        tracing.emit_span(
            name="migration.checkpoint",
            trace_id=trace_id,
            span_id=phase,
            parent_span_id=root,
            start=start,
            end=start + timedelta(seconds=1),
            attributes={"k8s.pod.name": "web-0"},
            tracer=tracer,
        )
        tracing.emit_span(name="migration", trace_id=trace_id, span_id=root, parent_span_id=drain_span,
                          start=start, end=start + timedelta(seconds=2), error="boom", tracer=tracer)  # fmt: skip
        provider.force_flush()
        deadline = time.monotonic() + 10
        while len(receiver.trace(trace_id)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        spans = {s.name: s for s in receiver.trace(trace_id)}
        assert spans["migration"].span_id == root and spans["migration"].parent_span_id == drain_span
        assert spans["migration"].error and spans["migration"].service == "podmigrate-controller"
        assert spans["migration.checkpoint"].parent_span_id == root and spans["migration.checkpoint"].span_id == phase
        assert spans["migration.checkpoint"].attributes["k8s.pod.name"] == "web-0"
        assert spans["migration.checkpoint"].end_ns - spans["migration.checkpoint"].start_ns == 1_000_000_000
        provider.shutdown()
    finally:
        receiver.close()


def test_traceparents_are_parsed_strictly() -> None:
    assert tracing.parse_traceparent("00-" + "a" * 32 + "-" + "b" * 16 + "-01") == ("a" * 32, "b" * 16)
    for bad in (None, "", "00-xyz-abc-01", "00-" + "0" * 32 + "-" + "b" * 16 + "-01"):
        assert tracing.parse_traceparent(bad) is None
