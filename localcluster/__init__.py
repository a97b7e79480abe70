"""The local cluster: a real Kubernetes control plane, an OCI registry and CRIU-capable nodes on one machine.

It exists because no kubelet or CRI-O can run here, yet every feature of podmigrate must be
shown against the real API server, scheduler and controllers. The control plane and the
registry are the real upstream binaries; only the node is a stand-in (``localcluster.node``),
and it is faithful at the interfaces a real node offers: the kubelet's HTTPS API, the
Node/Lease/Pod objects it writes, and CRI-O's checkpoint archive and restore rules.

Product code never imports this package.
"""
