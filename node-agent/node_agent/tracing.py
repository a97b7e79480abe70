"""Tracer setup from the standard ``OTEL_*`` environment, and the traceparent of incoming requests.

A migration is one trace across the control service, this agent and the kubelet call: the
control service sends a W3C ``traceparent`` header, the agent continues that trace
(``incoming_context``), so freeze, checkpoint, pack and push show up under the migration
that caused them. Exporter configuration is the standard ``OTEL_*`` environment
(``telemetry.setup``).
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider

from telemetry import setup

DEFAULT_SERVICE_NAME = "podmigrate-agent"
INSTRUMENTATION_NAME = "node_agent"


def setup_tracing(*, service_name: str = DEFAULT_SERVICE_NAME) -> TracerProvider:
    """Install the global tracer provider from the standard environment (once, at start)."""
    return setup.setup_tracing(service_name=service_name)


def tracer() -> trace.Tracer:
    return trace.get_tracer(INSTRUMENTATION_NAME)


def incoming_context(headers: Mapping[str, str]) -> context.Context:
    """The caller's trace context from its W3C ``traceparent``/``tracestate`` headers (empty when none)."""
    return propagate.extract(headers)
