"""Warm start (migrator/warmstart.py): a ReplicaSet's new pods restored from a PodCheckpoint by the mutating webhook.

Over HTTP against the in-memory API, as the API server calls ``/mutate-pods``: the ReplicaSet is
read through a minimal ``AppsV1Api`` (``FakeApps``), the checkpoint is made by the real PodCheckpoint
reconciler (``test_podcheckpoint.World``), and the patched pod is then judged by the validating
guard as the ReplicaSet controller's creation.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes_asyncio import client

from kubeclient.informing import NotSynced
from migrator import api, guard, pullsecrets
from migrator.webhook import Webhook
from tests.fakekube import FakeKube, api_error, image_id, json_patch, make_node
from tests.migrator.controllers.test_podcheckpoint import IMAGE, NS, REPO, World
from tests.migrator.controllers.test_podmigration import replicaset_pod
from tests.migrator.test_guard import FakeAuthz
from tests.migrator.test_webhook import answer, new_pod, patch_of, pod_review

SOURCE_POD = "web-7d9-abcde"
REPLICASET_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"


class FakeApps:
    """``AppsV1Api.read_namespaced_replica_set`` over ReplicaSets the test keeps; ``error`` answers every read."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.replicasets: dict[tuple[str, str], dict[str, Any]] = {}
        self.error: client.ApiException | None = None
        self.reads: list[str] = []

    def add(self, name: str = "web-7d9", *, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        rs = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", **({"annotations": annotations} if annotations else {})},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": IMAGE}]}}},
        }  # fmt: skip
        self.replicasets[(NS, name)] = rs
        return rs

    async def read_namespaced_replica_set(self, name: str, namespace: str, **_: Any) -> client.V1ReplicaSet:
        self.reads.append(f"{namespace}/{name}")
        if self.error is not None:
            raise self.error
        rs = self.replicasets.get((namespace, name))
        if rs is None:
            raise api_error(404, f'replicasets.apps "{name}" not found')
        return self.kube.api_client.model(rs, "V1ReplicaSet")


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    return World(monkeypatch)


@pytest.fixture
def apps(world: World) -> FakeApps:
    return FakeApps(world.kube)


@pytest.fixture
async def http(world: World, apps: FakeApps) -> AsyncIterator[TestClient]:
    hook = Webhook(core=world.kube, custom=world.kube, apps=apps)  # type: ignore[arg-type]
    async with TestClient(TestServer(hook.app)) as c:
        yield c


async def warm_checkpoint(world: World, apps: FakeApps) -> str:
    """A Running checkpoint of the ReplicaSet's warm pod on node-1; the workload scaled to zero; the RS annotated."""
    world.kube.add_pod(replicaset_pod(SOURCE_POD))
    name = world.checkpoint(SOURCE_POD, name="ck-warm")
    assert await world.reconcile(name) is None and world.status(name)["phase"] == "Available"
    await world.kube.delete_namespaced_pod(SOURCE_POD, NS, grace_period_seconds=0)
    apps.add(annotations={api.ANNOTATION_WARM_START: name})
    return name


async def mutate(http: TestClient, pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The webhook's answer for this pod creation, and the pod as it would be created."""
    response = await answer(http, "/mutate-pods", pod_review(pod))
    assert response["allowed"] is True, "a warm start never refuses a pod"
    return response, json_patch(pod, patch_of(response) or [])


def skipped(pod: dict[str, Any]) -> str | None:
    return (pod["metadata"].get("annotations") or {}).get(api.ANNOTATION_WARM_START_SKIPPED)


# --- warm -------------------------------------------------------------------------------------------------
async def test_a_new_pod_of_an_annotated_replicaset_restores_the_checkpoint_on_a_node_holding_its_base_image(
    world: World, apps: FakeApps, http: TestClient
) -> None:
    world.kube.add_secret({
        "metadata": {"name": pullsecrets.PULL_SECRET, "namespace": pullsecrets.DEFAULT_SOURCE_NAMESPACE},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="},
    })  # fmt: skip
    name = await warm_checkpoint(world, apps)
    status = world.status(name)
    (image,) = [c["image"] for c in status["containers"]]

    _, pod = await mutate(http, new_pod())
    assert apps.reads == [f"{NS}/web-7d9"]
    assert pod["spec"]["nodeName"] == "node-1", "the checkpointed pod's node: its base image is there"
    (container,) = pod["spec"]["containers"]
    assert (container["image"], container["imagePullPolicy"]) == (image, "IfNotPresent")
    assert container["env"] == [{"name": api.ENV_RESTORED_FROM, "value": f"{NS}/{SOURCE_POD}"}]
    assert pod["spec"]["imagePullSecrets"] == [{"name": pullsecrets.PULL_SECRET}]
    assert pod["metadata"]["annotations"] == {
        api.ANNOTATION_CHECKPOINT: f"{NS}/{name}",
        api.ANNOTATION_CHECKPOINT_UID: world.uid(name),
        api.ANNOTATION_RESTORED_FROM: "node-1",
        api.ANNOTATION_CHECKPOINT_IMAGES: json.dumps({"app": image}),
        api.ANNOTATION_ORIGINAL_IMAGES: json.dumps({"app": IMAGE}),
    }
    assert pod["metadata"]["ownerReferences"] == new_pod()["metadata"]["ownerReferences"], "still the ReplicaSet's pod"

    # The validating guard lets the ReplicaSet controller create it: the images are that Available checkpoint's.
    judge = guard.Guard(custom=world.kube, authz=FakeAuthz(set()), repository=REPO, own_user="podmigrate")  # type: ignore[arg-type]
    request = {"uid": "r", "operation": "CREATE", "namespace": NS, "object": pod, "userInfo": {"username": REPLICASET_CONTROLLER}}
    verdict = await judge.pod(request)
    assert verdict.allowed, verdict.message


async def test_only_a_node_holding_the_base_image_is_chosen_however_roomy_the_others(
    world: World, apps: FakeApps, http: TestClient
) -> None:
    await warm_checkpoint(world, apps)
    world.kube.nodes["node-1"]["spec"]["unschedulable"] = True
    world.kube.add_node(make_node("node-3", cpu="64"))  # the roomiest, but without the base image
    holder = make_node("node-4")
    digest = image_id(IMAGE).partition("@")[2]
    holder["status"]["images"] = [{"names": [f"mirror.local/web@{digest}", "busybox:1.36"], "sizeBytes": 1}]
    world.kube.add_node(holder)
    _, pod = await mutate(http, new_pod())
    assert pod["spec"]["nodeName"] == "node-4", "a kubelet reporting the base image by digest (any repository name)"

    # A node running another of the workload's pods (its imageID is the base image) holds it too.
    world.kube.nodes["node-4"]["status"]["images"] = []
    world.kube.add_node(make_node("node-5"))
    world.kube.add_pod(replicaset_pod("web-7d9-other", node="node-5"))
    _, pod = await mutate(http, new_pod("web-7d9-zzzzz"))
    assert pod["spec"]["nodeName"] == "node-5"


async def test_a_pod_no_node_can_restore_starts_cold_and_says_why(world: World, apps: FakeApps, http: TestClient) -> None:
    name = await warm_checkpoint(world, apps)
    world.kube.nodes["node-1"]["spec"]["unschedulable"] = True
    _, pod = await mutate(http, new_pod())
    assert "nodeName" not in pod["spec"] and pod["spec"]["containers"] == [{"name": "app", "image": IMAGE}]
    assert skipped(pod) == f"no node can restore PodCheckpoint {name}: node node-1 is cordoned (unschedulable)"


# --- cold, with the reason -----------------------------------------------------------------------------------
async def test_a_pod_of_another_template_starts_cold_with_the_reason(world: World, apps: FakeApps, http: TestClient) -> None:
    name = await warm_checkpoint(world, apps)
    _, pod = await mutate(http, new_pod(containers=[{"name": "app", "image": "registry.local/shop/web:2.0"}]))
    assert "nodeName" not in pod["spec"] and pod["spec"]["containers"][0]["image"] == "registry.local/shop/web:2.0"
    assert skipped(pod) == (
        f"the pod is not the one PodCheckpoint {name} was taken of: container app runs registry.local/shop/web:2.0, "
        f"the checkpoint was taken on {IMAGE}"
    ), "old memory on a new image would be wrong"
    other = new_pod(containers=[{"name": "app", "image": IMAGE}, {"name": "proxy", "image": "envoy:1.30"}])
    other["metadata"]["annotations"] = {"team": "payments"}
    _, pod = await mutate(http, other)
    assert pod["metadata"]["annotations"] == {
        "team": "payments",
        api.ANNOTATION_WARM_START_SKIPPED: (
            f"the pod is not the one PodCheckpoint {name} was taken of: its containers (app, proxy) are not the checkpoint's (app)"
        ),
    }, "added beside the pod's own annotations"


def _missing(world: World, name: str) -> str:
    return "ck-none"


def _new(world: World, name: str) -> str:
    world.checkpoint("web-7d9-xyz", name="ck-new")
    return "ck-new"


def _checkpointing(world: World, name: str) -> str:
    obj = world.obj(name)
    assert obj is not None
    obj["status"]["phase"] = "Checkpointing"
    return name


def _failed(world: World, name: str) -> str:
    obj = world.obj(name)
    assert obj is not None
    obj["status"]["phase"] = "Failed"
    return name


def _being_deleted(world: World, name: str) -> str:
    world.delete(name)
    return name


NOT_AVAILABLE = {
    "missing": (_missing, "PodCheckpoint ck-none not found"),
    "never started": (_new, "PodCheckpoint ck-new is not Available (new)"),
    "being taken": (_checkpointing, "PodCheckpoint ck-warm is not Available (Checkpointing)"),
    "failed": (_failed, "PodCheckpoint ck-warm is not Available (Failed)"),
    "being deleted": (_being_deleted, "PodCheckpoint ck-warm is not Available"),
}


@pytest.mark.parametrize(("setup", "reason"), NOT_AVAILABLE.values(), ids=NOT_AVAILABLE.keys())
async def test_a_checkpoint_that_is_not_available_starts_the_pod_cold_with_the_reason(
    world: World, apps: FakeApps, http: TestClient, setup: Any, reason: str
) -> None:
    name = await warm_checkpoint(world, apps)
    apps.add(annotations={api.ANNOTATION_WARM_START: setup(world, name)})
    response, pod = await mutate(http, new_pod())
    (op,) = patch_of(response) or []
    assert (op["op"], op["path"], list(op["value"])) == ("add", "/metadata/annotations", [api.ANNOTATION_WARM_START_SKIPPED])
    assert str(skipped(pod)).startswith(reason), skipped(pod)
    assert "nodeName" not in pod["spec"] and pod["spec"]["containers"] == [{"name": "app", "image": IMAGE}]


# --- no warm start asked for, or not decidable now -------------------------------------------------------------
async def test_a_replicaset_without_the_annotation_gets_no_patch(world: World, apps: FakeApps, http: TestClient) -> None:
    await warm_checkpoint(world, apps)
    apps.add(annotations={"deployment.kubernetes.io/revision": "3"})
    response, _ = await mutate(http, new_pod())
    assert response == {"uid": "req-1", "allowed": True}


async def test_pods_of_no_replicaset_are_not_looked_at(world: World, apps: FakeApps, http: TestClient) -> None:
    await warm_checkpoint(world, apps)
    bare = new_pod()
    del bare["metadata"]["ownerReferences"]
    statefulset = new_pod()
    statefulset["metadata"]["ownerReferences"][0].update(kind="StatefulSet", name="web")
    for pod in (bare, statefulset):
        response, _ = await mutate(http, pod)
        assert response == {"uid": "req-1", "allowed": True}
    assert apps.reads == [], "a StatefulSet's pods each have their own identity: never warm-started"


@pytest.mark.parametrize(("status", "why"), [(404, "the ReplicaSet is gone"), (500, "the API does not answer")])
async def test_a_replicaset_that_cannot_be_read_leaves_the_pod_cold_without_a_patch(
    world: World, apps: FakeApps, http: TestClient, status: int, why: str
) -> None:
    await warm_checkpoint(world, apps)
    apps.error = api_error(status, why)
    response, _ = await mutate(http, new_pod())
    assert response == {"uid": "req-1", "allowed": True}, "fails open: the pod starts cold, as with no webhook"
    assert apps.reads == [f"{NS}/web-7d9"]


async def test_a_webhook_without_the_apps_api_does_no_warm_start(world: World, apps: FakeApps) -> None:
    await warm_checkpoint(world, apps)
    async with TestClient(TestServer(Webhook(core=world.kube, custom=world.kube).app)) as http:  # type: ignore[arg-type]
        response, _ = await mutate(http, new_pod())
    assert response == {"uid": "req-1", "allowed": True} and apps.reads == []


async def test_caches_that_have_not_listed_yet_leave_the_pod_cold_in_time(world: World, apps: FakeApps) -> None:
    """The service just started (or cannot list pods): the webhook answers within its 5 s, without a patch."""

    class Unsynced:
        async def nodes(self) -> list[dict[str, Any]]:
            raise NotSynced("the control service's nodes cache has not listed them yet")

        async def pods(self, **_: Any) -> list[dict[str, Any]]:
            raise NotSynced("the control service's pods cache has not listed them yet")

    await warm_checkpoint(world, apps)
    hook = Webhook(core=world.kube, custom=world.kube, apps=apps, pods_and_nodes=Unsynced())  # type: ignore[arg-type]
    async with TestClient(TestServer(hook.app)) as http:
        response, _ = await mutate(http, new_pod())
    assert response == {"uid": "req-1", "allowed": True}, "fails open: the pod starts cold, as with no webhook"
