"""Prometheus metrics in the text exposition format, written by hand (no extra dependency).

The control service and the agents expose ``/metrics``; these are the few primitives they need
(counters, gauges, histograms, the process's memory), named and rendered by Prometheus'
conventions. Everything is updated from one event loop, so plain numbers suffice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

LabelKey = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(key: LabelKey, extra: Iterable[tuple[str, str]] = ()) -> str:
    pairs = [*key, *extra]
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    def __init__(self, *, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_labels(k)} {_number(v)}" for k, v in sorted(self._values.items())]
        return lines


class Histogram:
    def __init__(self, *, name: str, help_text: str, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.name = name
        self.help = help_text
        self.buckets = buckets
        self._series: dict[LabelKey, tuple[list[int], list[float]]] = {}  # bucket counts, [sum, count]

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        counts, totals = self._series.setdefault(key, ([0] * len(self.buckets), [0.0, 0.0]))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        totals[0] += value
        totals[1] += 1

    def count(self, **labels: str) -> int:
        series = self._series.get(tuple(sorted(labels.items())))
        return int(series[1][1]) if series else 0

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, (counts, (total, count)) in sorted(self._series.items()):
            for bound, n in zip(self.buckets, counts, strict=True):
                lines.append(f"{self.name}_bucket{_labels(key, [('le', _number(bound))])} {n}")
            lines.append(f"{self.name}_bucket{_labels(key, [('le', '+Inf')])} {int(count)}")
            lines.append(f"{self.name}_sum{_labels(key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(key)} {int(count)}")
        return lines


def process_memory(status: Path = Path("/proc/self/status")) -> dict[str, int]:
    """Current and peak resident set size in bytes, from ``VmRSS`` and ``VmHWM``."""
    out: dict[str, int] = {}
    try:
        for line in status.read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return out


class Gauge:
    """A value read at scrape time from a callable (in-flight work, queue lengths)."""

    def __init__(self, *, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name = name
        self.help = help_text
        self._read = read

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge", f"{self.name} {_number(self._read())}"]


def process_memory_lines() -> list[str]:
    """``process_resident_memory_bytes`` and ``process_resident_memory_peak_bytes`` (VmHWM)."""
    memory = process_memory()
    lines: list[str] = []
    if "VmRSS" in memory:
        lines += [
            "# HELP process_resident_memory_bytes Resident memory size in bytes.",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {memory['VmRSS']}",
        ]
    if "VmHWM" in memory:
        lines += [
            "# HELP process_resident_memory_peak_bytes Peak resident memory size in bytes (VmHWM).",
            "# TYPE process_resident_memory_peak_bytes gauge",
            f"process_resident_memory_peak_bytes {memory['VmHWM']}",
        ]
    return lines
