"""Keeping a checkpointed source frozen: the control service renews its agent's freeze lease while it works.

The agent thaws a frozen pod whose lease lapses (``node_agent.leases``): if this service dies, or
loses the source node, between the checkpoint and the kill, the pod runs on where it was instead of
staying frozen for good. So from the checkpoint's answer until the source is killed (or thawed on
purpose) a background task renews the lease every third of its length. It runs beside the steps,
so a long one (staging a large emptyDir on the target) does not let the lease lapse; a restarted or
newly elected service starts it again for every migration whose source is still frozen. Once the
agent answers that the lease lapsed, renewing stops: the next step finds the kill refused and takes
the failed path, with the pod running where it was.
"""

from __future__ import annotations

import asyncio
import logging

from agentapi.client import AgentError
from migrator.controllers.podmigration.migration import Context, Migration
from migrator.controllers.podmigration.pods import read_node

log = logging.getLogger(__name__)


class FreezeKeeper:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def keep(self, ctx: Context, m: Migration) -> None:
        """Renew the source's freeze lease from now on (idempotent)."""
        task = self._tasks.get(m.uid)
        if task is not None and not task.done():
            return
        self._tasks[m.uid] = asyncio.create_task(
            self._renew(ctx, node_name=m.status["sourceNode"], namespace=m.namespace, pod=m.pod_name)
        )

    def forget(self, m: Migration) -> None:
        task = self._tasks.pop(m.uid, None)
        if task is not None:
            task.cancel()

    def sync(self, ctx: Context, m: Migration) -> None:
        """After a pass: renew exactly while the source is frozen and not yet killed."""
        if m.status.get("frozen") and not m.status.get("sourceKilled") and not m.status.get("sourceRemoved"):
            self.keep(ctx, m)
        else:
            self.forget(m)

    async def _renew(self, ctx: Context, *, node_name: str, namespace: str, pod: str) -> None:
        seconds = ctx.settings.freeze_lease_seconds
        while True:
            await asyncio.sleep(seconds / 3)
            node = await read_node(ctx, node_name)
            if node is None:
                continue
            try:
                await ctx.agents.renew_freeze(node=node, namespace=namespace, pod=pod, seconds=seconds)
            except AgentError as exc:
                if exc.status in (404, 409):  # lapsed (thawed) or no lease any more: nothing left to keep
                    log.warning("freeze of %s/%s not renewed: %s", namespace, pod, exc)
                    return
                log.warning("renewing the freeze of %s/%s failed (trying again): %s", namespace, pod, exc)

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
