"""kubectl-migrate: parsing, printing and error paths with a fake API; then the real thing on the local cluster."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from kubernetes_asyncio import client

from localcluster import cluster as lc
from localcluster.podmigrate import token_kubeconfig
from migrator.claims import Claims
from migrator.cli import commands, kubeapi, main, printing
from migrator.cli.arguments import parse_args, parse_duration
from migrator.cli.commands import Io
from migrator.cli.errors import CliError
from migrator.cli.kubeapi import api_error, default_namespace
from tests.conftest import Kube, Podmigrate, wait_for

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds: float) -> str:
    """A timestamp ``seconds`` after NOW - 10 minutes, as the API prints it."""
    return (NOW - timedelta(minutes=10) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- sample objects -------------------------------------------------------------------------
def sample_pod(name: str = "web", *, node: str = "node-1", phase: str = "Running", **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", **meta}, "spec": {"nodeName": node}, "status": {"phase": phase}}


def sample_node(name: str, *, ready: bool = True, cordoned: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"unschedulable": True} if cordoned else {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def succeeded_migration(name: str = "web-x7k2p", namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "podmigrate.io/v1alpha1",
        "kind": "PodMigration",
        "metadata": {"name": name, "namespace": namespace, "uid": "uid-1", "creationTimestamp": ts(0)[:19] + "Z"},
        "spec": {"podName": "web", "targetNode": "node-2", "timeoutSeconds": 300, "onFailure": "RestoreSource"},
        "status": {
            "phase": "Succeeded",
            "step": "Done",
            "reason": "Migrated",
            "message": "pod web moved from node-1 to node-2 with its state; downtime 2.30s",
            "sourceNode": "node-1",
            "targetNode": "node-2",
            "newPod": {"name": "web", "uid": "uid-new", "node": "node-2"},
            "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
            "downtimeSeconds": "2.304",
            "startTime": ts(0),
            "completionTime": ts(250),
            "containers": [
                {"name": "main", "image": "reg/ckpt/shop/web:pm-1", "archiveBytes": 5 * 1024 * 1024, "imageBytes": 1536}
            ],
            "phases": [
                {"name": "validate", "spanID": "a", "start": ts(0), "end": ts(0.012)},
                {"name": "checkpoint", "spanID": "b", "start": ts(0.012), "end": ts(1.5)},
                {"name": "restore", "spanID": "c", "start": ts(1.5), "end": ts(250)},
            ],
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "Migrated", "message": "moved"}],
        },
    }


def event(reason: str, at: float, message: str, *, kind: str = "Normal") -> dict[str, Any]:
    return {
        "type": kind,
        "reason": reason,
        "message": message,
        "lastTimestamp": ts(at)[:19] + "Z",
        "source": {"component": "podmigrate-controller"},
        "involvedObject": {"kind": "PodMigration", "name": "web-x7k2p", "uid": "uid-1"},
    }


# --- the fake API layer ---------------------------------------------------------------------
class FakeApi:
    """The ``Api`` protocol over dicts; ``states`` scripts what successive reads of a migration return."""

    def __init__(self, *, namespace: str = "shop") -> None:
        self.default_namespace = namespace
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.claims: Claims | None = {}  # None: this user may not read persistent volumes
        self.migrations: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self.states: list[dict[str, Any] | None] = []
        self.create_error: Exception | None = None
        self.calls: list[str] = []

    async def read_pod(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"read_pod {namespace}/{name}")
        return self.pods.get((namespace, name))

    async def read_node(self, *, name: str) -> dict[str, Any] | None:
        self.calls.append(f"read_node {name}")
        return self.nodes.get(name)

    async def read_claims(self, *, pod: Mapping[str, Any]) -> Claims | None:
        return self.claims

    async def list_claims(self) -> Claims | None:
        return self.claims

    async def create_migration(self, *, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(f"create {namespace}")
        if self.create_error:
            raise self.create_error
        obj = json.loads(json.dumps(body))
        obj["metadata"]["name"] = obj["metadata"].pop("generateName") + "x7k2p"
        self.created.append(obj)
        self.migrations[(namespace, obj["metadata"]["name"])] = obj
        return obj

    async def read_migration(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        return self.migrations.get((namespace, name))

    async def watch_migration(self, *, namespace: str, name: str) -> AsyncIterator[dict[str, Any] | None]:
        for obj in self.states:
            yield obj
        await asyncio.Event().wait()  # nothing changes any more

    async def list_migrations(self, *, namespace: str | None) -> list[dict[str, Any]]:
        return [m for (ns, _), m in self.migrations.items() if namespace in (None, ns)]

    async def list_events(self, *, namespace: str, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["involvedObject"]["name"] == name]


def run_cli(fake: FakeApi, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()

    @asynccontextmanager
    async def connect(*, kubeconfig: str | None, context: str | None) -> AsyncIterator[FakeApi]:
        yield fake

    code = main(list(argv), connect=connect, io=Io(out=out, err=err, now=lambda: NOW))
    return code, out.getvalue(), err.getvalue()


def cluster_world() -> FakeApi:
    fake = FakeApi()
    fake.pods[("shop", "web")] = sample_pod()
    fake.nodes.update(
        {
            "node-1": sample_node("node-1"),
            "node-2": sample_node("node-2"),
            "sick": sample_node("sick", ready=False),
            "cordoned": sample_node("cordoned", cordoned=True),
        }
    )
    return fake


def api_exception(status: int, reason: str, body: dict[str, Any] | None) -> client.ApiException:
    exc = client.ApiException(status=status, reason=reason)
    exc.body = json.dumps(body) if body is not None else None
    return exc


# --- argument parsing -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300s", 300), ("5m", 300), ("1m30s", 90), ("1.5h", 5400), ("250ms", 0.25), ("90", 90), ("2m0.5s", 120.5), ("1h1m1s", 3661)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "m", "-5s", "0s", "5s3", "s5", "1.2.3s", "5 m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_pod_arguments_and_defaults() -> None:
    args = parse_args(["pod", "web"])
    assert (args.command, args.name, args.to, args.wait, args.timeout) == ("pod", "web", None, False, 300.0)
    assert (args.on_failure, args.retain_checkpoint, args.namespace, args.kubeconfig, args.context) == (
        "RestoreSource", False, None, None, None,
    )  # fmt: skip
    args = parse_args(
        [
            "pod",
            "pod/web",
            "-n",
            "shop",
            "--to",
            "node-2",
            "--wait",
            "--timeout",
            "5m",
            "--on-failure",
            "Recreate",
            "--retain-checkpoint",
        ]
    )
    assert (args.name, args.namespace, args.to, args.wait, args.timeout, args.on_failure, args.retain_checkpoint) == (
        "web", "shop", "node-2", True, 300.0, "Recreate", True,
    )  # fmt: skip


def test_connection_flags_before_or_after_the_command() -> None:
    before = parse_args(["--kubeconfig", "/k", "--context", "c", "-n", "ns", "get"])
    after = parse_args(["get", "--kubeconfig", "/k", "--context", "c", "--namespace", "ns"])
    for args in (before, after):
        assert (args.kubeconfig, args.context, args.namespace) == ("/k", "c", "ns")
    assert parse_args(["-n", "a", "get", "-n", "b"]).namespace == "b"


def test_get_and_describe_arguments() -> None:
    args = parse_args(["get", "-A", "-o", "yaml"])
    assert (args.name, args.all_namespaces, args.output) == (None, True, "yaml")
    assert parse_args(["get", "podmigration.podmigrate.io/web-1"]).name == "web-1"
    assert parse_args(["describe", "pmig/web-1"]).name == "web-1"
    with pytest.raises(CliError, match="across all namespaces"):
        parse_args(["get", "web-1", "-A"])


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "required: COMMAND"),
        (["move", "web"], "invalid choice: 'move'"),
        (["pod"], "required: NAME"),
        (["pod", "web", "--timeout", "soon"], 'invalid duration "soon"'),
        (["pod", "web", "--on-failure", "Ignore"], "invalid choice: 'Ignore'"),
        (["get", "-o", "wide"], "invalid choice: 'wide'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_1(argv: list[str], fragment: str) -> None:
    code, out, err = run_cli(FakeApi(), *argv)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err


@pytest.mark.parametrize("argv", [["--help"], ["pod", "--help"], ["get", "-h"], ["describe", "--help"]])
def test_help_on_every_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(FakeApi(), *argv)
    usage = capsys.readouterr().out
    assert code == 0 and err == ""
    assert usage.startswith("usage: kubectl migrate") and "--kubeconfig" in usage and "--namespace" in usage


# --- printing -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.0421, "42ms"), (0.999, "999ms"), (2.304, "2.3s"), (59.94, "59.9s"), (250, "4m10s"), (3720, "1h2m")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert printing.format_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5s"), (119, "119s"), (250, "4m10s"), (300, "5m"), (900, "15m"), (12000, "3h20m"), (86400, "24h"), (3 * 86400, "3d"),
     (3 * 86400 + 3600, "3d1h"), (30 * 86400, "30d"), (-3, "0s")],
)  # fmt: skip
def test_format_age_like_kubectl(seconds: float, text: str) -> None:
    assert printing.format_age(seconds) == text


def test_format_bytes() -> None:
    assert [printing.format_bytes(n) for n in (None, 512, 1536, 5 * 1024**2, 3 * 1024**3)] == [
        "-",
        "512B",
        "1.5KiB",
        "5.0MiB",
        "3.0GiB",
    ]


def test_table_of_migrations() -> None:
    fresh = {
        "metadata": {"name": "db-abcde", "namespace": "data", "creationTimestamp": ts(595)[:19] + "Z"},
        "spec": {"podName": "db"},
    }
    text = printing.migrations_table([succeeded_migration(), fresh], now=NOW, all_namespaces=False)
    assert text.splitlines() == [
        "NAME        POD   PHASE       SOURCE   TARGET   DOWNTIME   AGE",
        "db-abcde    db    Pending     -        -        -          5s",
        "web-x7k2p   web   Succeeded   node-1   node-2   2.3s       10m",
    ]
    all_ns = printing.migrations_table([succeeded_migration(), fresh], now=NOW, all_namespaces=True).splitlines()
    assert all_ns[0].split() == ["NAMESPACE", "NAME", "POD", "PHASE", "SOURCE", "TARGET", "DOWNTIME", "AGE"]
    assert all_ns[1].split()[:2] == ["data", "db-abcde"]


def test_describe_renders_spec_status_phases_and_sorted_events() -> None:
    events = [
        event("Migrated", 250, "pod web moved"),
        event("Started", 0, "migrating pod web"),
        event("Checkpointed", 1.5, "1 container"),
    ]
    text = printing.describe(succeeded_migration(), events=events, now=NOW)
    lines = text.splitlines()
    assert "Name:      web-x7k2p" in lines and "Namespace: shop" in lines
    for expected in (
        "  Pod:               web",
        "  Target Node:       node-2",
        "  Timeout:           300s",
        "  On Failure:        RestoreSource",
        "  Phase:       Succeeded",
        "  Reason:      Migrated",
        "  Message:     pod web moved from node-1 to node-2 with its state; downtime 2.30s",
        "  Source Node: node-1",
        "  New Pod:     web on node-2 (uid uid-new)",
        "  Downtime:    2.3s",
        "  Duration:    4m10s",
        "  Trace ID:    4bf92f3577b34da6a3ce929d0e0e4736",
    ):
        assert expected in lines, f"{expected!r} missing from:\n{text}"
    phases = lines[lines.index("Phases:") + 1 : lines.index("Phases:") + 5]
    assert [row.split() for row in phases] == [
        ["PHASE", "START", "DURATION", "ERROR"],
        ["validate", "+0ms", "12ms"],
        ["checkpoint", "+12ms", "1.5s"],
        ["restore", "+1.5s", "4m8s"],
    ]
    assert "main   reg/ckpt/shop/web:pm-1   5.0MiB    1.5KiB" in text
    reasons = [row.split()[1] for row in lines[lines.index("Events:") + 2 :]]
    assert reasons == ["Started", "Checkpointed", "Migrated"]
    with_files = succeeded_migration()
    with_files["status"]["volumeData"] = {
        "image": "reg/ckpt/shop/web@sha256:aa",
        "volumes": ["data", "shm"],
        "dataBytes": 3 << 20,
    }
    assert "emptyDir files:  data, shm (3.0MiB) in reg/ckpt/shop/web@sha256:aa" in printing.describe(
        with_files, events=[], now=NOW
    )


def test_describe_lists_the_stages_when_there_are_any() -> None:
    obj = succeeded_migration()
    assert "Stages:" not in printing.describe(obj, events=[], now=NOW)
    obj["status"]["stages"] = [
        {"name": "freeze", "node": "node-1", "start": ts(0.012), "end": ts(0.016), "source": "agent"},
        {"name": "upload", "container": "main", "node": "node-1", "start": ts(0.5), "end": ts(1.4), "bytes": 1536,
         "source": "agent"},
        {"name": "fetch", "container": "main", "node": "node-2", "start": ts(1.5), "end": ts(1.9), "source": "kubelet"},
    ]  # fmt: skip
    lines = printing.describe(obj, events=[], now=NOW).splitlines()
    table = lines[lines.index("Stages:") + 1 : lines.index("Stages:") + 5]
    assert [row.split() for row in table] == [
        ["STAGE", "CONTAINER", "NODE", "START", "DURATION", "BYTES", "SOURCE"],
        ["freeze", "-", "node-1", "+12ms", "4ms", "-", "agent"],
        ["upload", "main", "node-1", "+500ms", "900ms", "1.5KiB", "agent"],
        ["fetch", "main", "node-2", "+1.5s", "400ms", "-", "kubelet"],
    ]
    assert lines.index("Phases:") < lines.index("Stages:") < lines.index("Conditions:")


def test_describe_of_a_running_and_of_a_failed_phase() -> None:
    obj = succeeded_migration()
    obj["status"] = {
        "phase": "RollingBack",
        "step": "ThawSource",
        "startTime": ts(0),
        "phases": [
            {"name": "checkpoint", "start": ts(0), "end": ts(3), "error": "checkpoint on node-1 failed (kubelet): 500"},
            {"name": "rollback-thaw-source", "start": ts(3)},
        ],
    }
    text = printing.describe(obj, events=[], now=NOW)
    rows = [line.split(maxsplit=3) for line in text.split("Phases:\n")[1].splitlines()[1:3]]
    assert rows == [
        ["checkpoint", "+0ms", "3.0s", "checkpoint on node-1 failed (kubelet): 500"],
        ["rollback-thaw-source", "+3.0s", "running", "(9m57s)"],
    ]
    assert text.rstrip().endswith("Events:  <none>")
    pending = printing.describe({"metadata": {"name": "m"}, "spec": {"podName": "web"}}, events=[], now=NOW)
    assert "Phase:       Pending (not picked up by the control service yet)" in pending
    assert "Target Node:       <any node that fits>" in pending


def test_progress_and_outcome_lines() -> None:
    when = datetime(2025, 3, 1, 12, 0, 7, tzinfo=UTC)
    line = printing.progress_line({"status": {"phase": "Checkpointing", "step": "Checkpoint"}}, when=when)
    assert line == f"{when.astimezone():%H:%M:%S} Checkpointing Checkpoint"
    assert printing.progress_line({"status": {}}, when=when).endswith("Pending (waiting for the control service)")
    assert printing.outcome_line(succeeded_migration()) == (
        "podmigration.podmigrate.io/web-x7k2p Succeeded: pod web moved from node-1 to node-2 with its state; downtime 2.30s"
        " [downtime 2.3s, total 4m10s]"
    )


def test_render_json_yaml_name_without_managed_fields() -> None:
    obj = succeeded_migration()
    obj["metadata"]["managedFields"] = [{"manager": "x"}]
    assert json.loads(printing.render(obj, output="json"))["metadata"].get("managedFields") is None
    listing = yaml.safe_load(printing.render([obj], output="yaml"))
    assert listing["kind"] == "List" and listing["items"][0]["status"]["phase"] == "Succeeded"
    assert (
        printing.render([obj, obj], output="name")
        == "podmigration.podmigrate.io/web-x7k2p\n" * 1 + "podmigration.podmigrate.io/web-x7k2p"
    )


# --- kubectl migrate pod: checks, creation, errors ------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pod", "gone"], 'error: pod "gone" not found in namespace "shop"'),
        (["pod", "web", "-n", "other"], 'error: pod "web" not found in namespace "other"'),
        (["pod", "pending"], 'error: pod "pending" is Pending, not Running: there is no process to checkpoint'),
        (["pod", "leaving"], 'error: pod "leaving" is being deleted'),
        (["pod", "web", "--to", "no-such-node"], 'error: node "no-such-node" not found'),
        (["pod", "web", "--to", "node-1"], 'error: pod "web" already runs on node "node-1"'),
        (["pod", "web", "--to", "sick"], 'error: node "sick" is not Ready'),
        (
            ["pod", "web", "--to", "cordoned"],
            'error: node "cordoned" is cordoned (unschedulable): uncordon it or pick another node',
        ),
    ],
)
def test_pod_checks_fail_with_one_line_before_creating_anything(argv: list[str], message: str) -> None:
    fake = cluster_world()
    fake.pods[("shop", "pending")] = sample_pod("pending", phase="Pending")
    fake.pods[("shop", "leaving")] = sample_pod("leaving", deletionTimestamp=ts(0))
    code, out, err = run_cli(fake, *argv)
    assert (code, out, err) == (1, "", message + "\n")
    assert not fake.created


def test_pod_that_is_already_moving_or_uses_host_files_is_refused_in_one_line() -> None:
    fake = cluster_world()
    moving = succeeded_migration("web-abcde")
    moving["status"] = {"phase": "Checkpointing", "step": "Checkpoint"}
    fake.migrations[("shop", "web-abcde")] = moving
    code, out, err = run_cli(fake, "pod", "web", "--to", "node-2")
    assert (code, out, err) == (1, "", 'error: pod "web" is already being moved by podmigration.podmigrate.io "web-abcde"\n')
    fake.migrations[("shop", "web-abcde")]["status"] = {"phase": "Succeeded", "step": "Done"}
    fake.pods[("shop", "scratch")] = {
        **sample_pod("scratch"),
        "spec": {"nodeName": "node-1", "volumes": [{"name": "tmp", "emptyDir": {}}]},
    }
    code, out, err = run_cli(fake, "pod", "scratch", "--to", "node-2")  # its emptyDir files move with it
    assert code == 0 and "deleteEmptyDirData" not in fake.created[-1]["spec"]
    fake.pods[("shop", "logger")] = {
        **sample_pod("logger"),
        "spec": {"nodeName": "node-1", "volumes": [{"name": "logs", "hostPath": {"path": "/var/log"}}]},
    }
    code, out, err = run_cli(fake, "pod", "logger", "--to", "node-2")
    assert code == 1 and err.startswith('error: pod "logger" mounts hostPath volume(s) logs: ') and err.count("\n") == 1
    fake.pods[("shop", "cache")] = {**fake.pods[("shop", "scratch")], "metadata": sample_pod("cache")["metadata"]}
    code, out, err = run_cli(fake, "pod", "cache", "--to", "node-2", "--delete-emptydir-data")
    assert code == 0 and fake.created[-1]["spec"]["deleteEmptyDirData"] is True


def test_pod_creates_a_podmigration() -> None:
    fake = cluster_world()
    code, out, err = run_cli(
        fake, "pod", "web", "--to", "node-2", "--timeout", "90.5s", "--on-failure", "Recreate", "--retain-checkpoint"
    )
    assert (code, out, err) == (0, "podmigration.podmigrate.io/web-x7k2p created\n", "")
    assert fake.created == [
        {
            "apiVersion": "podmigrate.io/v1alpha1",
            "kind": "PodMigration",
            "metadata": {"name": "web-x7k2p", "namespace": "shop"},
            "spec": {
                "podName": "web",
                "targetNode": "node-2",
                "timeoutSeconds": 91,
                "onFailure": "Recreate",
                "retainCheckpoint": True,
            },
        }
    ]


def test_pod_without_target_lets_the_controller_choose() -> None:
    fake = cluster_world()
    code, _, _ = run_cli(fake, "pod", "web")
    assert code == 0 and "targetNode" not in fake.created[0]["spec"]
    assert fake.created[0]["spec"]["timeoutSeconds"] == 300 and fake.created[0]["spec"]["onFailure"] == "RestoreSource"
    assert not [c for c in fake.calls if c.startswith("read_node")]


def test_server_rejection_is_one_line_and_exit_1() -> None:
    fake = cluster_world()
    message = (
        'PodMigration.podmigrate.io "web-" is invalid: spec.timeoutSeconds: Invalid value: 5: '
        "spec.timeoutSeconds in body should be greater than or equal to 10"
    )
    fake.create_error = api_error(api_exception(422, "Unprocessable Entity", {"kind": "Status", "message": message, "code": 422}))
    code, out, err = run_cli(fake, "pod", "web", "--timeout", "5s")
    assert (code, out, err) == (1, "", f"error: {message}\n")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"message": "Unauthorized"}, "unauthorized (401): the API server rejected the credentials in the kubeconfig"),
        (403, {"message": 'pods "web" is forbidden: User "u" cannot get resource "pods"'},
         'forbidden (403): pods "web" is forbidden: User "u" cannot get resource "pods"'),
        (404, {"message": "the server could not find the requested resource"}, "is the PodMigration CRD installed?"),
        (422, {"message": "bad\nworse"}, "bad; worse"),
        (500, {"message": "etcd down"}, "500 Internal Server Error: etcd down"),
        (503, None, "503 Service Unavailable: Service Unavailable"),
    ],
)  # fmt: skip
def test_api_errors_become_one_line(status: int, body: dict[str, Any] | None, expected: str) -> None:
    reason = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 422: "Unprocessable Entity", 500: "Internal Server Error"}
    error = api_error(api_exception(status, reason.get(status, "Service Unavailable"), body))
    assert expected in error.message and "\n" not in error.message and error.code == 1


def test_forbidden_while_checking_is_one_line() -> None:
    fake = cluster_world()

    async def forbidden(**_: Any) -> None:
        raise api_error(
            api_exception(403, "Forbidden", {"message": 'pods "web" is forbidden: User "nobody" cannot get resource'})
        )

    fake.read_pod = forbidden  # type: ignore[method-assign]
    code, out, err = run_cli(fake, "pod", "web")
    assert (code, out) == (
        1,
        "",
    ) and err == 'error: forbidden (403): pods "web" is forbidden: User "nobody" cannot get resource\n'


def test_an_unexpected_exception_is_still_one_line() -> None:
    fake = cluster_world()

    async def broken(**_: Any) -> None:
        raise RuntimeError("something\nodd")

    fake.read_pod = broken  # type: ignore[method-assign]
    code, out, err = run_cli(fake, "pod", "web")
    assert (code, out, err) == (1, "", "error: unexpected RuntimeError: something; odd\n")


def test_namespace_defaults_to_the_contexts() -> None:
    fake = cluster_world()
    fake.default_namespace = "elsewhere"
    code, _, err = run_cli(fake, "pod", "web")
    assert code == 1 and err == 'error: pod "web" not found in namespace "elsewhere"\n'
    assert run_cli(fake, "pod", "web", "-n", "shop")[0] == 0


# --- --wait ---------------------------------------------------------------------------------
def state(phase: str | None, step: str | None = None, **status: Any) -> dict[str, Any]:
    obj = succeeded_migration()
    obj["status"] = {"phase": phase, "step": step, **status} if phase else {}
    return obj


def test_wait_prints_each_change_and_exits_0_on_success() -> None:
    fake = cluster_world()
    fake.states = [
        state(None),
        state(None),
        state("Pending", "Validate"),
        state("Pending", "Validate"),
        state("Checkpointing", "Checkpoint"),
        state("Checkpointing", "Checkpoint"),
        state("Restoring", "WaitReady"),
        succeeded_migration(),
    ]
    code, out, err = run_cli(fake, "pod", "web", "--to", "node-2", "--wait")
    lines = out.splitlines()
    assert code == 0 and err == ""
    assert lines[0] == "podmigration.podmigrate.io/web-x7k2p created"
    assert [line.split(" ", 1)[1] for line in lines[1:-1]] == [
        "Pending (waiting for the control service)",
        "Pending Validate",
        "Checkpointing Checkpoint",
        "Restoring WaitReady",
        "Succeeded Done",
    ]
    assert lines[-1].endswith("downtime 2.30s [downtime 2.3s, total 4m10s]")


def test_wait_exits_1_on_failure_with_reason_and_message() -> None:
    fake = cluster_world()
    failed = state(
        "Failed", "Done", reason="CheckpointFailed", message="checkpoint on node-1 failed; the source pod was left running"
    )
    fake.states = [state("Checkpointing", "Checkpoint"), failed]
    code, out, err = run_cli(fake, "pod", "web", "--wait")
    assert code == 1 and out.splitlines()[-1].endswith("Failed Done")
    assert err == "error: CheckpointFailed: checkpoint on node-1 failed; the source pod was left running\n"


def give_up(fake: FakeApi) -> tuple[int, str, str]:
    """--wait with a 50 ms timeout and no grace: what main() runs, minus the 30 s."""
    out, err = io.StringIO(), io.StringIO()
    code = asyncio.run(
        commands.migrate_pod(
            kube=fake, io=Io(out=out, err=err, now=lambda: NOW), namespace="shop", pod_name="web", target=None,
            wait=True, timeout=0.05, on_failure="RestoreSource", retain_checkpoint=False, wait_grace=0.0,
        )
    )  # fmt: skip
    return code, out.getvalue(), err.getvalue()


def test_wait_exits_2_when_it_gives_up() -> None:
    fake = cluster_world()
    fake.states = [state("Checkpointing", "Checkpoint")]
    code, out, err = give_up(fake)
    assert code == 2 and out.count("Checkpointing Checkpoint") == 1
    assert err.count("\n") == 1 and err.startswith("error: timed out after 50ms waiting for podmigration.podmigrate.io/web-x7k2p")
    assert "still Checkpointing (Checkpoint)" in err and "kubectl migrate describe web-x7k2p -n shop" in err


def test_wait_grace_outlasts_the_migrations_own_timeout() -> None:
    assert commands.WAIT_GRACE >= 10
    assert parse_args(["pod", "web", "--wait"]).timeout == 300.0


def test_wait_without_a_controller_says_so() -> None:
    fake = cluster_world()
    fake.states = [state(None)]
    code, _, err = give_up(fake)
    assert code == 2 and "the control service has not picked it up (is podmigrate-controller running?)" in err


def test_wait_on_a_deleted_migration() -> None:
    fake = cluster_world()
    fake.states = [state("Pending", "Validate"), None]
    code, _, err = run_cli(fake, "pod", "web", "--wait")
    assert code == 1 and err == 'error: podmigration.podmigrate.io "web-x7k2p" was deleted while waiting for it\n'


# --- get / describe -------------------------------------------------------------------------
def test_get_lists_shows_one_and_rejects_unknown_names() -> None:
    fake = FakeApi()
    fake.migrations[("shop", "web-x7k2p")] = succeeded_migration()
    fake.migrations[("data", "db-1")] = succeeded_migration("db-1", "data")
    code, out, _ = run_cli(fake, "get")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["NAME", "web-x7k2p"]
    code, out, _ = run_cli(fake, "get", "-A")
    assert code == 0 and [line.split()[:2] for line in out.splitlines()][1:] == [["data", "db-1"], ["shop", "web-x7k2p"]]
    code, out, _ = run_cli(fake, "get", "web-x7k2p", "-o", "json")
    assert code == 0 and json.loads(out)["status"]["phase"] == "Succeeded"
    code, out, err = run_cli(fake, "get", "nope")
    assert (code, out, err) == (1, "", 'error: podmigration "nope" not found in namespace "shop"\n')
    code, out, err = run_cli(fake, "get", "-n", "empty")
    assert (code, out, err) == (0, "", "No resources found in empty namespace.\n")


def test_describe_shows_only_this_objects_events() -> None:
    fake = FakeApi()
    fake.migrations[("shop", "web-x7k2p")] = succeeded_migration()
    stale = event("Started", 0, "an older PodMigration of the same name")
    stale["involvedObject"]["uid"] = "uid-0"
    fake.events = [event("Migrated", 250, "pod web moved"), stale]
    code, out, _ = run_cli(fake, "describe", "web-x7k2p")
    assert code == 0 and "Migrated" in out and "an older PodMigration" not in out
    code, out, err = run_cli(fake, "describe", "nope")
    assert (code, out, err) == (1, "", 'error: podmigration "nope" not found in namespace "shop"\n')


# --- the real API layer without a cluster ---------------------------------------------------
def write_kubeconfig(path: Path, *, server: str, namespace: str | None = None) -> Path:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "main", "context": context}, {"name": "other", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "main",
            }
        )
    )
    return path


def test_default_namespace_comes_from_the_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(write_kubeconfig(tmp_path / "config", server="https://127.0.0.1:1", namespace="team-a"))
    assert default_namespace(kubeconfig=path, context=None) == "team-a"
    assert default_namespace(kubeconfig=path, context="other") == "default"
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}{os.pathsep}{path}")
    assert default_namespace(kubeconfig=None, context=None) == "team-a"


def test_no_cluster_and_bad_kubeconfigs_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(write_kubeconfig(tmp_path / "config", server="https://127.0.0.1:1"))
    for argv, fragment in (
        (["--kubeconfig", path, "get"], "error: cannot reach the Kubernetes API server at https://127.0.0.1:1: "),
        (["--kubeconfig", path, "pod", "web"], "error: cannot reach the Kubernetes API server at https://127.0.0.1:1: "),
        (["--kubeconfig", str(tmp_path / "nope"), "get"], f'error: kubeconfig "{tmp_path / "nope"}" does not exist'),
        (["--kubeconfig", path, "--context", "ghost", "get"], 'error: context "ghost" not found in the kubeconfig'),
    ):
        out, err = io.StringIO(), io.StringIO()
        code = main(argv, io=Io(out=out, err=err))
        assert code == 1 and out.getvalue() == "", argv
        assert err.getvalue().startswith(fragment) and err.getvalue().count("\n") == 1, err.getvalue()
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    err = io.StringIO()
    assert main(["get"], io=Io(out=io.StringIO(), err=err)) == 1
    assert err.getvalue() == f'error: no kubeconfig file found at KUBECONFIG="{tmp_path / "absent"}"\n'


# --- 429: the API server asks the CLI to come back (retried with tenacity) -------------------
TOO_MANY = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "TooManyRequests", "code": 429,
            "message": "too many requests, please try again later"}  # fmt: skip


Answer = tuple[int, dict[str, Any], dict[str, str]]  # status, JSON body, headers


async def read_pod_from(tmp_path: Path, answers: list[Answer], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, int, list[float]]:
    """``read_pod`` against a real HTTP server answering ``answers`` in turn, then the last one again:
    (the pod or the CliError, requests made, back-offs slept)."""
    requests, sleeps = 0, []

    async def handler(request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        assert request.path == "/api/v1/namespaces/shop/pods/web"
        status, body, headers = answers[min(requests, len(answers)) - 1]
        return web.json_response(body, status=status, headers=headers)

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(kubeapi, "RETRY_ON_429", kubeapi.RETRY_ON_429.copy(sleep=record))
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        path = str(write_kubeconfig(tmp_path / "config", server=f"http://127.0.0.1:{runner.addresses[0][1]}"))
        async with kubeapi.connect(kubeconfig=path, context=None) as api:
            try:
                result: Any = await api.read_pod(namespace="shop", name="web")
            except CliError as exc:
                result = exc
    finally:
        await runner.cleanup()
    return result, requests, sleeps


async def test_a_429_is_retried_after_the_servers_retry_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[Answer] = [
        (429, TOO_MANY, {"Retry-After": "0.5"}),
        (429, TOO_MANY, {"Retry-After": "30"}),  # kept to 2 s: someone is waiting
        (200, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"}}, {}),
    ]
    pod, requests, sleeps = await read_pod_from(tmp_path, answers, monkeypatch)
    assert pod["metadata"] == {"name": "web", "namespace": "shop"}
    assert (requests, sleeps) == (3, [0.5, 2.0])


async def test_429s_give_up_after_the_retries_with_the_servers_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    error, requests, sleeps = await read_pod_from(tmp_path, [(429, TOO_MANY, {})], monkeypatch)
    assert isinstance(error, CliError)
    assert str(error) == "429 Too Many Requests: too many requests, please try again later"
    assert (requests, sleeps) == (kubeapi.RETRIES_429 + 1, [1.0] * kubeapi.RETRIES_429)


async def test_other_errors_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = {"kind": "Status", "status": "Failure", "message": "etcd is sad", "code": 500}
    error, requests, sleeps = await read_pod_from(tmp_path, [(500, body, {})], monkeypatch)
    assert str(error) == "500 Internal Server Error: etcd is sad"
    assert (requests, sleeps) == (1, [])
    missing = {"kind": "Status", "status": "Failure", "reason": "NotFound", "details": {"name": "web"}, "code": 404}
    assert await read_pod_from(tmp_path, [(404, missing, {})], monkeypatch) == (None, 1, [])


# --- the deploy manifests (kubectl apply -k manifests) ---------------------------------------
def deploy_objects() -> dict[str, dict[str, Any]]:
    docs = [d for f in sorted((REPO / "manifests" / "deploy").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs if d["kind"] != "Kustomization"}


def test_manifests_kustomization_includes_crd_rbac_and_deploy() -> None:
    top = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert top["resources"] == ["crd", "rbac", "deploy"]
    listed = yaml.safe_load((REPO / "manifests" / "deploy" / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in (REPO / "manifests" / "deploy").glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_controller_deployment_is_locked_down() -> None:
    deployment = deploy_objects()["Deployment/podmigrate-controller"]
    spec = deployment["spec"]
    assert deployment["metadata"]["namespace"] == "podmigrate-system"
    assert spec["replicas"] == 2, "a standby takes over from the leader (kubeclient/leasing.py)"
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}
    budget = deploy_objects()["PodDisruptionBudget/podmigrate-controller"]["spec"]
    assert budget["minAvailable"] == 1 and budget["selector"] == spec["selector"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["serviceAccountName"] == "podmigrate-controller" and pod["securityContext"]["runAsNonRoot"] is True
    assert container["image"] == "ghcr.io/podmigrate/podmigrate:0.1.0"
    assert container["command"] == [
        "podmigrate-controller", "--checkpoint-repository", "$(CHECKPOINT_REPOSITORY)",
        "--agent-port", "10260", "--webhook-address", "0.0.0.0:9443", "--health-address", "$(POD_IP):8080",
        "--agent-token-file", "/var/run/secrets/podmigrate.io/agent/token",
        "--webhook-client-ca", "/etc/podmigrate/webhook-client/ca.crt",
    ]  # fmt: skip
    assert not any("cert" in a or "agent-ca" in a for a in container["command"]), "certificates are issued in the cluster"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["agent-token"]["projected"]["sources"] == [
        {"serviceAccountToken": {"audience": "podmigrate.io/agent", "expirationSeconds": 3600, "path": "token"}}
    ], "agents get a token of their own audience, never the controller's API token"
    assert volumes["webhook-client-ca"]["configMap"]["name"] == "podmigrate-webhook-client-ca"
    env = {e["name"]: e.get("valueFrom", {}).get("configMapKeyRef") for e in container["env"]}
    assert env["CHECKPOINT_REPOSITORY"] == {"name": "podmigrate-config", "key": "CHECKPOINT_REPOSITORY"}
    fields = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container["env"]}
    assert fields["POD_NAME"] == "metadata.name" and fields["POD_NAMESPACE"] == "metadata.namespace", "the Lease"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["optional"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    config = deploy_objects()["ConfigMap/podmigrate-config"]["data"]
    assert set(config) == {"CHECKPOINT_REPOSITORY", "OTEL_EXPORTER_OTLP_ENDPOINT"}


def test_agent_daemonset_runs_on_every_node_with_host_access() -> None:
    pod = deploy_objects()["DaemonSet/podmigrate-agent"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["serviceAccountName"] == "podmigrate-agent"
    assert pod["hostNetwork"] is True and container["securityContext"]["privileged"] is True
    assert pod["hostPID"] is True, "from its own PID namespace the agent sees no process in a frozen cgroup to kill"
    assert pod["tolerations"] == [{"operator": "Exists"}], "every taint: it must run on cordoned nodes"
    assert container["command"] == [
        "podmigrate-agent", "--node-name", "$(NODE_NAME)", "--listen", "$(NODE_IP):10260", "--cert-dir", "/run/podmigrate/tls",
        "--registry-credentials", "/etc/podmigrate/registry/.dockerconfigjson",
    ]  # fmt: skip
    (tls,) = (v for v in pod["volumes"] if v["name"] == "tls")
    assert tls["emptyDir"]["medium"] == "Memory", "the agent's own key never touches the node's disk"
    fields = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container["env"]}
    assert fields["NODE_NAME"] == "spec.nodeName" and fields["NODE_IP"] == "status.hostIP"
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert host_paths == {
        "/var/lib/kubelet/checkpoints", "/sys/fs/cgroup", "/run/podmigrate/stop-after-dump",
        "/var/lib/kubelet/pods", "/var/lib/podmigrate", "/etc/podmigrate/keys",
    } and host_paths <= mounts  # fmt: skip
    keys = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/podmigrate/keys")
    assert keys["readOnly"] is True, "the node's private key: read to decrypt volume data, never written"
    pods_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/var/lib/kubelet/pods")
    assert pods_mount["readOnly"] is True and pods_mount["mountPropagation"] == "HostToContainer", "memory emptyDirs are mounts"
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "agent", "scheme": "HTTPS"}


# --- on the real local cluster --------------------------------------------------------------
def cli(cluster: lc.Cluster, *args: str, kubeconfig: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "kubectl-migrate"), "--kubeconfig", kubeconfig or cluster.kubeconfig, *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def kubectl_plugin(cluster: lc.Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``kubectl migrate ...``: kubectl finds kubectl-migrate on PATH."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KUBECONFIG": cluster.kubeconfig}
    return subprocess.run([cluster.kubectl, "migrate", *args], capture_output=True, text=True, timeout=60, check=False, env=env)


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 1, result
    assert result.stdout == "" and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(expected), result.stderr


def install_crd(kube: Kube) -> None:
    kube.run("apply", "-f", str(REPO / "manifests" / "crd" / "podmigrations.yaml"))
    kube.run("wait", "--for=condition=Established", "crd/podmigrations.podmigrate.io", "--timeout=30s")
    wait_for("podmigrations served", lambda: kube.run("get", "podmigrations", "-A", check=False).returncode == 0)


def running_pod(kube: Kube, cluster: lc.Cluster, namespace: str, name: str = "web") -> dict[str, Any]:
    kube.apply(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n"
        f"  nodeName: {cluster.nodes[0].name}\n  terminationGracePeriodSeconds: 1\n"
        f"  containers:\n  - name: main\n    image: {cluster.images['counter']}\n"
    )
    return wait_for("pod Running", lambda: (p := kube.get("pod", name, namespace))["status"].get("phase") == "Running" and p)


@pytest.mark.cluster
def test_cli_on_the_local_cluster(kube: Kube, cluster: lc.Cluster, namespace: str, tmp_path: Path) -> None:
    install_crd(kube)
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    running_pod(kube, cluster, namespace)

    assert_one_line_error(
        cli(cluster, "pod", "missing-pod", "-n", namespace), f'error: pod "missing-pod" not found in namespace "{namespace}"'
    )
    assert_one_line_error(
        cli(cluster, "pod", "web", "-n", namespace, "--to", "no-such-node"), 'error: node "no-such-node" not found'
    )
    assert_one_line_error(
        cli(cluster, "pod", "web", "-n", namespace, "--to", source), f'error: pod "web" already runs on node "{source}"'
    )

    # The API server's validation (the CRD schema) is the judge of the spec; its message comes through on one line.
    rejected = cli(cluster, "pod", "web", "-n", namespace, "--to", target, "--timeout", "5s")
    assert_one_line_error(rejected, "error: PodMigration.podmigrate.io")
    assert "spec.timeoutSeconds" in rejected.stderr and "greater than or equal to 10" in rejected.stderr
    bad = kube.run(
        "create", "-f", "-", check=False,
        input=f"apiVersion: podmigrate.io/v1alpha1\nkind: PodMigration\nmetadata: {{name: bad, namespace: {namespace}}}\n"
        "spec: {podName: Bad_Name, timeoutSeconds: 1}\n",
    )  # fmt: skip
    assert bad.returncode != 0 and "spec.podName" in bad.stderr and "should match" in bad.stderr, bad.stderr
    assert "spec.timeoutSeconds" in bad.stderr and "greater than or equal to 10" in bad.stderr, bad.stderr

    created = cli(cluster, "pod", "web", "-n", namespace, "--to", target, "--timeout", "2m")
    assert created.returncode == 0 and created.stderr == "", created
    name = created.stdout.strip().removeprefix("podmigration.podmigrate.io/").removesuffix(" created")
    assert created.stdout == f"podmigration.podmigrate.io/{name} created\n" and name.startswith("web-")
    listed = kube.get("podmigrations", namespace=namespace)["items"]
    assert [(m["metadata"]["name"], m["spec"]) for m in listed] == [
        (
            name,
            {
                "podName": "web",
                "targetNode": target,
                "timeoutSeconds": 120,
                "onFailure": "RestoreSource",
                "retainCheckpoint": False,
                "deleteEmptyDirData": False,  # the CRD's default
            },
        )
    ]

    table = cli(cluster, "get", "-n", namespace)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split() == [
        "NAME",
        "POD",
        "PHASE",
        "SOURCE",
        "TARGET",
        "DOWNTIME",
        "AGE",
    ]
    row = table.stdout.splitlines()[1].split()
    # The control service is running: it may have recorded the source (and moved on from Pending) already.
    assert row[:2] == [name, "web"] and row[3] in ("-", source) and row[4] == target, row
    via_kubectl = kubectl_plugin(cluster, "get", "-n", namespace)
    assert via_kubectl.returncode == 0 and via_kubectl.stdout.splitlines()[1].split()[:2] == [name, "web"], via_kubectl
    assert kubectl_plugin(cluster, "get", "-A").stdout.splitlines()[0].startswith("NAMESPACE")
    assert kubectl_plugin(cluster, "--help").stdout.startswith("usage: kubectl migrate")
    assert json.loads(cli(cluster, "get", name, "-n", namespace, "-o", "json").stdout)["spec"]["targetNode"] == target
    assert_one_line_error(
        cli(cluster, "get", "nope", "-n", namespace), f'error: podmigration "nope" not found in namespace "{namespace}"'
    )
    assert_one_line_error(kubectl_plugin(cluster, "describe", "nope", "-n", namespace), "error: podmigration")

    # The whole base install renders and passes the API server's checks. The cluster runs the local overlay's
    # webhook configurations (a URL, not the Service), and a three-way merge of the base onto them would carry
    # both: the base's are checked under other names.
    rendered = list(yaml.safe_load_all(kube.run("kustomize", str(REPO / "manifests")).stdout))
    for doc in rendered:
        if doc["kind"].endswith("WebhookConfiguration"):
            doc["metadata"]["name"] += "-dry-run"
    dry_run = kube.run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(rendered))
    assert "daemonset.apps/podmigrate-agent" in dry_run.stdout and "deployment.apps/podmigrate-controller" in dry_run.stdout
    assert "mutatingwebhookconfiguration.admissionregistration.k8s.io/podmigrate-dry-run" in dry_run.stdout

    # Who may not read pods hears so in one line (403), and a bad token too (401).
    kube.run("create", "serviceaccount", "nobody", "-n", namespace)
    nobody = token_kubeconfig(cluster, token=kube.token("nobody", namespace), path=tmp_path / "nobody.kubeconfig")
    assert_one_line_error(
        cli(cluster, "pod", "web", "-n", namespace, kubeconfig=str(nobody)), 'error: forbidden (403): pods "web" is forbidden'
    )
    forged = token_kubeconfig(cluster, token="not-a-token", path=tmp_path / "forged.kubeconfig")
    assert_one_line_error(cli(cluster, "get", "-n", namespace, kubeconfig=str(forged)), "error: unauthorized (401)")


@pytest.mark.cluster
def test_wait_and_describe_follow_status_written_by_a_controller(kube: Kube, cluster: lc.Cluster, namespace: str) -> None:
    """A stand-in controller writes status and events as the reconciler does; --wait and describe show them."""
    install_crd(kube)
    running_pod(kube, cluster, namespace)
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    proc = subprocess.Popen(
        [str(VENV_BIN / "kubectl-migrate"), "--kubeconfig", cluster.kubeconfig, "pod", "web", "-n", namespace,
         "--to", target, "--wait", "--timeout", "60s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        name = wait_for(
            "the PodMigration", lambda: kube.get("podmigrations", namespace=namespace)["items"][0]["metadata"]["name"]
        )
        uid = kube.get("podmigration", name, namespace)["metadata"]["uid"]

        def patch(status: dict[str, Any]) -> None:
            kube.run("patch", "podmigration", name, "-n", namespace, "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": status}))  # fmt: skip
            time.sleep(0.8)

        def stamp(offset: float) -> str:
            return (start + timedelta(seconds=offset)).isoformat(timespec="milliseconds").replace("+00:00", "Z")

        start = datetime.now(UTC)
        kube.apply(
            f"apiVersion: v1\nkind: Event\nmetadata: {{name: {name}.started, namespace: {namespace}}}\n"
            f"involvedObject: {{apiVersion: podmigrate.io/v1alpha1, kind: PodMigration, name: {name}, namespace: {namespace},"
            f" uid: {uid}}}\n"
            f"reason: Started\nmessage: migrating pod web\ntype: Normal\nsource: {{component: podmigrate-controller}}\n"
            f"firstTimestamp: '{stamp(0)[:19]}Z'\nlastTimestamp: '{stamp(0)[:19]}Z'\ncount: 1\n"
        )
        patch({"phase": "Pending", "step": "Validate", "startTime": stamp(0), "traceID": "ab" * 16,
               "phases": [{"name": "validate", "start": stamp(0)}]})  # fmt: skip
        phases = [{"name": "validate", "start": stamp(0), "end": stamp(0.05)}, {"name": "checkpoint", "start": stamp(0.05)}]
        patch({"phase": "Checkpointing", "step": "Checkpoint", "sourceNode": source, "targetNode": target, "phases": phases})
        phases[-1]["end"] = stamp(1.2)
        message = f"pod web moved from {source} to {target} with its state; downtime 1.70s"
        new_pod = {"name": "web", "uid": "u2", "node": target}
        patch({"phase": "Succeeded", "step": "Done", "reason": "Migrated", "message": message, "downtimeSeconds": "1.700",
               "completionTime": stamp(2.5), "phases": phases, "newPod": new_pod})  # fmt: skip
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    steps = [line.split(" ", 1)[1] for line in out.splitlines()[1:-1]]
    assert steps[-3:] == ["Pending Validate", "Checkpointing Checkpoint", "Succeeded Done"], out
    assert out.splitlines()[-1] == f"podmigration.podmigrate.io/{name} Succeeded: {message} [downtime 1.7s, total 2.5s]"

    described = kubectl_plugin(cluster, "describe", name, "-n", namespace)
    assert described.returncode == 0, described.stderr
    text = described.stdout
    assert "  Phase:       Succeeded" in text and f"  Source Node: {source}" in text and "  Downtime:    1.7s" in text
    assert "  Trace ID:    " + "ab" * 16 in text
    assert [row.split()[:3] for row in text.split("Phases:\n")[1].splitlines()[1:3]] == [
        ["validate", "+0ms", "50ms"],
        ["checkpoint", "+50ms", "1.1s"],
    ]
    assert "Normal   Started" in text and "podmigrate-controller   migrating pod web" in text


@pytest.mark.cluster
def test_wait_follows_a_real_migration(kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str) -> None:
    """The whole path: kubectl migrate pod --wait with the real control service and agents."""
    source, target = cluster.nodes[0].name, cluster.nodes[1].name
    running_pod(kube, cluster, namespace, "counter")
    result = kubectl_plugin(cluster, "pod", "counter", "-n", namespace, "--to", target, "--wait", "--timeout", "3m")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    name = lines[0].removeprefix("podmigration.podmigrate.io/").removesuffix(" created")
    steps = [line.split(" ", 1)[1] for line in lines[1:-1]]
    assert steps[0].startswith("Pending") and steps[-1] == "Succeeded Done", result.stdout
    for step in ("Pending PrepareTarget", "Checkpointing Checkpoint", "Restoring WaitReady", "Completing Cleanup"):
        assert step in steps, result.stdout  # a watch sees every step the controller records
    assert lines[-1].startswith(f"podmigration.podmigrate.io/{name} Succeeded: pod counter moved from {source} to {target}")
    assert "[downtime " in lines[-1] and ", total " in lines[-1]
    assert kube.get("pod", "counter", namespace)["spec"]["nodeName"] == target
    described = kubectl_plugin(cluster, "describe", name, "-n", namespace).stdout
    assert "  Phase:       Succeeded" in described and "Checkpointed" in described and "Restored" in described
    rows = [row.split()[0] for row in described.split("Phases:\n")[1].split("Conditions:")[0].splitlines()[1:]]
    assert rows[:3] == ["validate", "prepare-target", "checkpoint"] and "restore" in rows, described


def test_watch_turns_list_and_watch_events_into_states(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-lists (after 410 Gone) that no longer contain the object mean it was deleted."""
    from kubeclient.watching import Event
    from migrator.cli import kubeapi

    script = [
        Event(type="SYNC", object={"v": 1}),
        Event(type="SYNCED", object=None),
        Event(type="MODIFIED", object={"v": 2}),
        Event(type="SYNC", object={"v": 3}),  # a re-list that still has it
        Event(type="SYNCED", object=None),
        Event(type="SYNCED", object=None),  # a re-list without it
        Event(type="DELETED", object={"v": 4}),
    ]
    seen_kwargs: dict[str, Any] = {}

    async def fake_list_and_watch(list_fn: Any, /, **kwargs: Any) -> AsyncIterator[Event]:
        seen_kwargs.update(kwargs)
        for e in script:
            yield e

    monkeypatch.setattr(kubeapi, "list_and_watch", fake_list_and_watch)

    async def collect() -> list[Any]:
        kube = kubeapi.KubeApi(api_client=client.ApiClient(), default_namespace="shop")
        try:
            return [obj async for obj in kube.watch_migration(namespace="shop", name="web-1")]
        finally:
            await kube.client.close()

    assert asyncio.run(collect()) == [{"v": 1}, {"v": 2}, {"v": 3}, None, None]
    assert seen_kwargs["field_selector"] == "metadata.name=web-1" and seen_kwargs["namespace"] == "shop"
