"""The checkpoint answer's per-container fields added after the first agents: present when known, absent otherwise,
so that an agent and a control service of different ages still understand each other."""

from __future__ import annotations

import json

from agentapi.contract import CheckpointResponse, ContainerCheckpoint, ContainerTimings
from ocicheckpoint.criuimages import Inspection, Process, Totals

OLD_AGENT_ITEM = {
    "name": "app",
    "image": "r.example/ckpt/ns/pod@sha256:" + "a" * 64,
    "digest": "sha256:" + "a" * 64,
    "base_image": "r.example/app@sha256:" + "b" * 64,
    "archive_bytes": 1024,
    "image_bytes": 2048,
    "timings": {"checkpoint_s": 0.5, "push_s": 0.25},
}


def _inspection() -> dict:
    shell = Process(pid=1, ppid=0, pgid=1, sid=1, comm="sh", threads=1, state="alive", vma_bytes=8192, pages_bytes=4096)
    return Inspection(processes=(shell,), totals=Totals(processes=1, threads=1, vma_bytes=8192, pages_bytes=4096)).to_json()


def test_a_checkpoint_with_an_inspection_and_the_criu_version_round_trips() -> None:
    item = ContainerCheckpoint(
        name="app",
        image=OLD_AGENT_ITEM["image"],
        digest=OLD_AGENT_ITEM["digest"],
        base_image=OLD_AGENT_ITEM["base_image"],
        archive_bytes=1024,
        image_bytes=2048,
        timings=ContainerTimings(checkpoint_s=0.5, push_s=0.25),
        inspection=_inspection(),
        criu_version="4.2.1",
    )
    wire = json.loads(json.dumps(item.to_json()))
    assert wire == {**OLD_AGENT_ITEM, "inspection": _inspection(), "criu_version": "4.2.1"}
    assert ContainerCheckpoint.from_json(wire) == item
    assert Inspection.from_json(ContainerCheckpoint.from_json(wire).inspection).processes[0].comm == "sh"
    response = CheckpointResponse(frozen=True, containers=(item,))
    assert CheckpointResponse.from_json(json.loads(json.dumps(response.to_json()))).containers == (item,)


def test_an_old_agents_answer_parses_and_a_new_one_without_them_looks_old() -> None:
    parsed = ContainerCheckpoint.from_json(OLD_AGENT_ITEM)
    assert (parsed.inspection, parsed.criu_version) == (None, "")
    assert parsed.to_json() == OLD_AGENT_ITEM, "nothing added that an old control service would not expect"
    odd = ContainerCheckpoint.from_json({**OLD_AGENT_ITEM, "inspection": ["not", "an", "object"], "criu_version": None})
    assert (odd.inspection, odd.criu_version) == (None, "")
