"""The PodMigration controller: ``reconciler`` drives the state machine; ``steps`` moves the pod
forward, ``rollback`` brings it back on failure, ``bookkeeping`` records phases, spans and the
end, ``stages`` and ``restorestages`` record where the checkpoint's and the restore's time went,
``pods`` reads and makes the pods involved, ``migration`` is the object and its context."""

from migrator.controllers.podmigration.migration import Settings
from migrator.controllers.podmigration.reconciler import PodMigrationReconciler

__all__ = ["PodMigrationReconciler", "Settings"]
