"""``podmigrate-agent`` / ``python -m node_agent.main``: one agent per node, wired from flags.

In a cluster it runs as a privileged DaemonSet pod (it writes cgroup freezer files and
deletes the kubelet's root-owned archives) with ``--node-name`` from the downward API and its
ServiceAccount's in-cluster credentials; the kubelet's checkpoints directory must be visible
at the same path (or under ``--host-root``). The only credentials it holds are its own:
``nodes/checkpoint create``, ``pods``/``nodes get``, ``tokenreviews``/``subjectaccessreviews
create`` (``manifests/rbac/agent.yaml``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web
from kubernetes_asyncio import client

from agentapi import certificates
from kubeclient.connecting import api_client, bearer_token
from node_agent import archives, tracing
from node_agent.app import AgentApi
from node_agent.auth import DEFAULT_TTL_S, KubeReviewer
from node_agent.checkpointing import Checkpointer
from node_agent.dumphook import DEFAULT_HOOK_DIR, DumpHook
from node_agent.freezer import CgroupFreezer
from node_agent.kubelet import KubeletClient, kubelet_ssl_context
from node_agent.leases import FreezeLeases
from node_agent.metrics import AgentMetrics
from node_agent.pods import KubePods
from node_agent.publishing import Publisher
from node_agent.servingcert import ServingCertificate
from node_agent.volumedata import DEFAULT_KUBELET_ROOT, DEFAULT_VOLUME_DIR, VolumeData
from ocicheckpoint import encryption, names
from ocicheckpoint.credentials import DockerConfig, load_docker_config
from telemetry.logcontext import setup_logging

log = logging.getLogger("node_agent")

DEFAULT_LISTEN = "0.0.0.0:10260"
# A kubelet still writing an archive keeps its mtime fresh, and archives a request packs or pushes are
# never swept: the bound only has to outlast a kubelet that finishes after its caller gave up.
DEFAULT_ARCHIVE_MAX_AGE_S = 900.0
# Encryption at rest (ocicheckpoint/encryption.py): the nodes' public keys (a ConfigMap) and this node's private ones.
DEFAULT_ENCRYPTION_KEY_DIR = Path("/etc/podmigrate/encryption")
DEFAULT_DECRYPTION_KEY_DIR = Path("/etc/podmigrate/keys")


def _on_host(host_root: Path, path: Path) -> Path:
    """A host path as this process sees it (the DaemonSet mounts the host's / at --host-root)."""
    return host_root / path.relative_to("/") if path.is_absolute() else path


async def _sweep_archives(
    checkpointer: Checkpointer, checkpoints_dir: Path, *, every_s: float = 60.0, older_than_s: float
) -> None:
    """Archives no request of this agent will push (a kubelet that finished after its caller gave up)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await checkpointer.sweep_archives(checkpoints_dir, older_than_s=older_than_s, when="periodic")
        except Exception:
            log.exception("sweeping leftover checkpoint archives in %s", checkpoints_dir)


def encryption_recipients(args: argparse.Namespace) -> list[encryption.PublicKey]:
    """The public keys images are encrypted to; exits when encryption is on and there are none."""
    if args.no_encryption:
        log.warning("--no-encryption: checkpoint images (the processes' memory) are pushed unencrypted")
        return []
    try:
        keys = encryption.load_public_keys([args.encryption_key_dir])
    except (encryption.EncryptionError, OSError) as exc:
        raise SystemExit(f"--encryption-key-dir: {exc}") from None
    if not keys:
        raise SystemExit(
            f"no public key in {args.encryption_key_dir}: create the ConfigMap podmigrate-encryption with the nodes' "
            "public keys (docs/encryption.md), or start with --no-encryption"
        )
    log.info("encrypting checkpoint images to %d public key(s) from %s", len(keys), args.encryption_key_dir)
    return keys


def _registry_credentials(path: Path | None) -> DockerConfig | None:
    """The mounted Secret's file; the manifests mount it ``optional``, so a missing file means "anonymous"."""
    if path is None:
        return None
    if not path.exists():
        log.warning("no registry credentials at %s: the registry is asked anonymously", path)
        return None
    return load_docker_config(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="podmigrate-agent", description="podmigrate's per-node checkpoint agent.")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME"), help="this node's name (default: $NODE_NAME)")
    p.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG, ~/.kube/config, else in-cluster")
    p.add_argument("--listen", default=DEFAULT_LISTEN, help=f"host:port to serve on (default {DEFAULT_LISTEN})")
    p.add_argument(
        "--tls-cert", default=None,
        help="serve with this certificate (with --tls-key); default: ask the cluster for one (a CertificateSigningRequest)",
    )  # fmt: skip
    p.add_argument("--tls-key", default=None)
    p.add_argument(
        "--cert-dir", default=Path("/tmp/podmigrate-tls"), type=Path,
        help="where the certificate the cluster issued and its key are kept (default /tmp/podmigrate-tls)",
    )  # fmt: skip
    p.add_argument(
        "--cert-seconds", default=certificates.AGENT_CERT_SECONDS, type=int,
        help="lifetime asked for the issued certificate; it is renewed at two thirds of it (default 7 days)",
    )  # fmt: skip
    p.add_argument(
        "--plain-http-registry", action="append", default=[], help="host:port of a registry served over plain HTTP (repeatable)"
    )
    p.add_argument(
        "--registry-credentials", default=None, type=Path,
        help="a .dockerconfigjson (the podmigrate-registry Secret, mounted) with credentials to push, pull and delete "
        "checkpoint images; default: none (anonymous)",
    )  # fmt: skip
    p.add_argument("--kubelet-ca", default=None, help="CA for kubelet serving certificates (default: the cluster CA)")
    p.add_argument("--cgroup-root", default="/sys/fs/cgroup", type=Path)
    p.add_argument("--host-root", default="/", type=Path, help="where the host's / is mounted (archive paths are the host's)")
    p.add_argument("--freeze-timeout", default=10.0, type=float, help="seconds to wait for a cgroup to freeze")
    p.add_argument(
        "--dump-hook-dir", default=DEFAULT_HOOK_DIR, type=Path,
        help="where the agent arms the node's CRIU post-dump hook (containerd nodes; as PODMIGRATE_HOOK_DIR for the hook)",
    )  # fmt: skip
    p.add_argument(
        "--kubelet-root-dir", default=DEFAULT_KUBELET_ROOT, type=Path,
        help=f"the kubelet's --root-dir on the host (default {DEFAULT_KUBELET_ROOT}): where pods' emptyDir data is read",
    )  # fmt: skip
    p.add_argument(
        "--volume-dir", default=DEFAULT_VOLUME_DIR, type=Path,
        help=f"where emptyDir data waits for its restore, on the host (default {DEFAULT_VOLUME_DIR}; as PODMIGRATE_VOLUME_DIR "
        "for the CRIU hook)",
    )  # fmt: skip
    p.add_argument(
        "--checkpoint-repository", default=os.environ.get("CHECKPOINT_REPOSITORY"),
        help="host[:port]/path under which checkpoint images live (default: $CHECKPOINT_REPOSITORY): pushes go only "
        "to <it>/<namespace>/<pod>, and only images under it are deleted or staged",
    )  # fmt: skip
    p.add_argument(
        "--archive-max-age", default=DEFAULT_ARCHIVE_MAX_AGE_S, type=float,
        help="seconds after which a checkpoint archive no request holds is deleted as a leftover (default "
        f"{DEFAULT_ARCHIVE_MAX_AGE_S:.0f}; at start every archive is one)",
    )  # fmt: skip
    p.add_argument("--auth-cache-ttl", default=DEFAULT_TTL_S, type=float, help="seconds to cache positive reviews")
    p.add_argument(
        "--encryption-key-dir", default=DEFAULT_ENCRYPTION_KEY_DIR, type=Path,
        help="PEM public keys of the nodes that may restore (default "
        f"{DEFAULT_ENCRYPTION_KEY_DIR}, the ConfigMap podmigrate-encryption): every checkpoint and volume-data layer is "
        "encrypted to all of them in ocicrypt's format (docs/encryption.md); the agent refuses to start without one",
    )  # fmt: skip
    p.add_argument(
        "--no-encryption", action="store_true",
        help="push checkpoint images unencrypted. A checkpoint is the processes' memory (keys, tokens, data): only for "
        "a registry as trusted as the nodes themselves, or target runtimes that have no ocicrypt decryption set up",
    )  # fmt: skip
    p.add_argument(
        "--decryption-key-dir", default=DEFAULT_DECRYPTION_KEY_DIR, type=Path,
        help=f"this node's PEM private keys (default {DEFAULT_DECRYPTION_KEY_DIR}, a read-only hostPath): decrypt the "
        "volume data staged here; the runtime decrypts checkpoint images with its own copy (CRI-O decryption_keys_path, "
        "containerd ctd-decoder --decryption-keys-path)",
    )  # fmt: skip
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    args = p.parse_args(argv)
    if not args.node_name:
        p.error("--node-name (or $NODE_NAME) is required")
    if not args.checkpoint_repository:
        p.error("--checkpoint-repository (or $CHECKPOINT_REPOSITORY) is required")
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        p.error(f"--listen must be host:port, got {args.listen!r}")
    args.listen_host, args.listen_port = host.strip("[]") or "0.0.0.0", int(port)
    return args


async def run(args: argparse.Namespace) -> None:
    tracing.setup_tracing()
    api = await api_client(kubeconfig=args.kubeconfig)
    cfg = api.configuration

    async def own_token() -> str | None:
        return await bearer_token(api)

    recipients = encryption_recipients(args)
    kubelet_ca = args.kubelet_ca or cfg.ssl_ca_cert
    if not kubelet_ca:
        raise SystemExit("no CA to verify kubelets with: pass --kubelet-ca (the kubeconfig has none)")
    has_token = bool(await own_token())
    kubelet_tls = kubelet_ssl_context(
        ca_file=kubelet_ca,
        client_cert=None if has_token else cfg.cert_file,
        client_key=None if has_token else cfg.key_file,
    )
    kubelet_session = aiohttp.ClientSession()
    registry_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=120))
    metrics = AgentMetrics()
    freezer = CgroupFreezer(root=args.cgroup_root)
    publisher = Publisher(
        session=registry_session,
        plain_http_registries=frozenset(args.plain_http_registry),
        credentials=_registry_credentials(args.registry_credentials),
    )
    volumes = VolumeData(
        kubelet_root=_on_host(args.host_root, args.kubelet_root_dir),
        volume_dir=_on_host(args.host_root, args.volume_dir),
        decryption_key_dir=args.decryption_key_dir,
    )
    volumes.sweep()
    checkpoints_dir = _on_host(args.host_root, args.kubelet_root_dir) / names.KUBELET_CHECKPOINTS_SUBDIR
    checkpointer = Checkpointer(
        node_name=args.node_name,
        pods=KubePods(api=api),
        freezer=freezer,
        kubelet=KubeletClient(session=kubelet_session, ssl_context=kubelet_tls, token=own_token),
        publisher=publisher,
        metrics=metrics,
        criu_version=archives.criu_version(),
        host_root=args.host_root,
        freeze_timeout_s=args.freeze_timeout,
        tracer=tracing.tracer(),
        dump_hook=DumpHook(directory=args.dump_hook_dir),
        volume_data=volumes,
        leases=FreezeLeases(path=_on_host(args.host_root, args.volume_dir).parent / "freeze-leases.json"),
        recipients=recipients,
    )
    # Before the first request: every archive there was left by a previous agent, nobody will push it.
    await checkpointer.sweep_archives(checkpoints_dir, older_than_s=0, when="start")
    agent = AgentApi(
        checkpointer=checkpointer,
        publisher=publisher,
        reviewer=KubeReviewer(api=api),
        metrics=metrics,
        volumes=volumes,
        repository=args.checkpoint_repository,
        auth_ttl_s=args.auth_cache_ttl,
    )
    issued: ServingCertificate | None = None
    if args.tls_cert:
        serving_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        serving_tls.load_cert_chain(args.tls_cert, args.tls_key)
    else:
        issued = ServingCertificate(
            certs=client.CertificatesV1Api(api), core=client.CoreV1Api(api),
            node_name=args.node_name, directory=args.cert_dir, seconds=args.cert_seconds,
        )  # fmt: skip
        serving_tls = await issued.context()
    runner = web.AppRunner(agent.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.listen_host, args.listen_port, ssl_context=serving_tls)
    await site.start()
    log.info(
        "agent for node %s serving https://%s:%d (cgroups %s under %s)",
        args.node_name,
        args.listen_host,
        args.listen_port,
        freezer.version,
        freezer.hierarchy,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    leases = asyncio.create_task(checkpointer.keep_leases())  # thaws pods whose freeze lease lapsed
    sweeper = asyncio.create_task(_sweep_archives(checkpointer, checkpoints_dir, older_than_s=args.archive_max_age))
    renewer = asyncio.create_task(issued.keep(serving_tls)) if issued else None
    await stop.wait()
    for task in (leases, sweeper, renewer):
        if task is not None:
            task.cancel()
    # Frozen pods stay frozen: the freeze is the migration's state (and its lease is on disk), not this process's.
    log.info("agent for node %s shutting down", args.node_name)
    await runner.cleanup()
    await kubelet_session.close()
    await registry_session.close()
    await api.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(json_output=args.log_format == "json", level=args.log_level.upper())
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
