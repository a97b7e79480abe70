"""The PodMigration reconciler: one pod's move as a resumable state machine.

Level-triggered and idempotent, like a controller-runtime reconciler: every pass reads the
PodMigration and the world, does at most one step's work, and records the outcome (and the
next step) in ``status`` before anything else happens. A control service killed at any line
finds, on restart, the step it was in and runs it again; every step is written so that
running it twice is harmless (a second freeze is a no-op, a delete of a gone pod is success,
a create that finds our own pod adopts it).

The invariant the steps keep: at every instant exactly one copy of the pod may run. The steps
are in ``steps`` (forward) and ``rollback`` (failure paths); what the migration records about
itself (phases, spans, failures, the end) in ``bookkeeping``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from kubernetes_asyncio import client

from agentapi.client import AgentClient
from kubeclient.informing import PodsAndNodes
from kubeclient.resources import Conflict, Gone
from migrator import api
from migrator.api import Phase, Step
from migrator.controllers.podmigration import artifacts, bookkeeping, pods, rollback, steps
from migrator.controllers.podmigration.freezes import FreezeKeeper
from migrator.controllers.podmigration.migration import Context, Migration, Settings
from migrator.metrics import ControllerMetrics
from migrator.reconciling import Recorder
from migrator.units import now
from telemetry import logcontext

log = logging.getLogger(__name__)

StepFn = Callable[[Context, Migration], Awaitable[None]]
STEPS: Final[dict[Step, StepFn]] = {
    Step.VALIDATE: steps.validate,
    Step.PREPARE_TARGET: steps.prepare_target,
    Step.CHECKPOINT: steps.checkpoint,
    Step.REMOVE_SOURCE: steps.remove_source,
    Step.CREATE_TARGET: steps.create_target,
    Step.AWAIT_REPLACEMENT: steps.await_replacement,
    Step.WAIT_READY: steps.wait_ready,
    Step.CLEANUP: steps.cleanup,
    Step.THAW_SOURCE: rollback.thaw_source,
    Step.RESTORE_SOURCE: rollback.restore_source,
    Step.RECREATE: rollback.recreate,
}
# Steps before the source is removed: a failure (or a cancel, or the deadline) thaws the source.
BEFORE_REMOVAL: Final = frozenset({Step.VALIDATE, Step.PREPARE_TARGET, Step.CHECKPOINT})
# Steps after it, while the restore is under way: a failure restores on the source or recreates.
RESTORING: Final = frozenset({Step.CREATE_TARGET, Step.AWAIT_REPLACEMENT, Step.WAIT_READY})


class PodMigrationReconciler:
    def __init__(
        self,
        *,
        core: client.CoreV1Api,
        custom: client.CustomObjectsApi,
        agents: AgentClient,
        settings: Settings,
        metrics: ControllerMetrics | None = None,
        pods_and_nodes: PodsAndNodes | None = None,
    ) -> None:
        self.recorder = Recorder(core=core, custom=custom, resource=api.PODMIGRATIONS)
        self.freezes = FreezeKeeper()
        self.ctx = Context(
            core=core, custom=custom, agents=agents, settings=settings, recorder=self.recorder, metrics=metrics,
            freezes=self.freezes, pods_and_nodes=pods_and_nodes,
        )  # fmt: skip

    async def reconcile(self, obj: Mapping[str, Any]) -> float | None:
        """Drive one PodMigration as far as it can go now; seconds until the next look, or None when done."""
        m = Migration(obj)
        try:
            return await self._reconcile(m)
        except Gone:
            return None
        except pods.NamespaceTerminating:
            # Its namespace is being deleted, and with it the pod and this PodMigration: there is nothing
            # left to restore, and holding the finalizer would hold the namespace's deletion for ever.
            # Its images are not the namespace's: they are deleted all the same (the finalizer waits for them).
            await artifacts.release(self.ctx, m)
            await bookkeeping.finish(
                self.ctx, m, phase=Phase.FAILED, reason="NamespaceDeleted",
                message=f"namespace {m.namespace} is being deleted: the pod is not brought back",
            )  # fmt: skip
            with contextlib.suppress(Gone, Conflict):
                await self.recorder.save(m)
            delay = await self._after_the_end(m)
            if delay is None:
                await self.recorder.release(m, api.FINALIZER)  # (before the namespace controller deletes it, too)
            return delay
        finally:
            self.freezes.sync(self.ctx, m)

    async def _reconcile(self, m: Migration) -> float | None:
        if m.phase in api.TERMINAL_PHASES:
            return await self._after_the_end(m)
        if not m.deleting:
            # Deleting a PodMigration mid-flight must not leave its pod frozen or gone: we finish first.
            await self.recorder.hold(m, api.FINALIZER)
        logcontext.migration.set(f"{m.namespace}/{m.name}")
        logcontext.trace_id.set(str(m.status.get("traceID", "")))
        if "traceID" not in m.status:
            bookkeeping.start(m)
            logcontext.trace_id.set(m.status["traceID"])
            log.info("migrating pod %s", m.pod_name)
            m.note("Started", f"migrating pod {m.pod_name}")
            await self.recorder.save(m)
        while m.step != Step.DONE:
            # The deadline and a cancel are checked before each step, so even a step that only waits
            # is ended by them (their transition is part of what this pass saves).
            before = m.snapshot()
            self._check_deadline(m)
            self._check_cancelled(m)
            step = m.step
            delay = await self.recorder.attempt(m, lambda step=step: STEPS[step](self.ctx, m), before=before)
            if delay is not None:
                return delay
        return await self._after_the_end(m)

    async def _after_the_end(self, m: Migration) -> float | None:
        """A finished migration: what it could not delete is retried; the finalizer goes once nothing is left.

        Why the finalizer and not the terminal phase waits: the outcome (where the pod runs) is
        true and wanted at once (by a drain, by the user) whatever the registry does, while the
        images still hold process memory; a PodMigration whose images are not yet deleted keeps
        its finalizer, so deleting it (or its namespace) waits, and the list of what is left
        (``pendingDeletes``) lives on in its status for a restarted control service.
        """
        if (delay := await artifacts.retry_pending(self.ctx, m)) is not None:
            return delay
        if m.deleting:
            await self.recorder.release(m, api.FINALIZER)
        return None

    def _abandon_checkpoint_in_flight(self, m: Migration) -> None:
        """Leaving Checkpoint without its answer (an earlier pass's call may have gone through): undo it, by id and tag."""
        if m.step == Step.CHECKPOINT:
            artifacts.abandon_checkpoint(m, request=steps.checkpoint_request(self.ctx, m))

    def _check_cancelled(self, m: Migration) -> None:
        """A deleted PodMigration is cancelled: roll back if the source still exists, else finish bringing the pod back."""
        if not m.deleting or m.status.get("failure"):
            return
        if m.step in BEFORE_REMOVAL:
            self._abandon_checkpoint_in_flight(m)
            bookkeeping.fail_before_removal(m, "Cancelled", "the PodMigration was deleted (cancelled)")

    def _check_deadline(self, m: Migration) -> None:
        timeout = bookkeeping.timeout_seconds(m)
        if now() < bookkeeping.deadline(m):
            return
        message = f"the migration did not finish within {timeout}s (timeoutSeconds) while in step {m.step}"
        if m.step in BEFORE_REMOVAL:
            self._abandon_checkpoint_in_flight(m)
            bookkeeping.fail_before_removal(m, "Timeout", message)
        elif m.step in RESTORING and not m.status.get("failure"):
            bookkeeping.fail_after_removal(m, "Timeout", message)
