"""The agent's HTTP API in-process: response shape, image contents, rollback, retries, spans, metrics.

The API server and kubelet are fakes; the freezer runs on a fake cgroup tree, and images are
built by ``ocicheckpoint`` and pushed by the real registry client to a fake registry.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from typing import Any

import aiohttp
import pytest
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families

from agentapi.contract import CheckpointResponse
from node_agent import publishing
from node_agent.kubelet import KubeletError
from node_agent.publishing import Publisher
from ocicheckpoint import names
from tests.node_agent.agent_fakes import NODE, container_id
from tests.node_agent.conftest import TRACE_ID, Agent


async def test_checkpoint_freezes_first_pushes_the_image_and_deletes_the_archive(agent: Agent) -> None:
    agent.kubelet.observe_frozen = lambda c: agent.state("counter", c) == "FROZEN"
    status, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body())
    assert status == 200, body
    parsed = CheckpointResponse.from_json(body)  # the contract's own parser accepts it
    assert parsed.frozen is True
    assert set(body) == {"frozen", "containers", "timings", "stages"}
    # Stages on the wall clock, in order: the freeze, the kubelet's dump, the one-pass upload.
    assert [(s.name, s.container) for s in parsed.stages] == [("freeze", ""), ("dump", "counter"), ("upload", "counter")]
    assert all(s.start <= s.end for s in parsed.stages)
    assert parsed.stages[0].end <= parsed.stages[1].start <= parsed.stages[1].end <= parsed.stages[2].start
    (item,) = body["containers"]
    # No "inspection": the fake kubelet's archive has no CRIU images to describe (tests/node_agent/test_agent_criuimages.py).
    assert set(item) == {"name", "image", "digest", "base_image", "archive_bytes", "image_bytes", "timings", "criu_version"}
    assert item["criu_version"] == "4.1.1"
    assert set(item["timings"]) == {"checkpoint_s", "push_s"}
    assert item["name"] == "counter"
    assert re.fullmatch(rf"{re.escape(agent.registry_host)}/ckpt/default/counter@sha256:[0-9a-f]{{64}}", item["image"])
    assert item["image"].endswith("@" + item["digest"])
    assert item["base_image"] == "127.0.0.1:5313/podmigrate/counter@sha256:" + "b" * 64

    # Frozen before the kubelet was called, still frozen now; the archive is gone.
    assert agent.kubelet.frozen_during_call == {"counter": True}
    assert agent.state("counter", "counter") == "FROZEN"
    assert list(agent.archives_dir.iterdir()) == []

    # The image: an OCI manifest with the checkpoint annotations, the archive as its only layer.
    manifest = json.loads(agent.registry.manifests[item["digest"]])
    assert agent.registry.tags["ckpt/default/counter:t1"] == item["digest"]
    assert manifest["mediaType"] == names.MEDIA_TYPE_OCI_MANIFEST
    assert manifest["annotations"][names.ANNOTATION_CRIO_CHECKPOINT_NAME] == "counter"
    assert manifest["annotations"][names.ANNOTATION_POD] == "counter"
    assert manifest["annotations"][names.ANNOTATION_CRIU_VERSION] == "4.1.1"
    assert manifest["annotations"][names.ANNOTATION_RUNTIME] == "runc"
    (layer,) = manifest["layers"]
    archive_bytes = agent.registry.blobs[layer["digest"]]
    assert layer["digest"] == "sha256:" + hashlib.sha256(archive_bytes).hexdigest()
    assert layer["size"] == item["archive_bytes"] == len(archive_bytes)
    assert parsed.stages[2].bytes == layer["size"]
    # Streamed: one POST, one PATCH with the bytes, the closing PUT naming the digest; no blob HEAD first.
    uploads = [r for r in agent.registry.requests if "/blobs/uploads/" in r]
    assert [r.split()[0] for r in uploads][:3] == ["POST", "PATCH", "PUT"]
    config = json.loads(agent.registry.blobs[manifest["config"]["digest"]])
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]
    assert item["image_bytes"] == layer["size"] + manifest["config"]["size"] + len(agent.registry.manifests[item["digest"]])

    status, frozen = await agent.call("GET", "/v1/frozen?namespace=default&pod=counter")
    assert (status, frozen) == (200, {"frozen": True, "containers": {"counter": "FROZEN"}})


async def test_spans_continue_the_callers_trace(agent: Agent) -> None:
    status, _ = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body())
    assert status == 200
    spans = {s.name: s for s in agent.spans.get_finished_spans()}
    assert set(spans) >= {"agent.checkpoint", "agent.freeze", "kubelet.checkpoint", "registry.push"}
    root = spans["agent.checkpoint"]
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert f"{root.parent.span_id:016x}" == "00f067aa0ba902b7"
    for name in ("agent.freeze", "kubelet.checkpoint", "registry.push"):
        assert spans[name].parent.span_id == root.context.span_id, name
    assert spans["kubelet.checkpoint"].attributes["container"] == "counter"
    assert spans["kubelet.checkpoint"].attributes["node"] == NODE
    push = spans["registry.push"].attributes
    assert push["bytes"] > 0
    assert push["digest"].startswith("sha256:")
    assert push["throughput"] > 0
    assert push["diff_id"].startswith("sha256:")
    assert push["layer.digest"].startswith("sha256:")


async def test_every_container_is_frozen_before_the_first_checkpoint(agent: Agent) -> None:
    agent.kubelet.observe_frozen = lambda _c: all(agent.state("pair", c) == "FROZEN" for c in ("app", "sidecar"))
    status, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body("pair"))
    assert status == 200, body
    assert agent.kubelet.frozen_during_call == {"app": True, "sidecar": True}
    assert [c["name"] for c in body["containers"]] == ["app", "sidecar"]
    assert sorted(agent.registry.tags) == ["ckpt/default/pair:t1-app", "ckpt/default/pair:t1-sidecar"]  # one tag per container
    assert list(agent.archives_dir.iterdir()) == []


async def test_kubelet_failure_is_502_and_undoes_everything(agent: Agent) -> None:
    agent.kubelet.fail["sidecar"] = KubeletError(
        "kubelet answered 500: checkpointing of default/pair/sidecar failed: boom", status=500
    )
    agent.kubelet.delay_before_failure = 0.5  # "app" is pushed by then
    status, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body("pair"))
    assert status == 502
    assert body == {"error": "kubelet answered 500: checkpointing of default/pair/sidecar failed: boom", "stage": "checkpoint"}
    assert agent.state("pair", "app") == agent.state("pair", "sidecar") == "THAWED"
    assert list(agent.archives_dir.iterdir()) == []
    assert any(r.startswith("PUT /v2/ckpt/default/pair/manifests/t1-app") for r in agent.registry.requests)
    assert agent.registry.manifests == {}  # "app" was pushed, then deleted again
    assert agent.metrics.checkpoints.value(outcome="checkpoint_failed") == 1
    assert agent.metrics.thaws.value(reason="rollback") == 2
    failed = [
        s for s in agent.spans.get_finished_spans() if s.name == "kubelet.checkpoint" and s.status.status_code == StatusCode.ERROR
    ]
    assert [s.attributes["container"] for s in failed] == ["sidecar"]


async def test_kubelet_404_is_404(agent: Agent) -> None:
    agent.kubelet.fail["counter"] = KubeletError('kubelet answered 404: container "counter" not found', status=404)
    status, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body())
    assert (status, body["stage"]) == (404, "checkpoint")
    assert agent.state("counter", "counter") == "THAWED"


async def test_not_running_container_leaves_the_pod_thawed(agent: Agent) -> None:
    agent.kubelet.fail["done"] = KubeletError("kubelet answered 500: container is not running", status=500)
    status, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body("halfdone", containers=["done"]))
    assert status == 502
    assert "container is not running" in body["error"]
    assert agent.state("halfdone", "runner") == "THAWED"


async def test_registry_down_is_500_push_and_undoes_everything(agent: Agent) -> None:
    agent.registry.fail = [500] * 20
    status, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body())
    assert (status, body["stage"]) == (500, "push")
    assert "HTTP 500" in body["error"]
    assert agent.state("counter", "counter") == "THAWED"
    assert list(agent.archives_dir.iterdir()) == []
    # bounded: the look at what the tag names (node_agent.tags), four attempts of the first step, then give up
    assert len(agent.registry.requests) == 1 + 4


async def test_transient_registry_errors_are_retried(agent: Agent) -> None:
    agent.registry.fail = [503, 502]
    status, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body())
    assert status == 200, body
    assert body["containers"][0]["digest"] in agent.registry.manifests


async def test_registry_client_errors_are_not_retried(agent: Agent) -> None:
    agent.registry.fail = [404, 403]  # the tag names nothing yet; then the push is refused
    status, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body())
    assert (status, body["stage"]) == (500, "push")
    assert len(agent.registry.requests) == 2


@pytest.mark.parametrize(
    ("pod", "extra", "status", "text"),
    [
        ("nope", {}, 404, 'pod "default/nope" not found'),
        ("counter", {"containers": ["ghost"]}, 404, 'container "ghost" not found'),
        ("elsewhere", {}, 409, 'runs on node "node-2"'),
        ("pending", {}, 409, "is Pending, not Running"),
    ],
)
async def test_refusals_happen_before_any_freeze(agent: Agent, pod: str, extra: dict, status: int, text: str) -> None:
    got, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body(pod, **extra))
    assert got == status
    assert text in body["error"]
    assert agent.kubelet.calls == []
    assert agent.state("counter", "counter") == "THAWED"
    assert agent.metrics.checkpoints.value(outcome="rejected") == 1


@pytest.mark.parametrize(
    "body",
    [
        {"namespace": "default", "pod": "counter", "tag": "t1"},
        {"namespace": "default", "pod": "counter", "image_repository": "no-registry", "tag": "t1"},
        {"namespace": "default", "pod": "counter", "image_repository": "r:5000/x:tagged", "tag": "t1"},
        {"namespace": "default", "pod": "counter", "image_repository": "r:5000/x", "tag": "bad tag"},
        {"namespace": "Default", "pod": "counter", "image_repository": "r:5000/x", "tag": "t1"},
        {"namespace": "default", "pod": "counter", "image_repository": "r:5000/x", "tag": "t1", "containers": []},
        {"namespace": "default", "pod": "counter", "image_repository": "r:5000/x", "tag": "t1", "freeze": "yes"},
        {"namespace": "default", "pod": "counter", "image_repository": "r:5000/x", "tag": "t1", "timeout_seconds": 0},
        [],
    ],
)
async def test_bad_bodies_are_400(agent: Agent, body: object) -> None:
    # A repository under the agent's checkpoint repository, so that what is wrong is only what each body breaks.
    body = json.loads(json.dumps(body).replace('"r:5000/x', f'"{agent.registry_host}/ckpt/default/counter'))
    status, answer = await agent.call("POST", "/v1/checkpoint", body)
    assert status == 400
    assert "error" in answer
    assert agent.kubelet.calls == []


async def test_an_already_frozen_pod_stays_frozen_after_a_failure(agent: Agent) -> None:
    cgroup = agent.cgroups[container_id("counter", "counter")]
    (cgroup / "freezer.state").write_text("FROZEN")  # frozen by an earlier request
    agent.kubelet.fail["counter"] = KubeletError("kubelet answered 500: boom", status=500)
    status, _ = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body())
    assert status == 502
    assert agent.state("counter", "counter") == "FROZEN"


async def test_without_freeze_the_pod_keeps_running(agent: Agent) -> None:
    status, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body(freeze=False))
    assert status == 200
    assert body["frozen"] is False
    assert agent.state("counter", "counter") == "THAWED"
    assert not any(s.name == "agent.freeze" for s in agent.spans.get_finished_spans())


async def test_thaw_is_idempotent(agent: Agent) -> None:
    assert (await agent.call("POST", "/v1/thaw", {"namespace": "default", "pod": "counter"})) == (
        200,
        {"frozen": False, "thawed": []},
    )
    assert (await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body()))[0] == 200
    assert (await agent.call("POST", "/v1/thaw", {"namespace": "default", "pod": "counter"})) == (
        200,
        {"frozen": False, "thawed": ["counter"]},
    )
    assert agent.state("counter", "counter") == "THAWED"
    assert (await agent.call("GET", "/v1/frozen?namespace=default&pod=counter"))[1]["frozen"] is False
    assert (await agent.call("POST", "/v1/thaw", {"namespace": "default", "pod": "nope"}))[0] == 404
    assert (await agent.call("GET", "/v1/frozen?namespace=default&pod=nope"))[0] == 404
    assert (await agent.call("GET", "/v1/frozen?namespace=default"))[0] == 400


async def test_delete_image(agent: Agent) -> None:
    _, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body())
    image = body["containers"][0]["image"]
    assert await agent.call("DELETE", "/v1/images", {"image": image}) == (200, {"deleted": True})
    assert agent.registry.manifests == {}
    status, answer = await agent.call("DELETE", "/v1/images", {"image": image})
    assert (status, answer["deleted"]) == (404, False)
    assert (await agent.call("DELETE", "/v1/images", {"image": agent.checkpoint_body()["image_repository"]}))[0] == 400


async def test_an_image_whose_digest_the_caller_never_got_is_deleted_by_its_tag(agent: Agent) -> None:
    """A caller whose checkpoint call timed out knows the tag it asked for, not the digest: that is enough."""
    _, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body())
    digest = body["containers"][0]["digest"]
    repository = agent.checkpoint_body()["image_repository"]
    by_tag = f"{repository}:t1"
    assert await agent.call("DELETE", "/v1/images", {"image": by_tag}) == (200, {"deleted": True})
    assert digest not in agent.registry.manifests
    status, answer = await agent.call("DELETE", "/v1/images", {"image": by_tag})
    assert (status, answer["deleted"]) == (404, False), "nothing under the tag any more: not found, as for a digest"
    status, _ = await agent.call("DELETE", "/v1/images", {"image": f"{repository}:never-pushed"})
    assert status == 404


async def test_a_retry_the_agent_no_longer_remembers_replaces_the_image_and_deletes_the_one_it_superseded(
    agent: Agent,
) -> None:
    """The same request id after the agent forgot it (restarted, or past its memory): a second push under the tag.

    The first image is then named by nobody (the caller never recorded it): the agent deletes it, so
    one image of that checkpoint is left in the registry, the one answered.
    """
    body = agent.checkpoint_body("pair", request_id="pm-uid-forgot", volumes=[])
    status, first = await agent.call("POST", "/v1/checkpoint", body)
    assert status == 200, first
    agent.checkpointer._requests.clear()  # what a restarted agent knows of it: nothing
    agent.kubelet.extra_bytes += 4096  # (the pod's memory, as a second checkpoint sees it)
    status, second = await agent.call("POST", "/v1/checkpoint", body)
    assert status == 200, second
    old = {c["digest"] for c in first["containers"]}
    new = {c["digest"] for c in second["containers"]}
    assert old.isdisjoint(new), "checkpointed again: new images"
    assert set(agent.registry.manifests) == new, "the superseded images are deleted, the answered ones kept"
    assert agent.metrics.superseded_images.value(outcome="deleted") == 2


async def test_an_image_pushed_again_unchanged_under_its_tag_is_kept(agent: Agent) -> None:
    body = agent.checkpoint_body(request_id="pm-uid-same")
    _, first = await agent.call("POST", "/v1/checkpoint", body)
    agent.checkpointer._requests.clear()
    _, second = await agent.call("POST", "/v1/checkpoint", body)  # the same memory, the same image: nothing superseded
    assert second["containers"][0]["digest"] == first["containers"][0]["digest"]
    assert first["containers"][0]["digest"] in agent.registry.manifests
    assert agent.metrics.superseded_images.value(outcome="deleted") == 0


async def test_metrics_and_healthz(agent: Agent) -> None:
    await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body())
    assert (await agent.client.get("/healthz")).status == 200
    resp = await agent.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    samples = {
        (x.name, tuple(sorted(x.labels.items()))): x.value for f in text_string_to_metric_families(text) for x in f.samples
    }
    assert samples[("podmigrate_agent_checkpoints_total", (("outcome", "success"),))] == 1
    assert samples[("podmigrate_agent_checkpoint_duration_seconds_count", (("phase", "checkpoint"),))] == 1
    assert samples[("podmigrate_agent_checkpoint_duration_seconds_bucket", (("le", "+Inf"), ("phase", "total")))] == 1
    assert samples[("podmigrate_agent_pushed_bytes_total", ())] > 0
    assert 0 < samples[("process_resident_memory_bytes", ())] <= samples[("process_resident_memory_peak_bytes", ())]


async def test_a_retry_with_the_same_request_id_joins_the_checkpoint_instead_of_pushing_again(agent: Agent) -> None:
    calls_before = len(agent.kubelet.calls)
    body = agent.checkpoint_body(request_id="pm-uid-1")
    (s1, first), (s2, second) = await asyncio.gather(
        agent.call("POST", "/v1/checkpoint", body), agent.call("POST", "/v1/checkpoint", body)
    )
    assert s1 == s2 == 200 and first == second, "the second call (a retry) got the first call's answer"
    assert len(agent.kubelet.calls) - calls_before == 1, "one kubelet checkpoint, one push"
    s3, third = await agent.call("POST", "/v1/checkpoint", body)
    assert (s3, third["containers"]) == (200, first["containers"]), "answered again after it finished"
    status, clash = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body("pair", request_id="pm-uid-1"))
    assert status == 409 and "used for another checkpoint" in clash["error"]


async def test_a_failed_checkpoint_is_forgotten_so_a_retry_starts_afresh(agent: Agent) -> None:
    agent.registry.fail = [500] * 8  # every push attempt of the first call fails
    body = agent.checkpoint_body(request_id="pm-uid-2")
    status, _ = await agent.call("POST", "/v1/checkpoint", body)
    assert status == 500 and agent.state("counter", "counter") == "THAWED"
    agent.registry.fail = []
    status, answer = await agent.call("POST", "/v1/checkpoint", body)
    assert status == 200 and answer["frozen"] is True


async def test_a_freeze_nobody_renews_is_thawed_and_the_pod_is_then_never_killed(agent: Agent) -> None:
    status, _ = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body(freeze_lease_seconds=5))
    assert status == 200 and agent.state("counter", "counter") == "FROZEN"
    leases = agent.leases
    assert (await agent.call("POST", "/v1/freeze-lease", {"namespace": "default", "pod": "counter", "seconds": 5})) == (
        200, {"seconds": 5},
    )  # fmt: skip
    leases.clock.now += 4.9
    assert await agent.checkpointer.expire_leases() == [], "renewed: still within its lease"
    leases.clock.now += 0.2
    assert await agent.checkpointer.expire_leases() == ["default/counter"]
    assert agent.state("counter", "counter") == "THAWED", "it runs on where it was"
    status, body = await agent.call("POST", "/v1/kill", {"namespace": "default", "pod": "counter"})
    assert status == 409 and "lapsed" in body["error"], "it ran since its checkpoint: never killed as a migrated source"
    status, body = await agent.call("POST", "/v1/freeze-lease", {"namespace": "default", "pod": "counter", "seconds": 5})
    assert status == 409 and "lapsed" in body["error"]


async def test_a_thaw_or_a_kill_ends_the_lease(agent: Agent) -> None:
    status, _ = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body(freeze_lease_seconds=5))
    assert status == 200
    assert (await agent.call("POST", "/v1/kill", {"namespace": "default", "pod": "counter"}))[0] == 200
    agent.leases.clock.now += 10
    assert await agent.checkpointer.expire_leases() == []
    status, _ = await agent.call("POST", "/v1/freeze-lease", {"namespace": "default", "pod": "counter", "seconds": 5})
    assert status == 404, "no lease any more"


async def test_a_push_outside_the_checkpoint_repository_is_refused_before_any_work(agent: Agent) -> None:
    body = agent.checkpoint_body()
    body["image_repository"] = "127.0.0.1:9/ckpt/default/counter"  # another registry: where memory must not go
    status, answer = await agent.call("POST", "/v1/checkpoint", body)
    assert status == 403 and "checkpoint repository" in answer["error"]
    assert agent.kubelet.calls == []


async def test_a_registry_that_cannot_be_reached_is_said_in_one_plain_line() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.get("http://127.0.0.1:9/v2/")  # nothing listens on port 9 (discard)
    message = publishing.describe(caught.value)
    assert message.startswith("cannot connect to the registry at 127.0.0.1:9: ")
    assert "ConnectionKey" not in message and "\n" not in message


async def test_a_checkpoint_the_caller_gave_up_on_is_undone_in_flight_or_its_images_deleted_after(agent: Agent) -> None:
    agent.kubelet.delay = 5.0
    body = agent.checkpoint_body(request_id="pm-gave-up")
    call = asyncio.create_task(agent.call("POST", "/v1/checkpoint", body))
    await asyncio.sleep(0.3)  # frozen, the kubelet working
    assert agent.state("counter", "counter") == "FROZEN"
    assert await agent.call("DELETE", "/v1/checkpoint", {"request_id": "pm-gave-up"}) == (200, {"aborted": True, "deleted": []})
    status, answer = await call
    assert (status, answer["error"]) == (409, "the checkpoint was aborted (DELETE /v1/checkpoint) and undone")
    assert agent.state("counter", "counter") == "THAWED", "undone like any failure"
    assert agent.registry.manifests == {}

    agent.kubelet.delay = 0.0
    status, done = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body(request_id="pm-late"))
    assert status == 200
    status, answer = await agent.call("DELETE", "/v1/checkpoint", {"request_id": "pm-late"})
    assert (status, answer["aborted"], answer["deleted"]) == (200, False, [done["containers"][0]["image"]])
    assert agent.registry.manifests == {}, "the finished checkpoint's images are gone (nobody will use them)"
    assert agent.state("counter", "counter") == "FROZEN", "the pod is left as it was, for the caller's thaw"


async def test_a_periodic_sweep_deletes_old_leftovers_but_never_an_archive_a_request_still_pushes(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushing, gate = asyncio.Event(), asyncio.Event()
    push = Publisher.push_streamed

    async def held_push(self: Publisher, **kwargs: Any) -> Any:
        pushing.set()
        await gate.wait()
        return await push(self, **kwargs)

    monkeypatch.setattr(Publisher, "push_streamed", held_push)
    leftover = agent.archives_dir / "checkpoint-gone_default-app-2026-11-30T10:19:34Z.tar"
    leftover.write_bytes(b"memory of a pod whose checkpoint nobody finished")
    call = asyncio.create_task(agent.call("POST", "/v1/checkpoint", agent.checkpoint_body()))
    await pushing.wait()
    (in_flight,) = agent.kubelet.archives
    for path in (leftover, in_flight):
        os.utime(path, (time.time() - 3600, time.time() - 3600))  # both older than the bound

    assert await agent.checkpointer.sweep_archives(agent.archives_dir, older_than_s=900, when="periodic") == [leftover]
    assert in_flight.exists(), "its request still packs and pushes it"
    assert agent.metrics.archives_swept.value(when="periodic") == 1
    gate.set()
    status, body = await call
    assert status == 200, body
    assert list(agent.archives_dir.iterdir()) == [], "deleted by its request once pushed"
    assert await agent.checkpointer.sweep_archives(agent.archives_dir, older_than_s=0, when="start") == []
