"""Exporters are chosen from the standard OTEL_* environment."""

from __future__ import annotations

from telemetry.setup import exporter_from_env


def test_tracing_exporter_from_env() -> None:
    assert exporter_from_env({}) is None
    assert exporter_from_env({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}) is None
    http = exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert type(http).__module__.startswith("opentelemetry.exporter.otlp.proto.http")
    grpc = exporter_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert type(grpc).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc")
    assert type(exporter_from_env({"OTEL_TRACES_EXPORTER": "console"})).__name__ == "ConsoleSpanExporter"
