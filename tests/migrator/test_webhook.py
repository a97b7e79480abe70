"""The admission webhook: the restore patch, and both handlers over HTTP against the in-memory API (slots: test_slots)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from migrator import api, slots
from migrator.slots import Slot
from migrator.units import iso, now
from migrator.webhook import Webhook, eviction_migration_name, restore_patch
from tests.fakekube import FakeKube, json_patch, make_node, make_pod

IMAGE = "registry.local/shop/web:1.0"
CHECKPOINT = "registry.local:5000/checkpoints/shop/web-7d9-abcde:pm-1234abcd@sha256:" + "1" * 64


def slot(**overrides: Any) -> Slot:
    fields: dict[str, Any] = {
        "migration": "shop/move-web",
        "migration_uid": "uid-move-web",
        "namespace": "shop",
        "owner_uid": "uid-web-7d9",
        "pod_name": None,
        "node": "node-2",
        "images": {"app": CHECKPOINT},
        "source_node": "node-1",
        "original_images": {"app": IMAGE},
    }
    return Slot(**{**fields, **overrides})


def new_pod(
    name: str = "web-7d9-fghij", *, owner_uid: str = "uid-web-7d9", controller: bool = True, **spec: Any
) -> dict[str, Any]:
    """A controller's pod as its creation reaches the webhook: no node, the template's images."""
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {"app": "web"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9", "uid": owner_uid, "controller": controller}
            ],
        },
        "spec": {"containers": [{"name": "app", "image": IMAGE}], **spec},
    }


# --- restore_patch ----------------------------------------------------------------------------------
def test_the_restore_patch_binds_the_pod_to_the_slots_node_with_the_checkpoint_images() -> None:
    pod = new_pod(containers=[{"name": "app", "image": IMAGE}, {"name": "proxy", "image": "envoy:1.30"}])
    patched = json_patch(pod, restore_patch(pod, slot(extra_annotations={"podmigrate.io/drain": "d"})))
    assert patched["spec"]["nodeName"] == "node-2"
    assert patched["spec"]["containers"] == [
        {"name": "app", "image": CHECKPOINT, "imagePullPolicy": "IfNotPresent"},
        {"name": "proxy", "image": "envoy:1.30"},
    ], "only the checkpointed containers change"
    assert patched["metadata"]["annotations"] == {
        api.ANNOTATION_MIGRATION: "shop/move-web",
        api.ANNOTATION_MIGRATION_UID: "uid-move-web",
        api.ANNOTATION_RESTORED_FROM: "node-1",
        api.ANNOTATION_CHECKPOINT_IMAGES: json.dumps({"app": CHECKPOINT}),
        api.ANNOTATION_ORIGINAL_IMAGES: json.dumps({"app": IMAGE}),
        "podmigrate.io/drain": "d",
    }
    assert patched["metadata"]["ownerReferences"] == pod["metadata"]["ownerReferences"], "still the controller's pod"


def test_the_restore_patch_names_the_checkpointed_pod_in_each_restored_containers_environment() -> None:
    pod = new_pod(containers=[{"name": "app", "image": IMAGE, "env": [{"name": "MODE", "value": "fast"}]}, {"name": "proxy"}])
    patched = json_patch(
        pod, restore_patch(pod, slot(source_pod="web-7d9-old", images={"app": CHECKPOINT, "proxy": "p@sha256:1"}))
    )
    marker = {"name": api.ENV_RESTORED_FROM, "value": "shop/web-7d9-old"}
    app, proxy = patched["spec"]["containers"]
    assert app["env"] == [{"name": "MODE", "value": "fast"}, marker], "the node's CRIU hook finds the staged emptyDir files by it"
    assert proxy["env"] == [marker]


def test_the_restore_patch_keeps_existing_annotations_and_drops_init_containers() -> None:
    pod = new_pod(initContainers=[{"name": "init-db", "image": "busybox"}, {"name": "migrate", "image": IMAGE}])
    pod["metadata"]["annotations"] = {"prometheus.io/scrape": "true", "a~b": "c"}
    patched = json_patch(pod, restore_patch(pod, slot()))
    annotations = patched["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["a~b"] == "c"
    assert annotations[api.ANNOTATION_MIGRATION_UID] == "uid-move-web"
    assert annotations[api.ANNOTATION_SKIPPED_INIT] == "init-db,migrate", "they ran before the checkpoint"
    assert "initContainers" not in patched["spec"]


# --- the handlers, over HTTP ---------------------------------------------------------------------------
@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    k.add_node(make_node("node-1"))
    k.add_node(make_node("node-2"))
    k.add_namespace("shop", labels={api.LABEL_MIGRATE_ON_EVICT: "true"})
    return k


@pytest.fixture
async def http(kube: FakeKube) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(Webhook(core=kube, custom=kube, policy=kube).app)) as c:  # type: ignore[arg-type]
        yield c


def open_in(kube: FakeKube, slot: Slot) -> dict[str, Any]:
    """A PodMigration with an open restore slot, as the controller leaves it (``migrator.slots``)."""
    namespace, name = slot.migration.split("/")
    return kube.add_custom(
        api.PLURAL,
        {
            "apiVersion": api.API_VERSION, "kind": api.KIND,
            "metadata": {"name": name, "namespace": namespace, "uid": slot.migration_uid,
                         "labels": {slots.LABEL_SLOT_OWNER: slot.owner_uid}},
            "spec": {"podName": slot.source_pod or "web-7d9-abcde"},
            "status": {slots.STATUS_KEY: slot.to_status()},
        },
    )  # fmt: skip


def pod_review(pod: dict[str, Any], *, operation: str = "CREATE", kind: str = "Pod", uid: str = "req-1") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": kind}, "operation": operation,
                    "namespace": "shop", "object": pod},
    }  # fmt: skip


def eviction_review(name: str, *, dry_run: bool = False, uid: str = "req-1") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": "policy", "version": "v1", "kind": "Eviction"}, "operation": "CREATE",
                    "namespace": "shop", "name": name, "subResource": "eviction", "dryRun": dry_run,
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "object": {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "shop"}}},
    }  # fmt: skip


async def answer(http: TestClient, path: str, review: dict[str, Any]) -> dict[str, Any]:
    resp = await http.post(path, json=review)
    assert resp.status == 200
    body = await resp.json()
    assert (body["apiVersion"], body["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    return body["response"]


def patch_of(response: dict[str, Any]) -> list[dict[str, Any]] | None:
    if "patch" not in response:
        return None
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


async def test_mutate_pods_makes_the_owners_next_pod_the_restore_once(http: TestClient, kube: FakeKube) -> None:
    open_in(kube, slot())
    response = await answer(http, "/mutate-pods", pod_review(new_pod("web-7d9-aaaaa"), uid="req-7"))
    assert response["uid"] == "req-7" and response["allowed"] is True
    patched = json_patch(new_pod("web-7d9-aaaaa"), patch_of(response) or [])
    assert patched["spec"]["nodeName"] == "node-2" and patched["spec"]["containers"][0]["image"] == CHECKPOINT
    second = await answer(http, "/mutate-pods", pod_review(new_pod("web-7d9-bbbbb"), uid="req-8"))
    assert second == {"uid": "req-8", "allowed": True}, "admitted unchanged: it starts cold"


async def test_mutate_pods_leaves_other_operations_and_kinds_alone(http: TestClient, kube: FakeKube) -> None:
    open_in(kube, slot())
    assert await answer(http, "/mutate-pods", pod_review(new_pod(), operation="UPDATE")) == {"uid": "req-1", "allowed": True}
    assert await answer(http, "/mutate-pods", pod_review(new_pod(), kind="Binding")) == {"uid": "req-1", "allowed": True}
    assert await answer(http, "/mutate-pods", pod_review(new_pod(), operation="CREATE")) != {"uid": "req-1", "allowed": True}, (
        "the slot was still there for the creation"
    )


async def test_an_eviction_starts_a_migration_and_is_answered_retry_later(http: TestClient, kube: FakeKube) -> None:
    pod = kube.add_pod(make_pod("web"))
    name = eviction_migration_name("web", pod["metadata"]["uid"])
    response = await answer(http, "/intercept-evictions", eviction_review("web", uid="req-3"))
    assert response["uid"] == "req-3" and response["allowed"] is False
    assert response["status"] == {
        "code": 429,
        "reason": "TooManyRequests",
        "message": f"podmigrate is migrating pod web instead of evicting it (podmigration {name}: Pending); retry later",
    }
    migration = kube.migrations[("shop", name)]
    assert name == f"evict-web-{pod['metadata']['uid'][:8]}"
    assert migration["spec"] == {"podName": "web"} and migration["metadata"]["labels"] == {api.LABEL_EVICTION: "true"}

    migration["status"] = {"phase": "Checkpointing"}
    again = await answer(http, "/intercept-evictions", eviction_review("web"))
    assert again["status"]["code"] == 429 and f"(podmigration {name}: Checkpointing)" in again["status"]["message"]
    assert kube.writes.count(f"create podmigration shop/{name}") == 1, "a retried eviction finds its migration"
    assert ("shop", "web") in kube.pods, "nothing evicted"


async def test_an_eviction_of_a_pod_that_cannot_move_is_let_through_at_once(http: TestClient, kube: FakeKube) -> None:
    kube.add_pod(make_pod("web", volumes=[{"name": "logs", "hostPath": {"path": "/var/log"}}]))
    response = await answer(http, "/intercept-evictions", eviction_review("web", uid="req-4"))
    assert response == {"uid": "req-4", "allowed": True}, "evicted as asked, no doomed migration"
    assert not kube.migrations


async def test_an_eviction_of_a_pod_with_emptydir_data_migrates_it_with_that_data(http: TestClient, kube: FakeKube) -> None:
    kube.add_pod(make_pod("web", volumes=[{"name": "data", "emptyDir": {}}]))
    response = await answer(http, "/intercept-evictions", eviction_review("web"))
    assert response["allowed"] is False and response["status"]["code"] == 429
    (migration,) = kube.migrations.values()
    assert "deleteEmptyDirData" not in migration["spec"], "better than the eviction asked for: the files move too"


async def test_an_eviction_is_let_through_once_its_migration_failed(http: TestClient, kube: FakeKube) -> None:
    pod = kube.add_pod(make_pod("web"))
    await answer(http, "/intercept-evictions", eviction_review("web"))
    kube.migrations[("shop", eviction_migration_name("web", pod["metadata"]["uid"]))]["status"] = {
        "phase": "Failed", "reason": "HostNetwork",
    }  # fmt: skip
    assert await answer(http, "/intercept-evictions", eviction_review("web")) == {"uid": "req-1", "allowed": True}


def moved(kube: FakeKube, *, ago: timedelta) -> dict[str, Any]:
    """The pod web, restored on node-2 by the PodMigration evict-web-1234 that finished ``ago``."""
    kube.add_custom(api.PLURAL, {
        "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "evict-web-1234", "namespace": "shop"},
        "spec": {"podName": "web"}, "status": {"phase": "Succeeded", "completionTime": iso(now() - ago)},
    })  # fmt: skip
    pod = kube.add_pod(make_pod("web", node="node-2"))
    pod["metadata"]["annotations"] = {api.ANNOTATION_MIGRATION_UID: "uid-m", api.ANNOTATION_MIGRATION: "shop/evict-web-1234"}
    return pod


async def test_an_eviction_of_a_pod_that_was_migrated_away_answers_not_found(http: TestClient, kube: FakeKube) -> None:
    moved(kube, ago=timedelta(seconds=10))
    response = await answer(http, "/intercept-evictions", eviction_review("web"))
    assert response["allowed"] is False
    assert response["status"] == {
        "code": 404,
        "reason": "NotFound",
        "message": "pod web was migrated off the drained node (shop/evict-web-1234); it is not on that node any more",
    }
    assert list(kube.migrations) == [("shop", "evict-web-1234")], "no new migration"


@pytest.mark.parametrize("why", ["long-ago", "its-new-node-is-leaving"])
async def test_a_later_eviction_of_the_restored_pod_is_a_real_one(http: TestClient, kube: FakeKube, why: str) -> None:
    """Not "not found" for ever: the autoscaler removing the pod's new node would take that as "gone" and kill it."""
    pod = moved(kube, ago=timedelta(minutes=10) if why == "long-ago" else timedelta(seconds=10))
    if why == "its-new-node-is-leaving":
        kube.nodes["node-2"]["spec"]["taints"] = [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]
    response = await answer(http, "/intercept-evictions", eviction_review("web"))
    assert response["status"]["code"] == 429, "migrated again, instead of evicted"
    assert ("shop", eviction_migration_name("web", pod["metadata"]["uid"])) in kube.migrations


async def test_a_migrated_pod_on_a_cordoned_node_is_migrated_again(http: TestClient, kube: FakeKube) -> None:
    pod = moved(kube, ago=timedelta(seconds=10))
    kube.nodes["node-2"]["spec"]["unschedulable"] = True  # now node-2 is being drained
    response = await answer(http, "/intercept-evictions", eviction_review("web"))
    assert response["status"]["code"] == 429
    assert ("shop", eviction_migration_name("web", pod["metadata"]["uid"])) in kube.migrations


async def test_dry_run_and_unknown_pods_are_let_through(http: TestClient, kube: FakeKube) -> None:
    kube.add_pod(make_pod("web"))
    assert await answer(http, "/intercept-evictions", eviction_review("web", dry_run=True)) == {"uid": "req-1", "allowed": True}
    assert await answer(http, "/intercept-evictions", eviction_review("ghost")) == {"uid": "req-1", "allowed": True}
    assert not kube.migrations


async def test_without_api_access_evictions_are_let_through(kube: FakeKube) -> None:
    kube.add_pod(make_pod("web"))
    async with TestClient(TestServer(Webhook().app)) as c:
        assert await answer(c, "/intercept-evictions", eviction_review("web")) == {"uid": "req-1", "allowed": True}
    assert not kube.migrations


async def test_evictions_of_replicas_migrate_no_more_of_them_at_once_than_their_budget_allows(
    http: TestClient, kube: FakeKube
) -> None:
    """The API server checks the budget after this webhook admitted the eviction: so the webhook checks it,
    counting the migrations already under way (their frozen pods still look healthy to the budget)."""
    for name in ("web-a", "web-b"):
        kube.add_pod(make_pod(name, labels={"app": "web"}))
    kube.add_pdb({
        "metadata": {"name": "web", "namespace": "shop", "generation": 1},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": 1},
        "status": {"disruptionsAllowed": 1, "observedGeneration": 1},
    })  # fmt: skip
    first = await answer(http, "/intercept-evictions", eviction_review("web-a"))
    assert first["status"]["code"] == 429 and "is migrating pod web-a" in first["status"]["message"]
    second = await answer(http, "/intercept-evictions", eviction_review("web-b"))
    assert second["allowed"] is False and second["status"]["code"] == 429
    assert second["status"]["message"] == (
        "Cannot migrate pod web-b now: PodDisruptionBudget shop/web allowed 1 disruption(s) and 1 pod(s) migrated by "
        "others under it are being moved; retry later"
    )
    assert [m["spec"]["podName"] for m in kube.migrations.values()] == ["web-a"], "no second migration started"
