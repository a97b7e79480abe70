"""kubectl-migrate as a krew plugin: the archive, the manifest, krew's own validation and install."""
