"""Prometheus metrics in the text exposition format, written by hand (no extra dependency).

What an operator needs to see from a node agent: how many checkpoints succeeded or failed
where, how long each phase took (freeze, kubelet checkpoint, pack, push, whole request), how
many bytes went to the registry, and the agent's own memory: its peak RSS (``VmHWM``) shows
whether a large archive was ever held in memory instead of streamed.

Everything is updated from the event loop only, so plain integers and floats suffice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
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


class AgentMetrics:
    def __init__(self) -> None:
        self.checkpoints = Counter(
            name="podmigrate_agent_checkpoints_total",
            help_text="Checkpoint requests by outcome (success, rejected, freeze_failed, checkpoint_failed, push_failed).",
        )
        self.duration = Histogram(
            name="podmigrate_agent_checkpoint_duration_seconds",
            help_text="Checkpoint time by phase: freeze, checkpoint (kubelet, per container), pack, push, total (request).",
        )
        self.pushed_bytes = Counter(name="podmigrate_agent_pushed_bytes_total", help_text="Bytes uploaded to registries.")
        self.archive_bytes = Counter(
            name="podmigrate_agent_archive_bytes_total", help_text="Bytes of checkpoint archives produced by the kubelet."
        )
        self.thaws = Counter(name="podmigrate_agent_thaws_total", help_text="Containers thawed, by reason (request, rollback).")
        self.image_deletes = Counter(name="podmigrate_agent_image_deletes_total", help_text="Image deletions by outcome.")

    def render(self) -> str:
        lines: list[str] = []
        for metric in (self.checkpoints, self.duration, self.pushed_bytes, self.archive_bytes, self.thaws, self.image_deletes):
            lines += metric.render()
        memory = process_memory()
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
        return "\n".join(lines) + "\n"
