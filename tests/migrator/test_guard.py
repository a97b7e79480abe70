"""The validating guard's decisions (migrator/guard.py) and the webhook server's client check.

Who may put a checkpoint image into a pod, who may ask for a migration or a drain. The live
checks against a real API server (client certificates, SubjectAccessReviews for real users)
are in tests/localcluster/test_hostile_e2e.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from migrator import api, guard
from migrator.webhook import PATH_VALIDATE_PODS, Webhook
from tests.fakekube import FakeKube

REPO = "registry.example:5000/podmigrate-checkpoints"
CONTROLLER = "system:serviceaccount:podmigrate-system:podmigrate-controller"
IMAGE = f"{REPO}/shop/web/web@sha256:" + "a" * 64


class FakeAuthz:
    """SubjectAccessReviews answered from a set of (user, verb, resource, namespace, name) that are allowed."""

    def __init__(self, allowed: set[tuple[str, str, str, str | None, str | None]]) -> None:
        self.allowed = allowed
        self.asked: list[tuple[str, str, str, str | None, str | None]] = []

    async def create_subject_access_review(self, body: Any) -> Any:
        ra = body.spec.resource_attributes
        resource = ra.resource + (f"/{ra.subresource}" if ra.subresource else "")
        key = (body.spec.user, ra.verb, resource, ra.namespace, ra.name)
        self.asked.append(key)
        return SimpleNamespace(status=SimpleNamespace(allowed=key in self.allowed))


def migration(kube: FakeKube, *, phase: str = "Restoring", images: tuple[str, ...] = (IMAGE,)) -> dict[str, Any]:
    return kube.add_custom(
        api.PLURAL,
        {
            "apiVersion": api.API_VERSION, "kind": api.KIND,
            "metadata": {"name": "move-web", "namespace": "shop", "uid": "uid-1"},
            "spec": {"podName": "web"},
            "status": {"phase": phase, "containers": [{"name": "web", "image": i} for i in images]},
        },
    )  # fmt: skip


def pod(image: str = IMAGE, *, migration_uid: str = "uid-1", where: str = "shop/move-web") -> dict[str, Any]:
    annotations = {api.ANNOTATION_MIGRATION: where, api.ANNOTATION_MIGRATION_UID: migration_uid}
    return {
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
        "spec": {"containers": [{"name": "web", "image": image}]},
    }


def request(obj: dict[str, Any], *, user: str = CONTROLLER, operation: str = "CREATE", namespace: str = "shop") -> dict[str, Any]:
    return {"uid": "r", "operation": operation, "namespace": namespace, "object": obj, "userInfo": {"username": user}}


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


def make_guard(kube: FakeKube, authz: FakeAuthz | None = None) -> guard.Guard:
    return guard.Guard(custom=kube, authz=authz or FakeAuthz(set()), repository=REPO, own_user=CONTROLLER)  # type: ignore[arg-type]


def test_checkpoint_images_are_found_by_path_whatever_the_host_is_spelled_as() -> None:
    spec = {"spec": {"containers": [
        {"name": "a", "image": IMAGE},
        {"name": "b", "image": IMAGE.replace("registry.example:5000", "10.0.0.1:5000").upper()},
        {"name": "c", "image": "docker.io/library/nginx:1.27"},
    ], "initContainers": [{"name": "i", "image": f"{REPO}/other/x:t"}]}}  # fmt: skip
    found = guard.checkpoint_images(spec, repository=REPO)
    assert sorted(found.values()) == ["other", "shop", "shop"]
    assert "docker.io/library/nginx:1.27" not in found


async def test_the_restore_of_an_open_migration_is_allowed(kube: FakeKube) -> None:
    migration(kube)
    for user in (CONTROLLER, "system:serviceaccount:kube-system:replicaset-controller"):
        assert (await make_guard(kube).pod(request(pod(), user=user))).allowed


async def test_an_ordinary_pod_without_checkpoint_images_is_not_looked_at(kube: FakeKube) -> None:
    assert (await make_guard(kube).pod(request(pod("nginx:1.27"), user="alice"))).allowed


@pytest.mark.parametrize(
    ("case", "obj", "user", "namespace", "phase", "expected"),
    [
        ("another namespace's image", pod(IMAGE.replace("/shop/", "/bank/")), CONTROLLER, "shop", "Restoring", "namespace bank"),
        ("an ordinary user", pod(), "alice", "shop", "Restoring", 'user "alice"'),
        ("a forged migration uid", pod(migration_uid="uid-2"), CONTROLLER, "shop", "Restoring", "does not exist"),
        ("a migration elsewhere", pod(where="bank/move-web"), CONTROLLER, "shop", "Restoring", "must be the restore"),
        ("a finished migration", pod(), CONTROLLER, "shop", "Succeeded", "is Succeeded"),
        ("an image it did not produce", pod(IMAGE.replace("a" * 64, "b" * 64)), CONTROLLER, "shop", "Restoring", "is not a checkpoint"),
    ],
)  # fmt: skip
async def test_a_pod_naming_a_checkpoint_image_is_refused_unless_it_is_that_restore(
    kube: FakeKube, case: str, obj: dict[str, Any], user: str, namespace: str, phase: str, expected: str
) -> None:
    migration(kube, phase=phase)
    verdict = await make_guard(kube).pod(request(obj, user=user, namespace=namespace))
    assert not verdict.allowed, case
    assert expected in verdict.message


async def test_an_update_may_not_bring_in_a_checkpoint_image(kube: FakeKube) -> None:
    migration(kube)
    req = request(pod(), operation="UPDATE")
    req["oldObject"] = pod("nginx:1.27")
    verdict = await make_guard(kube).pod(req)
    assert not verdict.allowed and "existing pod" in verdict.message
    req["oldObject"] = pod()  # unchanged images (a label update of a restored pod) pass
    assert (await make_guard(kube).pod(req)).allowed


async def test_a_podmigration_needs_its_creator_to_be_allowed_to_delete_the_pod(kube: FakeKube) -> None:
    obj = {"metadata": {"name": "m", "namespace": "shop"}, "spec": {"podName": "web"}}
    authz = FakeAuthz({("alice", "delete", "pods", "shop", "web")})
    g = make_guard(kube, authz)
    assert (await g.podmigration(request(obj, user="alice"))).allowed
    verdict = await g.podmigration(request(obj, user="mallory"))
    assert not verdict.allowed
    assert verdict.message == 'user "mallory" may not delete pods web in namespace "shop", so it may not migrate it'
    assert (await g.podmigration(request(obj, user=CONTROLLER))).allowed, "its own, for evictions and drains"


async def test_a_nodedrain_needs_cordon_and_eviction_rights(kube: FakeKube) -> None:
    obj = {"metadata": {"name": "d"}, "spec": {"nodeName": "node-1"}}
    authz = FakeAuthz({("ops", "patch", "nodes", None, "node-1"), ("ops", "create", "pods/eviction", None, None),
                       ("half", "patch", "nodes", None, "node-1")})  # fmt: skip
    g = make_guard(kube, authz)
    assert (await g.nodedrain(request(obj, user="ops", namespace=""))).allowed
    verdict = await g.nodedrain(request(obj, user="half", namespace=""))
    assert not verdict.allowed and "may not create pods/eviction" in verdict.message


async def test_the_webhook_refuses_a_caller_without_a_client_certificate(kube: FakeKube) -> None:
    hook = Webhook(custom=kube, authz=FakeAuthz(set()), checkpoint_repository=REPO, require_client_cert=True)  # type: ignore[arg-type]
    async with TestClient(TestServer(hook.app)) as http:
        resp = await http.post(PATH_VALIDATE_PODS, json={"request": request(pod())})
        assert resp.status == 403
        assert (await resp.json()) == {"error": "a client certificate is required"}
