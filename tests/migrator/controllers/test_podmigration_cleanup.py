"""Nothing left behind: every path of a migration deletes the checkpoint images it pushed.

The images hold the pod's process memory (and the volume-data artifact its files), so none may
outlive its use, whatever the outcome: success, a rollback, a replacement that started cold, a
checkpoint given up on or whose answer never came, a cancel, a namespace deleted. A deletion
that fails (the registry down) is retried until it succeeds, from status (a restarted control
service goes on with it), and the PodMigration's finalizer waits for it. Driven like
``test_podmigration``: pass by pass against the in-memory API and fake node agents.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio import client

from agentapi.client import AgentError, AgentUnreachable
from migrator import api
from migrator.controllers.podmigration import PodMigrationReconciler, Settings
from tests.fakekube import FakeKube, make_pod, through_webhook
from tests.migrator.controllers.test_podmigration import IMAGE, NS, REPO, World, replacement, replicaset_pod


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    return World(monkeypatch)


def deleted(world: World) -> list[str]:
    return [what for operation, _, what in world.agents.calls if operation == "delete_image"]


def condition(world: World, name: str) -> dict[str, Any]:
    return next(c for c in world.status(name)["conditions"] if c["type"] == "CheckpointDeleted")


def uid_of(world: World, name: str) -> str:
    return str(world.kube.migrations[(NS, name)]["metadata"]["uid"])


async def to_checkpoint(world: World, name: str) -> None:
    """Validate, then PrepareTarget with the base images pulled: the next pass checkpoints."""
    await world.reconcile(name)
    world.kubelet.pull_images(NS, world.prepull(name)["metadata"]["name"])  # type: ignore[index]


def restart(world: World) -> None:
    """A new control service process: nothing but what status and the cluster hold."""
    world.reconciler = PodMigrationReconciler(
        core=world.kube, custom=world.kube, agents=world.agents, settings=Settings(checkpoint_repository=REPO),  # type: ignore[arg-type]
        metrics=None,
    )  # fmt: skip


async def test_a_replacement_that_started_cold_has_the_checkpoint_it_never_used_deleted(world: World) -> None:
    world.kube.add_pod(replicaset_pod())
    name = world.migrate("web-7d9-abcde", targetNode="node-2")
    await to_checkpoint(world, name)
    await world.reconcile(name)
    assert await world.reconcile(name) == pytest.approx(0.5)
    (image,) = [c["image"] for c in world.status(name)["containers"]]
    cold = (await world.kube.create_namespaced_pod(NS, replacement())).metadata.name  # the webhook was down
    world.kubelet.schedule(NS, cold, "node-2")
    world.kubelet.start(NS, cold)
    world.clock.advance(21)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "ReplacementNotRestored")
    assert deleted(world) == [image], "nobody will ever restore it: it goes"
    assert condition(world, name)["status"] == "True" and "pendingDeletes" not in s


async def test_a_registry_down_at_cleanup_keeps_the_outcome_and_the_deletion_is_retried_until_it_succeeds(
    world: World,
) -> None:
    world.kube.add_pod(make_pod("web", volumes=[{"name": "data", "emptyDir": {}}]))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    images = [c["image"] for c in world.status(name)["containers"]] + [world.status(name)["volumeData"]["image"]]
    world.agents.errors["delete_image"] = AgentError("pushing to registry.local:5000: cannot connect", status=500, stage="push")
    world.kubelet.start(NS, "web")

    # The pod moved: that is the outcome, now. What could not be deleted is in status, with a condition.
    assert await world.reconcile(name) == pytest.approx(15.0), "looked at again until the images are gone"
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Succeeded", "Migrated")
    assert [entry["image"] for entry in s["pendingDeletes"]] == images
    c = condition(world, name)
    assert (c["status"], c["reason"]) == ("False", "DeletePending") and "2 image(s) still to delete" in c["message"]
    assert any(reason == "CleanupFailed" for _, reason, _ in world.events(name))

    # Deleting the PodMigration waits for them (its finalizer), across a restart of the control service.
    world.kube.delete_custom(api.PLURAL, (NS, name))
    restart(world)
    assert await world.reconcile(name) == pytest.approx(15.0)
    assert (NS, name) in world.kube.migrations, "held: its images still hold the pod's memory"
    del world.agents.errors["delete_image"]
    assert await world.reconcile(name) is None
    assert (NS, name) not in world.kube.migrations, "everything deleted: the finalizer is released"
    assert deleted(world)[-2:] == images
    assert world.where() == {"web": "node-2"}


async def test_a_finished_migration_whose_images_are_gone_is_not_looked_at_again(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    assert condition(world, name)["reason"] == "Deleted"
    assert await world.reconcile(name) is None and len(deleted(world)) == 1, "deleted once, never again"


async def test_a_checkpoint_call_that_got_no_answer_is_undone_by_id_before_the_thaw_and_its_tags_deleted(
    world: World,
) -> None:
    """The agent may have finished it (and pushed) all the same: it is told to undo it, then what the tag names goes."""
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await to_checkpoint(world, name)
    world.agents.errors["checkpoint"] = AgentUnreachable("agent at 10.0.0.1 unreachable: connection reset", status=0)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "CheckpointFailed")
    tag = f"pm-{uid_of(world, name)[:8]}"
    assert world.agents.calls == [
        ("checkpoint", "node-1", "shop/web"),
        ("abort_checkpoint", "node-1", f"pm-{uid_of(world, name)}"),
        ("thaw", "node-1", "shop/web"),
        ("delete_image", "node-1", f"{REPO}/shop/web:{tag}"),
    ]
    assert "abandonedCheckpoint" not in s and "pendingDeletes" not in s
    assert condition(world, name)["status"] == "True"


async def test_a_checkpoint_the_agent_said_failed_is_not_undone_again(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await to_checkpoint(world, name)
    world.agents.errors["checkpoint"] = AgentError("criu dump failed", status=500, stage="checkpoint")
    assert await world.reconcile(name) is None
    assert world.agents.operations() == ["checkpoint", "thaw"], "a failed checkpoint is undone by the agent itself"


async def test_a_controller_killed_mid_checkpoint_whose_deadline_passed_meanwhile_undoes_that_checkpoint(
    world: World,
) -> None:
    world.kube.add_pod(make_pod("web", images={"app": IMAGE, "sidecar": IMAGE}, volumes=[{"name": "data", "emptyDir": {}}]))
    name = world.migrate(targetNode="node-2", timeoutSeconds=60)
    await to_checkpoint(world, name)

    async def killed() -> None:
        raise SystemExit("the control service was killed while its agent checkpointed")

    world.agents.during_checkpoint = killed
    with pytest.raises(SystemExit):
        await world.reconcile(name)
    world.agents.during_checkpoint = None
    assert world.status(name)["step"] == "Checkpoint"
    world.clock.advance(120)  # back up after the deadline: the checkpoint is not called again
    restart(world)
    assert await world.reconcile(name) is None
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "Timeout")
    tag = f"pm-{uid_of(world, name)[:8]}"
    assert world.agents.operations()[1:3] == ["abort_checkpoint", "thaw"], "undone before the thaw"
    assert sorted(deleted(world)) == [f"{REPO}/shop/web:{tag}-app", f"{REPO}/shop/web:{tag}-sidecar",
                                      f"{REPO}/shop/web:{tag}-volumes"]  # fmt: skip
    assert "abandonedCheckpoint" not in s and condition(world, name)["status"] == "True"


async def test_an_abandoned_checkpoint_whose_agent_is_down_is_undone_once_it_answers(world: World) -> None:
    """Its tags are deleted only after the agent undid it: one still in flight would push again after a deletion."""
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await to_checkpoint(world, name)
    world.agents.errors["checkpoint"] = AgentUnreachable("agent unreachable", status=0)
    world.agents.errors["abort_checkpoint"] = AgentUnreachable("agent unreachable", status=0)
    abort = world.agents.abort_checkpoint

    async def unreachable_abort(**kwargs: Any) -> None:
        await abort(**kwargs)
        if "abort_checkpoint" in world.agents.errors:
            raise world.agents.errors["abort_checkpoint"]

    world.agents.abort_checkpoint = unreachable_abort  # type: ignore[method-assign]
    assert await world.reconcile(name) == pytest.approx(15.0), "failed back (the source thawed); the undo is retried"
    s = world.status(name)
    assert (s["phase"], s["reason"]) == ("Failed", "CheckpointFailed")
    assert s["abandonedCheckpoint"]["requestId"] == f"pm-{uid_of(world, name)}"
    assert deleted(world) == [], "not before the agent undid it"
    assert condition(world, name)["reason"] == "DeletePending"
    assert await world.reconcile(name) == pytest.approx(15.0)
    del world.agents.errors["abort_checkpoint"]
    assert await world.reconcile(name) is None
    assert deleted(world) == [f"{REPO}/shop/web:pm-{uid_of(world, name)[:8]}"]
    assert "abandonedCheckpoint" not in world.status(name)


async def test_a_cancel_during_the_checkpoint_deletes_what_it_pushed(world: World) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await to_checkpoint(world, name)

    async def cancel() -> None:
        world.kube.delete_custom(api.PLURAL, (NS, name))

    world.agents.during_checkpoint = cancel
    world.agents.errors["delete_image"] = AgentError("registry down", status=500, stage="push")
    for _ in range(3):
        await world.reconcile(name)
    assert (NS, name) in world.kube.migrations, "the cancelled migration waits for its images"
    assert world.agents.frozen == set() and world.where() == {"web": "node-1"}, "the source was thawed meanwhile"
    del world.agents.errors["delete_image"]
    assert await world.reconcile(name) is None
    assert (NS, name) not in world.kube.migrations


async def test_a_namespace_being_deleted_still_gets_the_images_deleted(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    (image,) = [c["image"] for c in world.status(name)["containers"]]
    world.kubelet.fail(NS, "web", message="criu restore failed")
    await world.reconcile(name)
    world.kubelet.terminate(NS, "web")
    forbidden = client.ApiException(status=403, reason="Forbidden")
    forbidden.body = f'pods "web" is forbidden: unable to create new content in namespace {NS} because it is being terminated'

    async def terminating(namespace: str, body: Any, **_: Any) -> Any:
        raise forbidden

    monkeypatch.setattr(world.kube, "create_namespaced_pod", terminating)
    assert await world.reconcile(name) is None
    assert world.status(name)["reason"] == "NamespaceDeleted"
    assert deleted(world) == [image]


async def test_a_restore_slot_claimed_by_a_replacement_is_not_mistaken_for_a_cold_start(world: World) -> None:
    """The ordinary owned path still keeps its checkpoint until the restore is done (then deletes it once)."""
    world.kube.add_pod(replicaset_pod())
    name = world.migrate("web-7d9-abcde", targetNode="node-2")
    await to_checkpoint(world, name)
    await world.reconcile(name)
    await world.reconcile(name)
    pod, slot = await through_webhook(replacement(), kube=world.kube, namespace=NS)
    assert slot is not None
    created = (await world.kube.create_namespaced_pod(NS, pod)).metadata.name
    await world.reconcile(name)
    assert deleted(world) == [], "in use by the restore"
    world.kubelet.start(NS, created)
    assert await world.reconcile(name) is None
    assert len(deleted(world)) == 1 and world.status(name)["phase"] == "Succeeded"


async def test_the_outcome_is_saved_before_any_image_is_deleted(world: World) -> None:
    """A registry that stalls (connections accepted, never answered) holds back the deletion, never the outcome."""
    world.kube.add_pod(make_pod("web"))
    name = world.migrate(targetNode="node-2")
    await world.to_wait_ready(name)
    seen: list[str] = []
    delete = world.agents.delete_image

    async def observed_delete(**kwargs: Any) -> None:
        seen.append(world.status(name)["phase"])  # as the API server has it at that moment
        await delete(**kwargs)

    world.agents.delete_image = observed_delete  # type: ignore[method-assign]
    world.kubelet.start(NS, "web")
    assert await world.reconcile(name) is None
    assert seen == ["Succeeded"]


async def test_an_owned_rollback_in_a_namespace_being_deleted_lets_it_go() -> None:
    """No workload controller will bring the pod back there: the migration ends, its finalizer is released."""
    from migrator.controllers.podmigration import pods
    from migrator.controllers.podmigration.migration import Migration

    kube = FakeKube()
    kube.add_namespace("shop")["metadata"]["deletionTimestamp"] = "2026-11-30T11:19:48Z"
    migration = Migration({"metadata": {"name": "m", "namespace": "shop", "uid": "u"}, "spec": {"podName": "p"}, "status": {}})
    ctx = SimpleNamespace(core=kube)
    with pytest.raises(pods.NamespaceTerminating):
        await pods.check_namespace(ctx, migration)  # type: ignore[arg-type]
    del kube.namespaces["shop"]["metadata"]["deletionTimestamp"]
    await pods.check_namespace(ctx, migration)  # type: ignore[arg-type]
