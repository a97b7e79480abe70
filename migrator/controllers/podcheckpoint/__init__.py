"""The PodCheckpoint controller: a pod's checkpoint kept in the registry as an object of its own.

``record`` is the object and what the steps share; ``reconciler`` drives it: validate, checkpoint
(the pod runs on, or is frozen), suspend (the frozen pod removed), and, once deleted, its images
deleted from the registry. Restoring one is the PodRestore controller's (``migrator.controllers.podrestore``).
"""

from migrator.controllers.podcheckpoint.reconciler import PodCheckpointReconciler

__all__ = ["PodCheckpointReconciler"]
