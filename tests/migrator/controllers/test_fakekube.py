"""The in-memory API answers as the API server does where the reconcilers depend on it (tests.fakekube)."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from migrator import api
from tests.fakekube import MERGE_PATCH, FakeKube, json_patch, make_node, make_pod, merge_patch

G, V = api.GROUP, api.VERSION


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    k.add_node(make_node("node-1"))
    k.add_node(make_node("node-2"))
    return k


def migration(name: str = "m", **meta: object) -> dict:
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name, **meta}, "spec": {"podName": "web"}}


async def test_typed_reads_are_models_and_sanitize_back_to_the_json(kube: FakeKube) -> None:
    kube.add_pod(make_pod("web"))
    pod = await kube.read_namespaced_pod("web", "shop")
    assert isinstance(pod, client.V1Pod) and pod.spec.node_name == "node-1" and pod.metadata.uid
    plain = kube.api_client.sanitize_for_serialization(pod)
    assert plain["spec"]["containers"][0]["image"] == kube.pods[("shop", "web")]["spec"]["containers"][0]["image"]
    nodes = (await kube.list_node()).items
    assert [n.metadata.name for n in nodes] == ["node-1", "node-2"] and nodes[0].status.allocatable["cpu"] == "4"
    with pytest.raises(client.ApiException) as err:
        await kube.read_namespaced_pod("ghost", "shop")
    assert err.value.status == 404


async def test_field_selectors(kube: FakeKube) -> None:
    kube.add_pod(make_pod("a"))
    kube.add_pod(make_pod("b", node="node-2"))
    on_two = (await kube.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-2")).items
    assert [p.metadata.name for p in on_two] == ["b"]
    not_two = (await kube.list_namespaced_pod("shop", field_selector="spec.nodeName!=node-2")).items
    assert [p.metadata.name for p in not_two] == ["a"]
    uid = kube.pods[("shop", "a")]["metadata"]["uid"]
    involved = client.V1ObjectReference(kind="Pod", name="a", namespace="shop", uid=uid)
    await kube.create_namespaced_event("shop", client.CoreV1Event(metadata=client.V1ObjectMeta(generate_name="a."),
                                                                   involved_object=involved, reason="Pulled"))  # fmt: skip
    events = (await kube.list_namespaced_event("shop", field_selector=f"involvedObject.uid={uid}")).items
    assert [e.reason for e in events] == ["Pulled"] and events[0].metadata.name.startswith("a.")
    assert not (await kube.list_namespaced_event("shop", field_selector="involvedObject.uid=other")).items


async def test_custom_objects_merge_patch_versions_and_conflicts(kube: FakeKube) -> None:
    created = await kube.create_namespaced_custom_object(G, V, "shop", api.PLURAL, {**migration(), "status": {"phase": "X"}})
    assert "status" not in created, "a create does not write the status subresource"
    version = created["metadata"]["resourceVersion"]
    patched = await kube.patch_namespaced_custom_object_status(
        G, V, "shop", api.PLURAL, "m", {"status": {"phase": "Pending", "a": {"b": 1, "c": 2}}}, _content_type=MERGE_PATCH
    )
    assert patched["metadata"]["resourceVersion"] != version
    patched = await kube.patch_namespaced_custom_object_status(
        G, V, "shop", api.PLURAL, "m", {"status": {"a": {"b": None}}, "spec": {"podName": "x"}}, _content_type=MERGE_PATCH
    )
    assert patched["status"] == {"phase": "Pending", "a": {"c": 2}}, "null deletes; other keys stay"
    assert patched["spec"] == {"podName": "web"}, "the status subresource changes status only"
    with pytest.raises(client.ApiException) as err:  # a patch conditional on the version read at create
        await kube.patch_namespaced_custom_object(
            G,
            V,
            "shop",
            api.PLURAL,
            "m",
            {"metadata": {"finalizers": ["f"], "resourceVersion": version}},
            _content_type=MERGE_PATCH,
        )
    assert err.value.status == 409
    with pytest.raises(client.ApiException) as err:  # what kubernetes-asyncio sends without _content_type
        await kube.patch_namespaced_custom_object_status(G, V, "shop", api.PLURAL, "m", {"status": {}})
    assert err.value.status == 400
    with pytest.raises(client.ApiException) as err:
        await kube.create_namespaced_custom_object(G, V, "shop", api.PLURAL, migration())
    assert err.value.status == 409


async def test_finalizers_hold_a_deleted_custom_object_until_the_last_one_goes(kube: FakeKube) -> None:
    kube.add_custom(api.PLURAL, migration(namespace="shop", finalizers=["a", "b"]))
    await kube.delete_namespaced_custom_object(G, V, "shop", api.PLURAL, "m")
    held = await kube.get_namespaced_custom_object(G, V, "shop", api.PLURAL, "m")
    assert held["metadata"]["deletionTimestamp"]
    with pytest.raises(client.ApiException) as err:
        await kube.patch_namespaced_custom_object(
            G, V, "shop", api.PLURAL, "m", {"metadata": {"finalizers": ["a", "b", "c"]}}, _content_type=MERGE_PATCH
        )
    assert err.value.status == 422
    await kube.patch_namespaced_custom_object(
        G, V, "shop", api.PLURAL, "m", {"metadata": {"finalizers": ["b"]}}, _content_type=MERGE_PATCH
    )
    assert ("shop", "m") in kube.migrations
    await kube.patch_namespaced_custom_object(
        G, V, "shop", api.PLURAL, "m", {"metadata": {"finalizers": []}}, _content_type=MERGE_PATCH
    )
    assert ("shop", "m") not in kube.migrations


async def test_pod_deletion_preconditions_and_grace(kube: FakeKube) -> None:
    uid = kube.add_pod(make_pod("web"))["metadata"]["uid"]
    with pytest.raises(client.ApiException) as err:
        await kube.delete_namespaced_pod(
            "web", "shop", body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="x"))
        )
    assert err.value.status == 409 and ("shop", "web") in kube.pods
    await kube.delete_namespaced_pod("web", "shop", body=client.V1DeleteOptions(grace_period_seconds=1))
    assert kube.pods[("shop", "web")]["metadata"]["deletionTimestamp"], "terminating"
    options = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid))
    await kube.delete_namespaced_pod("web", "shop", body=options)
    assert ("shop", "web") not in kube.pods
    created = await kube.create_namespaced_pod("shop", {"metadata": {"generateName": "web-"}, "spec": {"containers": []}})
    assert created.metadata.name.startswith("web-") and created.status.phase == "Pending"
    with pytest.raises(client.ApiException) as err:
        await kube.create_namespaced_pod("shop", {"metadata": {"name": created.metadata.name}, "spec": {}})
    assert err.value.status == 409


def test_merge_and_json_patch() -> None:
    assert merge_patch({"a": {"b": 1, "c": [1, 2]}, "d": 1}, {"a": {"c": [3], "b": None}, "d": None}) == {"a": {"c": [3]}}
    doc = {"metadata": {"annotations": {"x": "1"}}, "spec": {"containers": [{"name": "a", "image": "i"}]}}
    ops = [
        {"op": "add", "path": "/metadata/annotations/podmigrate.io~1m", "value": "v"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "j"},
        {"op": "add", "path": "/spec/nodeName", "value": "n"},
    ]
    assert json_patch(doc, ops) == {
        "metadata": {"annotations": {"x": "1", "podmigrate.io/m": "v"}},
        "spec": {"containers": [{"name": "a", "image": "j"}], "nodeName": "n"},
    }
    with pytest.raises(ValueError):
        json_patch({"metadata": {}}, [{"op": "add", "path": "/metadata/annotations/x", "value": "1"}])
