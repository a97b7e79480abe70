"""The kubelet's HTTPS API on port 10250, with the kubelet's authentication and authorization.

Authentication: a client certificate signed by the cluster CA (how the API server calls
kubelets for ``kubectl logs``), or a bearer token checked with a TokenReview (how a
ServiceAccount such as the node agent calls it). Anonymous requests get 401.

Authorization: a SubjectAccessReview for ``nodes/<subresource>`` of this node, with the verb
from the HTTP method, exactly like the kubelet's webhook authorizer: ``POST /checkpoint``
needs ``create`` on ``nodes/checkpoint``; logs and everything else need ``nodes/proxy``.

Endpoints: ``POST /checkpoint/{namespace}/{pod}/{container}?timeout=`` (reply
``{"items": [archive path]}``; 404 for an unknown pod/container; 500 for runtime errors),
``GET /containerLogs/{namespace}/{pod}/{container}`` (tailLines, timestamps, previous, follow),
and ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from kubernetes_asyncio import client

from localcluster.node.checkpointing import checkpoint_container
from localcluster.node.containers import ContainerError, format_cri_log, read_cri_log
from localcluster.node.pods import PodWorker
from localcluster.node.restoring import FAIL_CHECKPOINTS_ANNOTATION

log = logging.getLogger(__name__)

SUBRESOURCE_BY_PREFIX = {"checkpoint": "checkpoint", "stats": "stats", "metrics": "metrics", "logs": "log", "healthz": "healthz"}


@dataclass(frozen=True, kw_only=True)
class User:
    name: str
    groups: list[str]
    uid: str = ""
    extra: dict[str, list[str]] | None = None


def _status(code: int, message: str, reason: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}
    return web.json_response(body, status=code)


class KubeletServer:
    def __init__(
        self,
        *,
        node_name: str,
        auth_api: client.AuthenticationV1Api,
        authz_api: client.AuthorizationV1Api,
        find_pod: Callable[[str, str], PodWorker | None],
        checkpoints_dir: Path,
        node_annotations: Callable[[], Awaitable[dict[str, str]]],
        runc_checkpoint: Callable[..., Awaitable[Path]] = checkpoint_container,
    ) -> None:
        self._node_annotations = node_annotations
        self._node = node_name
        self._auth = auth_api
        self._authz = authz_api
        self._find_pod = find_pod
        self._checkpoints_dir = checkpoints_dir
        self._checkpoint = runc_checkpoint
        self.app = web.Application(middlewares=[self._authenticate_and_authorize])
        self.app.router.add_post("/checkpoint/{namespace}/{pod}/{container}", self.checkpoint)
        self.app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        self.app.router.add_get("/healthz", self.healthz)

    # --- authn / authz --------------------------------------------------------------------
    async def _user(self, request: web.Request) -> User | None:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if peer:
            subject = {k: v for rdn in peer.get("subject", ()) for k, v in rdn}
            orgs = [v for rdn in peer.get("subject", ()) for k, v in rdn if k == "organizationName"]
            return User(name=subject.get("commonName", ""), groups=[*orgs, "system:authenticated"])
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=header[7:].strip()))
        result = await self._auth.create_token_review(review)
        if not result.status or not result.status.authenticated:
            return None
        info = result.status.user
        return User(name=info.username, groups=list(info.groups or []), uid=info.uid or "", extra=info.extra)

    async def _allowed(self, user: User, *, verb: str, subresource: str) -> bool:
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user.name,
                groups=user.groups,
                uid=user.uid or None,
                extra=user.extra,
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb, resource="nodes", subresource=subresource, name=self._node
                ),
            )
        )
        result = await self._authz.create_subject_access_review(review)
        return bool(result.status and result.status.allowed)

    @web.middleware
    async def _authenticate_and_authorize(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            user = await self._user(request)
        except (client.ApiException, OSError) as exc:
            log.warning("token review failed: %s", exc)
            return _status(500, "authentication failed", "InternalError")
        if user is None:
            return web.Response(status=401, text="Unauthorized")
        prefix = request.path.strip("/").split("/", 1)[0]
        subresource = SUBRESOURCE_BY_PREFIX.get(prefix, "proxy")
        verb = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            request.method, "get"
        )
        if not await self._allowed(user, verb=verb, subresource=subresource):
            message = f"Forbidden (user={user.name}, verb={verb}, resource=nodes, subresource={subresource})"
            return web.Response(status=403, text=message)
        return await handler(request)

    # --- handlers -------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _container(self, request: web.Request) -> tuple[PodWorker, str] | web.Response:
        ns, pod, name = request.match_info["namespace"], request.match_info["pod"], request.match_info["container"]
        worker = self._find_pod(ns, pod)
        if worker is None:
            return web.Response(status=404, text=f'pod "{ns}/{pod}" not found')
        if worker.slot(name) is None:
            return web.Response(status=404, text=f'container "{name}" not found in pod "{ns}/{pod}"')
        return worker, name

    async def checkpoint(self, request: web.Request) -> web.Response:
        found = self._container(request)
        if isinstance(found, web.Response):
            return found
        worker, name = found
        slot = worker.slot(name)
        assert slot is not None
        if slot.current is None or not slot.current.running:
            return web.Response(
                status=500, text=f"checkpointing of {worker.namespace}/{worker.name}/{name} failed: container is not running"
            )
        if refused := (await self._node_annotations()).get(FAIL_CHECKPOINTS_ANNOTATION):
            return web.Response(status=500, text=f"checkpointing of {worker.namespace}/{worker.name}/{name} failed ({refused})")
        timeout = float(request.query.get("timeout") or 0) or None
        try:
            archive = await asyncio.wait_for(
                self._checkpoint(runc=worker.ctx.runtime.runc, container=slot.current, checkpoints_dir=self._checkpoints_dir),
                timeout,
            )
        except TimeoutError:
            return web.Response(
                status=500, text=f"checkpointing of {worker.namespace}/{worker.name}/{name} failed: context deadline exceeded"
            )
        except ContainerError as exc:
            return web.Response(status=500, text=f"checkpointing of {worker.namespace}/{worker.name}/{name} failed ({exc})")
        return web.Response(text=json.dumps({"items": [str(archive)]}), content_type="application/json")

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        found = self._container(request)
        if isinstance(found, web.Response):
            return found
        worker, name = found
        slot = worker.slot(name)
        assert slot is not None
        previous = request.query.get("previous") in ("true", "1")
        restart = slot.restart_count - 1 if previous else slot.restart_count
        if restart < 0:
            return web.Response(status=400, text=f'previous terminated container "{name}" in pod "{worker.name}" not found')
        path = worker.log_path(name, restart)
        tail = int(request.query["tailLines"]) if "tailLines" in request.query else None
        timestamps = request.query.get("timestamps") in ("true", "1")
        body = read_cri_log(path, tail=tail, timestamps=timestamps)
        if request.query.get("follow") not in ("true", "1"):
            return web.Response(body=body, content_type="text/plain")
        resp = web.StreamResponse()
        resp.content_type = "text/plain"
        await resp.prepare(request)
        await resp.write(body)
        offset = path.stat().st_size if path.exists() else 0
        while slot.current is not None and slot.current.running:
            await asyncio.sleep(0.5)
            if path.exists() and path.stat().st_size > offset:
                with path.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                offset += len(chunk)
                await resp.write(format_cri_log(chunk, timestamps=timestamps))
        return resp


def tls_context(*, cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx
