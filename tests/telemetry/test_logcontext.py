"""Every log line names its migration and trace, in text and in JSON."""

from __future__ import annotations

import json
import logging

import pytest

from telemetry import logcontext


@pytest.mark.parametrize("json_output", [True, False])
def test_lines_carry_the_migration_and_trace(json_output: bool, capsys: pytest.CaptureFixture[str]) -> None:
    logcontext.setup_logging(json_output=json_output)
    token_m = logcontext.migration.set("default/move-app")
    token_t = logcontext.trace_id.set("0af7651916cd43dd8448eb211c80319c")
    try:
        logging.getLogger("migrator").info("step %s", "Checkpoint")
    finally:
        logcontext.migration.reset(token_m)
        logcontext.trace_id.reset(token_t)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    if json_output:
        doc = json.loads(line)
        assert doc["message"] == "step Checkpoint" and doc["migration"] == "default/move-app"
        assert doc["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and doc["level"] == "INFO"
    else:
        assert "step Checkpoint" in line and "migration=default/move-app" in line and "trace_id=0af76519" in line
