"""The time axis both renderers draw on: where a second falls, which ticks to mark, how to label them.

A terminal chart counts in character cells and an SVG in pixels, but everything else about the
axis is the same: seconds scale linearly from the migration's start, ticks go at steps a person
reads easily, and a tick is labelled ``200ms`` or ``1m30s``. That lives here once, so the two
charts cannot drift apart; each renderer only says how wide a label is in its own units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

# Tick steps a person reads easily: 1-2-5 below a second, then seconds, minutes and hours.
_STEPS: Final = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip
_MAX_TICKS: Final = 200  # a step that would need more than this is too small to consider


def tick_label(seconds: float) -> str:
    """An axis label: ``0s``, ``200ms``, ``1.5s``, ``30s``, ``2m``, ``1m30s``, ``1h``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60}s" if whole % 60 else f"{whole // 60}m"
    return f"{whole // 3600}h{whole % 3600 // 60}m" if whole % 3600 // 60 else f"{whole // 3600}h"


@dataclass(frozen=True, kw_only=True)
class Axis:
    """``span`` seconds drawn over ``length`` units (cells or pixels), second 0 at ``origin``."""

    span: float
    length: float
    origin: float = 0.0

    @property
    def scale(self) -> float:
        """Units per second."""
        return self.length / self.span

    def at(self, seconds: float) -> float:
        """Where ``seconds`` after the start falls on the axis, in its units."""
        return self.origin + seconds * self.scale

    def ticks(self, *, measure: Callable[[str], float], gap: float) -> list[float]:
        """Tick values 0, step, 2*step, ... <= span for the smallest step whose labels keep ``gap`` units apart.

        ``measure`` is a label's width in the axis's units: characters on a terminal, pixels in an SVG.
        """
        for step in _STEPS:
            count = math.floor(self.span / step + 1e-9)
            if count > _MAX_TICKS:
                continue
            values = [round(k * step, 6) for k in range(count + 1)]
            if step * self.scale >= max(measure(tick_label(v)) for v in values) + gap:
                return values
        return [0.0]
