"""``kubectl-migrate``'s entry point: parse, connect, run one command, map failures to exit codes.

Nothing escapes as a traceback: a ``CliError`` is its one line, Ctrl-C is exit 130, and an
unexpected exception is still one line (with its type) and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

from migrator.cli import checkpoints, commands, drains, kubeapi
from migrator.cli.arguments import parse_args
from migrator.cli.commands import Io
from migrator.cli.errors import EXIT_ERROR, CliError, one_line
from migrator.cli.kubeapi import Connect
from migrator.cli.registryinspection import RegistryOptions


async def run(args: argparse.Namespace, *, connect: Connect, io: Io) -> int:
    async with connect(kubeconfig=args.kubeconfig, context=args.context) as kube:
        namespace = args.namespace or kube.default_namespace
        if args.command == "pod":
            return await commands.migrate_pod(
                kube=kube,
                io=io,
                namespace=namespace,
                pod_name=args.name,
                target=args.to,
                wait=args.wait,
                timeout=args.timeout,
                on_failure=args.on_failure,
                retain_checkpoint=args.retain_checkpoint,
                delete_emptydir_data=args.delete_emptydir_data,
            )
        if args.command == "drain":
            spec = drains.drain_spec(
                node=args.node,
                pod_selector=args.pod_selector,
                timeout=args.timeout,
                dry_run=args.dry_run,
                ignore_daemonsets=args.ignore_daemonsets,
                delete_emptydir_data=args.delete_emptydir_data,
                max_concurrent=args.max_concurrent,
                to=args.to,
                target_selector=args.target_selector,
                on_unmigratable=args.on_unmigratable,
            )
            return await drains.drain_node(kube=kube, io=io, spec=spec, wait=args.wait)
        if args.command in ("checkpoint", "restore", "checkpoints", "inspect"):
            return await run_checkpoints(args, kube=kube, io=io, namespace=namespace)
        if args.command == "get" and args.kind in checkpoints.KINDS:
            return await checkpoints.get_objects(
                kube=kube, io=io, kind=args.kind, namespace=namespace, name=args.name,
                all_namespaces=args.all_namespaces, output=args.output,
            )  # fmt: skip
        if args.command == "describe" and args.kind == "checkpoints":
            return await checkpoints.inspect_checkpoint(kube=kube, io=io, namespace=namespace, name=args.name, output=None)
        if args.command == "get" and args.drains:
            return await drains.get_drains(kube=kube, io=io, name=args.name, output=args.output)
        if args.command == "describe" and args.drains:
            return await drains.describe_drain(kube=kube, io=io, name=args.name)
        if args.command == "get":
            return await commands.get_migrations(
                kube=kube, io=io, namespace=namespace, name=args.name, all_namespaces=args.all_namespaces, output=args.output
            )
        if args.command == "timeline":
            return await commands.migration_timeline(
                kube=kube,
                io=io,
                namespace=namespace,
                name=args.name,
                output=args.output,
                path=args.file,
                width=args.width,
                ascii_only=args.ascii,
            )
        return await commands.describe_migration(kube=kube, io=io, namespace=namespace, name=args.name)


async def run_checkpoints(args: argparse.Namespace, *, kube: kubeapi.Api, io: Io, namespace: str) -> int:
    """``checkpoint``, ``restore``, ``checkpoints`` and ``inspect``."""
    if args.command == "checkpoint" and args.schedule:
        return await checkpoints.schedule_checkpoints(
            kube=kube, io=io, namespace=namespace, pod_name=args.pod, name=args.name, schedule=args.schedule,
            keep=args.keep, max_age=args.max_age, max_bytes=args.max_bytes,
        )  # fmt: skip
    if args.command == "checkpoint":
        return await checkpoints.checkpoint_pod(
            kube=kube, io=io, namespace=namespace, pod_name=args.pod, name=args.name, suspend=args.suspend,
            pin=args.pin, timeout=args.timeout, wait=args.wait,
        )  # fmt: skip
    if args.command == "restore":
        return await checkpoints.restore_checkpoint(
            kube=kube, io=io, namespace=namespace, checkpoint=args.checkpoint, target=args.to, new_name=args.new_name,
            timeout=args.timeout, wait=args.wait,
        )  # fmt: skip
    if args.command == "checkpoints":
        return await checkpoints.list_checkpoints(
            kube=kube, io=io, namespace=namespace, pod=args.pod, all_namespaces=args.all_namespaces, output=args.output
        )
    registry = (
        RegistryOptions(decryption_key=args.decryption_key, registry_config=args.registry_config, plain_http=args.plain_http)
        if args.from_registry
        else None
    )
    return await checkpoints.inspect_checkpoint(
        kube=kube, io=io, namespace=namespace, name=args.name, output=args.output, registry=registry
    )


def main(argv: Sequence[str] | None = None, *, connect: Connect = kubeapi.connect, io: Io | None = None) -> int:
    io = io or Io()
    # kubernetes_asyncio logs warnings (e.g. "Config not found") that would add lines to our one-line errors.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        args = parse_args(argv)
        return asyncio.run(run(args, connect=connect, io=io))
    except CliError as exc:
        io.error(exc.message)
        return exc.code
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    except KeyboardInterrupt:
        io.error("interrupted (an object already created, a PodMigration, NodeDrain, PodCheckpoint..., goes on in the cluster)")
        return 130
    except Exception as exc:
        io.error(f"unexpected {type(exc).__name__}: {one_line(str(exc))}")
        return EXIT_ERROR
