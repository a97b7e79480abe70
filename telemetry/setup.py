"""Tracer setup from the standard ``OTEL_*`` environment, read by the OpenTelemetry SDK itself.

Nothing here re-parses what the SDK reads: the OTLP exporters, built without arguments, take
their endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``, with ``/v1/traces`` appended for HTTP, or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as is), headers, timeout, compression, certificates and
gRPC's insecure flag (``http://`` endpoints) from ``OTEL_EXPORTER_OTLP_*``; ``OTEL_TRACES_EXPORTER``
names exporters by their ``opentelemetry_traces_exporter`` entry points (``otlp``, ``console``,
``none``, and whatever else is installed), resolved by the same SDK code ``opentelemetry-instrument``
uses, which also picks gRPC or HTTP from ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL``;
``Resource.create()`` reads ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``; the tracer
provider reads ``OTEL_TRACES_SAMPLER`` and the batch processor ``OTEL_BSP_*``.

Two defaults are ours, each explained where it is decided (``exporters_from_env``): an OTLP
endpoint alone turns export on, and ``otlp`` without a protocol means ``http/protobuf``.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_TRACES_EXPORTER

# A private module, but the SDK's one implementation of OTEL_TRACES_EXPORTER (entry-point lookup,
# OTLP protocol choice): the same code ``opentelemetry-instrument`` runs. tests/telemetry pin it.
from opentelemetry.sdk._configuration import _get_exporter_entry_point, _import_exporters
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator


def _entry_point(name: str) -> str:
    if name == "otlp" and not (os.environ.get(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) or os.environ.get(OTEL_EXPORTER_OTLP_PROTOCOL)):
        # Ours: without a protocol the SDK picks gRPC for "otlp", while the OTLP spec's default is
        # http/protobuf (port 4318). Ours follows the spec, as it always has: deployments that set
        # only an endpoint point it at an HTTP receiver (the local cluster's speaks only HTTP).
        return "otlp_proto_http"
    return _get_exporter_entry_point(name, "traces")


def exporters_from_env() -> list[SpanExporter]:
    """The span exporters the standard variables ask for, configured by themselves (empty: tracing stays local).

    Raises RuntimeError, as the SDK does, for an exporter name no installed package provides.
    """
    names = os.environ.get(OTEL_TRACES_EXPORTER, "").strip()
    if not names:
        # Ours: the spec's default for OTEL_TRACES_EXPORTER is "otlp" (to localhost when no endpoint
        # is set), which the Python SDK applies only through opentelemetry-distro, not installed
        # here. We take neither: setting an OTLP endpoint is enough to turn export on, and without
        # one tracing stays local instead of retrying a localhost collector that is not there.
        if not (os.environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)):
            return []
        names = "otlp"
    if names.lower() == "none":
        return []
    chosen = [_entry_point(name.strip()) for name in names.split(",") if name.strip()]
    exporter_classes, _, _ = _import_exporters(chosen, [], [])
    return [exporter_class() for exporter_class in exporter_classes.values()]


def setup_tracing(
    *, service_name: str, exporter: SpanExporter | None = None, id_generator: IdGenerator | None = None
) -> TracerProvider:
    """Install the global tracer provider (call once, at start); ``exporter`` overrides the environment.

    ``service_name`` is a default: OTEL_SERVICE_NAME or a ``service.name`` in
    OTEL_RESOURCE_ATTRIBUTES wins over it.
    """
    resource = Resource.create()
    # Resource.create({SERVICE_NAME: ...}) would let our name win over the operator's variables;
    # the SDK marks "nobody said" as "unknown_service[:<executable>]", so fill in only that case.
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource, id_generator=id_generator)
    for chosen in [exporter] if exporter is not None else exporters_from_env():
        provider.add_span_processor(BatchSpanProcessor(chosen))
    trace.set_tracer_provider(provider)
    return provider
