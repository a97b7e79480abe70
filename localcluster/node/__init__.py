"""A node process that plays kubelet + CRI-O for the pods bound to it.

It runs each pod's containers with runc in a network namespace of the pod's own (or the
node's, for ``hostNetwork``), with the user, capabilities and host namespaces their security
context asks for, checkpoints them with CRIU through runc, and restores checkpoint images the
way CRI-O does.
Everything a migration tool can observe (API objects, the kubelet API on port 10250, the
archive layout under ``.../kubelet/checkpoints``) behaves as on a real node.
"""
