"""bench/__main__.py without a cluster: the new options, and ``python -m bench history``."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import history
from bench.__main__ import _drain_reference, _history_run, main, parse_args
from bench.results import MigrationRun, SizeResult
from tests.bench.test_history import _history


def test_history_and_drain_options() -> None:
    args = parse_args([])
    assert args.history == history.DEFAULT_PATH and args.no_history is False
    assert (args.drain_pods, args.drain_concurrency, args.drain_mib) == (4, 2, 64)
    args = parse_args(["--no-history", "--drain-pods", "0", "--history", "/tmp/h.jsonl"])
    assert args.no_history and args.drain_pods == 0 and args.history == Path("/tmp/h.jsonl")
    for bad in (["--drain-concurrency", "0"], ["--drain-concurrency", "21"], ["--drain-pods", "-1"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_warm_start_options() -> None:
    args = parse_args([])
    assert (args.warmstart_pods, args.warmstart_warmup) == (2, 10.0), "on by default: 1 -> 3 replicas, 10 s of warm-up"
    args = parse_args(["--warmstart-pods", "0"])
    assert args.warmstart_pods == 0, "0 leaves the row out"
    args = parse_args(["--warmstart-pods", "4", "--warmstart-warmup", "2.5"])
    assert (args.warmstart_pods, args.warmstart_warmup) == (4, 2.5)
    for bad in (["--warmstart-pods", "-1"], ["--warmstart-pods", "11"], ["--warmstart-warmup", "-1"], ["--warmstart-pods", "x"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_the_history_records_the_warm_start_arguments() -> None:
    args = parse_args(["--warmstart-pods", "3", "--warmstart-warmup", "5"])
    meta = {"started": "2026-11-30T14:00:00+00:00", "commit": "abc", "kernel": "6.18", "criu": "4.2.1", "loadavg_start": 0.5}
    run = _history_run(args, ["--warmstart-pods", "3", "--warmstart-warmup", "5"], meta)
    assert run["args"]["warmstart_pods"] == 3 and run["args"]["warmstart_warmup"] == 5.0


def test_drain_reference_is_the_same_size_row() -> None:
    rows = [
        SizeResult(size_mib=64, migrations=[MigrationRun(total_s=3.0), MigrationRun(total_s=5.0), MigrationRun(total_s=None)]),
        SizeResult(size_mib=256, migrations=[MigrationRun(total_s=9.0)]),
    ]
    assert _drain_reference(rows, 64) == 4.0
    assert _drain_reference(rows, 128) is None


def test_history_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "history.jsonl"
    assert main(["history", "--file", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "no recorded runs"
    history.append(path, _history(2.0, 2.5, 3.0))
    assert main(["history", "--file", str(path), "--last", "2"]) == 0
    out = capsys.readouterr().out
    assert "64MiB: 2 of 3 recorded run(s)" in out and "latest/previous" in out
    assert main(["history", "--file", str(path), "--markdown"]) == 0
    assert capsys.readouterr().out.startswith("One `make bench` run, on one machine: commit `c2`")

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{history.README_START} -->\nold\n{history.README_END}\nrest\n")
    assert main(["history", "--file", str(path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{history.README_END}\nrest\n")
    assert "commit `c2`" in text and "old" not in text
    readme.write_text("no markers\n")
    assert main(["history", "--file", str(path), "--readme", str(readme)]) == 1
    assert readme.read_text() == "no markers\n"
    assert main(["history", "--file", str(tmp_path / "none.jsonl"), "--readme", str(readme)]) == 1
