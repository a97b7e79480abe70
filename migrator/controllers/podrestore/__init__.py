"""The PodRestore controller: a pod created again from a PodCheckpoint (a suspended pod resumed, or a clone)."""

from migrator.controllers.podrestore.reconciler import PodRestoreReconciler

__all__ = ["PodRestoreReconciler"]
