"""The agent's HTTP surface: routes, body parsing, and rendering errors the one agreed way.

Handlers are thin on purpose: they parse a body with ``contract``, call the ``Checkpointer``
(checkpoints, freezing), ``VolumeData`` (staging a pod's emptyDir data) or the ``Publisher``
(image deletion, by digest or by tag), and render either the result or an ``AgentError`` as ``{"error", "stage"}``
with its status. Authentication and authorization happen before any handler runs (``auth``);
``/healthz`` and ``/metrics`` are public.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from agentapi import contract
from agentapi.contract import ContractError, error_body
from node_agent import tags, tracing
from node_agent.auth import Reviewer, auth_middleware
from node_agent.checkpointing import Checkpointer
from node_agent.errors import AgentError
from node_agent.metrics import AgentMetrics
from node_agent.publishing import Publisher
from node_agent.volumedata import VolumeData, VolumeDataError
from ocicheckpoint.reference import Reference
from telemetry import logcontext
from telemetry.w3c import parse_traceparent

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({contract.PATH_HEALTHZ, contract.PATH_METRICS})
MAX_BODY_BYTES = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"null")
    except ValueError as exc:
        raise ContractError(f"body is not JSON: {exc}") from None


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render contract and agent errors; anything unexpected becomes a logged 500.

    It also tags the request's log lines with the caller's migration and trace (each request
    is its own task, so the context variables stay with it).
    """
    logcontext.migration.set(request.headers.get(contract.HEADER_MIGRATION, ""))
    parsed = parse_traceparent(request.headers.get("traceparent"))
    logcontext.trace_id.set(parsed[0] if parsed else "")
    try:
        return await handler(request)
    except ContractError as exc:
        return web.json_response(error_body(str(exc)), status=400)
    except AgentError as exc:
        log.warning("%s %s -> %d (%s): %s", request.method, request.path, exc.status, exc.stage, exc.message)
        return web.json_response(error_body(exc.message, stage=exc.stage), status=exc.status)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response(error_body(f"internal error: {exc!r}"), status=500)


class AgentApi:
    def __init__(
        self,
        *,
        checkpointer: Checkpointer,
        publisher: Publisher,
        reviewer: Reviewer,
        metrics: AgentMetrics,
        volumes: VolumeData,
        repository: str,
        auth_ttl_s: float = 30.0,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._checkpointer = checkpointer
        self._publisher = publisher
        self._metrics = metrics
        self._volumes = volumes
        self._tracer = tracer or tracing.tracer()
        self.app = web.Application(
            client_max_size=MAX_BODY_BYTES,
            middlewares=[
                _errors,
                auth_middleware(reviewer=reviewer, public_paths=PUBLIC_PATHS, repository=repository, ttl=auth_ttl_s),
            ],
        )
        self.app.router.add_post(contract.PATH_CHECKPOINT, self.checkpoint)
        self.app.router.add_delete(contract.PATH_CHECKPOINT, self.abort_checkpoint)
        self.app.router.add_post(contract.PATH_THAW, self.thaw)
        self.app.router.add_post(contract.PATH_KILL, self.kill)
        self.app.router.add_get(contract.PATH_FROZEN, self.frozen)
        self.app.router.add_delete(contract.PATH_IMAGES, self.delete_image)
        self.app.router.add_post(contract.PATH_FREEZE_LEASE, self.renew_lease)
        self.app.router.add_post(contract.PATH_VOLUMES, self.stage_volumes)
        self.app.router.add_get(contract.PATH_VOLUMES, self.restored_volumes)
        self.app.router.add_delete(contract.PATH_VOLUMES, self.unstage_volumes)
        self.app.router.add_get(contract.PATH_HEALTHZ, self.healthz)
        self.app.router.add_get(contract.PATH_METRICS, self.metrics)

    async def checkpoint(self, request: web.Request) -> web.Response:
        req = contract.CheckpointRequest.from_json(await _json_body(request))
        response = await self._checkpointer.checkpoint(req, parent=tracing.incoming_context(request.headers))
        return web.json_response(response.to_json())

    async def abort_checkpoint(self, request: web.Request) -> web.Response:
        req = contract.AbortRequest.from_json(await _json_body(request))
        aborted, deleted = await self._checkpointer.abort(req.request_id)
        return web.json_response({"aborted": aborted, "deleted": deleted})

    async def thaw(self, request: web.Request) -> web.Response:
        ref = contract.PodRef.from_json(await _json_body(request))
        thawed = await self._checkpointer.thaw(ref, parent=tracing.incoming_context(request.headers))
        return web.json_response({"frozen": False, "thawed": thawed})

    async def kill(self, request: web.Request) -> web.Response:
        ref = contract.PodRef.from_json(await _json_body(request))
        killed = await self._checkpointer.kill(ref, parent=tracing.incoming_context(request.headers))
        return web.json_response({"killed": killed})

    async def frozen(self, request: web.Request) -> web.Response:
        ref = contract.PodRef.from_json(dict(request.query))
        state = await self._checkpointer.frozen(ref)
        return web.json_response(state.to_json())

    async def delete_image(self, request: web.Request) -> web.Response:
        req = contract.DeleteImageRequest.from_json(await _json_body(request))
        with self._tracer.start_as_current_span(
            "registry.delete",
            context=tracing.incoming_context(request.headers),
            kind=SpanKind.SERVER,
            attributes={"image": str(req.image), "digest": req.image.digest or ""},
        ) as span:
            try:
                deleted = await self._delete(req.image)
            except Exception as exc:
                self._metrics.image_deletes.inc(outcome="error")
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise AgentError(f"deleting {req.image}: {exc}", status=500, stage="push") from None
        self._metrics.image_deletes.inc(outcome="deleted" if deleted else "not_found")
        if not deleted:
            return web.json_response({"deleted": False, **error_body(f"{req.image} not found")}, status=404)
        return web.json_response({"deleted": True})

    async def _delete(self, image: Reference) -> bool:
        """Delete by digest; a tag is first read for the digest it names (``node_agent.tags``). False: not there."""
        if image.digest is None:
            tag = image.tag or ""
            digest = await tags.tagged_digest(self._publisher, registry=image.registry, repository=image.repository, tag=tag)
            if digest is None:
                return False
            image = image.with_digest(digest)
        return await self._publisher.delete(image=image)

    async def renew_lease(self, request: web.Request) -> web.Response:
        req = contract.LeaseRequest.from_json(await _json_body(request))
        async with self._checkpointer.pod_lock(req.namespace, req.pod):  # not while a thaw or kill of it runs
            seconds = self._checkpointer.renew_lease(namespace=req.namespace, pod=req.pod, seconds=req.seconds)
        return web.json_response({"seconds": seconds})

    async def stage_volumes(self, request: web.Request) -> web.Response:
        req = contract.StageRequest.from_json(await _json_body(request))
        with self._tracer.start_as_current_span(
            "volumes.stage",
            context=tracing.incoming_context(request.headers),
            kind=SpanKind.SERVER,
            attributes={"pod": req.pod, "namespace": req.namespace, "image": req.image},
        ) as span:
            try:
                staged = await self._volumes.stage(req, publisher=self._publisher)
            except VolumeDataError as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise AgentError(f"staging volume data: {exc}", status=422) from None  # the content, not the agent
            except Exception as exc:  # the registry: connection errors after the retries ran out
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise AgentError(f"fetching volume data {req.image}: {exc}", status=502) from None
            span.set_attributes({"bytes": staged.data_bytes, "volumes": list(staged.volumes)})
        return web.json_response(staged.to_json())

    async def restored_volumes(self, request: web.Request) -> web.Response:
        ref = contract.PodRef.from_json(dict(request.query))
        return web.json_response({"restored": self._volumes.restored(namespace=ref.namespace, pod=ref.pod)})

    async def unstage_volumes(self, request: web.Request) -> web.Response:
        ref = contract.PodRef.from_json(await _json_body(request))
        return web.json_response({"unstaged": self._volumes.unstage(namespace=ref.namespace, pod=ref.pod)})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render().encode(), headers={"Content-Type": self._metrics.content_type})
