"""The timeline as a Gantt chart on a terminal: Unicode blocks, or plain ASCII.

Apart from the SVG because a terminal is a grid of characters: bars are whole cells (with
eighth-cell blocks in Unicode), lines must fit a given width, and in ASCII mode nothing outside
ASCII may get through, not even from an error message. A phase's stages (``status.stages``) are
rows of their own right under it, their names on a branch (``├ dump``), so the phases still read
top to bottom as before and a migration without stages draws exactly as it always did. What it says comes from
:mod:`~migrator.timeline.labels` and where things go on the time axis from
:mod:`~migrator.timeline.axis`, as for the SVG; this module only decides the cells. Pure: a
``Timeline`` in, a string out.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Final

from migrator.timeline.axis import Axis, tick_label
from migrator.timeline.labels import bar_duration_text, downtime_text, header_fields, stage_duration_text, stage_label
from migrator.timeline.model import Bar, Downtime, Stage, Timeline

DEFAULT_COLUMNS: Final = 100  # the text chart's width when stdout is not a terminal
MIN_CHART_COLUMNS: Final = 10
DOWNTIME: Final = "downtime"


@dataclass(frozen=True, kw_only=True)
class Glyphs:
    full: str
    partials: str  # 1/8 .. 7/8 of a cell, left-aligned; empty: whole cells only
    failed: str
    downtime: str
    axis: str
    axis_down: str  # the axis under the downtime
    tick: str
    tick_down: str
    error_mark: str
    running_mark: str
    error_lead: str
    arrow: str
    at_least: str
    branch: str  # before a stage's name
    last_branch: str  # before the last stage under a phase
    ellipsis: str


UNICODE: Final = Glyphs(
    full="█", partials="▏▎▍▌▋▊▉", failed="▓", downtime="█", axis="─", axis_down="━", tick="┬", tick_down="┯",
    error_mark="✗", running_mark="▶", error_lead="↳ ", arrow="→", at_least="≥", branch="├", last_branch="└",
    ellipsis="…",
)  # fmt: skip
ASCII: Final = Glyphs(
    full="#", partials="", failed="X", downtime="=", axis="-", axis_down="=", tick="+", tick_down="+",
    error_mark="!", running_mark=">", error_lead="^ ", arrow="->", at_least=">=", branch="|", last_branch="`",
    ellipsis="~",
)  # fmt: skip


def _bar_cells(start: float, end: float, *, axis: Axis, cells: int, fill: str, partials: str) -> str:
    """A bar from ``start`` to ``end`` seconds on a row of ``cells``; at least a sliver, so short phases show."""
    first = min(round(axis.at(start)), cells - 1)
    if partials:
        length = max(axis.at(end) - first, 0.0)
        whole, eighths = int(length), round((length - int(length)) * 8)
        if eighths == 8:
            whole, eighths = whole + 1, 0
        if whole == 0 and eighths == 0:
            eighths = 1
        whole = min(whole, cells - first)
        body = fill * whole + (partials[eighths - 1] if eighths and first + whole < cells else "")
    else:
        body = fill * max(min(round(axis.at(end)), cells) - first, 1)
    return (" " * first + body).ljust(cells)


def render_text(tl: Timeline, *, width: int = DEFAULT_COLUMNS, unicode: bool = True) -> str:
    """A Gantt chart: a header, one row per phase and the downtime's row on a common axis, tick labels below."""
    g = UNICODE if unicode else ASCII

    def finish(lines: list[str]) -> str:
        # Errors and messages come from elsewhere: in ASCII mode, nothing outside ASCII gets through.
        text = "\n".join(lines)
        return text if unicode else text.encode("ascii", "replace").decode("ascii")

    # The header's fields break only between fields, long messages between words, so nothing wraps mid-word.
    lines: list[str] = []
    for field in header_fields(tl, arrow=g.arrow, at_least=g.at_least):
        if lines and len(lines[-1]) + 2 + len(field) <= width:
            lines[-1] += "  " + field
        else:
            lines.append(field)
    if tl.failed and tl.message:  # as the failure line of --wait
        message = f"{tl.reason or tl.phase}: {tl.message}"
        lines += textwrap.wrap(message, width=width, subsequent_indent="  ", break_on_hyphens=False)
    if not tl.bars:
        lines.append("no phases recorded yet (the control service has not picked this migration up)")
        return finish(lines)
    drawn = tl.rows
    rows: list[tuple[str, str, Bar | Stage | Downtime]] = []
    for i, item in enumerate(drawn):
        if isinstance(item, Bar):
            rows.append((item.name, bar_duration_text(item), item))
        else:  # a stage: on a branch under its phase (the last one on the last branch)
            last = i + 1 == len(drawn) or not isinstance(drawn[i + 1], Stage)
            branch = g.last_branch if last else g.branch
            rows.append((f" {branch} {stage_label(tl, item, ellipsis=g.ellipsis)}", stage_duration_text(item), item))
    if tl.downtime:
        dt_text = downtime_text(tl, at_least=g.at_least).split(" (")[0]
        rows.append((DOWNTIME, dt_text, tl.downtime))
    gutter = 2  # a mark for failed and running phases
    label_w = gutter + max(len(name) for name, _, _ in rows) + 2
    dur_w = max(len(text) for _, text, _ in rows)
    cells = max(width - label_w - dur_w - 1, MIN_CHART_COLUMNS)
    axis = Axis(span=tl.span, length=cells)
    lines.append("")
    for name, text, item in rows:
        mark = " "
        if isinstance(item, Bar):
            mark = g.error_mark if item.error else g.running_mark if item.running else " "
            fill = g.failed if item.error else g.full
            partials = "" if item.error else g.partials
        elif isinstance(item, Stage):
            fill, partials = g.full, g.partials
        else:
            fill, partials = g.downtime, g.partials
        chart = _bar_cells(item.start, item.end, axis=axis, cells=cells, fill=fill, partials=partials)
        lines.append(f"{mark} {name.ljust(label_w - gutter)}{chart} {text.rjust(dur_w)}")
        if isinstance(item, Bar) and item.error:
            indent = " " * (label_w if width - label_w >= 40 else gutter + 2)
            lines += textwrap.wrap(
                item.error,
                width=width,
                initial_indent=indent + g.error_lead,
                subsequent_indent=indent + " " * len(g.error_lead),
                break_on_hyphens=False,
            )

    values = axis.ticks(measure=len, gap=2)  # a space between labels after rounding
    ruler = [g.axis] * cells
    if tl.downtime:
        for col in range(round(axis.at(tl.downtime.start)), min(round(axis.at(tl.downtime.end)) + 1, cells)):
            ruler[col] = g.axis_down
    labels = [" "] * (cells + dur_w + 1)
    for value in values:
        col = min(round(axis.at(value)), cells - 1)
        ruler[col] = g.tick_down if ruler[col] == g.axis_down else g.tick
        label = tick_label(value)
        labels[col : col + len(label)] = label
    lines.append(" " * label_w + "".join(ruler))
    lines.append((" " * label_w + "".join(labels)).rstrip())
    if tl.trace_id:
        lines.append(f"trace {tl.trace_id}")
    return finish(lines)
