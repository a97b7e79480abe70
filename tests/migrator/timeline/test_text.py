"""The terminal Gantt chart: every phase with its duration, the downtime row, errors, widths, ASCII."""

from __future__ import annotations

import re

import pytest

from migrator import timeline
from migrator.units import format_duration
from tests.migrator.timeline.samples import NOW, RESTORE_ERROR, SAMPLES, TRACE, build, single_staged


def chart_rows(text: str) -> dict[str, str]:
    """The chart's rows (phases and downtime) by name: from the blank line after the header to the axis."""
    lines = text.splitlines()
    block = lines[lines.index("") + 1 :]
    block = block[: next(i for i, line in enumerate(block) if line.strip()[:1] in ("┬", "+"))]
    return {line[2:].split()[0]: line for line in block if line[:2].strip() in ("", "✗", "▶", "!", ">")}


@pytest.mark.parametrize("unicode", [True, False])
@pytest.mark.parametrize("name", SAMPLES)
def test_text_has_every_phase_with_its_duration_and_a_downtime_row(name: str, unicode: bool) -> None:
    tl = build(name)
    text = timeline.render_text(tl, width=100, unicode=unicode)
    rows = chart_rows(text)
    for bar in tl.bars:
        assert bar.name in rows, f"{bar.name} missing:\n{text}"
        assert rows[bar.name].rstrip().endswith(timeline.bar_duration_text(bar)), rows[bar.name]
    if tl.downtime:
        row = rows["downtime"]
        assert ("█" if unicode else "=") in row and row.rstrip().endswith(format_duration(tl.downtime.duration))
    else:
        assert "downtime" not in rows
    header = "\n".join(text.split("\n\n")[0].splitlines())
    arrow = "→" if unicode else "->"
    for part in (f"{tl.namespace}/{tl.name}", f"pod {tl.pod}", f"total {format_duration(tl.total)}", "downtime "):
        assert part in header, header
    if tl.source:
        assert f"{tl.source} {arrow} {tl.target}" in header
    assert tl.phase in header
    assert "0s" in text.splitlines()[-2 if tl.trace_id else -1].split()


def test_text_header_and_rows_of_a_succeeded_migration() -> None:
    header = "shop/web-x7k2p  pod web  node-1 → node-2  Succeeded  total 3.9s  downtime 2.4s  checkpoint 49.0MiB (image 49.0MiB)"
    assert timeline.render_text(build("succeeded"), width=120, unicode=True).splitlines()[0] == header
    text = timeline.render_text(build("succeeded"), width=100, unicode=True)
    lines = text.splitlines()
    assert lines[:3] == [header.removesuffix("  checkpoint 49.0MiB (image 49.0MiB)"), "checkpoint 49.0MiB (image 49.0MiB)", ""]
    rows = chart_rows(text)
    assert rows["checkpoint"].endswith(" 1.3s") and rows["validate"].endswith(" 46ms") and rows["restore"].endswith(" 612ms")
    # The downtime row starts where the checkpoint (the freeze) starts, and the axis is heavy from there.
    start = rows["checkpoint"].index("█")
    assert rows["downtime"].index("█") == start
    axis = next(line for line in lines if "┬" in line)
    assert axis[start] in "━┯" and axis[start - 2] in "─┬"
    assert lines[-1] == f"trace {TRACE}"
    assert lines[-2].split()[:3] == ["0s", "500ms", "1s"]


def test_text_marks_errors_on_the_phase_row() -> None:
    for unicode, mark, lead in ((True, "✗", "↳"), (False, "!", "^")):
        lines = timeline.render_text(build("failed"), width=100, unicode=unicode).splitlines()
        restore = next(i for i, line in enumerate(lines) if line[2:].startswith("restore "))
        assert lines[restore].startswith(f"{mark} restore")
        # The error under the row, wrapped between words with a hanging indent under the chart.
        column = lines[restore + 1].index(lead)
        assert column > len("rollback-restore-on-source")
        error = [lines[restore + 1]]
        error += [line for line in lines[restore + 2 : restore + 6] if line[: column + 2].isspace()]
        assert len(error) > 1 and all(len(line) <= 100 for line in error)
        assert lines[restore + 1 + len(error)].startswith(f"{mark} rollback-restore-on-source")
        assert " ".join(line.strip() for line in error) == f"{lead} {RESTORE_ERROR}"
        head = text_before_chart = "\n".join(lines[: lines.index("")])
        assert "Failed (RestoreFailed)" in head and "RestoreFailed: restore on node-2 failed" in text_before_chart


def test_a_running_phase_says_so() -> None:
    text = timeline.render_text(build("running"), width=100, unicode=True)
    row = chart_rows(text)["checkpoint"]
    assert row.startswith("▶ checkpoint") and row.endswith("running (2.8s)")
    assert "total 3.9s so far" in text and "downtime ≥2.8s (ongoing)" in text


@pytest.mark.parametrize("width", [50, 80, 100, 160])
@pytest.mark.parametrize("name", SAMPLES)
def test_every_line_fits_the_width(name: str, width: int) -> None:
    text = timeline.render_text(build(name), width=width, unicode=True)
    assert all(len(line) <= width for line in text.splitlines()), text


@pytest.mark.parametrize("name", SAMPLES)
def test_ascii_mode_has_no_non_ascii_characters(name: str) -> None:
    obj = SAMPLES[name]()
    obj["status"]["phases"][0]["error"] = "état → échec"  # messages from elsewhere may not be ASCII
    text = timeline.render_text(timeline.build(obj, now=NOW), width=90, unicode=False)
    assert text.isascii(), [ch for ch in text if not ch.isascii()]
    assert "#" in text


def test_the_emptydir_files_that_moved_count_in_the_header() -> None:
    obj = timeline.build(
        {**SAMPLES["succeeded"](), "status": {**SAMPLES["succeeded"]()["status"], "volumeData": {"dataBytes": 3 << 20}}},
        now=NOW,
    )
    assert obj.volume_bytes == 3 << 20
    first = timeline.render_text(obj, width=160, unicode=True).splitlines()[0]
    assert first.endswith("checkpoint 49.0MiB (image 49.0MiB), emptyDir files 3.0MiB")


def stage_rows(text: str) -> list[str]:
    """The chart's stage rows, top to bottom: a branch glyph where a phase's name would start."""
    return [line for line in text.splitlines() if line[3:4] in ("├", "└", "|", "`") and line[:3] == "   "]


def bar_end(row: str) -> int:
    """The column of a row's last bar cell (whole or partial)."""
    return max(i for i, ch in enumerate(row) if ch in "█▏▎▍▌▋▊▉")


def test_stages_are_rows_under_their_phase() -> None:
    tl = timeline.build(single_staged(), now=NOW)
    text = timeline.render_text(tl, width=100, unicode=True)
    lines = text.splitlines()
    checkpoint = next(i for i, line in enumerate(lines) if line.startswith("  checkpoint "))
    assert [line.split()[:2] for line in lines[checkpoint + 1 : checkpoint + 4]] == [
        ["├", "freeze"],
        ["├", "dump"],
        ["└", "upload"],
    ]
    assert lines[checkpoint + 4].startswith("  remove-source ")
    restore = next(i for i, line in enumerate(lines) if line.startswith("  restore "))
    assert [line.split()[:2] for line in lines[restore + 1 : restore + 4]] == [["├", "fetch"], ["├", "restore"], ["└", "ready"]]
    assert lines[restore + 1].endswith(" 295ms, 47.0MiB") and lines[restore + 3].endswith(" 72ms")
    # On the same axis as the phases: the dump starts with the checkpoint (24ms in, the freeze's 4ms before it), the
    # ready stage ends with the restore phase (at readyAt).
    assert abs(lines[checkpoint + 2].index("█") - lines[checkpoint].index("█")) <= 1
    assert abs(bar_end(lines[restore + 3]) - bar_end(lines[restore])) <= 1
    ascii_text = timeline.render_text(tl, width=100, unicode=False)
    assert [row.split()[:2] for row in stage_rows(ascii_text)] == [
        ["|", "freeze"], ["|", "dump"], ["`", "upload"], ["|", "fetch"], ["|", "restore"], ["`", "ready"],
    ]  # fmt: skip


def test_the_stages_of_several_containers_name_them() -> None:
    obj = SAMPLES["staged"]()
    obj["status"]["stages"][1]["container"] = "a-container-with-a-very-long-name"
    for unicode, cut in ((True, "a-container-with-a-…"), (False, "a-container-with-a-~")):
        text = timeline.render_text(timeline.build(obj, now=NOW), width=110, unicode=unicode)
        labels = [re.split(r"\s{2,}", row.strip())[0][2:] for row in stage_rows(text)]
        assert labels[:3] == ["freeze", f"dump ({cut})", "dump (sidecar)"]
        assert "upload (web)" in labels and "ready (sidecar)" in labels


def test_a_migration_without_stages_draws_as_before() -> None:
    """As the chart was before stages existed: no stage row, the same text with an empty list."""
    for name in ("succeeded", "failed", "running", "refused"):
        text = timeline.render_text(build(name), width=100, unicode=True)
        assert stage_rows(text) == []
    obj = SAMPLES["succeeded"]()
    obj["status"]["stages"] = []
    assert timeline.render_text(timeline.build(obj, now=NOW)) == timeline.render_text(build("succeeded"))
