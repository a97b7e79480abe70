"""What every local node, stand-in or real, is given of podmigrate's node-side setup.

An operator installing podmigrate puts the agent's CRIU action script (``criu_hook.sh``) in the
node's CRIU configuration and tells the container runtime where the agent stages a restored
pod's emptyDir files (``PODMIGRATE_VOLUME_DIR``). The local cluster does the same for each of its
nodes, per node rather than in the host's ``/etc``, and starts each agent with the matching
directories: the stand-in's kubelet root is ``<state>/kubelet`` like a real node's.

Encryption at rest (docs/encryption.md): an operator gives every node a private key that its
runtime decrypts checkpoint images with (CRI-O's ``decryption_keys_path``, containerd's
``ctd-decoder --decryption-keys-path``) and the agents the matching public keys (the
ConfigMap ``podmigrate-encryption``). The local cluster makes one keypair at ``up``
(:func:`make_encryption_keys`), puts the private key in every node's ``keys`` directory, and the
overlay the public key in the ConfigMap.

Checkpoint archives in memory (docs/facts.md, "Checkpoint archives on tmpfs"): the kubelet's
``checkpoints`` directory is a tmpfs of its own on every local node
(:func:`keep_checkpoints_in_memory`), as the docs recommend to operators. An archive is the
container's memory: on tmpfs it never reaches a disk, and the runtime writes it (and CRIU, on
the stand-in, its image files beside it) at memory speed instead of at the disk's write-back rate.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Final

from ocicheckpoint import encryption

# A file of the product, not an import: the runtime's CRIU runs it (node_agent/dumphook.py, volumedata.py).
CRIU_HOOK_SCRIPT: Final = Path(__file__).resolve().parents[1] / "node-agent" / "node_agent" / "criu_hook.sh"
# The CRIU options of every local node's configuration file (what an operator puts in /etc/criu/runc.conf,
# README "Runtimes and versions"), before podmigrate's action scripts, and why:
#  tcp-close: a connection open at the checkpoint is restored closed. Restoring it "established"
#    cannot work on another node, where the pod has a new IP; the client sees a reset and retries.
#    Nothing acknowledged is lost: the process was frozen before the dump, so every reply it sent
#    was for a request it had already applied.
#  skip-in-flight: connections still in a listening socket's accept queue (clients that
#    connected while the pod was frozen) are dropped rather than failing the whole checkpoint.
#  network-lock skip: CRIU's default (iptables) locks the pod's network namespace around the dump
#    and the restore by running iptables-restore several times (docs/facts.md, "CRIU and runc"). It
#    keeps established connections quiet while CRIU saves them in TCP repair mode; with tcp-close no
#    connection is saved, so there is nothing to protect, and the lock costs ~45 ms per dump and
#    ~65 ms per restore here (measured: 64 MiB downtime 1.33 s -> 1.21 s on the stand-in nodes).
CRIU_OPTIONS: Final = "tcp-close\nskip-in-flight\nnetwork-lock skip\n"
VOLUME_DIR_ENV: Final = "PODMIGRATE_VOLUME_DIR"
# The checkpoints tmpfs: root only, and at most half the memory (tmpfs's own default) so a runaway
# archive fails its checkpoint (ENOSPC, a kubelet error the agent reports) before it starves the host.
CHECKPOINTS_TMPFS_OPTIONS: Final = "mode=0700,size=50%"
CHECKPOINTS_TMPFS_SOURCE: Final = "podmigrate-checkpoints"


def kubelet_root(node_state: Path) -> Path:
    """Where the node's kubelet keeps pods (``--root-dir``): the same layout on both kinds of node."""
    return node_state / "kubelet"


def checkpoints_dir(node_state: Path) -> Path:
    """Where the node's kubelet writes checkpoint archives (``<root-dir>/checkpoints``)."""
    return kubelet_root(node_state) / "checkpoints"


def _mount_points() -> set[str]:
    return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}


def keep_checkpoints_in_memory(node_state: Path) -> Path:
    """Mount a tmpfs on the node's checkpoints directory (once); returns the directory."""
    directory = checkpoints_dir(node_state)
    directory.mkdir(parents=True, exist_ok=True)
    if str(directory) not in _mount_points():
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", CHECKPOINTS_TMPFS_OPTIONS, CHECKPOINTS_TMPFS_SOURCE, str(directory)], check=True
        )
    return directory


def release_checkpoint_mounts(nodes_dir: Path) -> list[str]:
    """Unmount every node's checkpoints tmpfs under ``nodes_dir`` (at ``down``); what was unmounted."""
    released = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point, source = fields[4], fields[fields.index("-") + 2]
        ours = source == CHECKPOINTS_TMPFS_SOURCE and point.startswith(str(nodes_dir) + "/")
        if ours and subprocess.run(["umount", point], check=False, capture_output=True).returncode == 0:
            released.append(point)
    return released


def volume_dir(node_state: Path) -> Path:
    """Where the node's agent stages emptyDir files for a restore: beside the kubelet root, so the hook's move is a rename."""
    return node_state / "restore-volumes"


def dump_hook_dir(node_state: Path) -> Path:
    """Where the node's agent arms the CRIU post-dump hook (containerd nodes; ``PODMIGRATE_HOOK_DIR``)."""
    return node_state / "dump-hook"


def decryption_key_dir(node_state: Path) -> Path:
    """The node's private keys (``/etc/crio/keys``, ``/etc/podmigrate/keys`` on a real host): its runtime and agent read them."""
    return node_state / "keys"


def encryption_public_key(cluster_state: Path) -> Path:
    """The cluster's node public key (PEM), what the ConfigMap ``podmigrate-encryption`` holds."""
    return cluster_state / "pki" / "encryption" / "nodes.pub.pem"


def make_encryption_keys(*, cluster_state: Path, node_states: list[Path]) -> Path:
    """One RSA keypair for the nodes: the private key into each node's key directory (0600, and
    nowhere else), the public key beside the cluster's other PKI; returns the public key's path."""
    private, public = encryption.new_keypair()
    pub = encryption_public_key(cluster_state)
    pub.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pub.write_bytes(public)
    for node_state in node_states:
        keys = decryption_key_dir(node_state)
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        encryption.write_private_key(path=keys / "node.key", pem=private)
    return pub


def agent_args(node_state: Path) -> list[str]:
    """The agent's flags for a node whose state is ``node_state`` (a path, or one with ``$(NODE_NAME)`` in it)."""
    return [
        "--kubelet-root-dir", str(kubelet_root(node_state)),
        "--volume-dir", str(volume_dir(node_state)),
        "--dump-hook-dir", str(dump_hook_dir(node_state)),
        "--decryption-key-dir", str(decryption_key_dir(node_state)),
    ]  # fmt: skip
