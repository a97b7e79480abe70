"""The control service's entry point: watch its resources (PodMigrations, NodeDrains, PodCheckpoints, PodRestores,
CheckpointSchedules) and reconcile each until it is done.

Replicas elect a leader on a Lease (``kubeclient.leasing``); only the leader reconciles, and
every replica serves the admission webhook. On becoming leader it lists every PodMigration and
NodeDrain and resumes those that are not finished (``migrator.watches``): that is all a takeover
or a restart needs, because every step is recorded in status before the next begins. It calls
agents with its own ServiceAccount token, so it must run with one (in-cluster, or a kubeconfig
whose user is a token); client-certificate identities are refused at start with a clear error.

Every replica keeps the cluster's pods and nodes in informer caches (``kubeclient.informing``),
so placing a pod costs no list of the cluster, and counts its API requests by verb and resource
(``podmigrate_kube_requests_total``): what it costs the API server is measured, not guessed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import socket
import ssl
import uuid
from collections.abc import Callable

import aiohttp
from aiohttp import web
from kubernetes_asyncio import client

from agentapi import certificates, contract
from agentapi.client import AgentClient, TokenFile
from kubeclient.connecting import api_client, bearer_token, count_requests
from kubeclient.informing import Informers, PodsAndNodes
from kubeclient.leasing import LeaderElector
from migrator import certificates as authority
from migrator import webhookconfig
from migrator.controllers.podcheckpoint import PodCheckpointReconciler
from migrator.controllers.podmigration import PodMigrationReconciler, Settings
from migrator.controllers.podrestore import PodRestoreReconciler
from migrator.metrics import ControllerMetrics
from migrator.tracing import StoredIdGenerator, flush
from migrator.watches import Controllers
from migrator.webhook import Webhook
from telemetry.logcontext import setup_logging
from telemetry.setup import setup_tracing

log = logging.getLogger("migrator")

LEASE_NAME = "podmigrate-controller"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="podmigrate-controller", description="The podmigrate control service.")
    p.add_argument("--kubeconfig", help="kubeconfig whose user is the controller's ServiceAccount token (default: in-cluster)")
    p.add_argument("--context")
    p.add_argument("--checkpoint-repository", required=True, help="host[:port]/path where checkpoint images go")
    p.add_argument("--agent-port", type=int, default=10260)
    p.add_argument(
        "--agent-ca",
        help="CA bundle that signed the agents' serving certificates; default: the podmigrate CA in the Secret "
        f"{certificates.CA_SECRET}, which this service creates and signs the agents' certificate requests with",
    )
    p.add_argument(
        "--agent-token-file", default="/var/run/secrets/podmigrate.io/agent/token",
        help=f"a ServiceAccount token for the audience {contract.AUDIENCE} (a projected token volume), shown to the agents",
    )  # fmt: skip
    p.add_argument("--checkpoint-timeout", type=int, default=120, help="seconds the kubelet may take per container checkpoint")
    p.add_argument(
        "--health-address", default="0.0.0.0:8080", help="host:port for GET /healthz (liveness) and GET /metrics; empty: off"
    )
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--webhook-address", default="", help="host:port for the pod-restore admission webhook (HTTPS); empty: off")
    p.add_argument(
        "--webhook-cert",
        help="serving certificate of the webhook (the API server must trust its CA); default: one from the podmigrate CA, "
        "which is then put into the webhook configurations' caBundle",
    )
    p.add_argument("--webhook-key")
    p.add_argument(
        "--webhook-client-ca",
        help="CA bundle of the client certificate the API server presents to admission webhooks (its admission "
        "configuration); the webhooks answer only callers with a certificate from it",
    )
    p.add_argument(
        "--webhook-client-name", action="append", default=[],
        help="accept only client certificates with this common name (repeatable; default: any from --webhook-client-ca)",
    )  # fmt: skip
    p.add_argument(
        "--webhook-allow-any-client", action="store_true",
        help="serve the webhooks without client authentication (an API server whose admission configuration cannot be "
        "set, as on some managed clusters): anything that reaches the port can then post AdmissionReviews; SECURITY.md",
    )  # fmt: skip
    p.add_argument(
        "--leader-election-namespace", default=os.environ.get("POD_NAMESPACE", "podmigrate-system"),
        help="namespace of the Lease the replicas elect a leader with (default: $POD_NAMESPACE, else podmigrate-system)",
    )  # fmt: skip
    p.add_argument(
        "--leader-election-id", default=f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}",
        help="this process's identity in the Lease (default: $POD_NAME_<random>, else host_<random>: a restarted "
        "container is a new candidate, so it neither takes over as its dead self nor blocks the standby)",
    )  # fmt: skip
    p.add_argument("--lease-seconds", type=float, default=15.0, help="how long a leader's Lease lasts without renewal (15)")
    args = p.parse_args(argv)
    if bool(args.webhook_cert) != bool(args.webhook_key):
        p.error("--webhook-cert and --webhook-key go together")
    if args.webhook_address and not args.webhook_client_ca and not args.webhook_allow_any_client:
        p.error("--webhook-address needs --webhook-client-ca (or, knowingly, --webhook-allow-any-client)")
    return args


async def serve_health(*, address: str, healthy: Callable[[], str | None], metrics: ControllerMetrics) -> web.AppRunner:
    """GET /healthz: 200 while the replica works (leading with its watches alive, or standing by), else 503."""

    async def healthz(_: web.Request) -> web.Response:
        problem = healthy()
        return web.Response(status=503, text=f"{problem}\n") if problem else web.Response(text="ok\n")

    app = web.Application()

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(text=metrics.render(), headers={"Content-Type": metrics.content_type})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = address.rpartition(":")
    await web.TCPSite(runner, host=host or "0.0.0.0", port=int(port)).start()
    return runner


async def serve_webhook(
    *,
    args: argparse.Namespace,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    context: ssl.SSLContext,
    own_user: str,
    pods_and_nodes: PodsAndNodes,
) -> web.AppRunner:
    """The admission webhook that turns a controller's replacement pod into the restore (``migrator.webhook``)."""
    hook = Webhook(
        core=core, custom=custom, policy=client.PolicyV1Api(core.api_client),
        authz=client.AuthorizationV1Api(core.api_client), apps=client.AppsV1Api(core.api_client),
        checkpoint_repository=args.checkpoint_repository,
        own_user=own_user,
        client_names=frozenset(args.webhook_client_name), require_client_cert=not args.webhook_allow_any_client,
        pods_and_nodes=pods_and_nodes,
    )  # fmt: skip
    runner = web.AppRunner(hook.app, access_log=None)
    await runner.setup()
    host, _, port = args.webhook_address.rpartition(":")
    # reuse_port: where there is no Service network (the local cluster's overlay), every replica on a host
    # serves one shared address, as a Service's virtual IP would.
    await web.TCPSite(runner, host=host or "0.0.0.0", port=int(port), ssl_context=context, reuse_port=True).start()
    return runner


async def whoami(kube: client.ApiClient) -> str:
    """This service's user name as the API server sees it (a SelfSubjectReview): its own requests are told apart."""
    review = await client.AuthenticationV1Api(kube).create_self_subject_review(client.V1SelfSubjectReview())
    return str(review.status.user_info.username)


def _webhook_ips(address: str) -> list[str]:
    """The webhook's listen address, when it is one the API server is told to call (a URL) rather than a wildcard."""
    host = address.rpartition(":")[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return []
    return [] if ip.is_unspecified else [str(ip)]


async def run(args: argparse.Namespace) -> None:
    setup_tracing(service_name="podmigrate-controller", id_generator=StoredIdGenerator())
    kube = await api_client(kubeconfig=args.kubeconfig, context=args.context)
    if not await bearer_token(kube):
        raise SystemExit(
            "podmigrate-controller: error: needs a ServiceAccount token (in-cluster, or a kubeconfig with a token user)"
        )
    core, custom = client.CoreV1Api(kube), client.CustomObjectsApi(kube)
    # Every replica keeps the cluster's pods and nodes in memory: the leader places pods from them, and every
    # replica's webhook places warm starts from them (kubeclient.informing says why).
    informers = Informers(core)
    namespace = args.leader_election_namespace
    ca = None if args.agent_ca and args.webhook_cert else await authority.ensure_ca(core=core, namespace=namespace)
    agent_tls = ssl.create_default_context(cafile=args.agent_ca) if args.agent_ca else authority.client_context(ca)
    session = aiohttp.ClientSession()
    agent_token = TokenFile(args.agent_token_file)
    try:
        agent_token.check()
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"podmigrate-controller: error: no token for the agents ({contract.AUDIENCE}) in {args.agent_token_file}: {exc}"
        ) from None
    agents = AgentClient(session=session, token=agent_token, port=args.agent_port, tls=agent_tls)
    # The gauge reads the dispatchers (created below) at scrape time.
    metrics = ControllerMetrics(in_flight=lambda: float(controllers.active()))
    count_requests(kube, metrics.count_request)
    metrics.watch_caches(informers.caches)
    tasks: dict[str, asyncio.Task[None]] = {"informers": asyncio.create_task(informers.run())}
    reconciler = PodMigrationReconciler(
        core=core, custom=custom, agents=agents, metrics=metrics,
        settings=Settings(checkpoint_repository=args.checkpoint_repository, checkpoint_timeout_seconds=args.checkpoint_timeout),
        pods_and_nodes=informers,
    )  # fmt: skip
    settings = reconciler.ctx.settings
    checkpoints = PodCheckpointReconciler(
        core=core, custom=custom, agents=agents, metrics=metrics, settings=settings, pods_and_nodes=informers
    )
    restores = PodRestoreReconciler(
        core=core, custom=custom, agents=agents, settings=settings, metrics=metrics, pods_and_nodes=informers
    )
    controllers = Controllers(
        core=core, custom=custom, policy=client.PolicyV1Api(kube), migrations=reconciler, checkpoints=checkpoints,
        restores=restores, pods_and_nodes=informers,
    )  # fmt: skip

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    elector = LeaderElector(
        coordination=client.CoordinationV1Api(kube), namespace=args.leader_election_namespace, name=LEASE_NAME,
        identity=args.leader_election_id, lease_seconds=args.lease_seconds,
        renew_deadline_seconds=args.lease_seconds * 2 / 3, retry_seconds=args.lease_seconds / 7.5,
    )  # fmt: skip

    def healthy() -> str | None:
        stopped = [name for name in ("watch", "informers") if name in tasks and tasks[name].done()]
        return f"{' and '.join(stopped)} stopped" if stopped else None

    # Every replica answers the webhook (it keeps no state); only the leader reconciles.
    webhook = None
    if args.webhook_address:
        if args.webhook_cert:
            webhook_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            webhook_tls.load_cert_chain(args.webhook_cert, args.webhook_key)
        else:
            issued = authority.WebhookCertificate(api=kube, ca=ca, namespace=namespace, ips=_webhook_ips(args.webhook_address))
            webhook_tls = issued.context()
            await issued.publish_ca()
            tasks["webhook-cert"] = asyncio.create_task(issued.keep(webhook_tls))
        if args.webhook_client_ca:
            if not os.path.isfile(args.webhook_client_ca):
                raise SystemExit(
                    f"podmigrate-controller: error: --webhook-client-ca {args.webhook_client_ca} does not exist: put the CA "
                    "of the API server's admission client certificate there (the ConfigMap podmigrate-webhook-client-ca; "
                    "SECURITY.md, 'Webhook callers'), or pass --webhook-allow-any-client knowingly"
                )
            webhook_tls.verify_mode = ssl.CERT_REQUIRED
            webhook_tls.load_verify_locations(cafile=args.webhook_client_ca)
        else:
            log.warning("admission webhooks serve any client (--webhook-allow-any-client): SECURITY.md says what that allows")
        admission = client.AdmissionregistrationV1Api(kube)
        await webhookconfig.set_checkpoint_repository(admission=admission, repository=args.checkpoint_repository)
        own_user = await whoami(kube)
        webhook = await serve_webhook(
            args=args, core=core, custom=custom, context=webhook_tls, own_user=own_user, pods_and_nodes=informers
        )
    health = await serve_health(address=args.health_address, healthy=healthy, metrics=metrics) if args.health_address else None
    lost = False
    acquire = asyncio.create_task(elector.acquire())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([acquire, stopping], return_when=asyncio.FIRST_COMPLETED)
    if acquire.done() and not stopping.done():
        log.info("podmigrate controller leading; checkpoints go to %s", args.checkpoint_repository)
        tasks["watch"] = asyncio.create_task(controllers.watch())
        if not args.agent_ca:  # this service is the signer of the agents' certificates
            tasks["signer"] = asyncio.create_task(
                authority.AgentSigner(certs=client.CertificatesV1Api(kube), core=core, ca=ca, namespace=namespace).run()
            )
        tasks["keep"] = asyncio.create_task(elector.keep())
        await asyncio.wait([tasks["keep"], stopping], return_when=asyncio.FIRST_COMPLETED)
        lost = tasks["keep"].done()
    for task in (acquire, stopping, *tasks.values()):
        task.cancel()
    for runner in (health, webhook):
        if runner is not None:
            await runner.cleanup()
    await controllers.stop()
    await elector.release()
    flush(wait=True)
    await session.close()
    await kube.close()
    if lost:  # another replica may be acting already: stop at once and let the kubelet restart this one as a standby
        raise SystemExit("podmigrate-controller: lost the leader lease; exiting")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(json_output=args.log_format == "json")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
