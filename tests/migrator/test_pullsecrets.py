"""The checkpoint pull Secret (``migrator.pullsecrets``): copied for a migration, named by the restored pod, removed after."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from migrator import pullsecrets
from migrator.webhook import restore_patch
from ocicheckpoint.credentials import DOCKERCONFIGJSON_KEY, SECRET_TYPE_DOCKERCONFIGJSON
from tests.fakekube import json_patch, make_pod, through_webhook
from tests.migrator.controllers.test_podmigration import NS, World, replacement, replicaset_pod
from tests.migrator.test_webhook import new_pod, slot

HOME = pullsecrets.DEFAULT_SOURCE_NAMESPACE
DATA = {DOCKERCONFIGJSON_KEY: base64.b64encode(b'{"auths": {"registry.local:5000": {"auth": "cHVsbDpwdw=="}}}').decode()}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.delenv(pullsecrets.SOURCE_NAMESPACE_ENV, raising=False)
    return World(monkeypatch)


def source(world: World, data: dict[str, str] = DATA) -> None:
    meta = {"name": pullsecrets.PULL_SECRET, "namespace": HOME}
    world.kube.add_secret({"metadata": meta, "type": SECRET_TYPE_DOCKERCONFIGJSON, "data": data})


def copy_in(world: World) -> dict[str, Any] | None:
    return world.kube.secrets.get((NS, pullsecrets.PULL_SECRET))


# --- the patches ---------------------------------------------------------------------------------------------
def test_the_restore_patch_adds_the_pull_secret_to_the_pods_own() -> None:
    pod = new_pod()
    patched = json_patch(pod, restore_patch(pod, slot(pull_secret=pullsecrets.PULL_SECRET)))
    assert patched["spec"]["imagePullSecrets"] == [{"name": pullsecrets.PULL_SECRET}]
    pod = new_pod(imagePullSecrets=[{"name": "team-registry"}])
    patched = json_patch(pod, restore_patch(pod, slot(pull_secret=pullsecrets.PULL_SECRET)))
    assert patched["spec"]["imagePullSecrets"] == [{"name": "team-registry"}, {"name": pullsecrets.PULL_SECRET}]
    assert "imagePullSecrets" not in json_patch(new_pod(), restore_patch(new_pod(), slot()))["spec"], "none: none added"


# --- a bare pod ------------------------------------------------------------------------------------------------
async def test_a_bare_pods_restore_names_the_copy_which_is_removed_when_the_migration_ends(world: World) -> None:
    source(world)
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    copied = copy_in(world)
    assert copied is not None and copied["data"] == DATA and copied["type"] == SECRET_TYPE_DOCKERCONFIGJSON
    assert copied["metadata"]["labels"] == {pullsecrets.LABEL_COPY: "true"}
    assert world.status(name)[pullsecrets.STATUS_KEY] == pullsecrets.PULL_SECRET
    restored = world.kube.pods[(NS, "web")]
    assert restored["spec"]["imagePullSecrets"] == [{"name": pullsecrets.PULL_SECRET}]
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    assert world.status(name)["phase"] == "Succeeded"
    assert copy_in(world) is None, "no migration open in the namespace any more"


async def test_without_a_source_secret_nothing_is_copied_or_named(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    assert copy_in(world) is None and pullsecrets.STATUS_KEY not in world.status(name)
    assert "imagePullSecrets" not in world.kube.pods[(NS, "web")]["spec"]


async def test_the_copy_stays_while_another_migration_in_the_namespace_is_open(world: World) -> None:
    source(world)
    world.kube.add_pod(make_pod("web"))
    world.kube.add_pod(make_pod("db"))
    first, second = world.migrate("web", targetNode="node-2"), world.migrate("db", targetNode="node-2")
    await world.to_wait_ready(first)
    await world.to_wait_ready(second)
    world.kubelet.start(NS, "web")
    assert await world.reconcile(first) is None
    assert copy_in(world) is not None, "db's migration still needs it"
    world.kubelet.start(NS, "db")
    assert await world.reconcile(second) is None
    assert copy_in(world) is None


async def test_a_secret_of_that_name_the_namespace_made_is_used_and_never_touched(world: World) -> None:
    source(world)
    theirs = {"metadata": {"name": pullsecrets.PULL_SECRET, "namespace": NS}, "type": SECRET_TYPE_DOCKERCONFIGJSON,
              "data": {DOCKERCONFIGJSON_KEY: "e30="}}  # fmt: skip
    world.kube.add_secret(theirs)
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    kept = copy_in(world)
    assert kept is not None and kept["data"] == {DOCKERCONFIGJSON_KEY: "e30="}
    assert not [w for w in world.kube.writes if "secret" in w]


# --- a controller's pod, through the webhook -------------------------------------------------------------------
async def test_a_controllers_replacement_names_the_copy(world: World) -> None:
    source(world)
    world.kube.add_pod(replicaset_pod())
    name = world.migrate("web-7d9-abcde", targetNode="node-2")
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]
    await world.reconcile(name)
    await world.reconcile(name)
    pod, claimed = await through_webhook(replacement(), kube=world.kube, namespace=NS)
    assert claimed is not None and claimed.pull_secret == pullsecrets.PULL_SECRET
    assert pod["spec"]["imagePullSecrets"] == [{"name": pullsecrets.PULL_SECRET}]
    assert copy_in(world) is not None
