"""kubectl migrate timeline, through a fake API layer (no cluster): text on stdout, svg/html to a file, errors."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from migrator import timeline
from migrator.cli import main
from migrator.cli.commands import Io
from tests.migrator.timeline.samples import NOW, RESTORE_ERROR, failed, running, succeeded
from tests.migrator.timeline.test_svg import SVG, parse


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
