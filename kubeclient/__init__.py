"""The Kubernetes client layer: connecting, watching, patching.

Every Kubernetes semantic that trips controllers up (410 Gone on an old resourceVersion,
409 conflicts, merge-patch content types) is handled here, once, with a comment saying why,
so the rest of the code can read as if the API were simple. The local cluster's node uses it
too: it is a client of the API server like any kubelet.
"""
