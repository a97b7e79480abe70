"""Exporters and the resource come from the standard OTEL_* environment, read by the SDK itself."""

from __future__ import annotations

import os

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from telemetry.setup import exporters_from_env, setup_tracing


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Only the variables a test sets: none from the environment the tests run in."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    return monkeypatch


HTTP = "opentelemetry.exporter.otlp.proto.http.trace_exporter.OTLPSpanExporter"
GRPC = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter.OTLPSpanExporter"
CONSOLE = "opentelemetry.sdk.trace.export.ConsoleSpanExporter"


def kinds(exporters: list[SpanExporter]) -> list[str]:
    return [f"{type(e).__module__}.{type(e).__name__}" for e in exporters]


def test_nothing_configured_keeps_tracing_local(clean_env: pytest.MonkeyPatch) -> None:
    assert exporters_from_env() == []
    clean_env.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x=y")  # settings without an endpoint turn nothing on
    assert exporters_from_env() == []


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # An endpoint alone turns OTLP on, over HTTP unless a protocol says otherwise.
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, [HTTP]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, [HTTP]),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, [HTTP]),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            [GRPC],
        ),
        # The SDK's own choice: the traces-specific protocol wins over the generic one.
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            [GRPC],
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp_proto_grpc"}, [GRPC]),
        ({"OTEL_TRACES_EXPORTER": "console"}, [CONSOLE]),
        (
            {"OTEL_TRACES_EXPORTER": "console, otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            [CONSOLE, GRPC],
        ),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, []),
        ({"OTEL_TRACES_EXPORTER": " None ", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, []),
    ],
)
def test_exporters_from_env(clean_env: pytest.MonkeyPatch, env: dict[str, str], expected: list[str]) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    exporters = exporters_from_env()
    try:
        assert kinds(exporters) == expected
    finally:
        for exporter in exporters:
            exporter.shutdown()


def test_an_unknown_exporter_or_protocol_is_an_error_not_silence(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OTEL_TRACES_EXPORTER", "zipkin-not-installed")
    with pytest.raises(RuntimeError, match="zipkin-not-installed"):
        exporters_from_env()
    clean_env.setenv("OTEL_TRACES_EXPORTER", "otlp")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(RuntimeError, match="http/json"):
        exporters_from_env()


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> list[TracerProvider]:
    """What setup_tracing installs, kept out of this process's global tracer provider."""
    providers: list[TracerProvider] = []
    monkeypatch.setattr(trace, "set_tracer_provider", providers.append)
    return providers


def test_service_name_is_a_default_the_environment_overrides(
    clean_env: pytest.MonkeyPatch, installed: list[TracerProvider]
) -> None:
    provider = setup_tracing(service_name="podmigrate-agent")
    assert installed == [provider]
    assert provider.resource.attributes["service.name"] == "podmigrate-agent"

    clean_env.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes,k8s.node.name=node-1")
    provider = setup_tracing(service_name="podmigrate-agent")
    assert provider.resource.attributes["service.name"] == "from-attributes"
    assert provider.resource.attributes["k8s.node.name"] == "node-1"

    clean_env.setenv("OTEL_SERVICE_NAME", "from-service-name")
    provider = setup_tracing(service_name="podmigrate-agent")
    assert provider.resource.attributes["service.name"] == "from-service-name"
    assert provider.resource.attributes["k8s.node.name"] == "node-1"
