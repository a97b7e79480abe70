"""Where the machine's CPU went while a migration ran: each stage's busy cores, and the registry's share.

Why: on this bench's machine every part of a migration (control plane, nodes, agents, the registry, the control
service) shares a few cores, so a stage can be slow because it waits (a network, a disk, a poll) or because the
machine has no CPU left. Only the second is a bound no scheduling removes: it takes less work per byte, or more
cores. So while a migration runs, ``CpuSampler`` reads every ``interval`` seconds how long all cores have been
busy (``/proc/stat``) and how much CPU the registry process has used (``/proc/<pid>/stat``, its own threads,
not reaped children), and ``window`` reads those samples over a stage's span from ``status.stages``.

The registry is singled out because a blob is one stream into it, and its own hashing on one core is then what
the upload cannot go faster than (bench/README.md, "Where the CPU goes").
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_INTERVAL_S: Final = 0.05
# A window shorter than this says little with samples 50 ms apart (a freeze, a Ready): no figure for it.
MIN_WINDOW_S: Final = 0.2


def machine_busy_seconds(*, stat: Path = Path("/proc/stat")) -> float:
    """CPU seconds every core of this machine has been busy since boot (``/proc/stat``: all but idle and iowait).

    The bench's cluster (control plane, nodes, agents, registry, the control service) shares this machine, so
    the difference across a migration is what that migration cost the machine as a whole: with ``cores`` it
    bounds how fast several can run at once.
    """
    fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is inside user)
    return busy / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int | None, *, proc: Path = Path("/proc")) -> float | None:
    """utime + stime of ``pid``'s own threads (not its reaped children's), or None when it is gone (or unknown)."""
    if pid is None:
        return None
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, kw_only=True)
class CpuSample:
    at: float  # time.time(): status.stages are wall-clock instants
    busy_s: float  # machine_busy_seconds()
    registry_s: float | None  # the registry's CPU seconds so far (None: no registry, or it was gone)


@dataclass(frozen=True, kw_only=True)
class WindowCpu:
    cores: float  # how many cores the whole machine kept busy on average over the window
    registry_cpu_s: float | None  # CPU seconds the registry used in it


class CpuSampler(threading.Thread):
    """Samples in a daemon thread from ``start()`` until ``stop()``; ``samples`` is then read whole."""

    def __init__(self, *, registry_pid: int | None, interval: float = DEFAULT_INTERVAL_S) -> None:
        super().__init__(name="bench-cpu-sampler", daemon=True)
        self._registry_pid = registry_pid
        self._interval = interval
        self._stop_event = threading.Event()
        self.samples: list[CpuSample] = []

    def _sample(self) -> None:
        registry = process_cpu_seconds(self._registry_pid)
        self.samples.append(CpuSample(at=time.time(), busy_s=machine_busy_seconds(), registry_s=registry))

    def run(self) -> None:
        self._sample()
        while not self._stop_event.wait(self._interval):
            self._sample()
        self._sample()

    def stop(self) -> list[CpuSample]:
        self._stop_event.set()
        self.join(timeout=5)
        return self.samples


def _at(samples: Sequence[CpuSample], when: float, value: str) -> float | None:
    """``value`` (busy_s or registry_s) at ``when``, linear between the samples around it; None outside them."""
    times = [s.at for s in samples]
    i = bisect.bisect_left(times, when)
    if i == len(samples) or (i == 0 and times[0] > when):
        return None
    after = samples[i]
    if times[i] == when or i == 0:
        return getattr(after, value)  # type: ignore[no-any-return]
    before = samples[i - 1]
    a, b = getattr(before, value), getattr(after, value)
    if a is None or b is None:
        return None
    return float(a + (b - a) * (when - before.at) / (after.at - before.at))


def window(samples: Sequence[CpuSample], *, start: float, end: float, min_window: float = MIN_WINDOW_S) -> WindowCpu | None:
    """The machine's busy cores and the registry's CPU seconds from ``start`` to ``end`` (wall clock), or None
    when the window is too short to say, or the samples do not cover it."""
    if end - start < min_window or len(samples) < 2:
        return None
    busy0, busy1 = _at(samples, start, "busy_s"), _at(samples, end, "busy_s")
    if busy0 is None or busy1 is None:
        return None
    reg0, reg1 = _at(samples, start, "registry_s"), _at(samples, end, "registry_s")
    registry = reg1 - reg0 if reg0 is not None and reg1 is not None and reg1 >= reg0 else None
    return WindowCpu(cores=max(0.0, busy1 - busy0) / (end - start), registry_cpu_s=registry)
