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
