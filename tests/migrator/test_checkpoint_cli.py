"""kubectl migrate checkpoint / restore / checkpoints / inspect / get checkpoints|restores|schedules with a fake API."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from kubeclient.resources import CustomResource
from migrator import api
from migrator.cli import checkpoints
from migrator.cli.arguments import parse_age, parse_args, parse_bytes
from migrator.cli.commands import Io
from migrator.cli.errors import CliError
from migrator.cli.kubeapi import api_error, missing_crd_hint
from ocicheckpoint import criuimages
from tests.migrator.test_cli import NOW, FakeApi, api_exception, run_cli, sample_node, sample_pod, ts


class CheckpointApi(FakeApi):
    """FakeApi plus the generic calls; ``watched`` scripts what watching any created object shows."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.watched: list[dict[str, Any] | None] = []
        self.selectors: list[str | None] = []
        self.pods[("shop", "web")] = sample_pod()
        self.nodes.update({"node-2": sample_node("node-2"), "cordoned": sample_node("cordoned", cordoned=True)})

    def put(self, resource: CustomResource, obj: dict[str, Any]) -> None:
        self.objects[(resource.plural, obj["metadata"].get("namespace", "shop"), obj["metadata"]["name"])] = obj

    async def create_object(self, *, resource: CustomResource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(f"create {resource.plural}")
        obj = json.loads(json.dumps(body))
        if "generateName" in obj["metadata"]:
            obj["metadata"]["name"] = obj["metadata"].pop("generateName") + "x7k2p"
        self.created.append(obj)
        self.put(resource, obj)
        return obj

    async def read_object(self, *, resource: CustomResource, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((resource.plural, namespace, name))

    async def list_objects(
        self, *, resource: CustomResource, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        self.selectors.append(label_selector)
        key, _, value = (label_selector or "").partition("=")
        return [
            o for (plural, ns, _), o in self.objects.items()
            if plural == resource.plural and namespace in (None, ns)
            and (not key or (o["metadata"].get("labels") or {}).get(key) == value)
        ]  # fmt: skip

    async def watch_object(self, *, resource: CustomResource, namespace: str, name: str) -> AsyncIterator[dict[str, Any] | None]:
        for obj in self.watched:
            yield obj
        await asyncio.Event().wait()


def checkpoint_obj(
    name: str = "web-20250301-115000",
    *,
    pod: str = "web",
    phase: str | None = "Available",
    namespace: str = "shop",
    **status: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "podmigrate.io/v1alpha1",
        "kind": "PodCheckpoint",
        "metadata": {
            "name": name, "namespace": namespace, "uid": "uid-c", "creationTimestamp": ts(0)[:19] + "Z",
            "labels": {api.LABEL_CHECKPOINT_POD: pod},
        },
        "spec": {"podName": pod, "mode": "Running", "pinned": False, "timeoutSeconds": 300},
        "status": {
            "phase": phase, "sourceNode": "node-1", "podUID": "uid-pod", "size": "5.0MiB", "totalBytes": 5 * 1024**2,
            "criuVersion": "4.0", "checkpointTime": ts(2),
            "containers": [{
                "name": "main", "image": "reg/ckpt/shop/web:ck-1", "digest": "sha256:" + "ab" * 32,
                "baseImage": "docker.io/library/nginx:1.27", "archiveBytes": 6 * 1024**2, "imageBytes": 5 * 1024**2,
            }],
            **status,
        } if phase else {},
    }  # fmt: skip


def restore_obj(phase: str | None, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "podmigrate.io/v1alpha1",
        "kind": "PodRestore",
        "metadata": {"name": "web-20250301-115000-restore-x7k2p", "namespace": "shop", "creationTimestamp": ts(300)[:19] + "Z"},
        "spec": {"checkpointName": "web-20250301-115000", "timeoutSeconds": 300},
        "status": {"phase": phase, **status} if phase else {},
    }


def schedule_obj() -> dict[str, Any]:
    return {
        "apiVersion": "podmigrate.io/v1alpha1",
        "kind": "CheckpointSchedule",
        "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": ts(0)[:19] + "Z"},
        "spec": {"podName": "web", "schedule": "@hourly", "retention": {"maxCountPerPod": 24}},
        "status": {"lastScheduleTime": ts(300)[:19] + "Z", "nextScheduleTime": ts(600 + 3300)[:19] + "Z", "kept": 3},
    }


def stand_in_inspection() -> dict[str, Any]:
    """What an agent records per container: Inspection.to_json(), written out by hand (small)."""
    return {
        "version": 1,
        "processes": [
            {"pid": 1, "ppid": 0, "pgid": 1, "sid": 1, "comm": "nginx", "threads": 1, "state": "alive",
             "vma_bytes": 10 * 1024**2, "pages_bytes": 2 * 1024**2},
            {"pid": 7, "ppid": 1, "pgid": 1, "sid": 1, "comm": "nginx-worker", "threads": 2, "state": "alive",
             "vma_bytes": 4 * 1024**2, "pages_bytes": 1024**2},
        ],
        "files": [{"pid": 1, "fd": 3, "type": "REG", "path": "/var/log/nginx/access.log"}],
        "sockets": [{"pid": 1, "fd": 6, "family": "IPv4", "type": "STREAM", "protocol": "TCP", "state": "LISTEN",
                     "local": "0.0.0.0:80", "remote": ""}],
        "mounts": [{"mountpoint": "/", "fstype": "overlay", "source": "overlay"}],
        "totals": {"processes": 2, "threads": 3, "vma_bytes": 14 * 1024**2, "pages_bytes": 3 * 1024**2, "files": 1,
                   "sockets": 1, "mounts": 1},
    }  # fmt: skip


# --- arguments ----------------------------------------------------------------------------------
def test_checkpoint_flags_and_defaults() -> None:
    args = parse_args(["checkpoint", "web"])
    assert (args.pod, args.suspend, args.pin, args.name, args.timeout, args.wait, args.schedule) == (
        "web", False, False, None, 300.0, False, None,
    )  # fmt: skip
    args = parse_args(["checkpoint", "pod/web", "--suspend", "--pin", "--name", "before-upgrade", "--timeout", "90s", "--wait"])
    assert (args.pod, args.suspend, args.pin, args.name, args.timeout, args.wait) == (
        "web",
        True,
        True,
        "before-upgrade",
        90.0,
        True,
    )
    args = parse_args(
        ["checkpoint", "web", "--schedule", "*/5  * * * *", "--keep", "3", "--max-age", "7d", "--max-bytes", "10Gi"]
    )
    assert (args.schedule, args.keep, args.max_age, args.max_bytes) == ("*/5 * * * *", 3, 7 * 86400.0, 10 * 1024**3)
    assert parse_args(["checkpoint", "web", "--schedule", "@daily"]).schedule == "@daily"


def test_restore_list_and_inspect_arguments() -> None:
    args = parse_args(["restore", "podcheckpoint/ck-1", "--to", "node-2", "--name", "web-copy", "--wait", "--timeout", "2m"])
    assert (args.checkpoint, args.to, args.new_name, args.wait, args.timeout) == ("ck-1", "node-2", "web-copy", True, 120.0)
    assert (parse_args(["restore", "ck-1"]).timeout, parse_args(["restore", "pck/ck-1"]).checkpoint) == (300.0, "ck-1")
    args = parse_args(["checkpoints", "pod/web", "-A", "-o", "name"])
    assert (args.pod, args.all_namespaces, args.output) == ("web", True, "name")
    assert parse_args(["checkpoints"]).pod is None
    args = parse_args(["inspect", "pck/ck-1", "-o", "json", "-n", "shop"])
    assert (args.name, args.output, args.namespace) == ("ck-1", "json", "shop")


def test_get_knows_the_checkpoint_kinds_by_kubectls_names() -> None:
    for words, kind in (
        (["checkpoints"], "checkpoints"), (["pck"], "checkpoints"), (["podcheckpoints.podmigrate.io"], "checkpoints"),
        (["restores"], "restores"), (["prs"], "restores"), (["schedules"], "schedules"), (["cks"], "schedules"),
    ):  # fmt: skip
        args = parse_args(["get", *words])
        assert (args.kind, args.name, args.drains) == (kind, None, False)
    assert (parse_args(["get", "restore", "r1"]).name, parse_args(["get", "cks/web"]).name) == ("r1", "web")
    assert parse_args(["get", "checkpoints", "-A"]).all_namespaces is True
    assert (parse_args(["get", "drains"]).kind, parse_args(["get", "web-1"]).kind) == ("drains", "migrations")
    args = parse_args(["describe", "checkpoint", "ck-1"])
    assert (args.kind, args.name) == ("checkpoints", "ck-1")


@pytest.mark.parametrize(
    ("text", "count"), [("1", 1), ("500Mi", 500 * 1024**2), ("10Gi", 10 * 1024**3), ("2G", 2 * 10**9), ("1.5Ki", 1536)]
)
def test_parse_bytes(text: str, count: int) -> None:
    assert parse_bytes(text) == count


@pytest.mark.parametrize(("text", "seconds"), [("7d", 7 * 86400), ("1d12h", 129600), ("36h", 129600), ("90m", 5400)])
def test_parse_age(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["checkpoint"], "required: POD"),
        (["checkpoint", "web", "--schedule", "@hourly", "--suspend"], "--schedule checkpoints running pods only"),
        (["checkpoint", "web", "--schedule", "@hourly", "--wait"], "--wait applies to one checkpoint, not to a --schedule"),
        (["checkpoint", "web", "--schedule", "@hourly", "--pin"], "--pin applies to one checkpoint"),
        (["checkpoint", "web", "--schedule", "@hourly", "--timeout", "1m"], "--timeout applies to one checkpoint"),
        (["checkpoint", "web", "--keep", "3"], "--keep is a retention rule: it needs --schedule"),
        (["checkpoint", "web", "--max-bytes", "1Gi"], "--max-bytes is a retention rule"),
        (["checkpoint", "web", "--schedule", "every hour"], 'invalid --schedule "every hour"'),
        (["checkpoint", "web", "--schedule", "@often"], 'invalid --schedule "@often": unknown macro'),
        (["checkpoint", "web", "--schedule", "0 0 30 2 *"], "no such day in feb: the schedule would never run"),
        (["checkpoint", "web", "--schedule", "@hourly", "--keep", "0"], 'invalid count "0": must be at least 1'),
        (["checkpoint", "web", "--schedule", "@hourly", "--max-age", "a week"], 'invalid age "a week"'),
        (["checkpoint", "web", "--schedule", "@hourly", "--max-bytes", "10GB"], 'invalid size "10GB"'),
        (["checkpoint", "web", "--timeout", "soon"], 'invalid duration "soon"'),
        (["restore"], "required: CHECKPOINT"),
        (["inspect", "ck-1", "-o", "name"], "invalid choice: 'name'"),
        (["checkpoints", "web", "extra"], "unrecognized arguments: extra"),
        (["get", "checkpoints", "ck-1", "-A"], "a PodCheckpoint cannot be retrieved by name across all namespaces"),
        (["get", "pck/ck-1", "extra"], 'unexpected argument "extra"'),
        (["describe", "restore", "r1"], "try 'kubectl migrate get restores NAME -o yaml'"),
        (["describe", "checkpoint"], "describe checkpoint needs the PodCheckpoint's name"),
    ],
)
def test_usage_errors_are_one_line_and_exit_1(argv: list[str], fragment: str) -> None:
    fake = CheckpointApi()
    code, out, err = run_cli(fake, *argv)
    assert code == 1 and out == "" and err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err
    assert fake.created == []


@pytest.mark.parametrize("command", ["checkpoint", "restore", "checkpoints", "inspect"])
def test_help_on_every_new_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(CheckpointApi(), command, "--help")
    usage = capsys.readouterr().out
    assert (code, err) == (0, "") and usage.startswith(f"usage: kubectl migrate {command}") and "--namespace" in usage


def test_inspect_help_mentions_checkpointctl_only_when_it_is_there(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    run_cli(CheckpointApi(), "inspect", "--help")
    assert "checkpointctl" not in capsys.readouterr().out
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/local/bin/{name}")
    run_cli(CheckpointApi(), "inspect", "--help")
    assert "checkpointctl inspect ckpt.tar" in " ".join(capsys.readouterr().out.split())


def test_the_examples_name_every_new_command(capsys: pytest.CaptureFixture[str]) -> None:
    run_cli(CheckpointApi(), "--help")
    usage = capsys.readouterr().out
    for example in ("migrate checkpoint web --wait", "--suspend", "--schedule @hourly", "migrate checkpoints web",
                    "migrate inspect", "migrate restore"):  # fmt: skip
        assert example in usage


# --- checkpoint ---------------------------------------------------------------------------------
def test_checkpoint_creates_a_podcheckpoint_named_after_the_pod_and_the_time() -> None:
    fake = CheckpointApi()
    code, out, err = run_cli(fake, "checkpoint", "web")
    assert (code, out, err) == (0, "podcheckpoint.podmigrate.io/web-20250301-120000 created\n", "")
    (body,) = fake.created
    assert body == {
        "apiVersion": "podmigrate.io/v1alpha1",
        "kind": "PodCheckpoint",
        "metadata": {"name": "web-20250301-120000", "namespace": "shop", "labels": {"podmigrate.io/pod": "web"}},
        "spec": {"podName": "web", "mode": "Running", "pinned": False, "timeoutSeconds": 300},
    }


def test_checkpoint_suspend_pin_name_and_timeout() -> None:
    fake = CheckpointApi()
    code, out, _ = run_cli(fake, "checkpoint", "web", "--suspend", "--pin", "--name", "before-upgrade", "--timeout", "1m30s")
    assert (code, out) == (0, "podcheckpoint.podmigrate.io/before-upgrade created\n")
    assert fake.created[0]["metadata"]["name"] == "before-upgrade"
    assert fake.created[0]["spec"] == {"podName": "web", "mode": "Suspend", "pinned": True, "timeoutSeconds": 90}


def test_a_long_pod_name_still_makes_a_valid_name_and_no_invalid_label() -> None:
    pod = "a" * 200 + "." + "b" * 52  # 253 characters: a valid pod name, too long for a label value
    fake = CheckpointApi()
    fake.pods[("shop", pod)] = sample_pod(pod)
    assert run_cli(fake, "checkpoint", pod)[0] == 0
    name = fake.created[0]["metadata"]["name"]
    assert len(name) <= 253 and name.endswith("b-20250301-120000") and "labels" not in fake.created[0]["metadata"]
    assert checkpoints.default_checkpoint_name("a" * 236 + ".b", io=Io(now=lambda: NOW)) == "a" * 236 + "-20250301-120000"


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        (None, 'pod "web" not found in namespace "shop"'),
        (sample_pod(phase="Pending"), 'pod "web" is Pending: only a Running pod can be checkpointed'),
        (sample_pod(deletionTimestamp=ts(0)), 'pod "web" is being deleted'),
        (sample_pod(ownerReferences=[{"kind": "ReplicaSet", "name": "web-5d8f", "uid": "u", "controller": True}]),
         'pod "web" is owned by ReplicaSet web-5d8f, which would replace it at once: checkpoint it without --suspend'),
    ],
)  # fmt: skip
def test_checkpoint_checks_the_pod_before_it_creates(pod: dict[str, Any] | None, message: str) -> None:
    fake = CheckpointApi()
    fake.pods.pop(("shop", "web"))
    if pod:
        fake.pods[("shop", "web")] = pod
    code, out, err = run_cli(fake, "checkpoint", "web", "--suspend")
    assert (code, out) == (1, "") and err.startswith(f"error: {message}") and err.count("\n") == 1 and fake.created == []


def test_the_crd_missing_is_named_in_one_line() -> None:
    error = api_error(api_exception(404, "Not Found", {"message": "404 page not found"}),
                      crd_hint=missing_crd_hint(api.PODRESTORES))  # fmt: skip
    assert error.message == (
        "the server has no podrestores.podmigrate.io resource: is the PodRestore CRD installed? "
        "(kubectl apply -f manifests/crd/podrestores.yaml)"
    )
    fake = CheckpointApi()

    async def refuse(**_: Any) -> dict[str, Any]:
        raise CliError(missing_crd_hint(api.PODCHECKPOINTS))

    fake.create_object = refuse  # type: ignore[method-assign]
    code, out, err = run_cli(fake, "checkpoint", "web")
    assert code == 1 and out == "" and "is the PodCheckpoint CRD installed?" in err and err.count("\n") == 1


# --- checkpoint --schedule ----------------------------------------------------------------------
def test_schedule_creates_a_checkpointschedule_with_its_retention() -> None:
    fake = CheckpointApi()
    code, out, err = run_cli(fake, "checkpoint", "web", "--schedule", "0 */6 * * *", "--keep", "4", "--max-age", "1d12h",
                             "--max-bytes", "2Gi")  # fmt: skip
    assert (code, out, err) == (0, "checkpointschedule.podmigrate.io/web created\n", "")
    assert fake.created == [{
        "apiVersion": "podmigrate.io/v1alpha1",
        "kind": "CheckpointSchedule",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"podName": "web", "schedule": "0 */6 * * *",
                 "retention": {"maxCountPerPod": 4, "maxAgeSeconds": 129600, "maxTotalBytes": 2 * 1024**3}},
    }]  # fmt: skip
    fake = CheckpointApi()
    assert run_cli(fake, "checkpoint", "web", "--schedule", "@daily", "--name", "nightly")[1] == (
        "checkpointschedule.podmigrate.io/nightly created\n"
    )
    assert fake.created[0]["spec"] == {"podName": "web", "schedule": "@daily"}
    code, _, err = run_cli(CheckpointApi(), "checkpoint", "db", "--schedule", "@daily")
    assert (code, err) == (1, 'error: pod "db" not found in namespace "shop"\n')


# --- checkpoint --wait --------------------------------------------------------------------------
def test_wait_follows_the_checkpoint_until_it_is_available() -> None:
    fake = CheckpointApi()
    fake.watched = [
        checkpoint_obj(phase=None), checkpoint_obj(phase="Pending"), checkpoint_obj(phase="Pending"),
        checkpoint_obj(phase="Checkpointing", message="dumping on node-1"), checkpoint_obj(),
    ]  # fmt: skip
    code, out, err = run_cli(fake, "checkpoint", "web", "--wait")
    lines = out.splitlines()
    assert (code, err) == (0, "")
    assert lines[0] == "podcheckpoint.podmigrate.io/web-20250301-120000 created"
    assert [line.split(" ", 1)[1] for line in lines[1:5]] == [
        "Pending (waiting for the control service)", "Pending", "Checkpointing: dumping on node-1", "Available",
    ]  # fmt: skip
    assert lines[5:] == [
        "podcheckpoint.podmigrate.io/web-20250301-115000 Available: 5.0MiB in 1 image(s) of pod web",
        "  CONTAINER   IMAGE                    SIZE",
        "  main        reg/ckpt/shop/web:ck-1   5.0MiB",
    ]


def test_wait_on_a_suspend_says_the_pod_was_removed() -> None:
    fake = CheckpointApi()
    fake.watched = [checkpoint_obj(suspended=True)]
    code, out, _ = run_cli(fake, "checkpoint", "web", "--suspend", "--wait")
    assert code == 0 and "the pod was removed (resume it with kubectl migrate restore)" in out


def test_wait_exits_1_with_reason_and_message_when_the_checkpoint_fails() -> None:
    fake = CheckpointApi()
    fake.watched = [checkpoint_obj(phase="Checkpointing"), checkpoint_obj(phase="Failed", reason="CheckpointFailed",
                                                                          message="criu dump: task 7 has a device open")]  # fmt: skip
    code, out, err = run_cli(fake, "checkpoint", "web", "--wait")
    assert code == 1 and out.splitlines()[-1].endswith("Failed: criu dump: task 7 has a device open")
    assert err == "error: CheckpointFailed: criu dump: task 7 has a device open\n"


def test_wait_gives_up_with_exit_2_and_a_deleted_checkpoint_is_exit_1() -> None:
    fake = CheckpointApi()
    fake.watched = [checkpoint_obj(phase="Checkpointing")]
    out, err = io.StringIO(), io.StringIO()
    code = asyncio.run(
        checkpoints.checkpoint_pod(
            kube=fake, io=Io(out=out, err=err, now=lambda: NOW), namespace="shop", pod_name="web", name=None,
            suspend=False, pin=False, timeout=0.05, wait=True, wait_grace=0.0,
        )
    )  # fmt: skip
    assert code == 2 and err.getvalue().count("\n") == 1
    assert err.getvalue().startswith("error: timed out after 50ms waiting for podcheckpoint.podmigrate.io/web-20250301-120000")
    assert "still Checkpointing" in err.getvalue() and "kubectl migrate inspect web-20250301-120000 -n shop" in err.getvalue()
    fake = CheckpointApi()
    fake.watched = [checkpoint_obj(phase="Pending"), None]
    code, _, err_text = run_cli(fake, "checkpoint", "web", "--wait")
    assert code == 1 and err_text == 'error: podcheckpoint.podmigrate.io "web-20250301-120000" was deleted while waiting for it\n'


# --- restore ------------------------------------------------------------------------------------
def restore_world() -> CheckpointApi:
    fake = CheckpointApi()
    fake.pods.pop(("shop", "web"))  # suspended: gone until restored
    fake.put(api.PODCHECKPOINTS, checkpoint_obj())
    return fake


def test_restore_creates_a_podrestore() -> None:
    fake = restore_world()
    code, out, err = run_cli(fake, "restore", "web-20250301-115000")
    assert (code, out, err) == (0, "podrestore.podmigrate.io/web-20250301-115000-restore-x7k2p created\n", "")
    assert fake.created == [{
        "apiVersion": "podmigrate.io/v1alpha1",
        "kind": "PodRestore",
        "metadata": {"name": "web-20250301-115000-restore-x7k2p", "namespace": "shop"},
        "spec": {"checkpointName": "web-20250301-115000", "timeoutSeconds": 300},
    }]  # fmt: skip


def test_restore_to_a_node_under_a_new_name() -> None:
    fake = restore_world()
    fake.pods[("shop", "web")] = sample_pod()  # still running: a copy is fine
    name = "very-long-checkpoint-name-of-pod-web-taken-20250301-115000"
    fake.put(api.PODCHECKPOINTS, checkpoint_obj(name))
    code, _, _ = run_cli(fake, "restore", name, "--to", "node-2", "--name", "web-copy", "--timeout", "10m")
    assert code == 0
    (body,) = fake.created
    assert body["metadata"]["name"] == "very-long-checkpoint-name-of-pod-web-tak-restore-x7k2p"
    assert body["spec"] == {"checkpointName": name, "timeoutSeconds": 600, "targetNode": "node-2", "podName": "web-copy"}
    assert checkpoints.restore_generate_name("a" * 39 + "-b") == "a" * 39 + "-restore-"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["restore", "nope"], 'podcheckpoint "nope" not found in namespace "shop"'),
        (["restore", "failed"], 'podcheckpoint "failed" Failed (CheckpointFailed: no space left): there is nothing to restore'),
        (["restore", "web-20250301-115000", "--to", "node-9"], 'node "node-9" not found'),
        (["restore", "web-20250301-115000", "--to", "cordoned"], 'node "cordoned" is cordoned (unschedulable)'),
        (["restore", "of-db"], 'pod "db" exists in namespace "shop": a restore under its name is refused '
                               "(give the copy a name with --name NEWNAME, or delete the pod)"),
        (["restore", "of-db", "--name", "db"], 'pod "db" exists in namespace "shop": a restore under its name is refused '
                                               "(pick another --name)"),
    ],
)  # fmt: skip
def test_restore_checks_before_it_creates(argv: list[str], message: str) -> None:
    fake = restore_world()
    fake.put(api.PODCHECKPOINTS, checkpoint_obj("pending", phase="Checkpointing"))
    fake.put(api.PODCHECKPOINTS, checkpoint_obj("failed", phase="Failed", reason="CheckpointFailed", message="no space left"))
    fake.put(api.PODCHECKPOINTS, checkpoint_obj("of-db", pod="db"))
    fake.pods[("shop", "db")] = sample_pod("db")
    code, out, err = run_cli(fake, *argv)
    assert code == 1 and out == "" and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert fake.created == []


def test_a_checkpoint_still_being_taken_can_be_restored_already() -> None:
    """The PodRestore waits for it: ``checkpoint web --suspend`` then ``restore`` at once, while pod web still exists."""
    fake = restore_world()
    fake.pods[("shop", "web")] = sample_pod()
    suspending = checkpoint_obj("suspending", phase="Suspending")
    suspending["spec"]["mode"] = "Suspend"
    fake.put(api.PODCHECKPOINTS, suspending)
    assert run_cli(fake, "restore", "suspending")[:2] == (0, "podrestore.podmigrate.io/suspending-restore-x7k2p created\n")
    fake.put(api.PODCHECKPOINTS, checkpoint_obj("running", phase="Checkpointing"))  # mode Running: web runs on
    code, _, err = run_cli(fake, "restore", "running")
    assert code == 1 and 'pod "web" exists in namespace "shop"' in err


def test_restore_wait_prints_the_pod_node_and_time_to_ready() -> None:
    fake = restore_world()
    fake.watched = [
        restore_obj(None), restore_obj("Restoring", targetNode="node-2"),
        restore_obj("Succeeded", targetNode="node-2", pod={"name": "web", "uid": "u"}, readySeconds="2.304"),
    ]  # fmt: skip
    code, out, err = run_cli(fake, "restore", "web-20250301-115000", "--wait")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == (
        "podrestore.podmigrate.io/web-20250301-115000-restore-x7k2p Succeeded: pod web on node-2, Ready 2.3s after the restore started"
    )
    assert [line.split(" ", 1)[1] for line in out.splitlines()[1:-1]] == [
        "Pending (waiting for the control service)", "Restoring", "Succeeded",
    ]  # fmt: skip


def test_restore_wait_exits_1_when_it_fails_and_2_when_it_gives_up() -> None:
    fake = restore_world()
    fake.watched = [restore_obj("Failed", reason="NotReady", message="the restored pod was not Ready within 300s")]
    code, _, err = run_cli(fake, "restore", "web-20250301-115000", "--wait")
    assert (code, err) == (1, "error: NotReady: the restored pod was not Ready within 300s\n")
    fake.watched = [restore_obj(None)]
    out, err_io = io.StringIO(), io.StringIO()
    code = asyncio.run(
        checkpoints.restore_checkpoint(
            kube=fake, io=Io(out=out, err=err_io, now=lambda: NOW), namespace="shop", checkpoint="web-20250301-115000",
            target=None, new_name=None, timeout=0.05, wait=True, wait_grace=0.0,
        )
    )  # fmt: skip
    assert code == 2 and "the control service has not picked it up" in err_io.getvalue()
    assert "kubectl migrate get restores web-20250301-115000-restore-x7k2p -n shop" in err_io.getvalue()


# --- checkpoints / get ----------------------------------------------------------------------------
def listing_world() -> CheckpointApi:
    fake = CheckpointApi()
    fake.put(api.PODCHECKPOINTS, checkpoint_obj())
    pinned = checkpoint_obj("db-1", pod="db", phase="Checkpointing", namespace="data")
    pinned["spec"] |= {"pinned": True, "mode": "Suspend"}
    pinned["status"] = {"phase": "Checkpointing", "sourceNode": "node-3"}
    fake.put(api.PODCHECKPOINTS, pinned)
    fake.put(api.PODCHECKPOINTS, checkpoint_obj("web-older", phase=None))
    return fake


def test_checkpoints_table() -> None:
    fake = listing_world()
    code, out, err = run_cli(fake, "checkpoints")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "NAME                  POD   MODE      PHASE       NODE     SIZE     PINNED   AGE",
        "web-20250301-115000   web   Running   Available   node-1   5.0MiB   false    10m",
        "web-older             web   Running   Pending     -        -        false    10m",
    ]
    code, out, _ = run_cli(fake, "checkpoints", "-A")
    assert [line.split()[:5] for line in out.splitlines()] == [
        ["NAMESPACE", "NAME", "POD", "MODE", "PHASE"],
        ["data", "db-1", "db", "Suspend", "Checkpointing"],
        ["shop", "web-20250301-115000", "web", "Running", "Available"],
        ["shop", "web-older", "web", "Running", "Pending"],
    ]
    assert out.splitlines()[1].split()[-2] == "true"


def test_checkpoints_of_one_pod_by_label_and_the_other_outputs() -> None:
    fake = listing_world()
    code, out, _ = run_cli(fake, "checkpoints", "db", "-A", "-o", "name")
    assert (code, out, fake.selectors) == (0, "podcheckpoint.podmigrate.io/db-1\n", ["podmigrate.io/pod=db"])
    document = json.loads(run_cli(fake, "checkpoints", "web", "-o", "json")[1])
    assert document["kind"] == "List" and [o["metadata"]["name"] for o in document["items"]] == [
        "web-20250301-115000",
        "web-older",
    ]
    assert yaml.safe_load(run_cli(fake, "checkpoints", "-o", "yaml")[1])["items"][0]["spec"]["podName"] == "web"
    code, out, err = run_cli(fake, "checkpoints", "nobody")
    assert (code, out, err) == (0, "", "No resources found in shop namespace.\n")


def test_get_checkpoints_restores_and_schedules() -> None:
    fake = listing_world()
    fake.put(api.PODRESTORES, restore_obj("Succeeded", targetNode="node-2", pod={"name": "web"}, readySeconds="2.304"))
    fake.put(api.CHECKPOINTSCHEDULES, schedule_obj())
    assert run_cli(fake, "get", "checkpoints")[1] == run_cli(fake, "checkpoints")[1]
    code, out, _ = run_cli(fake, "get", "restores")
    assert (code, out.splitlines()) == (0, [
        "NAME                                CHECKPOINT            POD   PHASE       NODE     READY IN   AGE",
        "web-20250301-115000-restore-x7k2p   web-20250301-115000   web   Succeeded   node-2   2.3s       5m",
    ])  # fmt: skip
    code, out, _ = run_cli(fake, "get", "schedules")
    assert (code, out.splitlines()) == (0, [
        "NAME   POD   SCHEDULE   SUSPEND   LAST     NEXT     KEPT   AGE",
        "web    web   @hourly    false     5m ago   in 55m   3      10m",
    ])  # fmt: skip
    assert run_cli(fake, "get", "cks/web", "-o", "name")[1] == "checkpointschedule.podmigrate.io/web\n"
    assert json.loads(run_cli(fake, "get", "pck", "web-older", "-o", "json")[1])["metadata"]["name"] == "web-older"
    assert run_cli(fake, "get", "checkpoint", "web-older")[1].splitlines()[1].startswith("web-older ")
    assert run_cli(fake, "get", "restores", "nope") == (1, "", 'error: podrestore "nope" not found in namespace "shop"\n')
    assert run_cli(CheckpointApi(), "get", "schedules", "-A")[2] == "No resources found.\n"


# --- inspect ------------------------------------------------------------------------------------
def test_inspect_prints_the_checkpoint_and_what_criu_saved() -> None:
    fake = CheckpointApi()
    fake.put(api.PODCHECKPOINTS, checkpoint_obj(inspection={"main": stand_in_inspection()}))
    code, out, err = run_cli(fake, "inspect", "web-20250301-115000")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:15] == [
        "Name:            web-20250301-115000",
        "Namespace:       shop",
        "Created:         2025-03-01T11:50:00Z (10m ago)",
        "Pod:             web (uid uid-pod)",
        "Mode:            Running",
        "Pinned:          false",
        "Schedule:        -",
        "Phase:           Available",
        "Reason:          -",
        "Message:         -",
        "Node:            node-1",
        f"Checkpoint Time: {ts(2)}",
        "CRIU Version:    4.0",
        "Size:            5.0MiB",
        "Containers:",
    ]
    assert lines[15:22] == [
        "  main:",
        "    Image:      reg/ckpt/shop/web:ck-1",
        "    Digest:     sha256:" + "ab" * 32,
        "    Base Image: docker.io/library/nginx:1.27",
        "    Archive:    6.0MiB",
        "    Image Size: 5.0MiB",
        "CRIU Images:",
    ]
    tree = criuimages.render_tree(criuimages.Inspection.from_json(stand_in_inspection()))
    assert lines[22:] == ["  main:", *[f"    {line}".rstrip() for line in tree.splitlines()]]
    assert "nginx-worker" in out and "0.0.0.0:80" in out and "/var/log/nginx/access.log" in out


def test_inspect_of_a_suspended_pods_checkpoint() -> None:
    fake = CheckpointApi()
    obj = checkpoint_obj(suspended=True, inspection={"main": stand_in_inspection()})
    obj["spec"] |= {"mode": "Suspend", "pinned": True}
    obj["metadata"]["labels"][api.LABEL_SCHEDULE] = "nightly"
    fake.put(api.PODCHECKPOINTS, obj)
    lines = run_cli(fake, "inspect", "web-20250301-115000")[1].splitlines()
    assert lines[4:8] == [
        "Mode:            Suspend",
        "Suspended:       yes (restore it to resume it)",
        "Pinned:          true",
        "Schedule:        nightly",
    ]
    obj["status"] |= {"suspended": False, "resumedBy": {"restore": "nap-restore-x7k2p", "pod": "u", "at": ts(60)}}
    assert "Suspended:       no (resumed by PodRestore nap-restore-x7k2p)" in run_cli(fake, "inspect", "web-20250301-115000")[1]


def test_inspect_without_an_inspection_says_so_in_one_line() -> None:
    fake = CheckpointApi()
    fake.put(api.PODCHECKPOINTS, checkpoint_obj())
    fake.put(api.PODCHECKPOINTS, checkpoint_obj("pending", phase="Checkpointing"))
    out = run_cli(fake, "inspect", "web-20250301-115000")[1]
    assert out.splitlines()[-1] == "CRIU Images:  <not recorded: the node agent that took this checkpoint predates inspection>"
    assert run_cli(fake, "inspect", "pending")[1].splitlines()[-1] == "CRIU Images:  <none: the checkpoint is Checkpointing>"


def test_inspect_of_a_broken_or_partial_inspection_is_still_a_page() -> None:
    fake = CheckpointApi()
    obj = checkpoint_obj(inspection={"main": {"processes": "many"}})
    obj["status"]["containers"].append({"name": "sidecar", "image": "reg/ckpt/shop/web-sidecar:ck-1"})
    fake.put(api.PODCHECKPOINTS, obj)
    code, out, err = run_cli(fake, "inspect", "web-20250301-115000")
    assert (code, err) == (0, "")
    assert out.splitlines()[-3:] == [
        "  main:",
        "    <cannot read it: 'processes' must be a list of objects>",
        "  sidecar:  <not recorded>",
    ]


def test_inspect_as_json_describe_checkpoint_and_not_found() -> None:
    fake = CheckpointApi()
    fake.put(api.PODCHECKPOINTS, checkpoint_obj(inspection={"main": stand_in_inspection()}))
    document = json.loads(run_cli(fake, "inspect", "pck/web-20250301-115000", "-o", "json")[1])
    assert document["status"]["inspection"]["main"]["totals"]["processes"] == 2
    assert run_cli(fake, "describe", "checkpoint", "web-20250301-115000")[1] == run_cli(fake, "inspect", "web-20250301-115000")[1]
    assert run_cli(fake, "inspect", "nope") == (1, "", 'error: podcheckpoint "nope" not found in namespace "shop"\n')
