"""The few Kubernetes API calls the CLI makes, behind a protocol the tests fake.

Everything comes back as plain JSON-shaped dicts (camelCase keys, as ``kubectl get -o json``
shows them), so commands and printing never see client models. Every way a call can fail,
a refused connection, 401, 403, a CRD that is not installed, a validation error, becomes one
``CliError`` line here, once. A 429 (the server asks us to come back: a new CRD's storage is
starting, priority and fairness is shedding load) is retried first, with tenacity, as client-go does.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from pathlib import Path
from typing import Any, Final, Protocol

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from kubeclient.connecting import api_client
from kubeclient.resources import CustomResource
from kubeclient.watching import list_and_watch
from migrator import api, claims
from migrator.claims import Claims
from migrator.cli.errors import CliError

REQUEST_TIMEOUT: Final = 30  # seconds per API call: a black-holed server must not hang the CLI
RETRIES_429: Final = 5
FIELD_MANAGER: Final = "kubectl-migrate"
SERVICE_ACCOUNT_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CRD_HINT: Final = (
    f"the server has no {api.PLURAL}.{api.GROUP} resource: is the PodMigration CRD installed? "
    "(kubectl apply -f manifests/crd/podmigrations.yaml)"
)
DRAIN_CRD_HINT: Final = (
    f"the server has no {api.DRAIN_PLURAL}.{api.GROUP} resource: is the NodeDrain CRD installed? "
    "(kubectl apply -f manifests/crd/nodedrains.yaml)"
)
EVENT_NAMESPACE: Final = "default"  # where Events about cluster-scoped objects (Nodes, NodeDrains) live


class Api(Protocol):
    """What the commands need from the cluster. Reads return None for "not found"."""

    default_namespace: str

    async def read_pod(self, *, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def read_node(self, *, name: str) -> dict[str, Any] | None: ...

    async def create_migration(self, *, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def read_migration(self, *, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list_migrations(self, *, namespace: str | None) -> list[dict[str, Any]]: ...

    async def list_events(self, *, namespace: str, name: str) -> list[dict[str, Any]]: ...

    def watch_migration(self, *, namespace: str, name: str) -> AsyncIterator[dict[str, Any] | None]:
        """The PodMigration now and after every change, forever; None once it is deleted."""
        ...

    # NodeDrains (cluster-scoped) and what a drain's dry run needs to plan.
    async def list_nodes(self) -> list[dict[str, Any]]: ...

    async def read_claims(self, *, pod: Mapping[str, Any]) -> Claims | None:
        """The pod's claims and their volumes; None when this user may not read them (the controller judges then)."""

    async def list_claims(self) -> Claims | None: ...

    async def list_pods(self, *, node: str | None = None) -> list[dict[str, Any]]: ...

    async def create_drain(self, *, body: dict[str, Any]) -> dict[str, Any]: ...

    async def read_drain(self, *, name: str) -> dict[str, Any] | None: ...

    async def list_drains(self) -> list[dict[str, Any]]: ...

    async def list_drain_events(self, *, name: str) -> list[dict[str, Any]]: ...

    def watch_drain(self, *, name: str) -> AsyncIterator[dict[str, Any] | None]:
        """The NodeDrain now and after every change, forever; None once it is deleted."""
        ...

    # PodCheckpoints, PodRestores, CheckpointSchedules: namespaced custom objects, one set of calls.
    async def create_object(self, *, resource: CustomResource, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def read_object(self, *, resource: CustomResource, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list_objects(
        self, *, resource: CustomResource, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Of one namespace, or of all (None); only those matching ``label_selector`` when given."""
        ...

    def watch_object(self, *, resource: CustomResource, namespace: str, name: str) -> AsyncIterator[dict[str, Any] | None]:
        """The object now and after every change, forever; None once it is deleted."""
        ...


Connect = Callable[..., AbstractAsyncContextManager[Api]]


def missing_crd_hint(resource: CustomResource) -> str:
    """What a 404 without an object's name means for this resource: its CRD is not installed."""
    return (
        f"the server has no {resource.plural}.{resource.group} resource: is the {resource.kind} CRD installed? "
        f"(kubectl apply -f manifests/crd/{resource.plural}.yaml)"
    )


def _status_body(exc: client.ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _names_an_object(exc: client.ApiException) -> bool:
    """A 404 for a missing object names it; a 404 for a missing resource type (no CRD) does not."""
    return bool((_status_body(exc).get("details") or {}).get("name"))


def api_error(exc: client.ApiException, *, crd_hint: str = CRD_HINT) -> CliError:
    """One line for an API error: the server's own message (it names the field, user or rule)."""
    message = _status_body(exc).get("message") or exc.reason or "no message"
    if exc.status == 401:
        return CliError(f"unauthorized (401): the API server rejected the credentials in the kubeconfig ({message})")
    if exc.status == 403:
        return CliError(f"forbidden (403): {message}")
    if exc.status == 404 and not _names_an_object(exc):
        return CliError(crd_hint)
    return CliError(message if exc.status in (409, 422) else f"{exc.status} {exc.reason}: {message}")


def connection_error(exc: BaseException, *, server: str) -> CliError:
    detail = str(exc) or type(exc).__name__
    return CliError(f"cannot reach the Kubernetes API server at {server}: {detail}")


def _retry_after(exc: client.ApiException) -> float:
    try:
        return min(max(float((exc.headers or {}).get("Retry-After", 1)), 0.1), 2.0)
    except (TypeError, ValueError):
        return 1.0


def _is_429(exc: BaseException) -> bool:
    return isinstance(exc, client.ApiException) and exc.status == 429


def _wait_retry_after(state: RetryCallState) -> float:
    # Hand-written: tenacity has no wait that reads a Retry-After header. The server's value, in
    # seconds, kept between 0.1 and 2 s: someone is waiting at the terminal (client-go waits the
    # full value, but its callers are controllers).
    exc = state.outcome.exception() if state.outcome else None
    return _retry_after(exc) if isinstance(exc, client.ApiException) else 1.0


# Per call, a copy: a tenacity object keeps the state of the call it is running.
RETRY_ON_429 = AsyncRetrying(
    retry=retry_if_exception(_is_429),
    stop=stop_after_attempt(RETRIES_429 + 1),
    wait=_wait_retry_after,
    reraise=True,  # the last 429 itself, not a RetryError: it becomes the one error line below
)


class KubeApi:
    """The real thing: kubernetes_asyncio against the kubeconfig's cluster."""

    def __init__(self, *, api_client: client.ApiClient, default_namespace: str) -> None:
        self.client = api_client
        self.default_namespace = default_namespace
        self.server = str(api_client.configuration.host)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    async def _call(self, call: Callable[[], Awaitable[Any]], *, none_if_missing: bool = False, crd_hint: str = CRD_HINT) -> Any:
        async def attempt() -> Any:  # a coroutine function: tenacity awaits only those
            return await call()

        try:
            result = await RETRY_ON_429.copy()(attempt)
        except client.ApiException as exc:
            if exc.status == 404 and none_if_missing and _names_an_object(exc):
                return None
            raise api_error(exc, crd_hint=crd_hint) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise connection_error(exc, server=self.server) from None
        return self.client.sanitize_for_serialization(result)

    async def read_pod(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call(
            lambda: self.core.read_namespaced_pod(name, namespace, _request_timeout=REQUEST_TIMEOUT), none_if_missing=True
        )

    async def read_node(self, *, name: str) -> dict[str, Any] | None:
        return await self._call(lambda: self.core.read_node(name, _request_timeout=REQUEST_TIMEOUT), none_if_missing=True)

    async def create_migration(self, *, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            lambda: self.custom.create_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, body, field_manager=FIELD_MANAGER, _request_timeout=REQUEST_TIMEOUT
            )
        )

    async def read_migration(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call(
            lambda: self.custom.get_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            ),
            none_if_missing=True,
        )

    async def list_migrations(self, *, namespace: str | None) -> list[dict[str, Any]]:
        def call() -> Awaitable[Any]:
            if namespace is None:
                return self.custom.list_cluster_custom_object(
                    api.GROUP, api.VERSION, api.PLURAL, _request_timeout=REQUEST_TIMEOUT
                )
            return self.custom.list_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, _request_timeout=REQUEST_TIMEOUT
            )

        return list((await self._call(call)).get("items") or [])

    async def list_events(self, *, namespace: str, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind={api.KIND},involvedObject.name={name}"
        listing = await self._call(
            lambda: self.core.list_namespaced_event(namespace, field_selector=selector, _request_timeout=REQUEST_TIMEOUT)
        )
        return list(listing.get("items") or [])

    def watch_migration(self, *, namespace: str, name: str) -> AsyncIterator[dict[str, Any] | None]:
        return self._watch_one(self.custom.list_namespaced_custom_object, name=name, namespace=namespace, plural=api.PLURAL)

    @staticmethod
    async def _watch_one(
        list_fn: Callable[..., Awaitable[Any]], *, name: str, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any] | None]:
        # list_and_watch resumes after dropped connections and re-lists after 410 Gone; a re-list
        # that no longer contains the object means it was deleted in between.
        listed = False
        events = list_and_watch(
            list_fn, group=api.GROUP, version=api.VERSION, field_selector=f"metadata.name={name}", timeout_seconds=60, **kwargs
        )
        async with aclosing(events):
            async for event in events:
                if event.type == "SYNCED":
                    if not listed:
                        yield None
                    listed = False
                elif event.type == "DELETED":
                    yield None
                else:
                    listed = True
                    yield event.object

    # --- NodeDrains -----------------------------------------------------------------------------
    async def _claims(self, read: Callable[[], Awaitable[Claims]]) -> Claims | None:
        try:
            return await read()
        except client.ApiException as exc:
            if exc.status == 403:  # persistent volumes are cluster-scoped: many users may not read them
                return None
            raise api_error(exc) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise connection_error(exc, server=self.server) from None

    async def read_claims(self, *, pod: Mapping[str, Any]) -> Claims | None:
        if not claims.claim_names(pod):
            return {}
        return await self._claims(lambda: claims.read_for_pod(self.core, pod))

    async def list_claims(self) -> Claims | None:
        return await self._claims(lambda: claims.read_all(self.core))

    async def list_nodes(self) -> list[dict[str, Any]]:
        return list((await self._call(lambda: self.core.list_node(_request_timeout=REQUEST_TIMEOUT))).get("items") or [])

    async def list_pods(self, *, node: str | None = None) -> list[dict[str, Any]]:
        selector = f"spec.nodeName={node}" if node else None
        listing = await self._call(
            lambda: self.core.list_pod_for_all_namespaces(field_selector=selector, _request_timeout=REQUEST_TIMEOUT)
        )
        return list(listing.get("items") or [])

    async def create_drain(self, *, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            lambda: self.custom.create_cluster_custom_object(
                api.GROUP, api.VERSION, api.DRAIN_PLURAL, body, field_manager=FIELD_MANAGER, _request_timeout=REQUEST_TIMEOUT
            ),
            crd_hint=DRAIN_CRD_HINT,
        )

    async def read_drain(self, *, name: str) -> dict[str, Any] | None:
        return await self._call(
            lambda: self.custom.get_cluster_custom_object(
                api.GROUP, api.VERSION, api.DRAIN_PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            ),
            none_if_missing=True,
            crd_hint=DRAIN_CRD_HINT,
        )

    async def list_drains(self) -> list[dict[str, Any]]:
        listing = await self._call(
            lambda: self.custom.list_cluster_custom_object(
                api.GROUP, api.VERSION, api.DRAIN_PLURAL, _request_timeout=REQUEST_TIMEOUT
            ),
            crd_hint=DRAIN_CRD_HINT,
        )
        return list(listing.get("items") or [])

    async def list_drain_events(self, *, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind={api.DRAIN_KIND},involvedObject.name={name}"
        listing = await self._call(
            lambda: self.core.list_namespaced_event(EVENT_NAMESPACE, field_selector=selector, _request_timeout=REQUEST_TIMEOUT)
        )
        return list(listing.get("items") or [])

    def watch_drain(self, *, name: str) -> AsyncIterator[dict[str, Any] | None]:
        return self._watch_one(self.custom.list_cluster_custom_object, name=name, plural=api.DRAIN_PLURAL)

    # --- PodCheckpoints, PodRestores, CheckpointSchedules (namespaced) -----------------------------
    async def create_object(self, *, resource: CustomResource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            lambda: self.custom.create_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural, body,
                field_manager=FIELD_MANAGER, _request_timeout=REQUEST_TIMEOUT,
            ),
            crd_hint=missing_crd_hint(resource),
        )  # fmt: skip

    async def read_object(self, *, resource: CustomResource, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call(
            lambda: self.custom.get_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural, name, _request_timeout=REQUEST_TIMEOUT
            ),
            none_if_missing=True,
            crd_hint=missing_crd_hint(resource),
        )

    async def list_objects(
        self, *, resource: CustomResource, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        selector = {"label_selector": label_selector} if label_selector else {}

        def call() -> Awaitable[Any]:
            if namespace is None:
                return self.custom.list_cluster_custom_object(
                    resource.group, resource.version, resource.plural, _request_timeout=REQUEST_TIMEOUT, **selector
                )
            return self.custom.list_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural, _request_timeout=REQUEST_TIMEOUT, **selector
            )

        return list((await self._call(call, crd_hint=missing_crd_hint(resource))).get("items") or [])

    def watch_object(self, *, resource: CustomResource, namespace: str, name: str) -> AsyncIterator[dict[str, Any] | None]:
        return self._watch_one(self.custom.list_namespaced_custom_object, name=name, namespace=namespace, plural=resource.plural)


def kubeconfig_path(kubeconfig: str | None) -> str | None:
    """kubectl's order: --kubeconfig, then $KUBECONFIG (a path list), then ~/.kube/config."""
    if kubeconfig:
        return kubeconfig
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    default = Path("~/.kube/config").expanduser()
    return str(default) if default.exists() else None


def default_namespace(*, kubeconfig: str | None, context: str | None) -> str:
    """The context's namespace; in a pod without a kubeconfig, the ServiceAccount's; else "default"."""
    path = kubeconfig_path(kubeconfig)
    if path is None:
        if SERVICE_ACCOUNT_NAMESPACE.exists():
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        return "default"
    try:
        contexts, current = config.list_kube_config_contexts(config_file=path)
    except (ConfigException, OSError, ValueError, TypeError, AssertionError, KeyError):
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def _context_names(path: str) -> set[str]:
    try:
        contexts, _ = config.list_kube_config_contexts(config_file=path)
    except (ConfigException, OSError, ValueError, TypeError, AssertionError, KeyError):
        return set()
    return {str(c.get("name")) for c in contexts}


@asynccontextmanager
async def connect(*, kubeconfig: str | None, context: str | None) -> AsyncIterator[Api]:
    """An ``Api`` for the kubeconfig and context kubectl would use; closed on exit."""
    path = kubeconfig_path(kubeconfig)
    if kubeconfig and not Path(kubeconfig).expanduser().exists():
        raise CliError(f'kubeconfig "{kubeconfig}" does not exist')
    if path and not any(Path(p).expanduser().exists() for p in path.split(os.pathsep) if p):
        raise CliError(f'no kubeconfig file found at KUBECONFIG="{path}"')
    if path and context and context not in _context_names(path):
        raise CliError(f'context "{context}" not found in the kubeconfig ({path})')
    try:
        c = await api_client(kubeconfig=path, context=context)
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        raise CliError(f"cannot load the kubeconfig ({path or '~/.kube/config'}): {exc}") from None
    try:
        yield KubeApi(api_client=c, default_namespace=default_namespace(kubeconfig=kubeconfig, context=context))
    finally:
        await c.close()
