"""Pod network namespaces: one netns per pod, a veth to the host, a link-local address.

A real node gets pod IPs from its CNI plugin. Here the rule is that nothing may use the
private ranges, so every pod gets a /30 out of the node's link-local /24
(169.254.<100+node>.0/24): the host end of the veth is .4k+1, the pod end .4k+2, reachable
from the host (and from every other node process, which is the same host) without routes
or bridges. Names are derived from the pod UID so that a restarted node finds its
namespaces again and a cleanup can find every one of them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
NETNS_PREFIX = "pm"  # every namespace this project creates starts with it


class NetworkError(RuntimeError):
    pass


async def _ip(*args: str, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {err.decode().strip()}")
    return out.decode()


@dataclass(frozen=True, kw_only=True)
class PodNetwork:
    netns: str
    host_if: str
    pod_ip: str
    host_ip: str

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns


class NetworkAllocator:
    """Hands out /30 slots of one node's link-local /24 and builds the namespaces."""

    def __init__(self, *, node_index: int) -> None:
        if not 1 <= node_index <= 59:
            raise ValueError("node index must be 1..59 (169.254.169.0/24 holds the metadata address)")
        self._node_index = node_index
        self._subnet = ipaddress.ip_network(f"169.254.{100 + node_index}.0/24")
        self._used: dict[str, int] = {}

    def _names(self, pod_uid: str) -> tuple[str, str]:
        short = pod_uid.replace("-", "")[:8]
        return f"{NETNS_PREFIX}{self._node_index:02d}-{short}", f"pm{self._node_index:02d}{short}"

    async def setup(self, *, pod_uid: str) -> PodNetwork:
        netns, host_if = self._names(pod_uid)
        if pod_uid not in self._used:
            taken = set(self._used.values())
            slot = next(i for i in range(1, 63) if i not in taken)
            self._used[pod_uid] = slot
        slot = self._used[pod_uid]
        base = int(self._subnet.network_address) + 4 * slot
        host_ip, pod_ip = str(ipaddress.ip_address(base + 1)), str(ipaddress.ip_address(base + 2))
        net = PodNetwork(netns=netns, host_if=host_if, pod_ip=pod_ip, host_ip=host_ip)
        if (NETNS_DIR / netns).exists():
            return net
        peer = f"{host_if}p"
        try:
            await _ip("netns", "add", netns)
            await _ip("link", "add", host_if, "type", "veth", "peer", "name", peer)
            await _ip("link", "set", peer, "netns", netns)
            await _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
            await _ip("link", "set", host_if, "up")
            await _ip("-n", netns, "link", "set", "lo", "up")
            await _ip("-n", netns, "link", "set", peer, "name", "eth0")
            await _ip("-n", netns, "addr", "add", f"{pod_ip}/30", "dev", "eth0")
            await _ip("-n", netns, "link", "set", "eth0", "up")
        except NetworkError:
            await self.teardown(pod_uid=pod_uid)
            raise
        return net

    async def teardown(self, *, pod_uid: str) -> None:
        netns, host_if = self._names(pod_uid)
        await _ip("link", "del", host_if, check=False)  # takes the peer with it
        await _ip("netns", "del", netns, check=False)
        self._used.pop(pod_uid, None)


async def remove_all(*, node_index: int) -> None:
    """Delete every namespace (and so every veth) a node with this index created."""
    prefix = f"{NETNS_PREFIX}{node_index:02d}-"
    if not NETNS_DIR.exists():
        return
    for entry in NETNS_DIR.iterdir():
        if entry.name.startswith(prefix):
            await _ip("netns", "del", entry.name, check=False)
    for line in (await _ip("-o", "link", "show", check=False)).splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(f"pm{node_index:02d}") and len(name) == 12:
            await _ip("link", "del", name, check=False)
