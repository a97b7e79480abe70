"""PodDisruptionBudgets and a drain: a migration takes its pod out of service briefly, so it is a disruption.

Before a pod's migration starts, two checks, both must pass:

1. The API server's own verdict, from the real PDB machinery: a server-side dry-run eviction of
   the pod. 429 means a budget is spent now; the drain tries again 5 s later, as kubectl drain does.
2. The disruptions in flight: this drain's own, and everyone else's migrations (other drains,
   ``kubectl migrate``, eviction interception) whose source pod still exists: a frozen pod still
   counts as healthy for the PDB until it is deleted, so the PDB's status does not show them yet.
   This drain's own: A dry run is judged against the PDB's status, which
   does not know yet about migrations this drain has just started (a frozen pod still counts as
   healthy until it is deleted), so for every PDB covering the pod, at most ``disruptionsAllowed``
   of this drain's pods under it are in flight at once, where ``disruptionsAllowed`` is what the
   PDB allowed when the first of them started (its "window"; recorded in the drain's status, so a
   restarted control service keeps the same limit until that window closes).

Pure functions over policy/v1 PodDisruptionBudgets as the API returns them (dicts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrator.api import LABEL_DRAIN, unfinished_migrations_of
from migrator.drainplan import label_selector_matches


@dataclass(frozen=True, kw_only=True)
class Budget:
    namespace: str
    name: str
    selector: Mapping[str, Any] | None
    disruptions_allowed: int

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def covers(self, pod: Mapping[str, Any]) -> bool:
        meta = pod["metadata"]
        return meta.get("namespace") == self.namespace and label_selector_matches(self.selector, meta.get("labels"))


def budgets(pdbs: Iterable[Mapping[str, Any]]) -> list[Budget]:
    """The budgets as the eviction API would judge them: a status older than the spec allows nothing."""
    result = []
    for pdb in pdbs:
        meta, status = pdb["metadata"], pdb.get("status") or {}
        stale = int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0)
        result.append(
            Budget(
                namespace=str(meta.get("namespace", "")),
                name=str(meta["name"]),
                selector=(pdb.get("spec") or {}).get("selector"),
                disruptions_allowed=0 if stale else max(int(status.get("disruptionsAllowed") or 0), 0),
            )
        )
    return result


def covering(pod: Mapping[str, Any], all_budgets: Iterable[Budget]) -> list[Budget]:
    return [b for b in all_budgets if b.covers(pod)]


@dataclass(frozen=True, kw_only=True)
class Decision:
    allowed: bool
    reason: str = ""
    refused: bool = False  # not now and not later: the API server will never allow it
    # Windows this start opens: budget key -> disruptionsAllowed now, to record before the migration starts.
    opens: dict[str, int] = field(default_factory=dict)


def check(
    pod: Mapping[str, Any],
    *,
    all_budgets: Iterable[Budget],
    in_flight: Mapping[str, int],
    windows: Mapping[str, int],
    others: Iterable[Mapping[str, Any]] = (),
) -> Decision:
    """May this drain disrupt ``pod`` now, given the disruptions in flight?

    ``in_flight``: budget key -> this drain's pods under that budget being migrated or evicted now.
    ``windows``: budget key -> disruptionsAllowed recorded when its first in-flight disruption began.
    ``others``: source pods of everyone else's migrations under way (``moving_sources``).
    """
    opens = {}
    for budget in covering(pod, all_budgets):
        busy = in_flight.get(budget.key, 0)
        theirs = sum(1 for other in others if budget.covers(other) and other["metadata"]["name"] != pod["metadata"]["name"])
        if busy == 0:
            limit = budget.disruptions_allowed
            opens[budget.key] = limit
        else:
            limit = windows.get(budget.key, budget.disruptions_allowed)
        if busy + theirs >= limit:
            if busy + theirs == 0:
                reason = f"PodDisruptionBudget {budget.key} allows no disruption now"
            else:
                parts = [f"{busy} of this drain's pods"] if busy else []
                parts += [f"{theirs} pod(s) migrated by others"] if theirs else []
                reason = (
                    f"PodDisruptionBudget {budget.key} allowed {limit} disruption(s) and {' and '.join(parts)} under it "
                    "are being moved"
                )
            return Decision(allowed=False, reason=reason)
    return Decision(allowed=True, opens=opens)


def moving_sources(
    migrations: Iterable[Mapping[str, Any]], pods: Mapping[tuple[str, str], Mapping[str, Any]], *, except_drain: str = ""
) -> list[Mapping[str, Any]]:
    """The source pods of unfinished PodMigrations that still exist (frozen, or about to be): disruptions
    the PDB's status does not show yet. ``except_drain``: leave out that drain's own (it counts them itself)."""
    out = []
    for m in migrations:
        meta = m["metadata"]
        if except_drain and (meta.get("labels") or {}).get(LABEL_DRAIN) == except_drain:
            continue
        name = (m.get("spec") or {}).get("podName")
        source = pods.get((meta.get("namespace", ""), name)) if name else None
        if source is not None and unfinished_migrations_of([m], pod=str(name)):
            out.append(source)
    return out


def open_windows(in_flight: Mapping[str, int], windows: Mapping[str, int]) -> dict[str, int]:
    """The recorded windows still open: those with a disruption of this drain still in flight."""
    return {key: limit for key, limit in windows.items() if in_flight.get(key, 0) > 0}


def windows_from_status(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    return {f"{r['namespace']}/{r['name']}": int(r.get("disruptionsAllowed") or 0) for r in records}


def windows_to_status(windows: Mapping[str, int]) -> list[dict[str, Any]]:
    return [
        {"namespace": key.partition("/")[0], "name": key.partition("/")[2], "disruptionsAllowed": limit}
        for key, limit in sorted(windows.items())
    ]
