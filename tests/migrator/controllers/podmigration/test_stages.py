"""``status.stages``: records the CRD accepts, the agent's stages converted, each side replaced whole and bounded."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from agentapi import contract
from migrator.controllers.podmigration import stages

T0 = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def agent_stages(offset: float = 0.0) -> list[dict[str, Any]]:
    answer = (
        contract.StageRecord(name=contract.STAGE_FREEZE, start=at(offset).timestamp(), end=at(offset + 0.004).timestamp()),
        contract.StageRecord(name=contract.STAGE_DUMP, start=at(offset + 0.004).timestamp(), end=at(offset + 0.5).timestamp(),
                             container="app"),
        contract.StageRecord(name=contract.STAGE_UPLOAD, start=at(offset + 0.5).timestamp(), end=at(offset + 0.9).timestamp(),
                             container="app", bytes=4096),
    )  # fmt: skip
    return stages.from_agent(answer, node="node-1")


def kubelet_stages() -> list[dict[str, Any]]:
    common: dict[str, Any] = {"node": "node-2", "source": stages.SOURCE_KUBELET, "container": "app"}
    return [
        stages.stage_record(name=stages.STAGE_FETCH, start=at(3), end=at(3.3), nbytes=4096, **common),
        stages.stage_record(name=stages.STAGE_RESTORE, start=at(3.3), end=at(3.5), **common),
        stages.stage_record(name=stages.STAGE_READY, start=at(3.5), end=at(3.6), **common),
    ]


def test_the_agents_stages_become_records_in_milliseconds() -> None:
    freeze, dump, upload = agent_stages()
    assert freeze == {"name": "freeze", "node": "node-1", "start": "2026-03-01T10:00:00.000Z", "end": "2026-03-01T10:00:00.004Z",
                      "source": "agent"}  # fmt: skip
    assert dump["container"] == "app" and "bytes" not in dump
    assert upload["bytes"] == 4096 and upload["end"] == "2026-03-01T10:00:00.900Z"


def test_a_record_stays_within_the_schema() -> None:
    record = stages.stage_record(
        name="x" * 100, node="n" * 300, start=at(1), end=at(0), source=stages.SOURCE_AGENT, container="c" * 300, nbytes=-1
    )
    assert len(record["name"]) == stages.MAX_NAME and len(record["node"]) == len(record["container"]) == stages.MAX_TEXT
    assert record["end"] == record["start"], "an end before its start is taken as the start"
    assert "bytes" not in record
    unusable = contract.StageRecord(name="dump", start=float("nan"), end=1.0)
    assert stages.from_agent([unusable], node="node-1") == []


def test_recording_twice_changes_nothing() -> None:
    status: dict[str, Any] = {}
    stages.record(status, source=stages.SOURCE_AGENT, records=agent_stages())
    stages.record(status, source=stages.SOURCE_KUBELET, records=kubelet_stages())
    once = copy.deepcopy(status)
    stages.record(status, source=stages.SOURCE_AGENT, records=agent_stages())
    stages.record(status, source=stages.SOURCE_KUBELET, records=kubelet_stages())
    assert status == once
    assert [s["name"] for s in status["stages"]] == ["freeze", "dump", "upload", "fetch", "restore", "ready"]


def test_a_side_is_replaced_whole_and_the_other_kept() -> None:
    status: dict[str, Any] = {}
    stages.record(status, source=stages.SOURCE_KUBELET, records=kubelet_stages())
    stages.record(status, source=stages.SOURCE_AGENT, records=agent_stages())
    stages.record(status, source=stages.SOURCE_AGENT, records=agent_stages(offset=1.0))  # a retried checkpoint's answer
    agent = [s for s in status["stages"] if s["source"] == stages.SOURCE_AGENT]
    assert [s["start"] for s in agent] == ["2026-03-01T10:00:01.000Z", "2026-03-01T10:00:01.004Z", "2026-03-01T10:00:01.500Z"]
    assert [s for s in status["stages"] if s["source"] == stages.SOURCE_KUBELET] == kubelet_stages()
    starts = [s["start"] for s in status["stages"]]
    assert starts == sorted(starts), "kept in time order"
    stages.record(status, source=stages.SOURCE_AGENT, records=[])
    stages.record(status, source=stages.SOURCE_KUBELET, records=[])
    assert "stages" not in status, "an agent that says nothing leaves nothing"


def test_each_side_is_bounded() -> None:
    many = [
        stages.stage_record(name="dump", node="node-1", start=at(i), end=at(i + 1), source=stages.SOURCE_AGENT, container=f"c{i}")
        for i in range(stages.MAX_PER_SOURCE + 20)
    ]
    status: dict[str, Any] = {}
    stages.record(status, source=stages.SOURCE_AGENT, records=many)
    stages.record(status, source=stages.SOURCE_KUBELET, records=kubelet_stages())
    assert len(status["stages"]) == stages.MAX_PER_SOURCE + 3
    assert {s["container"] for s in status["stages"] if s["source"] == "agent"} == {f"c{i}" for i in range(stages.MAX_PER_SOURCE)}


def test_ties_keep_the_order_stages_run_in() -> None:
    status: dict[str, Any] = {}
    same = [
        stages.stage_record(name=name, node="node-2", start=at(1), end=at(1), source=stages.SOURCE_KUBELET, container="app")
        for name in ("ready", "restore", "fetch")
    ]
    stages.record(status, source=stages.SOURCE_KUBELET, records=same)
    assert [s["name"] for s in status["stages"]] == ["fetch", "restore", "ready"]
