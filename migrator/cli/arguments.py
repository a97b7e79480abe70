"""The command line: ``kubectl migrate pod|drain|checkpoint|restore|checkpoints|inspect|get|describe|timeline``.

``--kubeconfig``, ``--context`` and ``-n/--namespace`` are accepted before and after the command,
as kubectl does (``kubectl migrate -n prod get`` and ``kubectl migrate get -n prod``). Usage
errors are one line and exit 1, so that exit 2 keeps meaning "--wait timed out".

``get`` takes a kind word first, as kubectl does, for everything that is not a PodMigration:
``get drains``, ``get checkpoints``, ``get restores``, ``get schedules`` (and their CRD names and
short names, alone or as ``KIND/NAME``). ``checkpoints [POD]`` is the one listing with a filter of
its own: a pod's checkpoints, by the label every PodCheckpoint carries. Flag combinations that
cannot mean anything (``checkpoint --schedule --suspend``: a schedule checkpoints running pods
only) are usage errors here, before anything is sent.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from migrator import api, cron
from migrator.api import OnFailure, UnmigratablePolicy
from migrator.cli.errors import CliError

PROG: Final = "kubectl migrate"
DEFAULT_TIMEOUT: Final = 300.0
DEFAULT_DRAIN_TIMEOUT: Final = 1800.0
# "get drains", "describe drain NAME", "get nodedrain/NAME": the words that mean NodeDrains, as kubectl spells kinds.
DRAIN_KINDS: Final = ("drain", "drains", "nodedrain", "nodedrains", "nd", "nodedrain.podmigrate.io", "nodedrains.podmigrate.io")
CHECKPOINT_KINDS: Final = (
    "checkpoint", "checkpoints", "podcheckpoint", "podcheckpoints", "pck",
    "podcheckpoint.podmigrate.io", "podcheckpoints.podmigrate.io",
)  # fmt: skip
RESTORE_KINDS: Final = (
    "restore", "restores", "podrestore", "podrestores", "prs", "podrestore.podmigrate.io", "podrestores.podmigrate.io",
)  # fmt: skip
SCHEDULE_KINDS: Final = (
    "schedule", "schedules", "checkpointschedule", "checkpointschedules", "cks",
    "checkpointschedule.podmigrate.io", "checkpointschedules.podmigrate.io",
)  # fmt: skip
# args.kind after parsing ``get`` and ``describe``: "migrations" unless the first word names another kind.
KIND_WORDS: Final = {
    "drains": DRAIN_KINDS, "checkpoints": CHECKPOINT_KINDS, "restores": RESTORE_KINDS, "schedules": SCHEDULE_KINDS,
}  # fmt: skip
KIND_NAMES: Final = {"checkpoints": api.CHECKPOINT_KIND, "restores": api.RESTORE_KIND, "schedules": api.SCHEDULE_KIND}
DESCRIBED_KINDS: Final = ("migrations", "drains", "checkpoints")  # describe checkpoint NAME is inspect NAME
# kubectl's boolean flags take "=true|false"; argparse gets --flag / --no-flag.
BOOLEAN_FLAGS: Final = ("--ignore-daemonsets", "--delete-emptydir-data")
OUTPUTS: Final = ("json", "yaml", "name")
INSPECT_OUTPUTS: Final = ("json", "yaml")
TIMELINE_OUTPUTS: Final = ("text", "svg", "html")

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Kubernetes quantity suffixes, as kubectl takes sizes: binary (Ki, Mi...) and decimal (k, M...).
_BYTE_UNITS: Final = {
    "": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "Pi": 1024**5,
    "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "P": 1000**5,
}  # fmt: skip

EXAMPLES: Final = """examples:
  kubectl migrate pod web --to node-2 --wait     move pod web to node-2 and follow it until it is done
  kubectl migrate pod web -n shop                let the control service pick the target node
  kubectl migrate get -A                         every PodMigration in the cluster
  kubectl migrate describe web-x7k2p             status, per-phase timings and events of one migration
  kubectl migrate timeline web-x7k2p -o svg      its phases and downtime on a time axis, as web-x7k2p-timeline.svg
  kubectl migrate drain node-1 --dry-run         what would move where if node-1 were drained (nothing changes)
  kubectl migrate drain node-1 --wait            cordon node-1 and migrate its pods away, following each pod
  kubectl migrate get drains                     every NodeDrain and how far it got
  kubectl migrate checkpoint web --wait          checkpoint pod web into the registry (it runs on), until Available
  kubectl migrate checkpoint web --suspend       freeze web, checkpoint it and remove it: resume it later with restore
  kubectl migrate checkpoint web --schedule @hourly --keep 24
                                                 a CheckpointSchedule: web checkpointed hourly, the newest 24 kept
  kubectl migrate checkpoints web                web's PodCheckpoints (get checkpoints|restores|schedules: all of them)
  kubectl migrate inspect web-20250301-120000    one checkpoint: images, sizes, and its processes, files and sockets
  kubectl migrate inspect web-20250301-120000 --from-registry --decryption-key node.key
                                                 the same, read from its images (pulled, checked, decrypted here)
  kubectl migrate restore web-20250301-120000 --to node-2 --wait
                                                 resume that checkpoint on node-2 (--name NEWNAME: as a copy)

exit codes: 0 done (or created), 1 error or Failed (a migration, drain, checkpoint or restore), 2 --wait timed out"""
CHECKPOINTCTL_NOTE: Final = (
    "checkpointctl (on your PATH) reads the checkpoint archive too: an unencrypted checkpoint image's one layer "
    "is the archive (e.g. `crane blob REPO@LAYER_DIGEST > ckpt.tar`), then `checkpointctl inspect ckpt.tar --ps-tree`."
)


def parse_duration(text: str) -> float:
    """Seconds from a Go-style duration: ``300s``, ``5m``, ``1m30s``, ``1.5h``, ``250ms``; a bare number is seconds."""
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d*)?", value):
        seconds = float(value)
    else:
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(value) or not value:
            raise argparse.ArgumentTypeError(f'invalid duration "{text}" (use e.g. 300s, 5m, 1m30s)')
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f'invalid duration "{text}": must be positive')
    return seconds


def parse_age(text: str) -> float:
    """A duration that may start with days, for retention: ``7d``, ``1d12h``, ``36h``, ``90m``."""
    days, d, rest = text.strip().partition("d")
    try:
        if d and re.fullmatch(r"\d+", days):
            seconds = int(days) * 86400.0 + (parse_duration(rest) if rest else 0.0)
        else:
            seconds = parse_duration(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f'invalid age "{text}" (use e.g. 36h, 7d, 1d12h)') from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f'invalid age "{text}": must be positive')
    return seconds


def parse_bytes(text: str) -> int:
    """A size as a Kubernetes quantity: ``500Mi``, ``10Gi``, ``2G``, ``1.5Ti``; a bare number is bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", text.strip())
    if not match or match.group(2) not in _BYTE_UNITS:
        raise argparse.ArgumentTypeError(f'invalid size "{text}" (use e.g. 500Mi, 10Gi, 2G or a number of bytes)')
    count = math.ceil(float(match.group(1)) * _BYTE_UNITS[match.group(2)])
    if count < 1:
        raise argparse.ArgumentTypeError(f'invalid size "{text}": must be positive')
    return count


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'invalid count "{text}"') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'invalid count "{text}": must be at least 1')
    return value


def check_cron(text: str) -> str:
    """The schedule as the control service will read it (``migrator.cron``): a typo is a usage error, not a Failed object."""
    try:
        cron.parse(text)
    except cron.CronError as exc:
        raise CliError(f'invalid --schedule "{text}": {exc}') from None
    return " ".join(text.split())


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 1 via CliError) instead of usage text and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')")


def _width(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'invalid width "{text}" (a whole number of columns or pixels)') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'invalid width "{text}": must be positive')
    return value


def _connection_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # On subcommands the defaults are SUPPRESS, so an unset flag there does not overwrite
    # the same flag given before the command.
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection (as kubectl)")
    group.add_argument(
        "--kubeconfig", default=default, metavar="PATH", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    group.add_argument("--context", default=default, metavar="NAME", help="kubeconfig context (default: the current context)")
    group.add_argument(
        "-n", "--namespace", default=default, metavar="NS", help="namespace (default: the context's namespace, else default)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Live-migrate Kubernetes pods between nodes (CRIU checkpoints as OCI images) through PodMigration objects.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection_flags(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    pod = commands.add_parser(
        "pod",
        help="move a running pod to another node (creates a PodMigration)",
        description="Check that the move can start, create a PodMigration for the pod and, with --wait, follow it to the end.",
        epilog="exit codes: 0 created (or Succeeded with --wait), 1 error or Failed, 2 --wait timed out",
    )
    pod.add_argument("name", metavar="NAME", help="the pod to move (pod/NAME works too)")
    pod.add_argument("--to", metavar="NODE", help="the target node (default: the control service picks one that fits)")
    pod.add_argument("--wait", action="store_true", help="follow the migration until it Succeeded or Failed")
    pod.add_argument(
        "--timeout",
        type=parse_duration,
        default=DEFAULT_TIMEOUT,
        metavar="DURATION",
        help="the migration must finish within this (spec.timeoutSeconds; e.g. 90s, 5m; default 300s); "
        "--wait gives up 30s after it",
    )
    pod.add_argument(
        "--on-failure",
        choices=[o.value for o in OnFailure],
        default=OnFailure.RESTORE_SOURCE.value,
        help="if the restore fails after the source was removed: restore on the source node (default) or recreate the pod",
    )
    pod.add_argument("--retain-checkpoint", action="store_true", help="keep the checkpoint images in the registry after success")
    pod.add_argument(
        "--delete-emptydir-data", action="store_true",
        help="leave the pod's emptyDir files behind (they start empty on the target); by default they move with it",
    )  # fmt: skip
    _connection_flags(pod, suppress=True)
    _drain_parser(commands)
    _checkpoint_parsers(commands)

    get = commands.add_parser(
        "get",
        help="list PodMigrations (or show one); get drains|checkpoints|restores|schedules: those",
        description="List PodMigrations, or show one; 'get drains [NAME]' does the same for NodeDrains, "
        "'get checkpoints|restores|schedules [NAME]' for PodCheckpoints, PodRestores and CheckpointSchedules.",
    )
    get.add_argument(
        "name", metavar="NAME", nargs="?", help="one PodMigration; or a kind: drains, checkpoints, restores, schedules"
    )
    get.add_argument("object_name", metavar="OBJECT", nargs="?", help=argparse.SUPPRESS)
    get.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    get.add_argument("-o", "--output", choices=OUTPUTS, help="json, yaml or name instead of the table")
    _connection_flags(get, suppress=True)

    describe = commands.add_parser(
        "describe",
        help="show one PodMigration (or NodeDrain: describe drain NAME) in detail",
        description="Spec, status, per-phase timings and events of one PodMigration; "
        "'describe drain NAME': spec, status, every pod and events of one NodeDrain; "
        "'describe checkpoint NAME' is 'inspect NAME'.",
    )
    describe.add_argument("name", metavar="NAME", help="the PodMigration; or 'drain' followed by a NodeDrain's name")
    describe.add_argument("object_name", metavar="OBJECT", nargs="?", help=argparse.SUPPRESS)
    _connection_flags(describe, suppress=True)

    timeline = commands.add_parser(
        "timeline",
        help="draw one PodMigration's phases and downtime on a time axis (text, SVG or HTML)",
        description="One row per phase on a common time axis, the downtime (frozen until Ready) marked, "
        "with the outcome, total time and checkpoint size; a running migration is drawn up to now.",
        epilog="exit codes: 0 drawn (whatever the migration's outcome), 1 error",
    )
    timeline.add_argument("name", metavar="NAME", help="the PodMigration")
    timeline.add_argument(
        "-o",
        "--output",
        choices=TIMELINE_OUTPUTS,
        default="text",
        help="text: a chart on stdout (default); svg: a standalone image; html: a page around it",
    )
    timeline.add_argument(
        "--file",
        metavar="PATH",
        help="where to write it (default for svg/html: NAME-timeline.svg|.html; text goes to stdout); - for stdout",
    )
    timeline.add_argument(
        "--width",
        type=_width,
        metavar="N",
        help="text: columns (default: the terminal's width, else 100); svg/html: pixels (default 960)",
    )
    timeline.add_argument(
        "--ascii",
        action="store_true",
        help="text: ASCII only (# and =), the default unless stdout is a UTF-8 terminal",
    )
    _connection_flags(timeline, suppress=True)
    return parser


def _drain_parser(commands: Any) -> None:
    drain = commands.add_parser(
        "drain",
        help="empty a node by migrating its pods (creates a NodeDrain)",
        description="Cordon NODE and move its pods to other nodes with their memory (one PodMigration each), "
        "the way kubectl drain evicts them; the flags mirror kubectl drain's. PodDisruptionBudgets are honoured.",
        epilog="exit codes: 0 created (or Succeeded with --wait; --dry-run: would succeed), "
        "1 error, a pod failed, Blocked or Failed (--dry-run: would be Blocked), 2 --wait timed out",
    )
    drain.add_argument("node", metavar="NODE", help="the node to drain (node/NODE works too)")
    drain.add_argument("--pod-selector", metavar="SELECTOR", default="", help="only pods matching this label selector")
    drain.add_argument(
        "--timeout",
        type=parse_duration,
        default=DEFAULT_DRAIN_TIMEOUT,
        metavar="DURATION",
        help="no new migration starts after this (spec.timeoutSeconds; e.g. 10m; default 30m)",
    )
    drain.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would move where (and what blocks); nothing is cordoned or created (--dry-run=client)",
    )
    drain.add_argument(
        "--ignore-daemonsets",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="leave DaemonSet pods on the node (default true; =false: they block the drain)",
    )
    drain.add_argument(
        "--delete-emptydir-data",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="leave pods' emptyDir files behind (they start empty on the target); by default they move with their pods",
    )
    drain.add_argument(
        "--max-concurrent", type=_concurrency, default=2, metavar="N", help="pods in flight at once (1-20, default 2)"
    )
    drain.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="NODE",
        help="only to this node (repeat, or comma-separate, for several; default: any node that fits)",
    )
    drain.add_argument("--target-selector", metavar="KEY=VALUE,...", help="only to nodes with these labels")
    drain.add_argument(
        "--on-unmigratable",
        choices=[p.value.lower() for p in UnmigratablePolicy],
        default=UnmigratablePolicy.BLOCK.value.lower(),
        help="a pod that cannot be migrated: block (default: stop, evict nothing) or evict it as kubectl drain would",
    )
    drain.add_argument("--wait", action="store_true", help="follow the drain pod by pod until it is done")
    _connection_flags(drain, suppress=True)


def _checkpoint_parsers(commands: Any) -> None:
    checkpoint = commands.add_parser(
        "checkpoint",
        help="checkpoint a pod into the registry (creates a PodCheckpoint), or on a schedule (a CheckpointSchedule)",
        description="Create a PodCheckpoint: the pod's processes checkpointed with CRIU and kept in the registry as OCI "
        "images until the PodCheckpoint is deleted. The pod runs on (it is paused only while CRIU dumps it), or with "
        "--suspend is removed once checkpointed, to be resumed by 'restore'. With --schedule, create a "
        "CheckpointSchedule instead: the pod checkpointed on a cron schedule, old checkpoints deleted by --keep, "
        "--max-age and --max-bytes (pinned ones never).",
        epilog="exit codes: 0 created (or Available with --wait), 1 error or Failed, 2 --wait timed out",
    )
    checkpoint.add_argument("pod", metavar="POD", help="the pod to checkpoint (pod/POD works too)")
    checkpoint.add_argument(
        "--suspend", action="store_true", help="remove the pod once checkpointed (mode Suspend); resume it with 'restore'"
    )
    checkpoint.add_argument("--pin", action="store_true", help="a pinned checkpoint is never deleted by a schedule's retention")
    checkpoint.add_argument(
        "--name",
        metavar="NAME",
        help="the PodCheckpoint's name (default POD-YYYYMMDD-HHMMSS, in UTC); with --schedule the CheckpointSchedule's "
        "(default POD)",
    )
    checkpoint.add_argument(
        "--timeout",
        type=parse_duration,
        metavar="DURATION",
        help="the checkpoint must be in the registry within this, or it fails and the pod runs on "
        "(spec.timeoutSeconds; default 300s); --wait gives up 30s after it",
    )
    checkpoint.add_argument("--wait", action="store_true", help="follow the checkpoint until it is Available or Failed")
    every = checkpoint.add_argument_group("on a schedule (creates a CheckpointSchedule; the pod runs on)")
    every.add_argument("--schedule", metavar="CRON", help='cron, five fields in UTC ("0 * * * *") or @hourly, @daily, @weekly...')
    every.add_argument("--keep", type=_positive, metavar="N", help="keep the pod's newest N checkpoints (pinned ones aside)")
    every.add_argument("--max-age", type=parse_age, metavar="DURATION", help="delete checkpoints older than this (36h, 7d)")
    every.add_argument(
        "--max-bytes", type=parse_bytes, metavar="BYTES", help="keep the schedule's checkpoints under this size in all (10Gi)"
    )
    _connection_flags(checkpoint, suppress=True)

    restore = commands.add_parser(
        "restore",
        help="start a pod again from a PodCheckpoint (creates a PodRestore)",
        description="Create a PodRestore: a pod whose processes resume where the checkpoint left them, under the "
        "checkpointed pod's name (refused while a pod of that name exists) or, with --name, as a copy. "
        "A checkpoint still being taken can be named already: the restore waits for it.",
        epilog="exit codes: 0 created (or Succeeded with --wait), 1 error or Failed, 2 --wait timed out",
    )
    restore.add_argument("checkpoint", metavar="CHECKPOINT", help="the PodCheckpoint (podcheckpoint/NAME works too)")
    restore.add_argument("--to", metavar="NODE", help="the node to restore on (default: the control service picks one)")
    restore.add_argument(
        "--name",
        dest="new_name",
        metavar="NEWNAME",
        help="the restored pod's name (default: the checkpointed pod's own); another name makes a copy",
    )
    restore.add_argument(
        "--timeout",
        type=parse_duration,
        default=DEFAULT_TIMEOUT,
        metavar="DURATION",
        help="the restored pod must be Ready within this (spec.timeoutSeconds; default 300s); --wait gives up 30s after it",
    )
    restore.add_argument("--wait", action="store_true", help="follow the restore until it Succeeded or Failed")
    _connection_flags(restore, suppress=True)

    listing = commands.add_parser(
        "checkpoints",
        help="list PodCheckpoints, or one pod's",
        description="List the PodCheckpoints of the namespace (-A: of all), or only POD's. "
        "'get checkpoints|restores|schedules [NAME]' lists or shows PodCheckpoints, PodRestores, CheckpointSchedules.",
    )
    listing.add_argument("pod", metavar="POD", nargs="?", help="only this pod's checkpoints (pod/POD works too)")
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    listing.add_argument("-o", "--output", choices=OUTPUTS, help="json, yaml or name instead of the table")
    _connection_flags(listing, suppress=True)

    inspect = commands.add_parser(
        "inspect",
        help="show one PodCheckpoint: its images and sizes, and what CRIU saved (processes, memory, files, sockets)",
        description="The checkpoint (pod, mode, phase, node, time, CRIU version, each container's image, digest, base "
        "image and sizes), then for each container what its CRIU images hold: the process tree, memory, open files, "
        "sockets and mounts (as the node agent read them when it took the checkpoint). With --from-registry, read "
        "from the checkpoint images themselves instead: each is pulled, its digests checked, and decrypted here "
        "with the nodes' private key as it downloads (never whole in memory, nothing written to disk).",
        epilog=CHECKPOINTCTL_NOTE if shutil.which("checkpointctl") else None,
    )
    inspect.add_argument("name", metavar="CHECKPOINT", help="the PodCheckpoint (podcheckpoint/NAME works too)")
    inspect.add_argument(
        "-o",
        "--output",
        choices=INSPECT_OUTPUTS,
        help="json or yaml: the PodCheckpoint itself (with --from-registry: each container's inspection read from its image)",
    )
    offline = inspect.add_argument_group("read from the registry (a forensic look that does not trust status.inspection)")
    offline.add_argument(
        "--from-registry",
        action="store_true",
        help="read each container's checkpoint image from the registry, check its digests, decrypt it locally and "
        "describe its CRIU images",
    )
    offline.add_argument(
        "--decryption-key",
        type=Path,
        metavar="PEM",
        help="the nodes' RSA private key (PEM, as docs/encryption.md sets it up): needed for an encrypted image",
    )
    offline.add_argument(
        "--registry-config",
        type=Path,
        metavar="FILE",
        help="a docker config JSON with pull credentials for the checkpoint repository (default $DOCKER_CONFIG/config.json, "
        "else ~/.docker/config.json; a registry it has no entry for is asked anonymously)",
    )
    offline.add_argument(
        "--plain-http", action="store_true", help="the registry speaks plain HTTP, not HTTPS (implied for a loopback registry)"
    )
    _connection_flags(inspect, suppress=True)


def _concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'invalid count "{text}"') from None
    if not 1 <= value <= 20:
        raise argparse.ArgumentTypeError(f'invalid count "{text}": must be between 1 and 20')
    return value


def _kubectl_style(argv: Sequence[str]) -> list[str]:
    """``--flag=true|false`` for boolean flags and ``--dry-run=client|none``, as kubectl spells them."""
    result = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if eq and flag in BOOLEAN_FLAGS:
            if value.lower() not in ("true", "false"):
                raise CliError(f'invalid value "{value}" for {flag} (true or false)')
            result.append(flag if value.lower() == "true" else f"--no-{flag[2:]}")
        elif eq and flag == "--dry-run":
            if value not in ("client", "none"):
                raise CliError(f'--dry-run="{value}" is not supported: use --dry-run (or --dry-run=client)')
            if value == "client":
                result.append(flag)
        else:
            result.append(arg)
    return result


def target_selector(text: str | None) -> dict[str, str]:
    """``--target-selector pool=spare,zone=b``: equality only (it becomes spec.targetSelector)."""
    labels = {}
    for term in (text or "").split(","):
        key, eq, value = term.strip().partition("=")
        if not term.strip():
            continue
        if not eq or not key.strip() or "!" in key:
            raise CliError(f'invalid --target-selector term "{term.strip()}" (use KEY=VALUE,...)')
        labels[key.strip()] = value.strip()
    return labels


def _kind_of(word: str) -> str | None:
    return next((kind for kind, words in KIND_WORDS.items() if word in words), None)


def _kind_and_name(args: argparse.Namespace) -> None:
    """``get drains [NAME]``, ``get nd/NAME``, ``describe drain NAME``, ``get checkpoints``...: ``args.kind``
    is the kind the first word names (``KIND_WORDS``), ``args.name`` the object's name; anything else: a PodMigration."""
    args.kind = "migrations"
    name = args.name or ""
    kind, slash, rest = name.partition("/")
    if _kind_of(name):
        args.kind, args.name = _kind_of(name), args.object_name
    elif slash and _kind_of(kind):
        args.kind, args.name = _kind_of(kind), rest
        if args.object_name:
            raise CliError(f"unexpected argument \"{args.object_name}\" (see '{PROG} {args.command} --help')")
    elif args.object_name:
        raise CliError(f"unexpected argument \"{args.object_name}\" (see '{PROG} {args.command} --help')")
    args.drains = args.kind == "drains"
    if args.command == "describe" and args.kind not in DESCRIBED_KINDS:
        raise CliError(f"describe shows PodMigrations, NodeDrains and PodCheckpoints: try '{PROG} get {args.kind} NAME -o yaml'")
    if args.command == "describe" and args.kind != "migrations" and not args.name:
        raise CliError(f"describe {name} needs the {'NodeDrain' if args.drains else 'PodCheckpoint'}'s name")


def _without_kind(name: str, kinds: Sequence[str]) -> str:
    """``pod/web`` -> ``web``, ``pck/web-1`` -> ``web-1``: kubectl's KIND/NAME for the one kind a command takes."""
    kind, slash, rest = name.partition("/")
    return rest if slash and kind in kinds else name


def _checkpoint_args(args: argparse.Namespace) -> argparse.Namespace:
    args.pod = _without_kind(args.pod, ("pod", "pods"))
    schedule_only = [f for f, v in (("--keep", args.keep), ("--max-age", args.max_age), ("--max-bytes", args.max_bytes)) if v]
    if args.schedule is None:
        if schedule_only:
            raise CliError(f"{schedule_only[0]} is a retention rule: it needs --schedule")
        args.timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
        return args
    if args.suspend:
        raise CliError("--schedule checkpoints running pods only: it cannot be combined with --suspend")
    one_only = [f for f, v in (("--pin", args.pin), ("--wait", args.wait), ("--timeout", args.timeout)) if v]
    if one_only:
        raise CliError(f"{one_only[0]} applies to one checkpoint, not to a --schedule")
    args.schedule = check_cron(args.schedule)
    return args


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(_kubectl_style(sys.argv[1:] if argv is None else argv))
    if args.command == "checkpoint":
        return _checkpoint_args(args)
    if args.command == "restore":
        args.checkpoint = _without_kind(args.checkpoint, CHECKPOINT_KINDS)
        return args
    if args.command == "checkpoints":
        args.pod = _without_kind(args.pod, ("pod", "pods")) if args.pod else None
        return args
    if args.command == "inspect":
        args.name = _without_kind(args.name, CHECKPOINT_KINDS)
        needs = [f for f, v in (("--decryption-key", args.decryption_key), ("--registry-config", args.registry_config),
                                ("--plain-http", args.plain_http)) if v]  # fmt: skip
        if needs and not args.from_registry:
            raise CliError(f"{needs[0]} is for reading the images themselves: it needs --from-registry")
        return args
    if args.command == "drain":
        args.node = args.node.removeprefix("nodes/").removeprefix("node/")
        args.to = [n.strip() for value in args.to for n in value.split(",") if n.strip()]
        args.target_selector = target_selector(args.target_selector)
        if args.to and args.target_selector:
            raise CliError("use --to or --target-selector, not both")
        return args
    if args.command in ("get", "describe"):
        _kind_and_name(args)
        if args.drains:
            if args.command == "get" and args.name and args.all_namespaces:
                args.all_namespaces = False  # NodeDrains are cluster-scoped: -A changes nothing
            return args
        if args.kind != "migrations":
            if args.command == "get" and args.name and args.all_namespaces:
                raise CliError(f"a {KIND_NAMES[args.kind]} cannot be retrieved by name across all namespaces (drop -A or NAME)")
            return args
    prefixes = (
        ("pod/", "pods/")
        if args.command == "pod"
        else ("podmigration.podmigrate.io/", "podmigration/", "podmigrations/", "pmig/")
    )
    for prefix in prefixes:
        if args.name and args.name.startswith(prefix):
            args.name = args.name.removeprefix(prefix)
    if args.command == "get" and args.name and args.all_namespaces:
        raise CliError("a PodMigration cannot be retrieved by name across all namespaces (drop -A or NAME)")
    return args
