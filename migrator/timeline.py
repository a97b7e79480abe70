"""One PodMigration's phases on a time axis: the model, a terminal Gantt chart, an SVG and an HTML page.

``build`` turns a PodMigration (the dict the API returns) into a ``Timeline``: pure, no I/O,
``now`` passed in for a migration that is still running. The controller records its phases
back to back (each one starts when the previous one ends, the first at ``startTime``, the last
ends at ``completionTime``), so the bars tile the whole migration; the downtime is the
``frozenAt`` -> ``readyAt`` interval, which spans several phases (checkpoint to restore).

The renderers are pure too: ``render_text`` (Unicode blocks or ASCII), ``render_svg`` (a
standalone SVG built with ``xml.etree``, so every label is escaped) and ``render_html``.
Durations and sizes are spelled as ``kubectl migrate describe`` spells them; the helpers are
repeated here (and tested equal) so that this module does not import the CLI package.
"""

from __future__ import annotations

import math
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from migrator import api
from migrator.units import NONE, format_bytes, format_duration, parse_time

DEFAULT_COLUMNS: Final = 100  # the text chart's width when stdout is not a terminal
DEFAULT_SVG_WIDTH: Final = 960
MIN_CHART_COLUMNS: Final = 10
SVG_NS: Final = "http://www.w3.org/2000/svg"
XML_SPACE: Final = "{http://www.w3.org/XML/1998/namespace}space"
DOWNTIME: Final = "downtime"

# Tick steps a person reads easily: 1-2-5 below a second, then seconds, minutes and hours.
_STEPS: Final = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip


# --- values ---------------------------------------------------------------------------------
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


def ticks(span: float, *, fits: Callable[[float, Sequence[str]], bool]) -> list[float]:
    """Tick values 0, step, 2*step, ... <= span for the smallest readable step ``fits(step, labels)`` accepts."""
    for step in _STEPS:
        count = math.floor(span / step + 1e-9)
        if count > 200:
            continue
        values = [round(k * step, 6) for k in range(count + 1)]
        if fits(step, [tick_label(v) for v in values]):
            return values
    return [0.0]


def clean(value: Any) -> str:
    """Text from the API on one line, without the control characters XML cannot carry."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in str(value)).split())


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


# --- the model ------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Bar:
    """One phase: where it starts on the migration's clock, how long it took, how it ended."""

    name: str
    start: float  # seconds after the migration started
    duration: float
    error: str | None = None
    running: bool = False  # not ended yet: measured up to ``now``

    @property
    def end(self) -> float:
        return self.start + self.duration


class DowntimeKind(StrEnum):
    MEASURED = "measured"  # frozenAt -> readyAt: the pod served again on the target
    ONGOING = "ongoing"  # frozen and not Ready yet: up to now
    UNTIL_ROLLBACK = "until-rollback"  # Failed after the freeze: no readyAt, frozen until the rollback ended


@dataclass(frozen=True, kw_only=True)
class Downtime:
    start: float
    duration: float
    kind: DowntimeKind

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True, kw_only=True)
class ContainerBytes:
    name: str
    archive_bytes: int | None
    image_bytes: int | None


@dataclass(frozen=True, kw_only=True)
class Timeline:
    name: str
    namespace: str
    pod: str
    source: str | None
    target: str | None
    phase: str  # status.phase: Succeeded, Failed, or where a running one is
    reason: str | None
    message: str | None
    trace_id: str | None
    started: datetime | None
    total: float  # startTime -> completionTime (or now while running)
    bars: tuple[Bar, ...]
    downtime: Downtime | None
    containers: tuple[ContainerBytes, ...]

    @property
    def finished(self) -> bool:
        return self.phase in api.TERMINAL_PHASES

    @property
    def failed(self) -> bool:
        return self.phase == api.Phase.FAILED

    @property
    def span(self) -> float:
        """The length of the time axis: the total, or more if a bar or the downtime reaches further."""
        ends = [self.total, *(b.end for b in self.bars)]
        if self.downtime:
            ends.append(self.downtime.end)
        return max(max(ends), 0.001)

    @property
    def archive_bytes(self) -> int | None:
        counts = [c.archive_bytes for c in self.containers if c.archive_bytes is not None]
        return sum(counts) if counts else None

    @property
    def image_bytes(self) -> int | None:
        counts = [c.image_bytes for c in self.containers if c.image_bytes is not None]
        return sum(counts) if counts else None


def _optional(value: Any) -> str | None:
    return clean(value) if value else None


def _bar(record: Mapping[str, Any], start: datetime, *, origin: datetime, stop: datetime | None, finished: bool) -> Bar:
    end = parse_time(record.get("end"))
    return Bar(
        name=clean(record.get("name") or NONE),
        start=max((start - origin).total_seconds(), 0.0),
        duration=max(((end or stop or start) - start).total_seconds(), 0.0),
        error=_optional(record.get("error")),
        running=end is None and not finished,
    )


def build(obj: Mapping[str, Any], *, now: datetime) -> Timeline:
    """The timeline of one PodMigration as the API returns it; ``now`` ends what is still running."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    phase = clean(status.get("phase") or api.Phase.PENDING.value)
    finished = phase in api.TERMINAL_PHASES
    records = [(p, start) for p in status.get("phases") or [] if (start := parse_time(p.get("start")))]
    origin = parse_time(status.get("startTime")) or (records[0][1] if records else None)
    # A finished migration's clock stops at completionTime (or its last phase's end); a running one's is now.
    last_end = parse_time(records[-1][0].get("end")) if records else None
    stop = (parse_time(status.get("completionTime")) or last_end) if finished else now
    bars = tuple(_bar(record, start, origin=origin, stop=stop, finished=finished) for record, start in records) if origin else ()
    downtime = None
    frozen, ready = parse_time(status.get("frozenAt")), parse_time(status.get("readyAt"))
    if frozen and origin:
        if ready:
            kind, until = DowntimeKind.MEASURED, ready
        elif not finished:
            kind, until = DowntimeKind.ONGOING, now
        else:
            kind, until = DowntimeKind.UNTIL_ROLLBACK, stop or frozen
        downtime = Downtime(
            start=max((frozen - origin).total_seconds(), 0.0), duration=max((until - frozen).total_seconds(), 0.0), kind=kind
        )
    containers = tuple(
        ContainerBytes(
            name=clean(c.get("name") or NONE), archive_bytes=_int(c.get("archiveBytes")), image_bytes=_int(c.get("imageBytes"))
        )
        for c in status.get("containers") or []
    )
    return Timeline(
        name=clean(meta.get("name") or NONE),
        namespace=clean(meta.get("namespace") or ""),
        pod=clean(spec.get("podName") or NONE),
        source=_optional(status.get("sourceNode")),
        target=_optional(status.get("targetNode") or spec.get("targetNode")),
        phase=phase,
        reason=_optional(status.get("reason")),
        message=_optional(status.get("message")),
        trace_id=_optional(status.get("traceID")),
        started=origin,
        total=max(((stop or origin) - origin).total_seconds(), 0.0) if origin else 0.0,
        bars=bars,
        downtime=downtime,
        containers=containers,
    )


# --- words shared by the renderers ----------------------------------------------------------
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


def bytes_text(tl: Timeline) -> str:
    if tl.archive_bytes is None and tl.image_bytes is None:
        return "no checkpoint" if tl.finished else "no checkpoint yet"
    return f"checkpoint {format_bytes(tl.archive_bytes)} (image {format_bytes(tl.image_bytes)})"


def bar_duration_text(bar: Bar) -> str:
    return f"running ({format_duration(bar.duration)})" if bar.running else format_duration(bar.duration)


def header_fields(tl: Timeline, *, arrow: str = "→", at_least: str = "≥") -> list[str]:
    """Which migration, where from and to, how it ended, how long, how long the pod was down, what it weighed."""
    where = f"{tl.namespace}/{tl.name}" if tl.namespace else tl.name
    return [
        where,
        f"pod {tl.pod}",
        f"{tl.source or '?'} {arrow} {tl.target or '?'}",
        outcome_text(tl),
        f"total {total_text(tl)}",
        f"downtime {downtime_text(tl, at_least=at_least)}",
        bytes_text(tl),
    ]


# --- text -----------------------------------------------------------------------------------
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


UNICODE: Final = Glyphs(
    full="█", partials="▏▎▍▌▋▊▉", failed="▓", downtime="█", axis="─", axis_down="━", tick="┬", tick_down="┯",
    error_mark="✗", running_mark="▶", error_lead="↳ ", arrow="→", at_least="≥",
)  # fmt: skip
ASCII: Final = Glyphs(
    full="#", partials="", failed="X", downtime="=", axis="-", axis_down="=", tick="+", tick_down="+",
    error_mark="!", running_mark=">", error_lead="^ ", arrow="->", at_least=">=",
)  # fmt: skip


def _bar_cells(start: float, end: float, *, scale: float, cells: int, fill: str, partials: str) -> str:
    """A bar from ``start`` to ``end`` seconds on a row of ``cells``; at least a sliver, so short phases show."""
    first = min(round(start * scale), cells - 1)
    if partials:
        length = max(end * scale - first, 0.0)
        whole, eighths = int(length), round((length - int(length)) * 8)
        if eighths == 8:
            whole, eighths = whole + 1, 0
        if whole == 0 and eighths == 0:
            eighths = 1
        whole = min(whole, cells - first)
        body = fill * whole + (partials[eighths - 1] if eighths and first + whole < cells else "")
    else:
        body = fill * max(min(round(end * scale), cells) - first, 1)
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
    rows: list[tuple[str, str, Bar | Downtime]] = [(b.name, bar_duration_text(b), b) for b in tl.bars]
    if tl.downtime:
        dt_text = downtime_text(tl, at_least=g.at_least).split(" (")[0]
        rows.append((DOWNTIME, dt_text, tl.downtime))
    gutter = 2  # a mark for failed and running phases
    label_w = gutter + max(len(name) for name, _, _ in rows) + 2
    dur_w = max(len(text) for _, text, _ in rows)
    cells = max(width - label_w - dur_w - 1, MIN_CHART_COLUMNS)
    span = tl.span
    scale = cells / span
    lines.append("")
    for name, text, item in rows:
        mark = " "
        if isinstance(item, Bar):
            mark = g.error_mark if item.error else g.running_mark if item.running else " "
            fill = g.failed if item.error else g.full
            partials = "" if item.error else g.partials
        else:
            fill, partials = g.downtime, g.partials
        chart = _bar_cells(item.start, item.end, scale=scale, cells=cells, fill=fill, partials=partials)
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

    def fits(step: float, labels: Sequence[str]) -> bool:
        return step * scale >= max(len(label) for label in labels) + 2  # a space between labels after rounding

    values = ticks(span, fits=fits)
    axis = [g.axis] * cells
    if tl.downtime:
        for col in range(round(tl.downtime.start * scale), min(round(tl.downtime.end * scale) + 1, cells)):
            axis[col] = g.axis_down
    labels = [" "] * (cells + dur_w + 1)
    for value in values:
        col = min(round(value * scale), cells - 1)
        axis[col] = g.tick_down if axis[col] == g.axis_down else g.tick
        label = tick_label(value)
        labels[col : col + len(label)] = label
    lines.append(" " * label_w + "".join(axis))
    lines.append((" " * label_w + "".join(labels)).rstrip())
    if tl.trace_id:
        lines.append(f"trace {tl.trace_id}")
    return finish(lines)


# --- SVG ------------------------------------------------------------------------------------
FONT: Final = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', Helvetica, Arial, sans-serif"
MONO: Final = "ui-monospace, 'SFMono-Regular', Menlo, 'DejaVu Sans Mono', Consolas, monospace"
INK: Final = "#1f2937"
MUTED: Final = "#6b7280"
GRID: Final = "#e5e7eb"
FAILED_RED: Final = "#dc2626"
SUCCESS_GREEN: Final = "#15803d"
RUNNING_BLUE: Final = "#2563eb"
DOWNTIME_FILL: Final = "#f59e0b"
DOWNTIME_INK: Final = "#b45309"
PHASE_COLOURS: Final = {
    "validate": "#94a3b8",
    "prepare-target": "#0ea5e9",
    "checkpoint": "#6366f1",
    "remove-source": "#a855f7",
    "create-target": "#14b8a6",
    "restore": "#22c55e",
    "cleanup": "#64748b",
    "rollback-thaw-source": "#f97316",
    "rollback-restore-on-source": "#f97316",
    "rollback-recreate": "#ea580c",
}
OTHER_COLOURS: Final = ("#0891b2", "#7c3aed", "#65a30d", "#db2777", "#0d9488")

BOLD: Final = 1.1  # bold text is about this much wider
_NARROW: Final = frozenset("iljtfr.,:;!|'()[] ")
_WIDE: Final = frozenset("mwMW@%")


def text_width(text: str, size: float) -> float:
    """A generous estimate of rendered width (wide sans fonts such as DejaVu Sans), for layout without a font."""
    units = 0.0
    for ch in text:
        if ch in _NARROW:
            units += 0.36
        elif ch in _WIDE:
            units += 0.92
        elif ch.isupper() or ch.isdigit():
            units += 0.68
        else:
            units += 0.6
    return units * size


def wrap(text: str, *, width: float, size: float) -> list[str]:
    """Words into lines no wider than ``width`` pixels (a word longer than that gets a line of its own)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and text_width(candidate, size) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def pack(parts: Sequence[str], *, separator: str, width: float, size: float) -> list[str]:
    """Parts joined by ``separator`` into lines no wider than ``width`` pixels, breaking only between parts."""
    lines: list[str] = []
    for part in parts:
        if lines and text_width(lines[-1] + separator + part, size) <= width:
            lines[-1] += separator + part
        else:
            lines.append(part)
    return lines


def phase_colour(name: str, index: int) -> str:
    if name.startswith("rollback-") and name not in PHASE_COLOURS:
        return PHASE_COLOURS["rollback-recreate"]
    return PHASE_COLOURS.get(name, OTHER_COLOURS[index % len(OTHER_COLOURS)])


def _num(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: Any) -> ET.Element:
    """A child element; ``font_size`` becomes ``font-size`` and floats are written short."""
    element = ET.SubElement(
        parent,
        tag,
        {k.rstrip("_").replace("_", "-"): _num(v) if isinstance(v, float) else str(v) for k, v in attrs.items() if v is not None},
    )
    if text is not None:
        element.text = text
    return element


def render_svg(tl: Timeline, *, width: int = DEFAULT_SVG_WIDTH) -> str:
    """A standalone SVG: title, time axis with gridlines, a bar per phase, the downtime band, trace and bytes."""
    margin, row_h, bar_h, line_h = 24, 30, 18, 15
    label_size, small = 13, 11.5
    name_w = max([text_width(b.name, label_size) * (BOLD if b.error else 1) for b in tl.bars] + [0.0])
    dur_texts = [bar_duration_text(b) for b in tl.bars]
    dur_w = max([text_width(t, 12) for t in dur_texts] + [text_width("0s", 12)]) + 14
    chart_x0 = margin + name_w + 20
    width = max(width, round(chart_x0 + dur_w + margin + 240))
    chart_x1 = width - margin - dur_w
    chart_w = chart_x1 - chart_x0
    span = tl.span
    scale = chart_w / span

    def x(seconds: float) -> float:
        return chart_x0 + seconds * scale

    svg = ET.Element("svg", {"xmlns": SVG_NS, "font-family": FONT})
    _el(svg, "title", f"Migration timeline of {tl.namespace + '/' if tl.namespace else ''}{tl.name}")
    _el(svg, "rect", x=0, y=0, width="100%", height="100%", fill="#ffffff")

    # Title, outcome, and for a failure its message.
    y = 12.0
    where = f"{tl.namespace}/{tl.name}" if tl.namespace else tl.name
    title = [where, f"pod {tl.pod}", f"{tl.source or '?'} → {tl.target or '?'}"]
    for line in pack(title, separator="  ·  ", width=width - 2 * margin, size=18 * BOLD):
        y += 24
        _el(svg, "text", line, x=margin, y=y, font_size=18, font_weight="bold", fill=INK)
    colour = FAILED_RED if tl.failed else SUCCESS_GREEN if tl.finished else RUNNING_BLUE
    parts = [outcome_text(tl), f"total {total_text(tl)}", f"downtime {downtime_text(tl)}"]
    if tl.started:
        parts.append(f"started {tl.started.strftime('%Y-%m-%d %H:%M:%S')} UTC")
    for i, line in enumerate(pack(parts, separator="   ·   ", width=width - 2 * margin, size=13.5 * BOLD)):
        y += 24 if i == 0 else 19
        summary = _el(svg, "text", x=margin, y=y, font_size=13.5, fill=INK)
        summary.set(XML_SPACE, "preserve")  # the separators' spaces
        if i == 0:  # the outcome, in its colour
            _el(summary, "tspan", parts[0], font_weight="bold", fill=colour)
            line = line.removeprefix(parts[0])
        _el(summary, "tspan", line)
    if tl.failed and tl.message:
        for line in wrap(tl.message, width=width - 2 * margin, size=12.5):
            y += 18
            _el(svg, "text", line, x=margin, y=y, font_size=12.5, fill=FAILED_RED)

    # Rows: a zebra stripe, the phase name, the bar, its duration, and under a failed bar its error.
    band_label_y = y + 34
    top = band_label_y + 10
    layout: list[tuple[Bar, float, float, list[str]]] = []  # bar, row top, error's x, error's lines
    row_y = top
    for bar in tl.bars:
        error_x, error_lines = chart_x0, []
        if bar.error:
            # Under its bar when it fits there (or has room to wrap), else from the chart's left edge.
            message, room = f"✗ {bar.error}", chart_x1 + dur_w - x(bar.start)
            error_x = x(bar.start) if text_width(message, small) <= room or room >= 320 else chart_x0
            error_lines = wrap(message, width=chart_x1 + dur_w - error_x, size=small)
        layout.append((bar, row_y, error_x, error_lines))
        row_y += row_h + len(error_lines) * line_h
    bottom = row_y + 4
    if not tl.bars:
        _el(svg, "text", "no phases recorded yet (the control service has not picked this migration up)",
            x=chart_x0, y=top + 20, font_size=13, fill=MUTED)  # fmt: skip
        bottom = top + 36

    stripes = _el(svg, "g", id="rows")
    for i, (_, ry, _, errs) in enumerate(layout):
        if i % 2 == 0:
            _el(stripes, "rect", x=margin - 8, y=ry, width=width - 2 * margin + 16, height=row_h + len(errs) * line_h,
                fill="#f8fafc")  # fmt: skip

    # Gridlines and the axis (the band goes over the grid, under the bars).
    def fits(step: float, labels: Sequence[str]) -> bool:
        return step * scale >= max(text_width(label, small) for label in labels) + 18

    values = ticks(span, fits=fits)
    grid = _el(svg, "g", id="grid", stroke=GRID, stroke_width=1)
    for value in values:
        _el(grid, "line", x1=x(value), y1=top - 4, x2=x(value), y2=bottom)
    if tl.downtime:
        d = tl.downtime
        band = _el(svg, "g", id="downtime")
        dx0, dx1 = x(d.start), max(x(d.end), x(d.start) + 2)
        _el(band, "rect", x=dx0, y=band_label_y - 16, width=dx1 - dx0, height=bottom - band_label_y + 16,
            fill=DOWNTIME_FILL, fill_opacity=0.16, class_="downtime-band")  # fmt: skip
        for edge in (dx0, dx1):
            _el(band, "line", x1=edge, y1=band_label_y - 16, x2=edge, y2=bottom, stroke=DOWNTIME_FILL, stroke_width=1.2,
                stroke_dasharray="4 3")  # fmt: skip
        label = f"downtime {downtime_text(tl)}"
        label_w = text_width(label, 12.5) * BOLD
        centre = min(max((dx0 + dx1) / 2, chart_x0 + label_w / 2), width - margin - label_w / 2)
        _el(band, "text", label, x=centre, y=band_label_y - 3, font_size=12.5, font_weight="bold", fill=DOWNTIME_INK,
            text_anchor="middle")  # fmt: skip
        for edge, word, anchor in ((dx0, "frozen", "end"), (dx1, "ready" if d.kind == DowntimeKind.MEASURED else "", "start")):
            if word:
                _el(band, "text", word, x=edge + (-4 if anchor == "end" else 4), y=bottom + 30, font_size=10.5,
                    fill=DOWNTIME_INK, text_anchor=anchor)  # fmt: skip

    bars = _el(svg, "g", id="phases")
    for i, (bar, ry, error_x, errs) in enumerate(layout):
        colour = FAILED_RED if bar.error else phase_colour(bar.name, i)
        group = _el(bars, "g", class_="phase failed" if bar.error else "phase")
        _el(group, "title", f"{bar.name}: {bar_duration_text(bar)} from +{format_duration(bar.start)}"
            + (f"\n{bar.error}" if bar.error else ""))  # fmt: skip
        mid = ry + row_h / 2
        _el(group, "text", bar.name, x=margin, y=mid + 4.5, font_size=label_size, fill=FAILED_RED if bar.error else INK,
            font_weight="bold" if bar.error else None)  # fmt: skip
        bx0, bx1 = x(bar.start), x(bar.end)
        rect = _el(group, "rect", x=bx0, y=mid - bar_h / 2, width=max(bx1 - bx0, 2.0), height=bar_h, rx=3, fill=colour)
        if bar.running:
            rect.set("fill-opacity", "0.55")
            rect.set("stroke", colour)
            rect.set("stroke-dasharray", "4 3")
        _el(group, "text", bar_duration_text(bar), x=max(bx1, bx0 + 2) + 6, y=mid + 4, font_size=12,
            fill=FAILED_RED if bar.error else INK)  # fmt: skip
        for k, line in enumerate(errs):
            _el(group, "text", line, x=error_x, y=ry + row_h + k * line_h + 6, font_size=small, fill=FAILED_RED)

    axis = _el(svg, "g", id="axis", fill=MUTED, font_size=small)
    _el(axis, "line", x1=chart_x0, y1=bottom, x2=chart_x1, y2=bottom, stroke="#9ca3af", stroke_width=1)
    if not tl.finished and tl.bars:
        _el(axis, "line", x1=x(tl.total), y1=top - 4, x2=x(tl.total), y2=bottom, stroke=RUNNING_BLUE, stroke_width=1.5)
        _el(axis, "text", "now", x=x(tl.total) + 4, y=bottom + 30, font_size=10.5, fill=RUNNING_BLUE)
    for value in values:
        _el(axis, "line", x1=x(value), y1=bottom, x2=x(value), y2=bottom + 5, stroke="#9ca3af", stroke_width=1)
        _el(axis, "text", tick_label(value), x=x(value), y=bottom + 18, text_anchor="middle")

    # Footer: trace id and what the checkpoint weighed, per container.
    y = bottom + 58
    footer = _el(svg, "g", id="footer", font_size=12, fill=MUTED)
    _el(footer, "line", x1=margin, y1=y - 18, x2=width - margin, y2=y - 18, stroke=GRID, stroke_width=1)
    _el(footer, "text", f"trace {tl.trace_id}" if tl.trace_id else "trace: none recorded", x=margin, y=y, font_family=MONO)
    items = [f"{c.name}: archive {format_bytes(c.archive_bytes)}, image {format_bytes(c.image_bytes)}" for c in tl.containers]
    summary_text = bytes_text(tl) + (" — " + "; ".join(items) if len(items) > 1 else "")
    if len(items) == 1:
        summary_text = f"checkpoint of {items[0]}"
    for line in wrap(summary_text, width=width - 2 * margin, size=12):
        y += 18
        _el(footer, "text", line, x=margin, y=y)
    height = round(y + margin)

    svg.set("width", str(width))
    svg.set("height", str(height))
    svg.set("viewBox", f"0 0 {width} {height}")
    ET.indent(svg, space="  ")
    for text in svg.iter("text"):  # indentation inside mixed text would become visible spaces
        for child in text:
            child.tail = child.tail if child.tail and child.tail.strip() else None
        if len(text) and text.text and not text.text.strip():
            text.text = None
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(svg, encoding="unicode") + "\n"


def render_html(tl: Timeline, *, width: int = DEFAULT_SVG_WIDTH) -> str:
    """A minimal page around the SVG, for a browser or an attachment."""
    svg = render_svg(tl, width=width).split("?>", 1)[1].strip()
    title = ET.Element("title")
    title.text = f"timeline of {tl.namespace + '/' if tl.namespace else ''}{tl.name}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"{ET.tostring(title, encoding='unicode')}\n"
        "<style>body{margin:24px;background:#f3f4f6}svg{max-width:100%;height:auto;background:#fff;"
        "border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12)}</style>\n"
        f"</head>\n<body>\n{svg}\n</body>\n</html>\n"
    )
