"""The PodMigration API as the control service and the CLI see it: names, phases, steps, annotations.

The CRD in ``manifests/crd/podmigrations.yaml`` is the contract; this module spells its
strings once so that the reconciler, the CLI and the tests cannot drift from each other.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

GROUP: Final = "podmigrate.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "podmigrations"
KIND: Final = "PodMigration"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# Annotations the control service puts on the pods it creates.
ANNOTATION_MIGRATION: Final = "podmigrate.io/migration"  # "<namespace>/<name>" of the PodMigration
ANNOTATION_MIGRATION_UID: Final = "podmigrate.io/migration-uid"
ANNOTATION_RESTORED_FROM: Final = "podmigrate.io/restored-from"  # source node
ANNOTATION_CHECKPOINT_IMAGES: Final = "podmigrate.io/checkpoint-images"  # JSON {container: image}
ANNOTATION_ORIGINAL_IMAGES: Final = "podmigrate.io/original-images"  # JSON {container: image}
ANNOTATION_SKIPPED_INIT: Final = "podmigrate.io/init-containers-skipped"
LABEL_PREPULL: Final = "podmigrate.io/prepull-for"
# Held on every unfinished PodMigration: its deletion waits until the pod runs somewhere again.
FINALIZER: Final = "podmigrate.io/pod-restored"


class Phase(StrEnum):
    PENDING = "Pending"
    CHECKPOINTING = "Checkpointing"
    RESTORING = "Restoring"
    COMPLETING = "Completing"
    ROLLING_BACK = "RollingBack"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_PHASES: Final = frozenset({Phase.SUCCEEDED, Phase.FAILED})


class Step(StrEnum):
    """The state machine's steps, in order; each is recorded in status before it runs."""

    VALIDATE = "Validate"
    PREPARE_TARGET = "PrepareTarget"
    CHECKPOINT = "Checkpoint"
    REMOVE_SOURCE = "RemoveSource"
    CREATE_TARGET = "CreateTarget"  # bare pods: we recreate it
    AWAIT_REPLACEMENT = "AwaitReplacement"  # controller-owned pods: its controller does, the webhook restores
    WAIT_READY = "WaitReady"
    CLEANUP = "Cleanup"
    # Failure paths.
    THAW_SOURCE = "ThawSource"  # failed before the source was removed: let it run on
    RESTORE_SOURCE = "RestoreSource"  # failed after: restore the checkpoint on the source node
    RECREATE = "Recreate"  # last resort: start the pod again from its original spec
    DONE = "Done"


PHASE_OF_STEP: Final = {
    Step.VALIDATE: Phase.PENDING,
    Step.PREPARE_TARGET: Phase.PENDING,
    Step.CHECKPOINT: Phase.CHECKPOINTING,
    Step.REMOVE_SOURCE: Phase.RESTORING,
    Step.CREATE_TARGET: Phase.RESTORING,
    Step.AWAIT_REPLACEMENT: Phase.RESTORING,
    Step.WAIT_READY: Phase.RESTORING,
    Step.CLEANUP: Phase.COMPLETING,
    Step.THAW_SOURCE: Phase.ROLLING_BACK,
    Step.RESTORE_SOURCE: Phase.ROLLING_BACK,
    Step.RECREATE: Phase.ROLLING_BACK,
}


class OnFailure(StrEnum):
    RESTORE_SOURCE = "RestoreSource"
    RECREATE = "Recreate"
