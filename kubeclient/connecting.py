"""Building API clients from a kubeconfig (kubectl's rules: --kubeconfig, KUBECONFIG, ~/.kube/config); counting their requests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes_asyncio import client, config


async def api_client(*, kubeconfig: str | Path | None = None, context: str | None = None) -> client.ApiClient:
    """An ApiClient for the given kubeconfig and context, or the in-cluster ServiceAccount."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path is None and not Path("~/.kube/config").expanduser().exists() and "KUBERNETES_SERVICE_HOST" in os.environ:
        config.load_incluster_config()
        return client.ApiClient()
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(path) if path else None, context=context, client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


async def bearer_token(api: client.ApiClient) -> str | None:
    """This client's own bearer token (a ServiceAccount's), re-read on each call: in-cluster tokens rotate.

    None for identities without one (client certificates). Used where a component must prove
    who it is to something other than the API server (the agent to the kubelet, the control
    service to the agents).
    """
    value = await api.configuration.get_api_key_with_prefix("BearerToken")
    if not value:
        return None
    scheme, _, rest = value.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else value


def request_kind(method: str, url: str, query: Iterable[tuple[str, Any]] | None = None) -> tuple[str, str]:
    """(verb, resource) of an API request, as the API server's audit log names them.

    ``/api/v1/namespaces/ns/pods`` with GET is ``list pods``; with ``watch=true``, ``watch pods``;
    ``.../pods/name`` is ``get pods``; ``.../pods/name/status`` is a subresource (``pods/status``).
    """
    path = urlsplit(url).path.strip("/").split("/")
    # /api/v1/... or /apis/<group>/<version>/...
    rest = path[2:] if path[:1] == ["api"] else path[3:] if path[:1] == ["apis"] else path
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]  # namespaced resource (a bare /namespaces/<name> is the namespace itself)
    resource = rest[0] if rest else ""
    named = len(rest) >= 2
    if len(rest) >= 3:
        resource = f"{resource}/{rest[2]}"
    watching = any(k == "watch" and str(v).lower() in ("true", "1") for k, v in query or ())
    method = method.upper()
    verb = {
        "GET": "watch" if watching else ("get" if named else "list"),
        "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete" if named else "deletecollection",
    }.get(method, method.lower())  # fmt: skip
    return verb, resource


def count_requests(api: client.ApiClient, counted: Callable[[str, str], None]) -> None:
    """Call ``counted(verb, resource)`` for every request ``api`` sends (client-go's ``rest_client_requests_total``).

    What the control service costs the API server is read from these counts (its metrics, the
    benchmark's scale row): a list of every pod per decision shows here first.
    """
    rest = api.rest_client
    send = rest.request

    async def request(method: str, url: str, query_params: Any = None, *args: Any, **kwargs: Any) -> Any:
        counted(*request_kind(method, url, query_params))
        return await send(method, url, query_params, *args, **kwargs)

    rest.request = request  # type: ignore[method-assign]
