"""The command line: ``kubectl migrate pod|drain|get|describe|timeline`` and kubectl's connection flags.

``--kubeconfig``, ``--context`` and ``-n/--namespace`` are accepted before and after the command,
as kubectl does (``kubectl migrate -n prod get`` and ``kubectl migrate get -n prod``). Usage
errors are one line and exit 1, so that exit 2 keeps meaning "--wait timed out".
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any, Final, NoReturn

from migrator.api import OnFailure, UnmigratablePolicy
from migrator.cli.errors import CliError

PROG: Final = "kubectl migrate"
DEFAULT_TIMEOUT: Final = 300.0
DEFAULT_DRAIN_TIMEOUT: Final = 1800.0
# "get drains", "describe drain NAME", "get nodedrain/NAME": the words that mean NodeDrains, as kubectl spells kinds.
DRAIN_KINDS: Final = ("drain", "drains", "nodedrain", "nodedrains", "nd", "nodedrain.podmigrate.io", "nodedrains.podmigrate.io")
# kubectl's boolean flags take "=true|false"; argparse gets --flag / --no-flag.
BOOLEAN_FLAGS: Final = ("--ignore-daemonsets", "--delete-emptydir-data")
OUTPUTS: Final = ("json", "yaml", "name")
TIMELINE_OUTPUTS: Final = ("text", "svg", "html")

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

EXAMPLES: Final = """examples:
  kubectl migrate pod web --to node-2 --wait     move pod web to node-2 and follow it until it is done
  kubectl migrate pod web -n shop                let the control service pick the target node
  kubectl migrate get -A                         every PodMigration in the cluster
  kubectl migrate describe web-x7k2p             status, per-phase timings and events of one migration
  kubectl migrate timeline web-x7k2p -o svg      its phases and downtime on a time axis, as web-x7k2p-timeline.svg
  kubectl migrate drain node-1 --dry-run         what would move where if node-1 were drained (nothing changes)
  kubectl migrate drain node-1 --wait            cordon node-1 and migrate its pods away, following each pod
  kubectl migrate get drains                     every NodeDrain and how far it got

exit codes: 0 done (or created), 1 error or migration Failed, 2 --wait timed out"""


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

    get = commands.add_parser(
        "get",
        help="list PodMigrations (or show one); get drains: NodeDrains",
        description="List PodMigrations, or show one; 'get drains [NAME]' does the same for NodeDrains.",
    )
    get.add_argument("name", metavar="NAME", nargs="?", help="one PodMigration; or 'drains' for NodeDrains")
    get.add_argument("drain_name", metavar="DRAIN", nargs="?", help=argparse.SUPPRESS)
    get.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    get.add_argument("-o", "--output", choices=OUTPUTS, help="json, yaml or name instead of the table")
    _connection_flags(get, suppress=True)

    describe = commands.add_parser(
        "describe",
        help="show one PodMigration (or NodeDrain: describe drain NAME) in detail",
        description="Spec, status, per-phase timings and events of one PodMigration; "
        "'describe drain NAME': spec, status, every pod and events of one NodeDrain.",
    )
    describe.add_argument("name", metavar="NAME", help="the PodMigration; or 'drain' followed by a NodeDrain's name")
    describe.add_argument("drain_name", metavar="DRAIN", nargs="?", help=argparse.SUPPRESS)
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


def _drain_kind_and_name(args: argparse.Namespace) -> None:
    """``get drains [NAME]``, ``get nd/NAME``, ``describe drain NAME``: a NodeDrain; anything else: a PodMigration."""
    args.drains = False
    name = args.name or ""
    kind, slash, rest = name.partition("/")
    if name in DRAIN_KINDS:
        args.drains, args.name = True, args.drain_name
    elif slash and kind in DRAIN_KINDS:
        args.drains, args.name = True, rest
    elif args.drain_name:
        raise CliError(f"unexpected argument \"{args.drain_name}\" (see '{PROG} {args.command} --help')")
    if args.command == "describe" and args.drains and not args.name:
        raise CliError("describe drain needs the NodeDrain's name")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(_kubectl_style(sys.argv[1:] if argv is None else argv))
    if args.command == "drain":
        args.node = args.node.removeprefix("nodes/").removeprefix("node/")
        args.to = [n.strip() for value in args.to for n in value.split(",") if n.strip()]
        args.target_selector = target_selector(args.target_selector)
        if args.to and args.target_selector:
            raise CliError("use --to or --target-selector, not both")
        return args
    if args.command in ("get", "describe"):
        _drain_kind_and_name(args)
        if args.drains:
            if args.command == "get" and args.name and args.all_namespaces:
                args.all_namespaces = False  # NodeDrains are cluster-scoped: -A changes nothing
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
