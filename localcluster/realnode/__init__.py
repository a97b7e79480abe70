"""Real nodes for the local cluster (upstream kubelet + containerd + runc + CRIU): see ``launcher``."""

from localcluster.realnode.launcher import (
    KUBELET_PORT,
    SPEC_FILE,
    RealNode,
    RealNodeError,
    ensure_binaries,
    has_address,
    inject_fault,
    leftovers,
    mounts_under,
    patch_address,
    planned_nodes,
    push_pause_image,
    read_sysctls,
    start,
    stop,
    stop_all,
)

__all__ = [
    "KUBELET_PORT",
    "SPEC_FILE",
    "RealNode",
    "RealNodeError",
    "ensure_binaries",
    "has_address",
    "inject_fault",
    "leftovers",
    "mounts_under",
    "patch_address",
    "planned_nodes",
    "push_pause_image",
    "read_sysctls",
    "start",
    "stop",
    "stop_all",
]
