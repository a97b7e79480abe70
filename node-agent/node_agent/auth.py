"""Who may make this agent freeze and checkpoint pods: whoever drives migrations, nobody else.

A checkpoint holds a process's whole memory and a freeze stops a workload, so the agent's
API is as sensitive as ``nodes/checkpoint`` itself. It is guarded the way the kubelet guards
its own API, with the API server as the only authority:

* authentication: ``Authorization: Bearer <token>``, checked with a TokenReview for the agent's
  own audience (``contract.AUDIENCE``; 401 otherwise). A token minted for the API server -- every
  pod's default token, the controller's own -- is refused: the controller presents a projected
  token for this audience only, so a compromised node never holds a credential the API server
  takes, and no ordinary pod's token opens this API;
* authorization: a SubjectAccessReview for verb ``update`` on ``podmigrations/status`` in
  API group ``podmigrate.io`` -- the permission of the component that records migration
  progress. It is asked in the namespace of the object the call acts on, read from the object
  itself: the pod's namespace, or for an image the namespace its repository names under the
  checkpoint repository (``contract.namespace_of_image``); an image or a push target outside
  that repository is refused before any review. Calls naming no object (a checkpoint aborted by
  request id) are reviewed cluster-wide (403 with a one-line reason otherwise).

Positive answers are cached for ``ttl`` seconds (keyed by a hash of the token, never the
token itself) so a migration's burst of calls costs two reviews, not two per call; negative
answers are not cached, so a grant takes effect at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from kubernetes_asyncio import client

from agentapi import contract
from agentapi.contract import error_body
from ocicheckpoint.reference import parse_reference

log = logging.getLogger(__name__)

GROUP = "podmigrate.io"
RESOURCE = "podmigrations"
SUBRESOURCE = "status"
VERB = "update"
DEFAULT_TTL_S = 30.0


@dataclass(frozen=True, kw_only=True)
class Caller:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


CALLER_KEY = web.RequestKey("caller", Caller)


@dataclass(frozen=True, kw_only=True)
class Decision:
    allowed: bool
    reason: str = ""


class Reviewer(Protocol):
    async def authenticate(self, token: str) -> Caller | None: ...

    async def authorize(self, caller: Caller, *, namespace: str | None) -> Decision: ...


class KubeReviewer:
    """TokenReview + SubjectAccessReview on the API server (the agent needs ``create`` on both)."""

    def __init__(self, *, api: client.ApiClient) -> None:
        self._authn = client.AuthenticationV1Api(api)
        self._authz = client.AuthorizationV1Api(api)

    async def authenticate(self, token: str) -> Caller | None:
        spec = client.V1TokenReviewSpec(token=token, audiences=[contract.AUDIENCE])
        review = await self._authn.create_token_review(client.V1TokenReview(spec=spec))
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        if contract.AUDIENCE not in (status.audiences or []):  # an authenticator that ignored the audience asked
            return None
        user = status.user
        extra = {k: tuple(v or ()) for k, v in (user.extra or {}).items()}
        return Caller(username=user.username or "", uid=user.uid or "", groups=tuple(user.groups or ()), extra=extra)

    async def authorize(self, caller: Caller, *, namespace: str | None) -> Decision:
        spec = client.V1SubjectAccessReviewSpec(
            user=caller.username,
            uid=caller.uid or None,
            groups=list(caller.groups),
            extra={k: list(v) for k, v in caller.extra.items()} or None,
            resource_attributes=client.V1ResourceAttributes(
                group=GROUP, resource=RESOURCE, subresource=SUBRESOURCE, verb=VERB, namespace=namespace or None
            ),
        )
        review = await self._authz.create_subject_access_review(client.V1SubjectAccessReview(spec=spec))
        status = review.status
        if status is not None and status.allowed:
            return Decision(allowed=True)
        return Decision(allowed=False, reason=(status.reason or status.evaluation_error or "") if status else "")


class TtlCache:
    """A small expiring map for positive review answers."""

    def __init__(self, *, ttl: float, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        return value

    def put(self, key: Any, value: Any) -> None:
        now = self._clock()
        if len(self._entries) >= self._max:
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
            if len(self._entries) >= self._max:
                self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (now + self._ttl, value)


def _deny(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="podmigrate-agent"'} if status == 401 else None
    return web.json_response(error_body(message), status=status, headers=headers)


class OutOfScope(Exception):
    """The call names an object outside what this agent serves (an image or push target outside the repository)."""


async def _body(request: web.Request) -> Any:
    if request.method in ("POST", "PUT", "DELETE", "PATCH") and request.can_read_body:
        try:
            return json.loads(await request.read())  # aiohttp keeps the body: the handler reads it again
        except ValueError:
            return None
    return None


def _image_namespace(text: Any, *, repository: str) -> str | None:
    """The namespace of image reference ``text`` under ``repository``; OutOfScope when it is not under it."""
    if not isinstance(text, str):
        return None  # malformed: the handler's contract parsing answers 400
    try:
        ref = parse_reference(text)
    except ValueError:
        return None
    namespace = contract.namespace_of_image(root=repository, image=ref)
    if namespace is None:
        raise OutOfScope(f"{text} is not under this cluster's checkpoint repository {repository}")
    return namespace


async def _namespace_of(request: web.Request, *, repository: str) -> str | None:
    """The namespace of the object a request acts on (None: cluster-wide); OutOfScope for foreign images.

    Read from the object, not from what the caller says about it: an image's namespace is the one its
    repository path names, and a push target or a volume image must lie in the pod's own namespace.
    """
    body = await _body(request)
    data = body if isinstance(body, dict) else {}
    if request.path == contract.PATH_IMAGES:
        return _image_namespace(data.get("image"), repository=repository)
    namespace = data.get("namespace") if request.method != "GET" else request.query.get("namespace")
    namespace = namespace if isinstance(namespace, str) and namespace else None
    target = {contract.PATH_CHECKPOINT: "image_repository", contract.PATH_VOLUMES: "image"}.get(request.path)
    if target and request.method == "POST" and isinstance(data.get(target), str) and contract.is_namespace(namespace):
        owner = _image_namespace(data[target], repository=repository)
        if owner is not None and owner != namespace:
            raise OutOfScope(f"{data[target]} is not under the checkpoint repository of namespace {namespace}")
    return namespace


def auth_middleware(
    *,
    reviewer: Reviewer,
    public_paths: Collection[str],
    repository: str,
    ttl: float = DEFAULT_TTL_S,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[web.Request, Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[web.StreamResponse]]:
    """401 without a valid token, 403 unless the caller may update podmigrations/status there."""
    authn_cache = TtlCache(ttl=ttl, clock=clock)
    authz_cache = TtlCache(ttl=ttl, clock=clock)

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in public_paths:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _deny(401, "missing bearer token")
        token_key = hashlib.sha256(token.encode()).hexdigest()
        try:
            caller = authn_cache.get(token_key)
            if caller is None:
                caller = await reviewer.authenticate(token)
                if caller is None:
                    return _deny(401, "invalid bearer token")
                authn_cache.put(token_key, caller)
            try:
                namespace = await _namespace_of(request, repository=repository)
            except OutOfScope as exc:
                return _deny(403, str(exc))
            if authz_cache.get((token_key, namespace)) is None:
                decision = await reviewer.authorize(caller, namespace=namespace)
                if not decision.allowed:
                    where = f'in namespace "{namespace}"' if namespace else "cluster-wide"
                    why = f": {decision.reason}" if decision.reason else ""
                    return _deny(403, f'user "{caller.username}" may not {VERB} {RESOURCE}/{SUBRESOURCE} ({GROUP}) {where}{why}')
                authz_cache.put((token_key, namespace), True)
        except (client.ApiException, OSError, TimeoutError) as exc:
            log.warning("authentication/authorization review failed: %s", exc)
            return web.json_response(error_body("cannot review credentials with the API server"), status=503)
        request[CALLER_KEY] = caller
        return await handler(request)

    return middleware
