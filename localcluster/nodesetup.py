"""What every local node, stand-in or real, is given of podmigrate's node-side setup.

An operator installing podmigrate puts the agent's CRIU action script (``criu_hook.sh``) in the
node's CRIU configuration and tells the container runtime where the agent stages a restored
pod's emptyDir files (``PODMIGRATE_VOLUME_DIR``). The local cluster does the same for each of its
nodes, per node rather than in the host's ``/etc``, and starts each agent with the matching
directories: the stand-in's kubelet root is ``<state>/kubelet`` like a real node's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

# A file of the product, not an import: the runtime's CRIU runs it (node_agent/dumphook.py, volumedata.py).
CRIU_HOOK_SCRIPT: Final = Path(__file__).resolve().parents[1] / "node-agent" / "node_agent" / "criu_hook.sh"
VOLUME_DIR_ENV: Final = "PODMIGRATE_VOLUME_DIR"


def kubelet_root(node_state: Path) -> Path:
    """Where the node's kubelet keeps pods (``--root-dir``): the same layout on both kinds of node."""
    return node_state / "kubelet"


def volume_dir(node_state: Path) -> Path:
    """Where the node's agent stages emptyDir files for a restore: beside the kubelet root, so the hook's move is a rename."""
    return node_state / "restore-volumes"


def dump_hook_dir(node_state: Path) -> Path:
    """Where the node's agent arms the CRIU post-dump hook (containerd nodes; ``PODMIGRATE_HOOK_DIR``)."""
    return node_state / "dump-hook"


def agent_args(node_state: Path) -> list[str]:
    """The agent's flags for a node whose state is ``node_state`` (a path, or one with ``$(NODE_NAME)`` in it)."""
    return [
        "--kubelet-root-dir", str(kubelet_root(node_state)),
        "--volume-dir", str(volume_dir(node_state)),
        "--dump-hook-dir", str(dump_hook_dir(node_state)),
    ]  # fmt: skip
