"""Prometheus metrics for the control service and the agents, through ``prometheus_client``.

The control service and the agents expose ``/metrics``. ``Metrics`` gives each of them a
``CollectorRegistry`` of its own instead of the library's global ``REGISTRY``: one test process
builds many controllers and agents, and a registry refuses a second metric of the same name.
``render()`` is ``generate_latest`` of that registry, the process's CPU, memory and file
descriptors come from ``ProcessCollector``.

Two small pieces stay hand-written, each for a stated reason:

* ``Counter`` and ``Histogram`` wrap prometheus_client's with the call shape the services use at
  every call site, ``inc(amount, outcome=...)`` and ``observe(seconds, phase=...)``, where the
  library wants ``.labels(outcome=...).inc(amount)`` for labelled metrics and ``.inc(amount)``
  for the others; ``value``/``count`` read a series back through the registry for tests.
* ``PeakMemoryCollector``: ``process_resident_memory_peak_bytes`` (``VmHWM``). ProcessCollector
  reads ``/proc/self/stat``, which has no peak; the peak shows whether a large archive was ever
  held in memory instead of streamed, and the benchmark reads it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import prometheus_client
from prometheus_client import CollectorRegistry, ProcessCollector, exposition, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# No ``<name>_created`` series next to every counter and histogram: they were never exposed,
# they would double the series a scrape stores, and Prometheus ignores them unless asked to.
# (A process-wide switch of prometheus_client; these processes use no other registry.)
prometheus_client.disable_created_metrics()

# ``generate_latest`` writes the text format 0.0.4 (for names like ours, which need no UTF-8
# escaping), and prometheus_client's own servers label it so (``choose_encoder``). Since 0.22
# ``CONTENT_TYPE_LATEST`` names text format 1.0.0 instead, hence the explicit 0.0.4 constant
# where the installed version has it (before 0.22 the two are the same string).
CONTENT_TYPE: str = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)


class Counter:
    """A prometheus_client ``Counter`` with its label names declared once, labels passed to ``inc``."""

    def __init__(self, *, name: str, help_text: str, registry: CollectorRegistry, labels: Sequence[str] = ()) -> None:
        self.name = name  # with ``_total``: the sample's name, as scrapes show it
        self.metric = prometheus_client.Counter(name, help_text, labelnames=labels, registry=registry)
        self._registry = registry

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        (self.metric.labels(**labels) if labels else self.metric).inc(amount)

    def value(self, **labels: str) -> float:
        return self._registry.get_sample_value(self.name, labels) or 0.0


class Histogram:
    """A prometheus_client ``Histogram`` with its label names declared once, labels passed to ``observe``."""

    def __init__(
        self,
        *,
        name: str,
        help_text: str,
        registry: CollectorRegistry,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        self.name = name
        self.metric = prometheus_client.Histogram(name, help_text, labelnames=labels, buckets=buckets, registry=registry)
        self._registry = registry

    def observe(self, value: float, **labels: str) -> None:
        (self.metric.labels(**labels) if labels else self.metric).observe(value)

    def count(self, **labels: str) -> int:
        return int(self._registry.get_sample_value(f"{self.name}_count", labels) or 0)


def peak_resident_bytes(*, status: Path = Path("/proc/self/status")) -> int | None:
    """Peak resident set size in bytes (``VmHWM``), None where the kernel does not say."""
    try:
        for line in status.read_text().splitlines():
            key, _, rest = line.partition(":")
            if key == "VmHWM":
                return int(rest.split()[0]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


class PeakMemoryCollector(Collector):
    """``process_resident_memory_peak_bytes``, read at scrape time; nothing where there is no ``VmHWM``."""

    def __init__(self, *, status: Path = Path("/proc/self/status")) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        peak = peak_resident_bytes(status=self._status)
        if peak is not None:
            yield GaugeMetricFamily(
                "process_resident_memory_peak_bytes", "Peak resident memory size in bytes (VmHWM).", value=peak
            )


class Metrics:
    """A registry of one process's metrics, with the process collectors, rendered for ``/metrics``."""

    content_type: ClassVar[str] = CONTENT_TYPE

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(PeakMemoryCollector())

    def render(self) -> str:
        """The text exposition (``content_type``) of everything in the registry, read now."""
        return generate_latest(self.registry).decode()
