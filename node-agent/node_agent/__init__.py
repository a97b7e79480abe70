"""podmigrate's node agent: the one privileged component on each node.

It turns "checkpoint this pod" into an OCI checkpoint image in a registry: it freezes the
pod through its cgroups, asks the kubelet on its own node for a checkpoint archive, packs the
archive as an image, pushes it, and deletes the archive (it holds process memory). The control
service is its only caller, over an authenticated HTTP API (``contract`` defines it once).

It keeps no state of its own: whether a pod is frozen lives in the kernel's cgroups, so an
agent restart neither loses nor undoes a freeze.
"""
