"""Tracer setup from the standard ``OTEL_*`` environment, nothing of our own.

``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) turns on the OTLP exporter,
``OTEL_EXPORTER_OTLP_PROTOCOL`` picks ``grpc`` or ``http/protobuf`` (the default),
``OTEL_TRACES_EXPORTER=console|none`` overrides, ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` win over the default service name, and ``OTEL_TRACES_SAMPLER``
is read by the SDK itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator


def exporter_from_env(env: Mapping[str, str] = os.environ) -> SpanExporter | None:
    """The span exporter the standard variables in ``env`` ask for (None: tracing stays local)."""
    kind = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if kind == "none" or (not kind and not (traces_endpoint or endpoint)):
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        target = traces_endpoint or endpoint
        return GrpcExporter(endpoint=target, insecure=bool(target and target.startswith("http://")))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    # The spec: a signal-specific endpoint is used as is; the generic one gets /v1/traces appended.
    url = traces_endpoint or (f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None)
    return HttpExporter(endpoint=url)


def setup_tracing(
    *, service_name: str, exporter: SpanExporter | None = None, id_generator: IdGenerator | None = None
) -> TracerProvider:
    """Install the global tracer provider (call once, at start); ``exporter`` overrides the environment."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource, id_generator=id_generator)
    chosen = exporter or exporter_from_env()
    if chosen is not None:
        provider.add_span_processor(BatchSpanProcessor(chosen))
    trace.set_tracer_provider(provider)
    return provider
