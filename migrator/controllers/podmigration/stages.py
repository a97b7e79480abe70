"""``status.stages``: where the checkpoint's and the restore's time went, one record per stage and container.

The phases (``status.phases``) say how long the checkpoint and the restore took; the stages say
why: the checkpoint side as the source node's agent timed it (freeze, dump, upload, volumes), the
restore side as the target node's kubelet told it (fetch, restore, ready; derived in
:mod:`~migrator.controllers.podmigration.restorestages`). ``kubectl migrate timeline`` draws them
under their phases and the benchmark reads the same records, so they live in status, not only in
a trace that may not be exported.

Each side is written whole by one step (Checkpoint for ``agent``, WaitReady for ``kubelet``) and
replaces whatever that side held: a restarted control service that runs the step again writes the
same list, never a second copy (the reconcile loop is level-triggered). Each side keeps at most
``MAX_PER_SOURCE`` records (the first containers' when a pod has more), so status stays small, and
every record is cut to what the CRD's schema accepts: a record the API server refused would stop
the migration's status from being saved at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from agentapi import contract
from migrator.units import iso

log = logging.getLogger(__name__)

SOURCE_AGENT: Final = "agent"  # the source node's agent timed it (its own clock)
SOURCE_KUBELET: Final = "kubelet"  # derived from the target node's kubelet: its Events and the pod's status
SOURCES: Final = (SOURCE_AGENT, SOURCE_KUBELET)

STAGE_FETCH: Final = "fetch"  # the restored pod created (bound to its node) -> its checkpoint image pulled
STAGE_RESTORE: Final = "restore"  # image pulled -> container running again (the runtime's restore)
STAGE_READY: Final = "ready"  # container running -> the pod seen Ready by the control service
RESTORE_STAGES: Final = (STAGE_FETCH, STAGE_RESTORE, STAGE_READY)
# The order stages run in, to break ties between records that start at the same millisecond.
ORDER: Final = (*contract.CHECKPOINT_STAGES, *RESTORE_STAGES)

# Per side: freeze and volumes plus dump and upload for 23 containers; fetch, restore, ready for 16.
MAX_PER_SOURCE: Final = 48
# What the CRD accepts (manifests/crd/podmigrations.yaml): a record outside it would fail the whole status write.
MAX_NAME: Final = 63
MAX_TEXT: Final = 253


def stage_record(
    *,
    name: str,
    node: str,
    start: datetime,
    end: datetime,
    source: str,
    container: str = "",
    nbytes: int | None = None,
) -> dict[str, Any]:
    """One item of ``status.stages``, within the CRD's schema (an end before its start is taken as the start)."""
    record: dict[str, Any] = {"name": str(name)[:MAX_NAME], "node": str(node)[:MAX_TEXT]}
    if container:
        record["container"] = str(container)[:MAX_TEXT]
    record.update(start=iso(start), end=iso(max(end, start)), source=source)
    if isinstance(nbytes, int) and not isinstance(nbytes, bool) and nbytes >= 0:
        record["bytes"] = nbytes
    return record


def from_agent(stages: Iterable[contract.StageRecord], *, node: str) -> list[dict[str, Any]]:
    """The agent's stages (wall-clock seconds on ``node``) as status records; unreadable ones are left out."""
    records = []
    for stage in stages:
        try:
            start, end = datetime.fromtimestamp(stage.start, UTC), datetime.fromtimestamp(stage.end, UTC)
        except (OverflowError, OSError, ValueError):
            log.warning("stage %r from the agent on %s has no usable time (%r, %r)", stage.name, node, stage.start, stage.end)
            continue
        records.append(
            stage_record(name=stage.name, node=node, start=start, end=end, source=SOURCE_AGENT, container=stage.container,
                         nbytes=stage.bytes)
        )  # fmt: skip
    return records


def _key(record: Mapping[str, Any]) -> tuple[str, int, str]:
    name = record.get("name")
    return str(record.get("start") or ""), ORDER.index(name) if name in ORDER else len(ORDER), str(record.get("container") or "")


def record(status: MutableMapping[str, Any], *, source: str, records: Sequence[Mapping[str, Any]]) -> None:
    """``source``'s stages become ``records`` (its earlier ones are replaced, never added to); others stay.

    Idempotent: the same records give the same list however often a step runs. The list is kept in
    time order (ties in the order stages run); with no record left the field is dropped.
    """
    if len(records) > MAX_PER_SOURCE:
        log.warning("%d %s stages; only the first %d are kept", len(records), source, MAX_PER_SOURCE)
    kept = [dict(r) for r in (status.get("stages") or []) if r.get("source") != source]
    merged = sorted([*kept, *(dict(r) for r in records[:MAX_PER_SOURCE])], key=_key)
    if merged:
        status["stages"] = merged
    else:
        status.pop("stages", None)
