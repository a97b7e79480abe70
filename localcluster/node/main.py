"""Entry point of one node process: wires the kubelet half, the runtime half and the API.

On start it clears what a previous run of the same node left (containers, namespaces,
mounts, cgroups): like a kubelet and CRI-O after a reboot, it then runs every pod bound to it
afresh. On SIGTERM it stops its containers and removes everything it created, leaving the
Node object behind as a powered-off machine would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from kubernetes_asyncio import client

from kubeclient.connecting import api_client
from kubeclient.watching import list_and_watch
from localcluster import nodesetup
from localcluster.node import heartbeat, network
from localcluster.node.containers import ContainerRuntime, become_subreaper, remove_cgroups, unmount_all
from localcluster.node.images import ImageStore
from localcluster.node.pods import NodeContext, PodWorker
from localcluster.node.runc import Runc, RuncError
from localcluster.node.server import KubeletServer, tls_context
from ocicheckpoint.credentials import load_docker_config

log = logging.getLogger("localcluster.node")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="localcluster-node", description="A kubelet + CRI-O stand-in node.")
    p.add_argument("--name", required=True)
    p.add_argument("--index", type=int, required=True, help="1..99; picks the pod address range")
    p.add_argument("--address", required=True, help="InternalIP (a loopback address) the kubelet API listens on")
    p.add_argument("--port", type=int, default=10250)
    p.add_argument("--kubeconfig", required=True, help="credentials of system:node:<name>")
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    p.add_argument("--client-ca", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--plain-http-registry", action="append", default=[], help="host:port served over plain HTTP")
    p.add_argument(
        "--registry-credentials", type=Path, default=None,
        help="the node's own registry credentials (a .dockerconfigjson, as a kubelet's <root-dir>/config.json), tried after a "
        "pod's imagePullSecrets",
    )  # fmt: skip
    p.add_argument(
        "--criu-action-script", action="append", default=[], type=Path,
        help="a script CRIU runs at each stage of a dump or restore (in the node's CRIU configuration, as on a CRI-O node)",
    )  # fmt: skip
    p.add_argument(
        "--decryption-keys-path", type=Path, default=None,
        help="PEM private keys that decrypt encrypted image layers (CRI-O's decryption_keys_path, default /etc/crio/keys "
        "there); without it an encrypted image fails to pull",
    )  # fmt: skip
    p.add_argument("--cpu", default="4")
    p.add_argument("--memory", default="8Gi")
    p.add_argument("--label", action="append", default=[], help="key=value node label")
    return p.parse_args(argv)


async def _cleanup_previous(*, runc: Runc, state: Path, index: int, cgroup_parent: str) -> None:
    with contextlib.suppress(RuncError):
        for cid in await runc.list_ids():
            with contextlib.suppress(RuncError):
                await runc.delete(container_id=cid, force=True)
    await network.remove_all(node_index=index)
    # Not the checkpoints tmpfs ``up`` mounted for this node just before starting it (localcluster.nodesetup):
    # unmounted here, the node's checkpoints (CRIU's images and the archive) went to the disk under it.
    unmount_all(state, keep=(nodesetup.checkpoints_dir(state),))
    remove_cgroups(cgroup_parent)


async def run(args: argparse.Namespace) -> None:
    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    become_subreaper()
    cgroup_parent = f"/localcluster-n{args.index:02d}"
    runc = Runc(root=state / "runc")
    await _cleanup_previous(runc=runc, state=state, index=args.index, cgroup_parent=cgroup_parent)

    api = await api_client(kubeconfig=args.kubeconfig)
    core = client.CoreV1Api(api)
    labels = dict(item.split("=", 1) for item in args.label)
    spec = heartbeat.NodeSpec(
        name=args.name, address=args.address, port=args.port, cpu=args.cpu, memory=args.memory, labels=labels
    )
    await heartbeat.register(core, spec)

    session = aiohttp.ClientSession()
    ctx = NodeContext(
        name=args.name,
        node_ip=args.address,
        core=core,
        runtime=ContainerRuntime(
            runc=runc,
            state_dir=state / "crio" / "containers",
            cgroup_parent=cgroup_parent,
            criu_action_scripts=args.criu_action_script,
        ),
        images=ImageStore(
            root=state / "storage" / "images",
            session=session,
            plain_http_registries=frozenset(args.plain_http_registry),
            node_credentials=load_docker_config(args.registry_credentials) if args.registry_credentials else None,
            decryption_keys_path=args.decryption_keys_path,
        ),
        network=network.NetworkAllocator(node_index=args.index),
        pods_dir=state / "kubelet" / "pods",
        logs_dir=state / "log" / "pods",
        session=session,
        cgroup_parent=cgroup_parent,
    )
    workers: dict[str, PodWorker] = {}

    def find_pod(namespace: str, name: str) -> PodWorker | None:
        for worker in workers.values():
            if worker.namespace == namespace and worker.name == name and not worker.finished:
                return worker
        return None

    async def node_annotations() -> dict[str, str]:
        return dict((await core.read_node(args.name)).metadata.annotations or {})

    server = KubeletServer(
        node_name=args.name,
        auth_api=client.AuthenticationV1Api(api),
        authz_api=client.AuthorizationV1Api(api),
        find_pod=find_pod,
        checkpoints_dir=state / "kubelet" / "checkpoints",
        node_annotations=node_annotations,
    )
    runner = web.AppRunner(server.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner,
        args.address,
        args.port,
        ssl_context=tls_context(cert=Path(args.tls_cert), key=Path(args.tls_key), client_ca=Path(args.client_ca)),
    )
    await site.start()
    beat = asyncio.create_task(heartbeat.heartbeat_forever(core=core, coord=client.CoordinationV1Api(api), spec=spec))
    log.info("node %s ready: kubelet API on https://%s:%d", args.name, args.address, args.port)

    async def watch_pods() -> None:
        snapshot: set[str] = set()
        async for event in list_and_watch(core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={args.name}"):
            if event.type == "SYNCED":
                for uid in set(workers) - snapshot:
                    workers[uid].update(None)
                snapshot = set()
                continue
            pod: dict[str, Any] = api.sanitize_for_serialization(event.object)
            uid = pod["metadata"]["uid"]
            if event.type == "SYNC":
                snapshot.add(uid)
            for done in [u for u, w in workers.items() if w.finished]:
                del workers[done]
            if event.type == "DELETED":
                if uid in workers:
                    workers[uid].update(None)
                continue
            if uid in workers:
                workers[uid].update(pod)
            elif (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                workers[uid] = PodWorker(ctx=ctx, pod=pod)
                workers[uid].start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(watch_pods())
    await stop.wait()

    log.info("node %s shutting down", args.name)
    for task in (watcher, beat):
        task.cancel()
    await runner.cleanup()
    await asyncio.gather(*(w.stop() for w in workers.values()), return_exceptions=True)
    await _cleanup_previous(runc=runc, state=state, index=args.index, cgroup_parent=cgroup_parent)
    await session.close()
    await api.close()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
