"""The in-process agent the API tests drive: fakes for the API server, kubelet and registry; a real freezer on a fake cgroup tree."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from node_agent.app import AgentApi
from node_agent.auth import Caller, Decision
from node_agent.checkpointing import Checkpointer
from node_agent.freezer import CgroupFreezer
from node_agent.leases import FreezeLeases
from node_agent.metrics import AgentMetrics
from node_agent.publishing import Publisher
from node_agent.volumedata import VolumeData
from tests.node_agent.agent_fakes import NODE, FakeKubelet, FakePods, FakeRegistry, container_id, make_cgroup_tree, pod_json

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class AllowAll:
    async def authenticate(self, token: str) -> Caller | None:
        return Caller(username="driver")

    async def authorize(self, caller: Caller, *, namespace: str | None) -> Decision:
        return Decision(allowed=True)


@dataclass
class Agent:
    client: TestClient
    registry: FakeRegistry
    registry_host: str
    kubelet: FakeKubelet
    cgroups: dict[str, Path]
    freezer: CgroupFreezer
    spans: InMemorySpanExporter
    metrics: AgentMetrics
    archives_dir: Path
    volumes: VolumeData
    checkpointer: Checkpointer
    leases: FreezeLeases

    async def call(self, method: str, path: str, body: object = None) -> tuple[int, dict]:
        headers = {"Authorization": "Bearer t", "traceparent": TRACEPARENT}
        resp = await self.client.request(method, path, json=body, headers=headers)
        return resp.status, await resp.json()

    def checkpoint_body(self, pod: str = "counter", **extra: object) -> dict:
        return {
            "namespace": "default",
            "pod": pod,
            "image_repository": f"{self.registry_host}/ckpt/default/{pod}",
            "tag": "t1",
            **extra,
        }

    def state(self, pod: str, container: str) -> str:
        return self.freezer.state(self.cgroups[container_id(pod, container)])


PODS = {
    "counter": {"counter": True},
    "scratch": {"writer": True},
    "pair": {"app": True, "sidecar": True},
    "halfdone": {"runner": True, "done": False},
}


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    registry = FakeRegistry()
    registry_server = TestServer(registry.app())
    await registry_server.start_server()
    registry_host = f"{registry_server.host}:{registry_server.port}"

    pods = FakePods(
        *(pod_json(name=name, containers=containers) for name, containers in PODS.items()),
        pod_json(name="elsewhere", node="node-2"),
        pod_json(name="pending", phase="Pending", containers={"counter": False}),
        pod_json(name="scratch", containers={"writer": True}, empty_dirs={"data": "", "shm": "Memory"}),
    )
    ids = [container_id(pod, c) for pod, containers in PODS.items() for c, running in containers.items() if running]
    cgroups = make_cgroup_tree(tmp_path / "cgroup", container_ids=ids)
    freezer = CgroupFreezer(root=tmp_path / "cgroup")
    archives_dir = tmp_path / "checkpoints"
    archives_dir.mkdir()
    kubelet = FakeKubelet(directory=archives_dir)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = AgentMetrics()
    session = aiohttp.ClientSession()
    leases = FreezeLeases(path=tmp_path / "freeze-leases.json", clock=ManualClock())
    volumes = VolumeData(kubelet_root=tmp_path / "kubelet", volume_dir=tmp_path / "restore-volumes")
    publisher = Publisher(session=session, plain_http_registries=frozenset({registry_host}), backoff_initial_s=0.01)
    checkpointer = Checkpointer(
        node_name=NODE,
        pods=pods,
        freezer=freezer,
        kubelet=kubelet,
        publisher=publisher,
        metrics=metrics,
        criu_version="4.1.1",
        tracer=provider.get_tracer("test"),
        volume_data=volumes,
        leases=leases,
    )
    api = AgentApi(
        checkpointer=checkpointer,
        publisher=publisher,
        reviewer=AllowAll(),
        metrics=metrics,
        volumes=volumes,
        repository=f"{registry_host}/ckpt",
        tracer=provider.get_tracer("test"),
    )
    client = TestClient(TestServer(api.app))
    await client.start_server()
    yield Agent(
        client=client,
        registry=registry,
        registry_host=registry_host,
        kubelet=kubelet,
        cgroups=cgroups,
        freezer=freezer,
        spans=spans,
        metrics=metrics,
        archives_dir=archives_dir,
        volumes=volumes,
        checkpointer=checkpointer,
        leases=leases,
    )
    await client.close()
    await session.close()
    await registry_server.close()


class ManualClock:
    """Wall-clock time for the freeze leases, moved by the test (``agent.leases.clock.now += s``)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now
