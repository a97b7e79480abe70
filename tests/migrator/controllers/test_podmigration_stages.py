"""``status.stages`` as the reconciler writes it: the agent's checkpoint stages, the target kubelet's restore stages.

Driven like ``test_podmigration``: pass by pass against the in-memory API, the fake node agents
(here answering with stages, as the streamed agent does) and Events posted as a target node's
kubelet would post them. What a restarted control service does again (a step run twice) must
leave one copy of each stage, never two.
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime, timedelta
from typing import Any

import pytest

from agentapi import contract
from migrator import timeline
from migrator.units import status_time
from tests.fakekube import make_pod, through_webhook
from tests.migrator.controllers.test_podmigration import NS, World, replacement, replicaset_pod


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    return World(monkeypatch)


def answering_with_stages(world: World, monkeypatch: pytest.MonkeyPatch, *, took: float = 0.4) -> None:
    """The agents answer a checkpoint with its stages (freeze, dump, upload), timed on the clock, which moves on meanwhile."""
    checkpoint = world.agents.checkpoint

    async def timed(**kwargs: Any) -> contract.CheckpointResponse:
        begun = world.clock().timestamp()
        world.clock.advance(took)
        response = await checkpoint(**kwargs)
        marks = [begun, begun + 0.002, begun + took * 0.6, begun + took]
        answer = [contract.StageRecord(name=contract.STAGE_FREEZE, start=marks[0], end=marks[1])]
        for c in response.containers:
            answer += [
                contract.StageRecord(name=contract.STAGE_DUMP, start=marks[1], end=marks[2], container=c.name),
                contract.StageRecord(name=contract.STAGE_UPLOAD, start=marks[2], end=marks[3], container=c.name,
                                     bytes=c.image_bytes),
            ]  # fmt: skip
        return dataclasses.replace(response, stages=tuple(answer))

    monkeypatch.setattr(world.agents, "checkpoint", timed)


def whole(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


async def standin_says(world: World, pod_name: str, reason: str, message: str) -> None:
    """An Event on the pod as the stand-in node records it: eventTime in microseconds, now."""
    pod = world.kube.pods[(NS, pod_name)]
    when = world.clock()
    body = {
        "metadata": {"generateName": f"{pod_name}."}, "reason": reason, "message": message, "type": "Normal",
        "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": NS, "uid": pod["metadata"]["uid"]},
        "source": {"component": "kubelet", "host": pod["spec"]["nodeName"]}, "eventTime": when.isoformat(),
        "firstTimestamp": whole(when), "lastTimestamp": whole(when), "count": 1,
    }  # fmt: skip
    await world.kube.create_namespaced_event(NS, body)


async def kubelet_says(world: World, pod_name: str, reason: str, message: str, *, container: str = "app") -> None:
    """An Event on the pod as the real kubelet records it: whole seconds, the container in fieldPath."""
    pod = world.kube.pods[(NS, pod_name)]
    when = world.clock()
    body = {
        "metadata": {"generateName": f"{pod_name}."}, "reason": reason, "message": message, "type": "Normal",
        "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": NS, "uid": pod["metadata"]["uid"],
                           "fieldPath": f"spec.containers{{{container}}}"},
        "source": {"component": "kubelet", "host": pod["spec"]["nodeName"]},
        "firstTimestamp": whole(when), "lastTimestamp": whole(when), "count": 1,
    }  # fmt: skip
    await world.kube.create_namespaced_event(NS, body)


def by_name(status: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in status.get("stages") or [] if s["source"] == source}


def assert_in_time_order(status: dict[str, Any]) -> None:
    """Checkpoint stages before restore stages, each side in the order it runs, all inside the migration."""
    start, end = status_time(status["startTime"]), status_time(status["completionTime"])
    records = status["stages"]
    for r in records:
        assert start <= status_time(r["start"]) <= status_time(r["end"]) <= end, r
    agent, kubelet = by_name(status, "agent"), by_name(status, "kubelet")
    assert [status_time(agent[n]["start"]) for n in ("freeze", "dump", "upload")] == sorted(
        status_time(agent[n]["start"]) for n in ("freeze", "dump", "upload")
    )
    chain = [kubelet["fetch"]["start"], kubelet["fetch"]["end"], kubelet["restore"]["end"], kubelet["ready"]["end"]]
    assert [status_time(t) for t in chain] == sorted(status_time(t) for t in chain)
    assert kubelet["restore"]["start"] == kubelet["fetch"]["end"] and kubelet["ready"]["start"] == kubelet["restore"]["end"]
    assert max(status_time(r["end"]) for r in agent.values()) <= status_time(kubelet["fetch"]["start"])
    assert kubelet["ready"]["end"] == status["readyAt"], "ready ends when the downtime does"


async def test_a_bare_pod_on_stand_in_nodes_records_every_stage_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    answering_with_stages(world, monkeypatch)
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    s = world.status(name)
    agent = by_name(s, "agent")
    assert list(agent) == ["freeze", "dump", "upload"] and all(r["node"] == "node-1" for r in agent.values())
    assert agent["upload"]["container"] == "app" and agent["upload"]["bytes"] == s["containers"][0]["imageBytes"]
    assert "container" not in agent["freeze"]
    assert by_name(s, "kubelet") == {}, "nothing of the restore yet"

    # The stand-in pulls the checkpoint image, restores the container, the pod turns Ready.
    image = world.kube.pods[(NS, "web")]["spec"]["containers"][0]["image"]
    world.clock.advance(0.3)
    await standin_says(world, "web", "Pulled", f'Container image "{image}" present: sha256:{"c" * 64}')
    world.clock.advance(0.2)
    await standin_says(world, "web", "Restored", f"Restored container app from checkpoint sha256:{'c' * 64}")
    world.clock.advance(0.1)
    pulled_at, restored_at = world.clock() - timedelta(seconds=0.3), world.clock() - timedelta(seconds=0.1)
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert s["phase"] == "Succeeded"
    kubelet = by_name(s, "kubelet")
    assert list(kubelet) == ["fetch", "restore", "ready"]
    assert all(r["container"] == "app" and r["node"] == "node-2" for r in kubelet.values())
    ms = timedelta(milliseconds=1)
    assert status_time(kubelet["fetch"]["end"]) == pytest.approx(pulled_at, abs=ms), "exact on the stand-in"
    assert status_time(kubelet["restore"]["end"]) == pytest.approx(restored_at, abs=ms)
    assert kubelet["fetch"]["bytes"] == s["containers"][0]["imageBytes"], "the image pushed is the image fetched"
    assert_in_time_order(s)

    # The timeline draws them under their phases.
    tl = timeline.build(world.kube.migrations[(NS, name)], now=world.clock())
    assert [(st.phase, st.name) for st in tl.stages] == [
        ("checkpoint", "freeze"), ("checkpoint", "dump"), ("checkpoint", "upload"),
        ("restore", "fetch"), ("restore", "restore"), ("restore", "ready"),
    ]  # fmt: skip


async def test_running_a_step_again_leaves_one_copy_of_each_stage(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    answering_with_stages(world, monkeypatch)
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]
    # Checkpoint runs again over a status that already holds its stages (as a restarted control service could find it).
    saved: list[dict[str, Any]] = []

    async def keep_the_saved_object() -> None:
        saved.append(copy.deepcopy(world.kube.migrations[(NS, name)]))

    world.agents.during_checkpoint = keep_the_saved_object
    await world.reconcile(name)
    first = copy.deepcopy(world.status(name)["stages"])
    assert saved[0]["status"]["step"] == "Checkpoint"
    world.kube.migrations[(NS, name)]["status"] = {**saved[0]["status"], "stages": first}
    source = make_pod("web")  # the source again, as it was then
    source["metadata"]["uid"] = saved[0]["status"]["podUID"]
    world.kube.add_pod(source)
    world.agents.frozen.clear()
    await world.reconcile(name)
    assert len(saved) == 2, "the checkpoint ran again"
    again = world.status(name)["stages"]
    assert [r["name"] for r in again] == ["freeze", "dump", "upload"], "replaced, not added to"
    assert again != first, "the second answer's times"

    # Ready, and WaitReady's pass runs twice: the restore's stages once.
    await world.reconcile(name)
    image = world.kube.pods[(NS, "web")]["spec"]["containers"][0]["image"]
    world.clock.advance(0.3)
    await standin_says(world, "web", "Pulled", f'Container image "{image}" present: sha256:{"c" * 64}')
    await standin_says(world, "web", "Restored", f"Restored container app from checkpoint sha256:{'c' * 64}")
    world.kubelet.start(NS, "web")
    waiting = copy.deepcopy(world.kube.migrations[(NS, name)])
    assert waiting["status"]["step"] == "WaitReady"
    assert await world.reconcile(name) is None
    recorded = copy.deepcopy(world.status(name)["stages"])
    world.kube.migrations[(NS, name)]["status"] = {**waiting["status"], "stages": recorded}
    assert await world.reconcile(name) is None
    assert [r["name"] for r in world.status(name)["stages"]] == ["freeze", "dump", "upload", "fetch", "restore", "ready"]


async def test_a_replicaset_pod_on_a_real_kubelet(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    answering_with_stages(world, monkeypatch)
    world.kube.add_pod(replicaset_pod())
    name = world.migrate("web-7d9-abcde", targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]
    await world.reconcile(name)
    await world.reconcile(name)
    world.clock.advance(0.25)
    pod, _ = await through_webhook(replacement(), kube=world.kube, namespace=NS)
    created = (await world.kube.create_namespaced_pod(NS, pod)).metadata.name
    world.clock.advance(0.3)
    await world.reconcile(name)  # the control service sees it
    image = world.kube.pods[(NS, created)]["spec"]["containers"][0]["image"]
    await kubelet_says(world, created, "Pulling", f'Pulling image "{image}"')
    world.clock.advance(0.7)
    message = f'Successfully pulled image "{image}" in 612ms (650ms including waiting). Image size: 9000 bytes.'
    await kubelet_says(world, created, "Pulled", message)
    await kubelet_says(world, created, "Created", "Created container: app")
    world.clock.advance(0.4)
    await kubelet_says(world, created, "Started", "Started container app")
    world.kubelet.start(NS, created)
    world.clock.advance(0.2)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert s["phase"] == "Succeeded"
    kubelet = by_name(s, "kubelet")
    assert kubelet["fetch"]["bytes"] == 9000, "the kubelet's measured size"
    assert_in_time_order(s)


async def test_without_stages_from_the_agent_or_events_from_the_kubelet_none_are_recorded(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert s["phase"] == "Succeeded" and "stages" not in s
    assert timeline.build(world.kube.migrations[(NS, name)], now=world.clock()).stages == ()
