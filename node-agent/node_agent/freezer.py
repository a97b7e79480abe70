"""Freezing containers through their cgroups: how a pod stops at the instant of its checkpoint.

The kubelet's checkpoint leaves the container running (docs/facts.md, "Kubelet checkpoint API"), so whatever it does
after the checkpoint would be lost by a migration. Freezing its cgroup first stops every
process of it without their knowledge; runc then checkpoints the frozen container with
``--leave-running`` and it *stays* frozen, so nothing happens between the checkpoint and the
replacement's start. The freeze lives in the kernel, not in this process: an agent restart
neither loses nor undoes it.

Finding a container's cgroup: its ID comes from ``status.containerStatuses[].containerID``
(``cri-o://<id>``); the runtime names the cgroup directory ``<id>`` (cgroupfs driver, the
local cluster's ``/localcluster-nNN/<pod-uid>/<id>``), ``crio-<id>.scope`` (systemd driver)
or ``crio-<id>``. The directory is searched for in the freezer hierarchy: v1's
``<root>/freezer`` (written ``FROZEN``/``THAWED`` to ``freezer.state``), else the unified v2
hierarchy (``1``/``0`` to ``cgroup.freeze``, completion read from ``cgroup.events``). On a
hybrid machine (this one) runc uses the v1 freezer, so v1 wins when it is mounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

CgroupVersion = Literal["v1", "v2"]
FreezerState = Literal["FROZEN", "FREEZING", "THAWED"]

_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


class FreezeError(RuntimeError):
    """A cgroup could not be found, frozen or thawed."""


class KillRefused(FreezeError):
    """Nothing was signalled: the frozen container is as it was (its migration can thaw it and give up)."""


def container_id_from_status(container_id: str) -> str:
    """``cri-o://<id>`` (or ``containerd://``, ``docker://``) -> ``<id>``, refusing anything path-like."""
    _, sep, rest = container_id.partition("://")
    cid = rest if sep else container_id
    if not _CONTAINER_ID.match(cid):
        raise FreezeError(f"unexpected container ID {container_id!r}")
    return cid


def cgroup_names(container_id: str) -> frozenset[str]:
    """The directory names runtimes give a container's cgroup (cgroupfs and systemd drivers)."""
    return frozenset({container_id, f"crio-{container_id}.scope", f"crio-{container_id}", f"cri-containerd-{container_id}.scope"})


class CgroupFreezer:
    """Finds, freezes and thaws container cgroups under ``root`` (normally ``/sys/fs/cgroup``)."""

    def __init__(self, *, root: Path = Path("/sys/fs/cgroup"), poll_interval: float = 0.005) -> None:
        self.root = root
        self._poll = poll_interval
        self._found: dict[str, Path] = {}

    @property
    def version(self) -> CgroupVersion:
        if (self.root / "freezer").is_dir():
            return "v1"
        return "v2"

    @property
    def hierarchy(self) -> Path:
        """Where container cgroups with a freezer live."""
        if self.version == "v1":
            return self.root / "freezer"
        if (self.root / "cgroup.controllers").exists():
            return self.root  # pure v2
        return self.root / "unified"  # hybrid without a v1 freezer

    def find(self, container_id: str) -> Path | None:
        """The cgroup directory of a container, or None when it has none (not running, gone)."""
        cached = self._found.get(container_id)
        if cached is not None and cached.is_dir():
            return cached
        wanted = cgroup_names(container_id)
        top = self.hierarchy
        for dirpath, dirnames, _files in os.walk(top):
            for name in dirnames:
                if name in wanted:
                    found = Path(dirpath, name)
                    self._found[container_id] = found
                    return found
        self._found.pop(container_id, None)
        return None

    def state(self, cgroup: Path) -> FreezerState:
        if self.version == "v1":
            text = (cgroup / "freezer.state").read_text().strip()
            if text not in ("FROZEN", "FREEZING", "THAWED"):
                raise FreezeError(f"{cgroup}/freezer.state says {text!r}")
            return text  # type: ignore[return-value]
        want = (cgroup / "cgroup.freeze").read_text().strip() == "1"
        events = dict(line.split(" ", 1) for line in (cgroup / "cgroup.events").read_text().splitlines() if " " in line)
        frozen = events.get("frozen", "0").strip() == "1"
        if frozen:
            return "FROZEN"
        return "FREEZING" if want else "THAWED"

    def _write(self, cgroup: Path, *, freeze: bool) -> None:
        if self.version == "v1":
            (cgroup / "freezer.state").write_text("FROZEN" if freeze else "THAWED")
        else:
            (cgroup / "cgroup.freeze").write_text("1" if freeze else "0")

    async def freeze(self, cgroup: Path, *, timeout: float = 10.0) -> None:
        """Freeze and wait until every task of the cgroup is frozen (v1 may say FREEZING a while)."""
        try:
            self._write(cgroup, freeze=True)
            deadline = time.monotonic() + timeout
            rewrite_at = time.monotonic() + 0.5
            while (state := self.state(cgroup)) != "FROZEN":
                now = time.monotonic()
                if now > deadline:
                    raise FreezeError(f"{cgroup} still {state} after {timeout:.1f}s")
                if now > rewrite_at and self.version == "v1":
                    # The kernel's advice for a freeze stuck in FREEZING: ask again.
                    self._write(cgroup, freeze=True)
                    rewrite_at = now + 0.5
                await asyncio.sleep(self._poll)
        except OSError as exc:
            raise FreezeError(f"freezing {cgroup}: {exc}") from None

    async def freeze_stopped(self, cgroup: Path, *, timeout: float = 10.0) -> None:
        """Freeze a cgroup whose tasks are stopped (SIGSTOP), then continue them: they stay frozen.

        This turns a stop into a freeze (``dumphook``): the SIGCONT is pending while the cgroup is
        frozen, so a later thaw resumes them and a kill ends them, as for any frozen container.
        """
        await self.freeze(cgroup, timeout=timeout)
        for pid in (int(p) for p in (cgroup / "cgroup.procs").read_text().split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def continue_stopped(self, cgroup: Path) -> int:
        """SIGCONT every task of ``cgroup`` that is stopped; how many.

        A container the node's CRIU hook stopped at the end of its dump (``dumphook``) is stopped, not
        frozen, until the agent turns the stop into a freeze. If the agent died in between, a thaw
        must continue it too, or a rolled-back pod would stay stopped for good.
        """
        continued = 0
        try:
            procs = (cgroup / "cgroup.procs").read_text().split()
        except FileNotFoundError:
            return 0  # the cgroup is gone: nothing in it to continue
        for pid in (int(p) for p in procs):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            except (OSError, IndexError):
                continue
            if state == "T":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                continued += 1
        return continued

    async def kill_frozen(self, cgroup: Path, *, timeout: float = 10.0) -> int:
        """SIGKILL every task of a *frozen* cgroup, then thaw it so they die; returns how many.

        A frozen task cannot run, so the kill is pending when the cgroup thaws and the task dies
        before it executes another instruction: a migrated source is ended without ever running
        after its checkpoint. Refuses a cgroup that is not frozen (that would be a plain kill).
        """
        if self.state(cgroup) != "FROZEN":
            raise FreezeError(f"{cgroup} is not frozen: refusing to kill a running container")
        procs = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
        if not procs or 0 in procs:
            # A frozen container has processes. Seeing none (cgroup v1) or zeros (v2) means they live in a PID
            # namespace this agent cannot see: a kill would end nothing, and the thaw would let the source run
            # on after its checkpoint. Refuse, so the migration fails with the source still in place.
            raise KillRefused(
                f"{cgroup} shows no process this agent can see (it lists {procs or 'none'}): the agent must run in "
                "the host's PID namespace (hostPID: true) to end a frozen container"
            )
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await self.thaw(cgroup, timeout=timeout)
        deadline = time.monotonic() + timeout
        while (cgroup / "cgroup.procs").exists() and (cgroup / "cgroup.procs").read_text().split():
            if time.monotonic() > deadline:
                raise FreezeError(f"{cgroup} still has tasks {timeout:.1f}s after SIGKILL")
            await asyncio.sleep(self._poll)
        return len(procs)

    async def thaw(self, cgroup: Path, *, timeout: float = 10.0) -> None:
        try:
            self._write(cgroup, freeze=False)
            deadline = time.monotonic() + timeout
            while (state := self.state(cgroup)) != "THAWED":
                if time.monotonic() > deadline:
                    raise FreezeError(f"{cgroup} still {state} after {timeout:.1f}s")
                await asyncio.sleep(self._poll)
        except FileNotFoundError:
            log.info("cgroup %s is gone: nothing to thaw", cgroup)
        except OSError as exc:
            raise FreezeError(f"thawing {cgroup}: {exc}") from None
