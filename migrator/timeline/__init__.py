"""One PodMigration's phases on a time axis, for ``kubectl migrate timeline``: a terminal Gantt chart, an SVG, an HTML page.

``build`` turns a PodMigration (the dict the API returns) into a ``Timeline``; ``render_text``,
``render_svg`` and ``render_html`` draw it. All of it is pure: no I/O, ``now`` passed in.

The package keeps the rules apart from the drawing, and the two drawings apart from each other:

- :mod:`~migrator.timeline.model`: the data and how it is built from a PodMigration's status (the
  phases, and the stages that split the checkpoint and the restore);
- :mod:`~migrator.timeline.axis`: the time axis both charts share (scaling, ticks, tick labels);
- :mod:`~migrator.timeline.labels`: the words both charts print (outcome, total, downtime, bytes);
- :mod:`~migrator.timeline.text`: the terminal chart (character cells, Unicode or ASCII);
- :mod:`~migrator.timeline.svg`: the SVG and the HTML page around it (pixels, colours, escaping).

Callers use the names below, as ``timeline.build(...)`` and ``timeline.render_text(...)``.
"""

from __future__ import annotations

from migrator.timeline.axis import Axis, tick_label
from migrator.timeline.labels import (
    bar_duration_text,
    bytes_text,
    downtime_text,
    header_fields,
    outcome_text,
    qualified_name,
    stage_duration_text,
    stage_label,
    stage_tooltip,
    total_text,
)
from migrator.timeline.model import Bar, ContainerBytes, Downtime, DowntimeKind, Stage, Timeline, build
from migrator.timeline.svg import DEFAULT_SVG_WIDTH, render_html, render_svg
from migrator.timeline.text import DEFAULT_COLUMNS, render_text

__all__ = [
    "DEFAULT_COLUMNS",
    "DEFAULT_SVG_WIDTH",
    "Axis",
    "Bar",
    "ContainerBytes",
    "Downtime",
    "DowntimeKind",
    "Stage",
    "Timeline",
    "bar_duration_text",
    "build",
    "bytes_text",
    "downtime_text",
    "header_fields",
    "outcome_text",
    "qualified_name",
    "render_html",
    "render_svg",
    "render_text",
    "stage_duration_text",
    "stage_label",
    "stage_tooltip",
    "tick_label",
    "total_text",
]
