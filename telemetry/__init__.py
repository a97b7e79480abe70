"""OpenTelemetry for every podmigrate process: tracer setup from the standard environment.

The control service and the node agents export to the same backend and join one trace per
migration (W3C ``traceparent`` over HTTP), so their setup lives here, once; so do the
Prometheus pieces both expose on ``/metrics`` (``metrics``, on prometheus_client).
"""
