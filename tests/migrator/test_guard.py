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
from migrator.controllers.podmigration import pods
from migrator.controllers.podmigration.migration import Migration
from migrator.webhook import PATH_VALIDATE_CHECKPOINTS, PATH_VALIDATE_PODS, Webhook
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


# --- pods restored from a PodCheckpoint: a PodRestore's (by podmigrate) or a warm start's (by the ReplicaSet controller)
CHECKPOINT_IMAGE = f"{REPO}/shop/web@sha256:" + "c" * 64
REPLICASET_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"


def podcheckpoint(
    kube: FakeKube, *, phase: str = "Available", images: tuple[str, ...] = (CHECKPOINT_IMAGE,), deleting: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "ck-web", "namespace": "shop", "uid": "ck-uid"}
    if deleting:
        meta.update(finalizers=[api.CHECKPOINT_FINALIZER], deletionTimestamp="2026-03-01T10:00:00Z")
    return kube.add_custom(
        api.CHECKPOINT_PLURAL,
        {
            "apiVersion": api.API_VERSION, "kind": api.CHECKPOINT_KIND, "metadata": meta, "spec": {"podName": "web"},
            "status": {"phase": phase, "containers": [{"name": "web", "image": i} for i in images]},
        },
    )  # fmt: skip


def podrestore(kube: FakeKube, *, phase: str = "Restoring") -> dict[str, Any]:
    return kube.add_custom(
        api.RESTORE_PLURAL,
        {
            "apiVersion": api.API_VERSION, "kind": api.RESTORE_KIND,
            "metadata": {"name": "resume-web", "namespace": "shop", "uid": "rs-uid"},
            "spec": {"checkpointName": "ck-web"}, "status": {"phase": phase},
        },
    )  # fmt: skip


def restored_pod(
    image: str = CHECKPOINT_IMAGE, *, where: str = "shop/ck-web", checkpoint_uid: str = "ck-uid",
    restore: str | None = "shop/resume-web", restore_uid: str = "rs-uid",
) -> dict[str, Any]:  # fmt: skip
    """A pod restoring PodCheckpoint ``where``: a PodRestore's when ``restore`` is given, else a warm start's."""
    annotations = {api.ANNOTATION_CHECKPOINT: where, api.ANNOTATION_CHECKPOINT_UID: checkpoint_uid}
    if restore is not None:
        annotations.update({api.ANNOTATION_RESTORE: restore, api.ANNOTATION_RESTORE_UID: restore_uid})
    return {
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
        "spec": {"containers": [{"name": "web", "image": image}]},
    }


async def test_the_pod_of_an_open_podrestore_made_by_podmigrate_is_allowed(kube: FakeKube) -> None:
    podcheckpoint(kube)
    podrestore(kube)
    assert (await make_guard(kube).pod(request(restored_pod()))).allowed


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
async def test_the_pod_of_a_finished_podrestore_is_refused(kube: FakeKube, phase: str) -> None:
    podcheckpoint(kube)
    podrestore(kube, phase=phase)
    verdict = await make_guard(kube).pod(request(restored_pod()))
    assert not verdict.allowed
    assert verdict.message == "PodRestore shop/resume-web is finished: it creates no pod now"


@pytest.mark.parametrize(
    ("case", "obj", "expected"),
    [
        ("no PodRestore named", restored_pod(restore=None), "PodRestore (none) of these images does not exist"),
        ("a forged PodRestore uid", restored_pod(restore_uid="rs-other"), "PodRestore shop/resume-web of these images does not exist"),
        ("a PodRestore elsewhere", restored_pod(restore="bank/resume-web"), "PodRestore bank/resume-web of these images does not exist"),
    ],
)  # fmt: skip
async def test_podmigrates_own_restored_pod_must_name_its_open_podrestore(
    kube: FakeKube, case: str, obj: dict[str, Any], expected: str
) -> None:
    podcheckpoint(kube)
    podrestore(kube)
    verdict = await make_guard(kube).pod(request(obj))
    assert not verdict.allowed, case
    assert verdict.message == expected


async def test_a_warm_start_pod_by_the_replicaset_controller_is_allowed_with_the_checkpoints_images(kube: FakeKube) -> None:
    podcheckpoint(kube)
    verdict = await make_guard(kube).pod(request(restored_pod(restore=None), user=REPLICASET_CONTROLLER))
    assert verdict.allowed, verdict.message


@pytest.mark.parametrize(
    ("case", "setup", "obj", "expected"),
    [
        ("a foreign image", {}, restored_pod(CHECKPOINT_IMAGE.replace("c" * 64, "d" * 64), restore=None),
         "is not a checkpoint of PodCheckpoint shop/ck-web"),
        ("another namespace's image", {}, restored_pod(CHECKPOINT_IMAGE.replace("/shop/", "/bank/"), restore=None),
         "checkpoint images of namespace bank cannot be used in shop"),
        ("no such checkpoint", None, restored_pod(restore=None), "PodCheckpoint shop/ck-web (of these checkpoint images) does not exist"),
        ("a forged checkpoint uid", {}, restored_pod(checkpoint_uid="ck-other", restore=None),
         "PodCheckpoint shop/ck-web (of these checkpoint images) does not exist"),
        ("a checkpoint elsewhere", {}, restored_pod(where="bank/ck-web", restore=None), "PodCheckpoint bank/ck-web is not in namespace shop"),
        ("a checkpoint being taken", {"phase": "Checkpointing"}, restored_pod(restore=None),
         "PodCheckpoint shop/ck-web is not Available: it is not restored now"),
        ("a failed checkpoint", {"phase": "Failed"}, restored_pod(restore=None),
         "PodCheckpoint shop/ck-web is not Available: it is not restored now"),
        ("a checkpoint being deleted", {"deleting": True}, restored_pod(restore=None),
         "PodCheckpoint shop/ck-web is not Available: it is not restored now"),
    ],
)  # fmt: skip
async def test_a_warm_start_pod_is_refused_unless_its_images_are_an_available_checkpoints(
    kube: FakeKube, case: str, setup: dict[str, Any] | None, obj: dict[str, Any], expected: str
) -> None:
    if setup is not None:
        podcheckpoint(kube, **setup)
    verdict = await make_guard(kube).pod(request(obj, user=REPLICASET_CONTROLLER))
    assert not verdict.allowed, case
    assert expected in verdict.message


async def test_an_ordinary_user_may_not_restore_a_checkpoint_whatever_the_annotations_say(kube: FakeKube) -> None:
    podcheckpoint(kube)
    podrestore(kube)
    verdict = await make_guard(kube).pod(request(restored_pod(), user="alice"))
    assert not verdict.allowed and 'user "alice"' in verdict.message


async def test_the_migration_of_a_pod_a_podrestore_made_is_judged_as_that_migrations_restore(kube: FakeKube) -> None:
    """The recorded pod's podmigrate.io/checkpoint annotations name another object: the migration's restore drops them."""
    podcheckpoint(kube)
    podrestore(kube, phase="Succeeded")
    obj = migration(kube)
    original = restored_pod()  # the pod the PodRestore made, as the migration's Validate recorded it
    original["spec"]["nodeName"] = "node-1"
    obj["status"].update(sourceNode="node-1", originalPod=original)
    body = pods.replacement(Migration(obj), node="node-2", from_checkpoint=True)
    assert body["spec"]["containers"][0]["image"] == IMAGE, "the migration's own checkpoint"
    verdict = await make_guard(kube).pod(request(body))
    assert verdict.allowed, verdict.message


def held(obj: dict[str, Any], *, gated: bool = True) -> dict[str, Any]:
    """A workload controller's replacement of a suspended pod, as the webhook makes it hold the place."""
    if gated:
        obj["spec"]["schedulingGates"] = [{"name": api.SCHEDULING_GATE_SUSPENDED}]
    return obj


@pytest.mark.parametrize("phase", ["Suspending", "Available"])
async def test_a_gated_replacement_holding_a_suspended_pods_place_is_allowed(kube: FakeKube, phase: str) -> None:
    podcheckpoint(kube, phase=phase)
    verdict = await make_guard(kube).pod(request(held(restored_pod(restore=None)), user=REPLICASET_CONTROLLER))
    assert verdict.allowed, verdict.message


@pytest.mark.parametrize(
    ("case", "phase", "gated"),
    [("not gated while suspending", "Suspending", False), ("gated, of a failed checkpoint", "Failed", True),
     ("gated, of a checkpoint being taken", "Checkpointing", True)],
)  # fmt: skip
async def test_a_replacement_runs_a_checkpoint_that_is_not_available_only_held(
    kube: FakeKube, case: str, phase: str, gated: bool
) -> None:
    podcheckpoint(kube, phase=phase)
    verdict = await make_guard(kube).pod(request(held(restored_pod(restore=None), gated=gated), user=REPLICASET_CONTROLLER))
    assert not verdict.allowed, case
    assert verdict.message == "PodCheckpoint shop/ck-web is not Available: it is not restored now"


# --- who may create PodCheckpoints, PodRestores, CheckpointSchedules (SubjectAccessReviews) ----------------------------
def creation(kind: str, spec: dict[str, Any], *, user: str, operation: str = "CREATE") -> dict[str, Any]:
    obj = {"apiVersion": api.API_VERSION, "kind": kind, "metadata": {"name": "x", "namespace": "shop"}, "spec": spec}
    return {**request(obj, user=user, operation=operation), "kind": {"group": api.GROUP, "version": api.VERSION, "kind": kind}}


async def test_a_running_podcheckpoint_needs_exec_rights_on_its_pod(kube: FakeKube) -> None:
    authz = FakeAuthz({("alice", "create", "pods/exec", "shop", "web")})
    g = make_guard(kube, authz)
    spec = {"podName": "web", "mode": "Running"}
    assert (await g.checkpoint_kinds(creation(api.CHECKPOINT_KIND, spec, user="alice"))).allowed
    assert authz.asked == [("alice", "create", "pods/exec", "shop", "web")], "its memory is what exec would reach"
    verdict = await g.checkpoint_kinds(creation(api.CHECKPOINT_KIND, spec, user="mallory"))
    assert not verdict.allowed
    assert (
        verdict.message
        == 'user "mallory" may not create pods/exec web in namespace "shop", so it may not create this PodCheckpoint'
    )


async def test_a_suspend_podcheckpoint_also_needs_the_right_to_delete_the_pod(kube: FakeKube) -> None:
    authz = FakeAuthz({("alice", "create", "pods/exec", "shop", "web"), ("alice", "delete", "pods", "shop", "web"),
                       ("bob", "create", "pods/exec", "shop", "web")})  # fmt: skip
    g = make_guard(kube, authz)
    spec = {"podName": "web", "mode": "Suspend"}
    assert (await g.checkpoint_kinds(creation(api.CHECKPOINT_KIND, spec, user="alice"))).allowed
    verdict = await g.checkpoint_kinds(creation(api.CHECKPOINT_KIND, spec, user="bob"))
    assert not verdict.allowed
    assert verdict.message == 'user "bob" may not delete pods web in namespace "shop", so it may not create this PodCheckpoint'


async def test_a_podrestore_needs_the_right_to_create_pods_in_its_namespace(kube: FakeKube) -> None:
    authz = FakeAuthz({("alice", "create", "pods", "shop", None)})
    g = make_guard(kube, authz)
    spec = {"checkpointName": "ck-web"}
    assert (await g.checkpoint_kinds(creation(api.RESTORE_KIND, spec, user="alice"))).allowed
    verdict = await g.checkpoint_kinds(creation(api.RESTORE_KIND, spec, user="mallory"))
    assert not verdict.allowed
    assert verdict.message == 'user "mallory" may not create pods in namespace "shop", so it may not create this PodRestore'


async def test_a_checkpointschedule_needs_exec_rights_on_what_it_selects(kube: FakeKube) -> None:
    authz = FakeAuthz({("alice", "create", "pods/exec", "shop", None), ("bob", "create", "pods/exec", "shop", "web")})
    g = make_guard(kube, authz)
    selector = {"schedule": "@hourly", "selector": {"matchLabels": {"app": "web"}}}
    assert (await g.checkpoint_kinds(creation(api.SCHEDULE_KIND, selector, user="alice"))).allowed
    assert not (await g.checkpoint_kinds(creation(api.SCHEDULE_KIND, selector, user="bob"))).allowed, "any pod, now and later"
    assert (await g.checkpoint_kinds(creation(api.SCHEDULE_KIND, {"schedule": "@hourly", "podName": "web"}, user="bob"))).allowed


async def test_the_controllers_own_creations_and_other_operations_are_not_checked(kube: FakeKube) -> None:
    authz = FakeAuthz(set())
    g = make_guard(kube, authz)
    spec = {"podName": "web", "mode": "Suspend"}
    assert (await g.checkpoint_kinds(creation(api.CHECKPOINT_KIND, spec, user=CONTROLLER))).allowed, "a schedule's checkpoints"
    assert (await g.checkpoint_kinds(creation(api.RESTORE_KIND, {"checkpointName": "c"}, user=CONTROLLER))).allowed
    for operation in ("UPDATE", "DELETE"):
        assert (await g.checkpoint_kinds(creation(api.CHECKPOINT_KIND, spec, user="mallory", operation=operation))).allowed
    assert authz.asked == [], "no SubjectAccessReview asked"


async def test_the_webhook_answers_checkpoint_kinds_with_the_guards_verdict(kube: FakeKube) -> None:
    authz = FakeAuthz({("alice", "create", "pods/exec", "shop", "web")})
    hook = Webhook(custom=kube, authz=authz, checkpoint_repository=REPO)  # type: ignore[arg-type]
    spec = {"podName": "web", "mode": "Running"}
    async with TestClient(TestServer(hook.app)) as http:
        for user, allowed in (("alice", True), ("mallory", False)):
            resp = await http.post(PATH_VALIDATE_CHECKPOINTS, json={"request": creation(api.CHECKPOINT_KIND, spec, user=user)})
            assert resp.status == 200
            response = (await resp.json())["response"]
            assert response["allowed"] is allowed
            if not allowed:
                assert response["status"]["code"] == 403 and "may not create pods/exec web" in response["status"]["message"]
