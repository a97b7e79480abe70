"""The words both renderers print about a timeline: which migration, where to, how it ended, how long.

The model holds numbers and states, not prose; the renderers hold layout, not wording. What a
person reads (``Failed (RestoreFailed)``, ``total 3.9s so far``, ``downtime ≥2.8s (ongoing)``) is
spelled here once, so the terminal chart and the SVG say the same thing in the same words. A
renderer chooses only its glyphs (``arrow``, ``at_least``) for terminals that cannot show Unicode.
Durations and sizes are spelled by :mod:`migrator.units`, as ``kubectl migrate describe`` spells them.
"""

from __future__ import annotations

from migrator.timeline.model import Bar, DowntimeKind, Stage, Timeline
from migrator.units import NONE, format_bytes, format_duration

CONTAINER_CHARS = 20  # a container's name in a stage's label is cut to this, so one long name cannot squeeze the chart


def qualified_name(tl: Timeline) -> str:
    """``namespace/name``, or the name alone when the namespace is not known."""
    return f"{tl.namespace}/{tl.name}" if tl.namespace else tl.name


def outcome_text(tl: Timeline) -> str:
    if tl.finished:
        return f"{tl.phase} ({tl.reason})" if tl.failed and tl.reason else tl.phase
    return f"{tl.phase} (running)" if tl.bars else f"{tl.phase} (not started)"


def total_text(tl: Timeline) -> str:
    return format_duration(tl.total) + ("" if tl.finished else " so far")


def downtime_text(tl: Timeline, *, at_least: str = "≥") -> str:
    d = tl.downtime
    if d is None:
        return "none (the pod was never frozen)" if tl.finished else NONE
    if d.kind == DowntimeKind.MEASURED:
        return format_duration(d.duration)
    if d.kind == DowntimeKind.ONGOING:
        return f"{at_least}{format_duration(d.duration)} (ongoing)"
    return f"{format_duration(d.duration)} (until the rollback ended)"


def downtime_field(tl: Timeline, *, at_least: str = "≥") -> str:
    return f"downtime {downtime_text(tl, at_least=at_least)}"


def bytes_text(tl: Timeline) -> str:
    if tl.archive_bytes is None and tl.image_bytes is None:
        return "no checkpoint" if tl.finished else "no checkpoint yet"
    files = f", emptyDir files {format_bytes(tl.volume_bytes)}" if tl.volume_bytes is not None else ""
    return f"checkpoint {format_bytes(tl.archive_bytes)} (image {format_bytes(tl.image_bytes)}){files}"


def bar_duration_text(bar: Bar) -> str:
    return f"running ({format_duration(bar.duration)})" if bar.running else format_duration(bar.duration)


def stage_label(tl: Timeline, stage: Stage, *, ellipsis: str = "…") -> str:
    """``dump``, or ``dump (web)`` when the stages are of more than one container."""
    if not stage.container or len(tl.stage_containers) < 2:
        return stage.name
    name = stage.container
    if len(name) > CONTAINER_CHARS:
        name = name[: CONTAINER_CHARS - len(ellipsis)] + ellipsis
    return f"{stage.name} ({name})"


def stage_duration_text(stage: Stage) -> str:
    """``410ms``, or ``410ms, 47.0MiB`` for a stage that moved bytes (upload, fetch)."""
    size = f", {format_bytes(stage.bytes)}" if stage.bytes is not None else ""
    return format_duration(stage.duration) + size


def stage_tooltip(stage: Stage) -> str:
    """Everything a stage's record says, for a hover: what, how long, from when, where, measured by whom."""
    of = f" of {stage.container}" if stage.container else ""
    where = f" on {stage.node}" if stage.node else ""
    by = f" ({stage.source})" if stage.source else ""
    return f"{stage.phase} / {stage.name}{of}: {stage_duration_text(stage)} from +{format_duration(stage.start)}{where}{by}"


def title_fields(tl: Timeline, *, arrow: str = "→") -> list[str]:
    """Which migration, of which pod, from which node to which."""
    return [qualified_name(tl), f"pod {tl.pod}", f"{tl.source or '?'} {arrow} {tl.target or '?'}"]


def summary_fields(tl: Timeline, *, at_least: str = "≥") -> list[str]:
    """How it ended, how long it took, how long the pod was down."""
    return [outcome_text(tl), f"total {total_text(tl)}", downtime_field(tl, at_least=at_least)]


def header_fields(tl: Timeline, *, arrow: str = "→", at_least: str = "≥") -> list[str]:
    """Which migration, where from and to, how it ended, how long, how long the pod was down, what it weighed."""
    return [*title_fields(tl, arrow=arrow), *summary_fields(tl, at_least=at_least), bytes_text(tl)]
