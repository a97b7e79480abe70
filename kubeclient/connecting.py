"""Building API clients from a kubeconfig (kubectl's rules: --kubeconfig, KUBECONFIG, ~/.kube/config)."""

from __future__ import annotations

import os
from pathlib import Path

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
