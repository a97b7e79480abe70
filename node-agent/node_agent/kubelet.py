"""The kubelet's checkpoint API, called directly on this node with the agent's own identity.

``POST https://<InternalIP>:<kubelet port>/checkpoint/{namespace}/{pod}/{container}?timeout=N``
needs only ``create`` on ``nodes/checkpoint``; going through the API server's node proxy
would need the far broader ``nodes/proxy`` (docs/facts.md, "Kubelet checkpoint API"), so the agent calls the kubelet
itself. It authenticates with its ServiceAccount token (or its kubeconfig's client
certificate) and verifies the kubelet's serving certificate against the cluster CA: the
reply names a file this agent will read and push, so it must come from the real kubelet.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp

TokenSource = Callable[[], Awaitable[str | None]]

# Added to the kubelet's own timeout: the kubelet must be the one to give up first, or an
# archive written after we stopped waiting would be left behind with nobody to delete it.
CLIENT_TIMEOUT_MARGIN_S = 30.0


class KubeletError(RuntimeError):
    """The kubelet refused or failed a checkpoint; ``status`` is its HTTP status (None: unreachable)."""

    def __init__(self, message: str, *, status: int | None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, kw_only=True)
class KubeletEndpoint:
    host: str
    port: int

    @property
    def base_url(self) -> str:
        try:
            is_v6 = ipaddress.ip_address(self.host).version == 6
        except ValueError:
            is_v6 = False
        host = f"[{self.host}]" if is_v6 else self.host
        return f"https://{host}:{self.port}"


def kubelet_ssl_context(*, ca_file: str | Path, client_cert: str | None = None, client_key: str | None = None) -> ssl.SSLContext:
    """Verify kubelets against the cluster CA; present a client certificate when the agent has one."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    if client_cert and client_key:
        ctx.load_cert_chain(client_cert, client_key)
    return ctx


class KubeletClient:
    def __init__(self, *, session: aiohttp.ClientSession, ssl_context: ssl.SSLContext, token: TokenSource) -> None:
        self._session = session
        self._ssl = ssl_context
        self._token = token

    async def checkpoint(
        self, *, endpoint: KubeletEndpoint, namespace: str, pod: str, container: str, timeout_seconds: int
    ) -> str:
        """Ask for a checkpoint archive of one container; returns its path on this node."""
        path = "/".join(quote(part, safe="") for part in ("checkpoint", namespace, pod, container))
        url = f"{endpoint.base_url}/{path}?timeout={timeout_seconds}"
        headers = {}
        if token := await self._token():
            headers["Authorization"] = f"Bearer {token}"
        timeout = aiohttp.ClientTimeout(total=timeout_seconds + CLIENT_TIMEOUT_MARGIN_S, connect=10)
        try:
            async with self._session.post(url, headers=headers, ssl=self._ssl, timeout=timeout) as resp:
                body = await resp.text()
                if resp.status != 200:
                    raise KubeletError(_message(body, resp.status), status=resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeletError(f"kubelet at {endpoint.base_url} unreachable: {exc!r}", status=None) from None
        try:
            items = json.loads(body)["items"]
            archive = str(items[0])
        except (ValueError, KeyError, IndexError, TypeError):
            raise KubeletError(f"kubelet answered 200 without an archive path: {body[:200]!r}", status=502) from None
        return archive


def _message(body: str, status: int) -> str:
    """The kubelet's own words: a Status object's message, or its plain-text body."""
    text = body.strip()
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and doc.get("message"):
            text = str(doc["message"])
    except ValueError:
        pass
    return f"kubelet answered {status}: {text[:500] or '(empty body)'}"
