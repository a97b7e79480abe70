"""The control service's side of the node agent's HTTP contract (``agentapi.contract``).

Agents listen on their node's InternalIP at one well-known port (a DaemonSet with host
networking in a real cluster, one process per node in the local cluster), so finding the
agent of a node needs nothing but the Node object. Calls carry a ServiceAccount token minted
for the agents' audience (``contract.AUDIENCE``: a projected token the kubelet keeps fresh in a
file, ``TokenFile``), never the control service's API token, and the migration's
``traceparent``; the agent asks the API server who the token is and whether it may drive
migrations. Connection failures and 5xx answers of the agent *itself* are
transient (an agent restarting) and retried with bounded back-off; what the agent reports as
the kubelet's or the registry's failure is final for that attempt and surfaces as the reason.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from agentapi import contract
from telemetry import logcontext


class AgentError(RuntimeError):
    def __init__(self, message: str, *, status: int, stage: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.stage = stage


class AgentUnreachable(AgentError):
    pass


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, AgentUnreachable)


def node_address(node: Mapping[str, Any]) -> str:
    for address in (node.get("status") or {}).get("addresses") or []:
        if address["type"] == "InternalIP":
            return str(address["address"])
    raise AgentError(f"node {node['metadata']['name']} has no InternalIP", status=0)


class TokenFile:
    """A projected ServiceAccount token file, re-read when the kubelet replaces it (it rotates at 80% of its life).

    Callable as the ``token`` of ``AgentClient``. A file that is missing or empty is an error the
    caller sees at once (``check``), not a call without credentials.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    def check(self) -> None:
        """Raise ``OSError``/``ValueError`` unless the file holds a token now."""
        if not self._read():
            raise ValueError(f"{self.path} is empty")

    def _read(self) -> str:
        info = os.stat(self.path)  # a stat of a tmpfs file: no I/O worth a thread
        stamp = (info.st_mtime_ns, info.st_ino)
        if stamp != self._stamp:
            self._token, self._stamp = self.path.read_text().strip(), stamp
        return self._token

    async def __call__(self) -> str | None:
        return self._read() or None


class AgentClient:
    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        token: Callable[[], Awaitable[str | None]],
        port: int,
        tls: ssl.SSLContext,
        attempts: int = 5,
    ) -> None:
        """``tls`` trusts the CA of the agents' certificates; there is no plain-HTTP mode (the calls carry a bearer token)."""
        self._session = session
        self._token = token
        self._port = port
        self._ssl = tls
        self._attempts = attempts

    def url(self, node: Mapping[str, Any], path: str) -> str:
        return f"https://{node_address(node)}:{self._port}{path}"

    async def _call(
        self, method: str, url: str, *, body: Mapping[str, Any] | None, traceparent: str | None, timeout: float
    ) -> Any:
        headers = {"Authorization": f"Bearer {await self._token()}"}
        if migration := logcontext.migration.get():
            headers[contract.HEADER_MIGRATION] = migration
        if traceparent:
            headers["traceparent"] = traceparent
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.5, max=8),
            retry=retry_if_exception(_transient),
            reraise=True,
        ):
            with attempt:
                try:
                    async with self._session.request(
                        method, url, json=body, headers=headers, ssl=self._ssl, timeout=aiohttp.ClientTimeout(total=timeout)
                    ) as resp:
                        data = await resp.json(content_type=None) if resp.content_length != 0 else {}
                        if resp.status < 400:
                            return data
                        message = (data or {}).get("error") if isinstance(data, dict) else None
                        error = AgentError(message or f"HTTP {resp.status}", status=resp.status, stage=(data or {}).get("stage"))
                        if resp.status in (500, 503) and not error.stage:
                            raise AgentUnreachable(str(error), status=resp.status)
                        raise error
                except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                    raise AgentUnreachable(f"agent at {url} unreachable: {exc or type(exc).__name__}", status=0) from None
        raise AssertionError("unreachable")

    async def checkpoint(
        self, *, node: Mapping[str, Any], request: contract.CheckpointRequest, traceparent: str | None
    ) -> contract.CheckpointResponse:
        url = self.url(node, contract.PATH_CHECKPOINT)
        data = await self._call(
            "POST", url, body=request.to_json(), traceparent=traceparent, timeout=request.timeout_seconds * 4 + 60
        )
        return contract.CheckpointResponse.from_json(data)

    async def thaw(self, *, node: Mapping[str, Any], namespace: str, pod: str, traceparent: str | None) -> None:
        url = self.url(node, contract.PATH_THAW)
        try:
            await self._call(
                "POST", url, body=contract.PodRef(namespace=namespace, pod=pod).to_json(), traceparent=traceparent, timeout=30
            )
        except AgentError as exc:
            if exc.status != 404:  # the pod is gone: nothing left to thaw
                raise

    async def kill(self, *, node: Mapping[str, Any], namespace: str, pod: str, traceparent: str | None) -> list[str]:
        """End the frozen source's containers (they never run again); the pod can then go without a grace period."""
        url = self.url(node, contract.PATH_KILL)
        body = contract.PodRef(namespace=namespace, pod=pod).to_json()
        data = await self._call("POST", url, body=body, traceparent=traceparent, timeout=30)
        return list(data.get("killed") or [])

    async def delete_image(self, *, node: Mapping[str, Any], image: str, traceparent: str | None) -> None:
        url = self.url(node, contract.PATH_IMAGES)
        try:
            await self._call("DELETE", url, body={"image": image}, traceparent=traceparent, timeout=30)
        except AgentError as exc:
            if exc.status != 404:
                raise

    async def stage_volumes(
        self, *, node: Mapping[str, Any], request: contract.StageRequest, traceparent: str | None
    ) -> contract.StageResponse:
        """Have the node's agent fetch a pod's emptyDir data, ready for the pod's restore there."""
        url = self.url(node, contract.PATH_VOLUMES)
        data = await self._call("POST", url, body=request.to_json(), traceparent=traceparent, timeout=600)
        return contract.StageResponse.from_json(data)

    async def restored_volumes(self, *, node: Mapping[str, Any], namespace: str, pod: str) -> list[str]:
        """UIDs of the pods the node's CRIU hook moved the staged data into."""
        url = self.url(node, contract.PATH_VOLUMES) + f"?namespace={namespace}&pod={pod}"
        data = await self._call("GET", url, body=None, traceparent=None, timeout=30)
        return [str(uid) for uid in data.get("restored") or []]

    async def unstage_volumes(self, *, node: Mapping[str, Any], namespace: str, pod: str, traceparent: str | None) -> None:
        url = self.url(node, contract.PATH_VOLUMES)
        body = contract.PodRef(namespace=namespace, pod=pod).to_json()
        await self._call("DELETE", url, body=body, traceparent=traceparent, timeout=30)

    async def renew_freeze(self, *, node: Mapping[str, Any], namespace: str, pod: str, seconds: int) -> None:
        """Keep the frozen source frozen ``seconds`` more; ``AgentError`` 409 once its lease lapsed (it was thawed)."""
        url = self.url(node, contract.PATH_FREEZE_LEASE)
        body = contract.LeaseRequest(namespace=namespace, pod=pod, seconds=seconds).to_json()
        await self._call("POST", url, body=body, traceparent=None, timeout=10)

    async def abort_checkpoint(self, *, node: Mapping[str, Any], request_id: str, traceparent: str | None) -> None:
        """Give up on a checkpoint (in flight: undone; finished: its images deleted). Best effort for the caller."""
        url = self.url(node, contract.PATH_CHECKPOINT)
        await self._call("DELETE", url, body={"request_id": request_id}, traceparent=traceparent, timeout=60)
