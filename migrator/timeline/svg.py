"""The timeline as a picture: a standalone SVG, and an HTML page around it.

Apart from the terminal chart because an SVG is laid out in pixels with no font at hand: text
widths are estimated, long messages wrapped by that estimate, and everything from the API goes
through ``xml.etree`` so that every label is escaped. Colours, gridlines, the downtime band and
tooltips exist only here. What it says comes from :mod:`~migrator.timeline.labels` and where
things go on the time axis from :mod:`~migrator.timeline.axis`, as for the terminal chart. Pure:
a ``Timeline`` in, a string out. A phase's stages are thinner bars on rows of their own under it,
in shades of its colour (``class="stage"``, beside the phases' ``class="phase"``); a migration
without stages draws exactly as it always did.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any, Final

from migrator.timeline.axis import Axis, tick_label
from migrator.timeline.labels import (
    bar_duration_text,
    bytes_text,
    downtime_field,
    qualified_name,
    stage_duration_text,
    stage_label,
    stage_tooltip,
    summary_fields,
    title_fields,
)
from migrator.timeline.model import Bar, DowntimeKind, Stage, Timeline
from migrator.units import format_bytes, format_duration

DEFAULT_SVG_WIDTH: Final = 960
SVG_NS: Final = "http://www.w3.org/2000/svg"
XML_SPACE: Final = "{http://www.w3.org/XML/1998/namespace}space"

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
# Stages in shades of their phase's colour: the checkpoint's indigo, the restore's green.
STAGE_COLOURS: Final = {
    "freeze": "#a5b4fc",
    "dump": "#818cf8",
    "upload": "#4f46e5",
    "volumes": "#c7d2fe",
    "fetch": "#86efac",
    "restore": "#4ade80",
    "ready": "#15803d",
}
STAGE_INDENT: Final = 14  # a stage's name is set in from its phase's

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
    stage_h, stage_bar_h, stage_size = 20, 10, 11.5
    label_size, small = 13, 11.5
    name_w = max([text_width(b.name, label_size) * (BOLD if b.error else 1) for b in tl.bars] + [0.0])
    name_w = max([name_w] + [STAGE_INDENT + text_width(stage_label(tl, s), stage_size) for s in tl.stages])
    dur_texts = [bar_duration_text(b) for b in tl.bars] + [stage_duration_text(s) for s in tl.stages]
    dur_w = max([text_width(t, 12) for t in dur_texts] + [text_width("0s", 12)]) + 14
    chart_x0 = margin + name_w + 20
    width = max(width, round(chart_x0 + dur_w + margin + 240))
    chart_x1 = width - margin - dur_w
    axis = Axis(span=tl.span, length=chart_x1 - chart_x0, origin=chart_x0)
    x = axis.at

    svg = ET.Element("svg", {"xmlns": SVG_NS, "font-family": FONT})
    _el(svg, "title", f"Migration timeline of {qualified_name(tl)}")
    _el(svg, "rect", x=0, y=0, width="100%", height="100%", fill="#ffffff")

    # Title, outcome, and for a failure its message.
    y = 12.0
    for line in pack(title_fields(tl), separator="  ·  ", width=width - 2 * margin, size=18 * BOLD):
        y += 24
        _el(svg, "text", line, x=margin, y=y, font_size=18, font_weight="bold", fill=INK)
    colour = FAILED_RED if tl.failed else SUCCESS_GREEN if tl.finished else RUNNING_BLUE
    parts = summary_fields(tl)
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
    stage_rows: list[tuple[Stage, float]] = []  # stage, row top
    stripes: list[list[float]] = []  # per phase: its rows' top and height (its error lines and stages included)
    row_y = top
    for item in tl.rows:
        if isinstance(item, Stage):
            stage_rows.append((item, row_y))
            row_y += stage_h
            if stripes:
                stripes[-1][1] += stage_h
            continue
        bar = item
        error_x, error_lines = chart_x0, []
        if bar.error:
            # Under its bar when it fits there (or has room to wrap), else from the chart's left edge.
            message, room = f"✗ {bar.error}", chart_x1 + dur_w - x(bar.start)
            error_x = x(bar.start) if text_width(message, small) <= room or room >= 320 else chart_x0
            error_lines = wrap(message, width=chart_x1 + dur_w - error_x, size=small)
        layout.append((bar, row_y, error_x, error_lines))
        stripes.append([row_y, row_h + len(error_lines) * line_h])
        row_y += row_h + len(error_lines) * line_h
    bottom = row_y + 4
    if not tl.bars:
        _el(svg, "text", "no phases recorded yet (the control service has not picked this migration up)",
            x=chart_x0, y=top + 20, font_size=13, fill=MUTED)  # fmt: skip
        bottom = top + 36

    zebra = _el(svg, "g", id="rows")
    for i, (ry, rh) in enumerate(stripes):
        if i % 2 == 0:
            _el(zebra, "rect", x=margin - 8, y=ry, width=width - 2 * margin + 16, height=rh, fill="#f8fafc")

    # Gridlines and the axis (the band goes over the grid, under the bars).
    values = axis.ticks(measure=lambda label: text_width(label, small), gap=18)
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
        label = downtime_field(tl)
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

    if stage_rows:
        under = _el(svg, "g", id="stages")
        for stage, ry in stage_rows:
            group = _el(under, "g", class_="stage")
            _el(group, "title", stage_tooltip(stage))
            mid = ry + stage_h / 2
            _el(group, "text", stage_label(tl, stage), x=margin + STAGE_INDENT, y=mid + 4, font_size=stage_size, fill=MUTED)
            sx0, sx1 = x(stage.start), x(stage.end)
            _el(group, "rect", x=sx0, y=mid - stage_bar_h / 2, width=max(sx1 - sx0, 2.0), height=stage_bar_h, rx=2,
                fill=STAGE_COLOURS.get(stage.name, MUTED))  # fmt: skip
            _el(group, "text", stage_duration_text(stage), x=max(sx1, sx0 + 2) + 6, y=mid + 4, font_size=11, fill=MUTED)

    ruler = _el(svg, "g", id="axis", fill=MUTED, font_size=small)
    _el(ruler, "line", x1=chart_x0, y1=bottom, x2=chart_x1, y2=bottom, stroke="#9ca3af", stroke_width=1)
    if not tl.finished and tl.bars:
        _el(ruler, "line", x1=x(tl.total), y1=top - 4, x2=x(tl.total), y2=bottom, stroke=RUNNING_BLUE, stroke_width=1.5)
        _el(ruler, "text", "now", x=x(tl.total) + 4, y=bottom + 30, font_size=10.5, fill=RUNNING_BLUE)
    for value in values:
        _el(ruler, "line", x1=x(value), y1=bottom, x2=x(value), y2=bottom + 5, stroke="#9ca3af", stroke_width=1)
        _el(ruler, "text", tick_label(value), x=x(value), y=bottom + 18, text_anchor="middle")

    # Footer: trace id and what the checkpoint weighed, per container.
    y = bottom + 58
    footer = _el(svg, "g", id="footer", font_size=12, fill=MUTED)
    _el(footer, "line", x1=margin, y1=y - 18, x2=width - margin, y2=y - 18, stroke=GRID, stroke_width=1)
    _el(footer, "text", f"trace {tl.trace_id}" if tl.trace_id else "trace: none recorded", x=margin, y=y, font_family=MONO)
    items = [f"{c.name}: archive {format_bytes(c.archive_bytes)}, image {format_bytes(c.image_bytes)}" for c in tl.containers]
    summary_text = bytes_text(tl) + (" — " + "; ".join(items) if len(items) > 1 else "")
    if len(items) == 1:
        summary_text = f"checkpoint of {items[0]}"
        if tl.volume_bytes is not None:
            summary_text += f"; emptyDir files {format_bytes(tl.volume_bytes)}"
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
    title.text = f"timeline of {qualified_name(tl)}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"{ET.tostring(title, encoding='unicode')}\n"
        "<style>body{margin:24px;background:#f3f4f6}svg{max-width:100%;height:auto;background:#fff;"
        "border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12)}</style>\n"
        f"</head>\n<body>\n{svg}\n</body>\n</html>\n"
    )
