"""The command line: ``kubectl migrate pod|get|describe|timeline`` and kubectl's connection flags.

``--kubeconfig``, ``--context`` and ``-n/--namespace`` are accepted before and after the command,
as kubectl does (``kubectl migrate -n prod get`` and ``kubectl migrate get -n prod``). Usage
errors are one line and exit 1, so that exit 2 keeps meaning "--wait timed out".
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Final, NoReturn

from migrator.api import OnFailure
from migrator.cli.errors import CliError

PROG: Final = "kubectl migrate"
DEFAULT_TIMEOUT: Final = 300.0
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
    _connection_flags(pod, suppress=True)

    get = commands.add_parser("get", help="list PodMigrations (or show one)", description="List PodMigrations, or show one.")
    get.add_argument("name", metavar="NAME", nargs="?", help="one PodMigration")
    get.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    get.add_argument("-o", "--output", choices=OUTPUTS, help="json, yaml or name instead of the table")
    _connection_flags(get, suppress=True)

    describe = commands.add_parser(
        "describe",
        help="show one PodMigration in detail",
        description="Spec, status, per-phase timings and events of one PodMigration.",
    )
    describe.add_argument("name", metavar="NAME", help="the PodMigration")
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
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
