"""Stopping a container at the end of its CRIU dump, where the runtime will not checkpoint a frozen one.

Why: a migrated pod must not run after its checkpoint (whatever it did then would be lost).
Where the runtime checkpoints a container that is already frozen (CRI-O, runc directly), the
agent freezes the pod first (``freezer``). containerd cannot: its checkpoint pauses the
container itself (``runc pause``), dumps it and resumes it, and it refuses a container that is
already paused ("OCI runtime pause failed: container not running"); and CRIU cannot seize
tasks frozen through a parent cgroup (they stay in D: "Unseizable non-zombie"). Measured on the
local cluster's containerd 2.3 nodes (docs/facts.md, "Freezing on containerd").

So on containerd the stop happens inside the dump. CRIU runs *action scripts* at fixed points;
at ``post-dump`` the images are written and every task is still seized, so none can run. The
node's CRIU configuration names ``criu_hook.sh`` (shipped beside this module) as an action
script. When the agent has *armed* a container (a file named after its container ID in the
hook directory), the script sends SIGSTOP to every task of the container's cgroup, which the
tasks take as CRIU lets them go, before they return to user space, and lists their PIDs in
``<id>.stopped``. The runtime's resume then thaws a container whose processes are stopped; the
agent freezes its cgroup and sends SIGCONT (pending while frozen), which is exactly the state a
pre-frozen checkpoint ends in. A container nobody armed (a forensic or periodic checkpoint,
someone else's) is left alone. If the script did not run (the node is not configured), the
agent fails the checkpoint: the container ran on, so it stays the one copy.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from pathlib import Path
from typing import Final

# Where the agent and the script meet (the script reads PODMIGRATE_HOOK_DIR from the runtime's
# environment, else this). Both must see the same directory: a hostPath in the DaemonSet.
DEFAULT_HOOK_DIR: Final = Path("/run/podmigrate/stop-after-dump")
SCRIPT: Final = Path(__file__).resolve().parent / "criu_hook.sh"
STOPPED_SUFFIX: Final = ".stopped"
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


class DumpHook:
    """The agent's side of ``criu_hook.sh``: arm a container, read what the script stopped, disarm."""

    def __init__(self, *, directory: Path = DEFAULT_HOOK_DIR) -> None:
        self.directory = directory

    def _marker(self, container_id: str) -> Path:
        if not _CONTAINER_ID.match(container_id):
            raise ValueError(f"unexpected container ID {container_id!r}")
        return self.directory / container_id

    def arm(self, container_id: str) -> None:
        """Ask the script to stop this container at the end of its next dump."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        marker = self._marker(container_id)
        marker.with_name(marker.name + STOPPED_SUFFIX).unlink(missing_ok=True)
        marker.touch(mode=0o600)

    def stopped(self, container_id: str) -> list[int] | None:
        """The PIDs the script stopped for this container, or None if it did not run for it."""
        try:
            text = self._marker(container_id).with_name(container_id + STOPPED_SUFFIX).read_text()
        except FileNotFoundError:
            return None
        return [int(word) for word in text.split() if word.isdigit()]

    def disarm(self, container_id: str) -> None:
        marker = self._marker(container_id)
        marker.unlink(missing_ok=True)
        marker.with_name(marker.name + STOPPED_SUFFIX).unlink(missing_ok=True)


def resume(pids: list[int]) -> None:
    """Undo the script's stop (a checkpoint that failed after its dump): SIGCONT every task it stopped."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
