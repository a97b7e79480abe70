"""The PodMigration API as the control service and the CLI see it: names, phases, steps, annotations.

The CRD in ``manifests/crd/podmigrations.yaml`` is the contract; this module spells its
strings once so that the reconciler, the CLI and the tests cannot drift from each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Final

from kubeclient.resources import CustomResource

GROUP: Final = "podmigrate.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "podmigrations"
KIND: Final = "PodMigration"
API_VERSION: Final = f"{GROUP}/{VERSION}"
PODMIGRATIONS: Final = CustomResource(group=GROUP, version=VERSION, plural=PLURAL, kind=KIND, namespaced=True)

# Annotations the control service puts on the pods it creates.
ANNOTATION_MIGRATION: Final = "podmigrate.io/migration"  # "<namespace>/<name>" of the PodMigration
ANNOTATION_MIGRATION_UID: Final = "podmigrate.io/migration-uid"
ANNOTATION_RESTORED_FROM: Final = "podmigrate.io/restored-from"  # source node
ANNOTATION_CHECKPOINT_IMAGES: Final = "podmigrate.io/checkpoint-images"  # JSON {container: image}
ANNOTATION_ORIGINAL_IMAGES: Final = "podmigrate.io/original-images"  # JSON {container: image}
ANNOTATION_SKIPPED_INIT: Final = "podmigrate.io/init-containers-skipped"
LABEL_PREPULL: Final = "podmigrate.io/prepull-for"
# In the environment of each container of a pod that restores a checkpoint: "<namespace>/<pod>" of the
# pod that was checkpointed. The restored processes never see it (their environment is in their
# memory); the node's CRIU hook reads it from the container's OCI config to find the emptyDir files
# staged for that pod (a ReplicaSet's replacement has a new name). The hook (node_agent/criu_hook.sh)
# spells the same name, and accepts it only within the restored pod's own namespace.
ENV_RESTORED_FROM: Final = "PODMIGRATE_RESTORED_FROM"
# On a PodMigration: the W3C traceparent of whatever started it (a NodeDrain): the migration's
# trace becomes a child of that span, so a drain is one trace holding all its migrations.
ANNOTATION_TRACEPARENT: Final = "podmigrate.io/traceparent"
LABEL_EVICTION: Final = "podmigrate.io/instead-of-eviction"  # on PodMigrations the eviction webhook creates
# Namespaces labelled with this ("true") have their pods migrated instead of evicted.
LABEL_MIGRATE_ON_EVICT: Final = "podmigrate.io/migrate-on-evict"
# Held on every unfinished PodMigration: its deletion waits until the pod runs somewhere again.
FINALIZER: Final = "podmigrate.io/pod-restored"


# Controllers whose replacement pod the webhook turns into the restore (see migrator.webhook).
OWNERS_RESTORED_BY_WEBHOOK: Final = frozenset({"ReplicaSet", "StatefulSet"})


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


def unfinished_migrations_of(migrations: Iterable[Mapping[str, Any]], *, pod: str) -> list[Mapping[str, Any]]:
    """The PodMigrations (of one namespace) still moving ``pod``, oldest first: one migration per pod at a time."""
    moving = [
        m for m in migrations
        if (m.get("spec") or {}).get("podName") == pod
        and (m.get("status") or {}).get("phase") not in TERMINAL_PHASES
        and (m.get("status") or {}).get("step") != Step.DONE
    ]  # fmt: skip
    return sorted(moving, key=lambda m: (m["metadata"].get("creationTimestamp") or "", m["metadata"]["name"]))


class OnFailure(StrEnum):
    RESTORE_SOURCE = "RestoreSource"
    RECREATE = "Recreate"


# --- NodeDrain (manifests/crd/nodedrains.yaml): a node emptied by migrating its pods -------------
DRAIN_PLURAL: Final = "nodedrains"
DRAIN_KIND: Final = "NodeDrain"
NODEDRAINS: Final = CustomResource(group=GROUP, version=VERSION, plural=DRAIN_PLURAL, kind=DRAIN_KIND, namespaced=False)
# On the PodMigrations a drain creates: the NodeDrain's name (they also carry an ownerReference to it).
LABEL_DRAIN: Final = "podmigrate.io/drain"
# On a Node: "true" asks the control service for a NodeDrain named auto-<node> (AUTO_DRAIN_PREFIX).
ANNOTATION_DRAIN_REQUEST: Final = "podmigrate.io/drain"
ANNOTATION_DRAIN_POLICY: Final = "podmigrate.io/drain-policy"  # Evict or Block (default) for that drain
LABEL_AUTO_DRAIN: Final = "podmigrate.io/auto-drain"  # "true" on NodeDrains created from the annotation
AUTO_DRAIN_PREFIX: Final = "auto-"
# Held on every NodeDrain: its deletion first lets in-flight migrations finish and uncordons the node
# if (and only if) the drain cordoned it.
DRAIN_FINALIZER: Final = "podmigrate.io/uncordon"


class DrainPhase(StrEnum):
    PENDING = "Pending"  # accepted, the node not cordoned yet
    CORDONED = "Cordoned"  # cordoned; its pods are being listed and classified
    DRAINING = "Draining"  # migrations (and, with Evict, evictions) under way
    SUCCEEDED = "Succeeded"
    BLOCKED = "Blocked"  # a pod can be neither migrated nor (by policy or kind) evicted: nothing more is done
    FAILED = "Failed"
    CANCELLED = "Cancelled"  # the NodeDrain was deleted before it finished


DRAIN_TERMINAL_PHASES: Final = frozenset({DrainPhase.SUCCEEDED, DrainPhase.BLOCKED, DrainPhase.FAILED, DrainPhase.CANCELLED})
# Each PodMigration a drain creates gets this timeoutSeconds (a PodMigration's own default), at most the drain's.
DRAIN_MIGRATION_TIMEOUT: Final = 300


def drain_running(drain: Mapping[str, Any]) -> bool:
    """Is this NodeDrain draining (or about to)? Not if it finished, is being deleted, or only plans."""
    finished = (drain.get("status") or {}).get("phase") in DRAIN_TERMINAL_PHASES
    return not finished and not drain["metadata"].get("deletionTimestamp") and not (drain.get("spec") or {}).get("dryRun")


class PodAction(StrEnum):
    MIGRATE = "migrate"
    EVICT = "evict"
    SKIP = "skip"


class PodOutcome(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in-progress"
    MIGRATED = "migrated"
    EVICTED = "evicted"
    SKIPPED = "skipped"
    FAILED = "failed"


POD_FINISHED_OUTCOMES: Final = frozenset({PodOutcome.MIGRATED, PodOutcome.EVICTED, PodOutcome.SKIPPED, PodOutcome.FAILED})


class UnmigratablePolicy(StrEnum):
    EVICT = "Evict"  # evict them through the Eviction API (PodDisruptionBudgets honoured), as kubectl drain does
    BLOCK = "Block"  # stop in phase Blocked, deleting nothing


# --- Checkpoints as objects of their own (manifests/crd/podcheckpoints.yaml, podrestores.yaml,
# checkpointschedules.yaml): a pod's checkpoint kept in the registry, restored later, cloned, scheduled.
CHECKPOINT_PLURAL: Final = "podcheckpoints"
CHECKPOINT_KIND: Final = "PodCheckpoint"
PODCHECKPOINTS: Final = CustomResource(
    group=GROUP, version=VERSION, plural=CHECKPOINT_PLURAL, kind=CHECKPOINT_KIND, namespaced=True
)
RESTORE_PLURAL: Final = "podrestores"
RESTORE_KIND: Final = "PodRestore"
PODRESTORES: Final = CustomResource(group=GROUP, version=VERSION, plural=RESTORE_PLURAL, kind=RESTORE_KIND, namespaced=True)
SCHEDULE_PLURAL: Final = "checkpointschedules"
SCHEDULE_KIND: Final = "CheckpointSchedule"
CHECKPOINTSCHEDULES: Final = CustomResource(
    group=GROUP, version=VERSION, plural=SCHEDULE_PLURAL, kind=SCHEDULE_KIND, namespaced=True
)
# Held on every PodCheckpoint: its deletion waits until its images are gone from the registry.
CHECKPOINT_FINALIZER: Final = "podmigrate.io/checkpoint-images"
# Held on every unfinished PodRestore: its deletion waits until the restored pod runs or the restore failed.
RESTORE_FINALIZER: Final = "podmigrate.io/restore-finished"
# On every PodCheckpoint: the pod it checkpoints (list a pod's checkpoints with one selector).
LABEL_CHECKPOINT_POD: Final = "podmigrate.io/pod"
# On the PodCheckpoints a CheckpointSchedule creates: the schedule's name.
LABEL_SCHEDULE: Final = "podmigrate.io/schedule"
# On pods restored from a PodCheckpoint (a PodRestore's, or a warm start's): "<namespace>/<name>" and its UID.
ANNOTATION_CHECKPOINT: Final = "podmigrate.io/checkpoint"
ANNOTATION_CHECKPOINT_UID: Final = "podmigrate.io/checkpoint-uid"
# On a PodRestore's pod: "<namespace>/<name>" and the UID of that PodRestore.
ANNOTATION_RESTORE: Final = "podmigrate.io/restore"
ANNOTATION_RESTORE_UID: Final = "podmigrate.io/restore-uid"
# On a Deployment (copied by its controller to its ReplicaSets) or a ReplicaSet: the PodCheckpoint (same
# namespace) its new pods restore from instead of starting cold (migrator.warmstart).
ANNOTATION_WARM_START: Final = "podmigrate.io/warm-start-from"
# On a pod that asked for a warm start and started cold all the same: why.
ANNOTATION_WARM_START_SKIPPED: Final = "podmigrate.io/warm-start-skipped"


class CheckpointMode(StrEnum):
    RUNNING = "Running"  # the pod runs on: paused only while CRIU dumps it (forensics, periodic checkpoints)
    SUSPEND = "Suspend"  # frozen, checkpointed, then removed: resumed later by a PodRestore


class CheckpointPhase(StrEnum):
    PENDING = "Pending"
    CHECKPOINTING = "Checkpointing"
    SUSPENDING = "Suspending"  # (Suspend) the frozen pod is being removed
    AVAILABLE = "Available"  # in the registry, restorable
    FAILED = "Failed"


class RestorePhase(StrEnum):
    PENDING = "Pending"
    RESTORING = "Restoring"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


RESTORE_TERMINAL_PHASES: Final = frozenset({RestorePhase.SUCCEEDED, RestorePhase.FAILED})
# On the pod a workload controller makes to replace a suspended pod (migrator.webhook): it holds the pod's place
# (the controller counts it, so it makes no cold copy) without running, until a PodRestore releases it.
SCHEDULING_GATE_SUSPENDED: Final = "podmigrate.io/suspended"
