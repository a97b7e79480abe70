"""Spans leave over real OTLP (HTTP and gRPC) and arrive with the ids status recorded, where OTEL_* says."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from migrator import tracing
from telemetry.setup import exporters_from_env, setup_tracing
from tests.otlp import GrpcOtlpReceiver, OtlpReceiver, ReceivedSpan


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Only the OTEL_* variables a test sets."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    return monkeypatch


def wait_for_spans(receiver: OtlpReceiver, trace_id: str, count: int) -> list[ReceivedSpan]:
    deadline = time.monotonic() + 10
    while len(receiver.trace(trace_id)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return receiver.trace(trace_id)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_migration_trace_under_a_drain_span_reaches_a_real_receiver(env: pytest.MonkeyPatch, protocol: str) -> None:
    receiver = GrpcOtlpReceiver() if protocol == "grpc" else OtlpReceiver()
    try:
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        [exporter] = exporters_from_env()
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
        spans = {s.name: s for s in wait_for_spans(receiver, trace_id, 2)}
        assert spans["migration"].span_id == root and spans["migration"].parent_span_id == drain_span
        assert spans["migration"].error and spans["migration"].service == "podmigrate-controller"
        assert spans["migration.checkpoint"].parent_span_id == root and spans["migration.checkpoint"].span_id == phase
        assert spans["migration.checkpoint"].attributes["k8s.pod.name"] == "web-0"
        assert spans["migration.checkpoint"].end_ns - spans["migration.checkpoint"].start_ns == 1_000_000_000
        provider.shutdown()
    finally:
        receiver.close()


@pytest.mark.parametrize(
    ("protocol", "variable", "path", "expected_path"),
    [
        # The spec: the generic endpoint gets the signal's path appended, the traces one is used as is.
        ("http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT", "", "/v1/traces"),
        ("http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/collector/traces", "/collector/traces"),
        ("grpc", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", "opentelemetry.proto.collector.trace.v1.TraceService/Export"),
    ],
)
def test_setup_tracing_exports_where_and_as_the_environment_says(
    env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch, protocol: str, variable: str, path: str, expected_path: str
) -> None:
    monkeypatch.setattr(trace, "set_tracer_provider", lambda provider: None)  # keep this process's global provider
    receiver = GrpcOtlpReceiver() if protocol == "grpc" else OtlpReceiver()
    try:
        env.setenv(variable, receiver.endpoint + path)
        env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", protocol)
        env.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=podmigrate,x-token=s3cret")
        env.setenv("OTEL_SERVICE_NAME", "podmigrate-test")
        provider = setup_tracing(service_name="podmigrate-controller")
        with provider.get_tracer("test").start_as_current_span("migration") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
        assert provider.force_flush()
        [received] = wait_for_spans(receiver, trace_id, 1)
        assert (received.name, received.service) == ("migration", "podmigrate-test")
        assert {e.path for e in receiver.exports} == {expected_path}
        assert all(e.headers["x-tenant"] == "podmigrate" and e.headers["x-token"] == "s3cret" for e in receiver.exports)
        provider.shutdown()
    finally:
        receiver.close()


def test_traceparents_are_parsed_strictly() -> None:
    assert tracing.parse_traceparent("00-" + "a" * 32 + "-" + "b" * 16 + "-01") == ("a" * 32, "b" * 16)
    for bad in (None, "", "00-xyz-abc-01", "00-" + "0" * 32 + "-" + "b" * 16 + "-01"):
        assert tracing.parse_traceparent(bad) is None
