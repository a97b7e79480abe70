"""kubectl migrate timeline: the model from PodMigration status, the text chart, the SVG/HTML, and the command (no cluster)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from migrator import timeline
from migrator.cli import main
from migrator.cli.commands import Io
from migrator.timeline import DowntimeKind

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
RESTORE_ERROR = (
    "restore on node-2 failed: container db: CreateContainerError: cannot restore: "
    "bind mount /data of the original container is missing on node-2"
)


def ts(seconds: float) -> str:
    """A timestamp ``seconds`` after NOW - 10 minutes, as the controller writes it (milliseconds, Z)."""
    return (NOW - timedelta(minutes=10) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def recorded(steps: list[tuple[str, float | None, str | None]], *, at: float = 0.0) -> tuple[list[dict[str, Any]], float]:
    """Phases back to back as the controller records them; a None duration is the phase still running."""
    phases, t = [], at
    for i, (name, duration, error) in enumerate(steps):
        phase: dict[str, Any] = {"name": name, "spanID": f"{i:016x}", "start": ts(t)}
        if duration is not None:
            t += duration
            phase["end"] = ts(t)
        if error:
            phase["error"] = error
        phases.append(phase)
    return phases, t


def migration(name: str, pod: str, status: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "podmigrate.io/v1alpha1",
        "kind": "PodMigration",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "creationTimestamp": ts(0)[:19] + "Z"},
        "spec": {"podName": pod, "targetNode": "node-2", "timeoutSeconds": 300, "onFailure": "RestoreSource"},
        "status": status,
    }


def succeeded() -> dict[str, Any]:
    """As the demo's: the freeze starts with the checkpoint, Ready ends the restore; two containers."""
    phases, end = recorded(
        [("validate", 0.046, None), ("prepare-target", 1.184, None), ("checkpoint", 1.342, None), ("remove-source", 0.351, None),
         ("create-target", 0.087, None), ("restore", 0.612, None), ("cleanup", 0.233, None)]
    )  # fmt: skip
    return migration(
        "web-x7k2p",
        "web",
        {
            "phase": "Succeeded", "step": "Done", "reason": "Migrated",
            "message": "pod web moved from node-1 to node-2 with its state; downtime 2.39s",
            "sourceNode": "node-1", "targetNode": "node-2", "traceID": TRACE,
            "startTime": ts(0), "completionTime": ts(end),
            "frozenAt": phases[2]["start"], "readyAt": phases[5]["end"], "downtimeSeconds": "2.392",
            "containers": [
                {"name": "web", "image": "reg/ckpt/shop/web:pm-1", "archiveBytes": 47 * 1024**2, "imageBytes": 47 * 1024**2 + 4096},
                {"name": "sidecar", "image": "reg/ckpt/shop/web:pm-1-sidecar", "archiveBytes": 2 * 1024**2, "imageBytes": 2 * 1024**2},
            ],
            "phases": phases,
        },
    )  # fmt: skip


def failed() -> dict[str, Any]:
    """The restore on the target failed, restoring on the source too; the pod was recreated (state lost)."""
    phases, end = recorded(
        [("validate", 0.051, None), ("prepare-target", 0.95, None), ("checkpoint", 1.41, None), ("remove-source", 0.33, None),
         ("create-target", 0.09, None), ("restore", 4.2, RESTORE_ERROR),
         ("rollback-restore-on-source", 3.1, "restore on the source node failed"), ("rollback-recreate", 1.7, None)]
    )  # fmt: skip
    return migration(
        "db-q9w8e",
        "db",
        {
            "phase": "Failed", "step": "Done", "reason": "RestoreFailed",
            "message": f"{RESTORE_ERROR}; restoring on node-1 failed too; the pod was recreated from its original spec",
            "sourceNode": "node-1", "targetNode": "node-2", "traceID": "0af7651916cd43dd8448eb211c80319c",
            "startTime": ts(0), "completionTime": ts(end), "frozenAt": phases[2]["start"],
            "containers": [{"name": "db", "image": "reg/ckpt/shop/db:pm-1", "archiveBytes": 310_000_000, "imageBytes": 310_500_000}],
            "phases": phases,
        },
    )  # fmt: skip


def running() -> dict[str, Any]:
    """Still checkpointing (frozen) at NOW, 3.9 s after it started."""
    start = 600 - 3.9
    phases, _ = recorded([("validate", 0.04, None), ("prepare-target", 1.1, None), ("checkpoint", None, None)], at=start)
    return migration(
        "api-abcde",
        "api",
        {
            "phase": "Checkpointing", "step": "Checkpoint", "sourceNode": "node-1", "targetNode": "node-3",
            "traceID": "11112222333344445555666677778888", "startTime": ts(start), "frozenAt": phases[2]["start"],
            "phases": phases,
        },
    )  # fmt: skip


def refused() -> dict[str, Any]:
    """Failed in Validate: nothing was touched, never frozen."""
    phases, end = recorded([("validate", 0.02, "pod web is Pending, not Running"), ("rollback-thaw-source", 0.01, None)])
    return migration(
        "web-refused",
        "web",
        {"phase": "Failed", "step": "Done", "reason": "PodNotRunning", "message": "pod web is Pending, not Running",
         "traceID": TRACE, "startTime": ts(0), "completionTime": ts(end), "phases": phases},
    )  # fmt: skip


SAMPLES = {"succeeded": succeeded, "failed": failed, "running": running, "refused": refused}


def build(name: str) -> timeline.Timeline:
    return timeline.build(SAMPLES[name](), now=NOW)


# --- the model ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SAMPLES)
def test_phase_durations_add_up_to_the_total(name: str) -> None:
    tl = build(name)
    assert tl.bars and tl.total > 0
    assert sum(b.duration for b in tl.bars) == pytest.approx(tl.total, rel=0.05)
    for before, after in zip(tl.bars, tl.bars[1:], strict=False):
        assert after.start == pytest.approx(before.end, abs=0.002), "phases are back to back"


def test_a_succeeded_migration() -> None:
    tl = build("succeeded")
    assert [b.name for b in tl.bars] == [
        "validate", "prepare-target", "checkpoint", "remove-source", "create-target", "restore", "cleanup",
    ]  # fmt: skip
    assert (tl.pod, tl.source, tl.target, tl.phase) == ("web", "node-1", "node-2", "Succeeded")
    assert tl.finished and not tl.failed
    assert tl.total == pytest.approx(3.855, abs=0.002)
    assert tl.bars[2].start == pytest.approx(1.23) and tl.bars[2].duration == pytest.approx(1.342)
    assert tl.downtime is not None and tl.downtime.kind == DowntimeKind.MEASURED
    assert tl.downtime.start == pytest.approx(tl.bars[2].start) and tl.downtime.end == pytest.approx(tl.bars[5].end)
    assert tl.downtime.duration == pytest.approx(float(SAMPLES["succeeded"]()["status"]["downtimeSeconds"]), abs=0.001)
    assert (tl.archive_bytes, tl.image_bytes) == (49 * 1024**2, 49 * 1024**2 + 4096)
    assert not any(b.error or b.running for b in tl.bars)


def test_a_failed_migration_keeps_its_errors_and_its_frozen_time() -> None:
    tl = build("failed")
    errors = {b.name: b.error for b in tl.bars if b.error}
    assert errors == {"restore": RESTORE_ERROR, "rollback-restore-on-source": "restore on the source node failed"}
    assert (tl.phase, tl.reason, tl.failed) == ("Failed", "RestoreFailed", True)
    # No readyAt: the pod was frozen from the checkpoint until the rollback ended.
    assert tl.downtime is not None and tl.downtime.kind == DowntimeKind.UNTIL_ROLLBACK
    assert tl.downtime.end == pytest.approx(tl.total)
    assert build("refused").downtime is None


def test_a_running_migration_is_measured_up_to_now() -> None:
    tl = build("running")
    assert not tl.finished and tl.total == pytest.approx(3.9)
    assert tl.bars[-1].running and tl.bars[-1].duration == pytest.approx(3.9 - 1.14)
    assert tl.downtime is not None and tl.downtime.kind == DowntimeKind.ONGOING and tl.downtime.end == pytest.approx(3.9)
    assert tl.archive_bytes is None


def test_a_pending_migration_has_no_bars() -> None:
    obj = migration("new-1", "web", {})
    tl = timeline.build(obj, now=NOW)
    assert (tl.bars, tl.total, tl.downtime, tl.phase) == ((), 0.0, None, "Pending")
    assert "no phases recorded yet" in timeline.render_text(tl, unicode=False)
    ET.fromstring(timeline.render_svg(tl))


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(0, "0s"), (0.2, "200ms"), (1, "1s"), (1.5, "1.5s"), (30, "30s"), (120, "2m"), (90, "1m30s"), (3600, "1h")],
)
def test_tick_labels(seconds: float, label: str) -> None:
    assert timeline.tick_label(seconds) == label


# --- text -----------------------------------------------------------------------------------
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
        assert ("█" if unicode else "=") in row and row.rstrip().endswith(timeline.format_duration(tl.downtime.duration))
    else:
        assert "downtime" not in rows
    header = "\n".join(text.split("\n\n")[0].splitlines())
    arrow = "→" if unicode else "->"
    for part in (f"{tl.namespace}/{tl.name}", f"pod {tl.pod}", f"total {timeline.format_duration(tl.total)}", "downtime "):
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


# --- SVG and HTML ---------------------------------------------------------------------------
def parse(document: str) -> ET.Element:
    return ET.fromstring(document.encode())


@pytest.mark.parametrize("name", SAMPLES)
def test_svg_is_a_standalone_chart(name: str) -> None:
    tl = build(name)
    root = parse(timeline.render_svg(tl))
    assert root.tag == f"{SVG}svg"
    width, height = int(root.get("width", "0")), int(root.get("height", "0"))
    assert width == timeline.DEFAULT_SVG_WIDTH and height > 100 and root.get("viewBox") == f"0 0 {width} {height}"
    phases = [g for g in root.iter(f"{SVG}g") if (g.get("class") or "").startswith("phase")]
    assert len(phases) == len(tl.bars)
    for bar, group in zip(tl.bars, phases, strict=True):
        assert len(group.findall(f"{SVG}rect")) == 1
        texts = [t.text for t in group.iter(f"{SVG}text")]
        assert bar.name in texts and timeline.bar_duration_text(bar) in texts
        fill = group.find(f"{SVG}rect").get("fill")  # type: ignore[union-attr]
        assert (fill == timeline.FAILED_RED) == bool(bar.error), (bar.name, fill)
    band = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "downtime-band"]
    assert len(band) == (1 if tl.downtime else 0)
    words = " ".join(t.text or "" for t in root.iter(f"{SVG}text")) + " ".join(s.text or "" for s in root.iter(f"{SVG}tspan"))
    assert f"{tl.namespace}/{tl.name}" in words and "0s" in words
    assert f"trace {tl.trace_id}" in words
    if tl.downtime:
        assert f"downtime {timeline.downtime_text(tl)}" in words


def test_svg_bars_sit_on_the_time_axis() -> None:
    tl = build("succeeded")
    root = parse(timeline.render_svg(tl, width=1200))
    assert root.get("width") == "1200"
    rects = [g.find(f"{SVG}rect") for g in root.iter(f"{SVG}g") if (g.get("class") or "").startswith("phase")]
    xs = [(float(r.get("x", "0")), float(r.get("width", "0"))) for r in rects if r is not None]
    scale = (xs[-1][0] + xs[-1][1] - xs[0][0]) / tl.total
    for (x, w), bar in zip(xs, tl.bars, strict=True):
        assert x == pytest.approx(xs[0][0] + bar.start * scale, abs=0.2)
        assert w == pytest.approx(max(bar.duration * scale, 2.0), abs=0.2)
    band = next(r for r in root.iter(f"{SVG}rect") if r.get("class") == "downtime-band")
    assert float(band.get("x", "0")) == pytest.approx(xs[2][0], abs=0.2), "the band starts with the checkpoint (the freeze)"
    words = [t.text for t in root.iter(f"{SVG}text")]
    assert "frozen" in words and "ready" in words
    assert any("web: archive 47.0MiB, image 47.0MiB" in (w or "") for w in words)


def test_svg_escapes_what_it_is_given() -> None:
    obj = succeeded()
    obj["status"]["phases"][1]["error"] = 'kubelet said <script>alert("x")</script> & \x01left'
    obj["metadata"]["name"] = "web-<&>"
    root = parse(timeline.render_svg(timeline.build(obj, now=NOW)))
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert '<script>alert("x")</script> &' in texts and "\x01" not in texts


def test_html_wraps_the_svg() -> None:
    page = timeline.render_html(build("failed"))
    assert page.startswith("<!DOCTYPE html>") and "<title>timeline of shop/db-q9w8e</title>" in page
    svg = page[page.index("<svg") : page.index("</svg>") + len("</svg>")]
    assert parse(svg).tag == f"{SVG}svg" and "<?xml" not in page


# --- the command, through a fake API layer --------------------------------------------------
class FakeApi:
    """The part of the ``Api`` protocol the command uses, over dicts (as in test_cli)."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.default_namespace = "shop"
        self.migrations = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}

    async def read_migration(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        return self.migrations.get((namespace, name))


class Terminal(io.StringIO):
    """stdout as a UTF-8 terminal."""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def isatty(self) -> bool:
        return True


def run_cli(fake: FakeApi, *argv: str, out: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = out or io.StringIO(), io.StringIO()

    @asynccontextmanager
    async def connect(*, kubeconfig: str | None, context: str | None) -> AsyncIterator[FakeApi]:
        yield fake

    code = main(list(argv), connect=connect, io=Io(out=out, err=err, now=lambda: NOW))
    return code, out.getvalue(), err.getvalue()


def world() -> FakeApi:
    return FakeApi(succeeded(), failed(), running())


def test_unknown_name_is_one_line_and_exit_1() -> None:
    code, out, err = run_cli(world(), "timeline", "nope")
    assert (code, out, err) == (1, "", 'error: podmigration "nope" not found in namespace "shop"\n')
    code, out, err = run_cli(world(), "timeline", "web-x7k2p", "-n", "other", "-o", "svg")
    assert (code, out, err) == (1, "", 'error: podmigration "web-x7k2p" not found in namespace "other"\n')


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["timeline"], "required: NAME"),
        (["timeline", "web-x7k2p", "-o", "pdf"], "invalid choice: 'pdf'"),
        (["timeline", "web-x7k2p", "--width", "0"], 'invalid width "0": must be positive'),
        (["timeline", "web-x7k2p", "--width", "wide"], 'invalid width "wide"'),
    ],
)
def test_usage_errors_are_one_line_and_exit_1(argv: list[str], fragment: str) -> None:
    code, out, err = run_cli(world(), *argv)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err


def test_text_on_stdout_is_ascii_unless_it_is_a_utf8_terminal() -> None:
    code, out, err = run_cli(world(), "timeline", "pmig/web-x7k2p")
    assert (code, err) == (0, "") and out.isascii() and "node-1 -> node-2" in out and "#" in out
    assert max(len(line) for line in out.splitlines()[1:]) <= timeline.DEFAULT_COLUMNS
    code, out, _ = run_cli(world(), "timeline", "web-x7k2p", out=Terminal())
    assert code == 0 and "node-1 → node-2" in out and "█" in out
    code, out, _ = run_cli(world(), "timeline", "web-x7k2p", "--ascii", "--width", "60", out=Terminal())
    assert code == 0 and out.isascii() and max(len(line) for line in out.splitlines()[2:-1]) <= 60


def test_a_failed_or_running_migration_is_drawn_with_exit_0() -> None:
    code, out, _ = run_cli(world(), "timeline", "db-q9w8e")
    assert code == 0 and "Failed (RestoreFailed)" in out and f"^ {RESTORE_ERROR}" in " ".join(out.split())
    code, out, _ = run_cli(world(), "timeline", "api-abcde")
    assert code == 0 and "> checkpoint" in out and "running (2.8s)" in out


def test_svg_and_html_go_to_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(world(), "timeline", "web-x7k2p", "-o", "svg")
    assert (code, out, err) == (0, "podmigration.podmigrate.io/web-x7k2p timeline written to web-x7k2p-timeline.svg\n", "")
    root = ET.parse(tmp_path / "web-x7k2p-timeline.svg").getroot()
    assert root.tag == f"{SVG}svg" and root.get("width") == "960"
    code, out, _ = run_cli(
        world(), "timeline", "db-q9w8e", "--output", "html", "--file", str(tmp_path / "db.html"), "--width", "1200"
    )
    assert code == 0 and out.endswith("timeline written to " + str(tmp_path / "db.html") + "\n")
    assert (tmp_path / "db.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    code, out, _ = run_cli(world(), "timeline", "web-x7k2p", "-o", "text", "--file", "chart.txt")
    assert code == 0 and (tmp_path / "chart.txt").read_text().startswith("shop/web-x7k2p  pod web")


def test_svg_to_stdout_and_an_unwritable_file() -> None:
    code, out, _ = run_cli(world(), "timeline", "web-x7k2p", "-o", "svg", "--file", "-")
    assert code == 0 and parse(out).tag == f"{SVG}svg"
    code, out, err = run_cli(world(), "timeline", "web-x7k2p", "-o", "svg", "--file", "/nonexistent/dir/t.svg")
    assert (code, out) == (1, "")
    assert err == 'error: cannot write "/nonexistent/dir/t.svg": No such file or directory\n'


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_cli(world(), "timeline", "--help")
    usage = capsys.readouterr().out
    assert code == 0 and "--output {text,svg,html}" in usage and "--width N" in usage and "--ascii" in usage
    assert "kubectl migrate timeline" in usage
