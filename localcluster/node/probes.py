"""Liveness, readiness and startup probes, with the kubelet's semantics.

A probe runs every ``periodSeconds`` after ``initialDelaySeconds``; ``failureThreshold``
consecutive failures flip it to failed and ``successThreshold`` successes back. HTTP probes
go to the pod's IP (the node reaches pods through their veth), exec probes run in the
container through runc, TCP probes just connect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger(__name__)


@dataclass
class ProbeState:
    kind: str  # "liveness" | "readiness" | "startup"
    success: bool
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_message: str = ""


def _port(port: Any, container: dict[str, Any]) -> int:
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    return int(port)


async def run_once(
    probe: dict[str, Any],
    *,
    container: dict[str, Any],
    pod_ip: str,
    session: aiohttp.ClientSession,
    exec_in_container: Callable[[list[str], float], Awaitable[tuple[int, str]]],
) -> tuple[bool, str]:
    timeout = float(probe.get("timeoutSeconds", 1))
    if "httpGet" in probe:
        spec = probe["httpGet"]
        scheme = (spec.get("scheme") or "HTTP").lower()
        host = spec.get("host") or pod_ip
        url = f"{scheme}://{host}:{_port(spec['port'], container)}{spec.get('path') or '/'}"
        headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
        headers.setdefault("User-Agent", "kube-probe/1.36")
        try:
            async with session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout), ssl=False, allow_redirects=False
            ) as resp:
                ok = 200 <= resp.status < 400
                return ok, f"HTTP probe failed with statuscode: {resp.status}" if not ok else ""
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return False, f'Get "{url}": {exc or type(exc).__name__}'
    if "exec" in probe:
        code, out = await exec_in_container(list(probe["exec"]["command"]), timeout)
        return code == 0, out.strip()[:200] if code else ""
    if "tcpSocket" in probe:
        port = _port(probe["tcpSocket"]["port"], container)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(probe["tcpSocket"].get("host") or pod_ip, port), timeout)
            writer.close()
            return True, ""
        except (OSError, TimeoutError) as exc:
            return False, f"dial tcp {pod_ip}:{port}: {exc}"
    return True, ""


async def probe_loop(
    probe: dict[str, Any],
    state: ProbeState,
    *,
    container: dict[str, Any],
    pod_ip: str,
    session: aiohttp.ClientSession,
    exec_in_container: Callable[[list[str], float], Awaitable[tuple[int, str]]],
    on_change: Callable[[], None],
) -> None:
    """Run one probe forever (until cancelled), updating ``state`` and calling ``on_change``."""
    await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
    period = float(probe.get("periodSeconds", 10))
    failure_threshold = int(probe.get("failureThreshold", 3))
    success_threshold = int(probe.get("successThreshold", 1))
    while True:
        ok, message = await run_once(
            probe, container=container, pod_ip=pod_ip, session=session, exec_in_container=exec_in_container
        )
        before = state.success
        if ok:
            state.consecutive_successes += 1
            state.consecutive_failures = 0
            if state.consecutive_successes >= success_threshold:
                state.success = True
        else:
            state.consecutive_failures += 1
            state.consecutive_successes = 0
            state.last_message = message
            if state.consecutive_failures >= failure_threshold:
                state.success = False
        if state.success != before:
            log.info("%s probe of %s: %s %s", state.kind, container["name"], "ok" if state.success else "failed", message)
            on_change()
        await asyncio.sleep(period)
