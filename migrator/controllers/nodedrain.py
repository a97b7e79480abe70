"""The NodeDrain reconciler: empty a node by migrating its pods, one PodMigration per pod.

Level-triggered and resumable like the PodMigration reconciler: every pass reads the NodeDrain
and the world, does what can be done now, and each decision is recorded in ``status`` before it
is acted on: that this drain cordons the node before the cordon, a pod's PodMigration name
before it is created, a pod to evict before the eviction. A restarted control service finds in
status which pods are done, which are in flight and which wait, and goes on from there.

    Pending   -> the node is cordoned (``status.cordonedByDrain``: this drain holds the cordon)
    Cordoned  -> its pods are listed once and classified (``migrator.drainplan``) into status.pods
    Draining  -> at most maxConcurrent pods in flight: a PodMigration each, started only when a
                 dry-run eviction passes and this drain's own disruptions leave room in every
                 PodDisruptionBudget (``migrator.disruption``); with unmigratablePolicy Evict, an
                 eviction for each pod that cannot be migrated
              -> Succeeded; Blocked (a pod can be neither migrated nor evicted: nothing was
                 evicted); Failed (a migration failed, or timeoutSeconds passed first)

A dry-run drain (spec.dryRun) only plans: status.pods says what would move where, and nothing
is cordoned. Deleting a NodeDrain cancels it (phase Cancelled): nothing new starts, migrations in
flight finish (each has its own rollback), and the finalizer ``podmigrate.io/uncordon`` then
uncordons the node if this drain holds the cordon and no other drain of the node does; the
PodMigrations it created follow it (ownerReferences), finished by then.

The Node annotation ``podmigrate.io/drain`` becomes a NodeDrain in ``migrator.controllers.autodrain``;
the watches that feed both reconcilers are wired in ``migrator.watches``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from kubernetes_asyncio import client

from kubeclient.informing import Listing, PodsAndNodes
from kubeclient.reading import plain, read_plain
from kubeclient.resources import MERGE_PATCH, Gone
from migrator import api, claims, disruption, drainplan, tracing
from migrator.api import DrainPhase, PodAction, PodOutcome, UnmigratablePolicy
from migrator.claims import Claims
from migrator.drainplan import DrainSpec, SelectorError
from migrator.reconciling import Record, Recorder, Wait, set_condition
from migrator.units import iso, now
from migrator.units import status_time as parse_time

log = logging.getLogger(__name__)

# A pod that lands on the draining node is judged once it runs; one still Pending after this long is judged as it is.
ARRIVAL_START_GRACE = timedelta(seconds=60)

POLL: Final = 1.0  # how often migrations in flight are looked at (a change of one also pokes its drain)
RETRY: Final = 5.0  # a PodDisruptionBudget or an eviction said "not now": try again after this, as kubectl drain does


def unschedulable(node: Mapping[str, Any]) -> bool:
    return bool((node.get("spec") or {}).get("unschedulable"))


def counts(pods: list[Mapping[str, Any]]) -> dict[str, int]:
    outcomes = Counter(p.get("outcome") for p in pods)
    return {
        "total": len(pods),
        "migrated": outcomes[PodOutcome.MIGRATED],
        "evicted": outcomes[PodOutcome.EVICTED],
        "skipped": outcomes[PodOutcome.SKIPPED],
        "failed": outcomes[PodOutcome.FAILED],
    }


class Drain(Record):
    """A NodeDrain and the status being built for it."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        super().__init__(obj)
        self.spec = DrainSpec.from_spec(obj.get("spec") or {})

    @property
    def node(self) -> str:
        return self.spec.node

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "")

    @property
    def pods(self) -> list[dict[str, Any]]:
        return self.status.setdefault("pods", [])

    def having(self, outcome: PodOutcome) -> list[dict[str, Any]]:
        return [p for p in self.pods if p.get("outcome") == outcome]

    def waiting(self) -> list[dict[str, Any]]:
        """Pods still to be migrated or evicted, in order."""
        return [p for p in self.having(PodOutcome.PENDING) if p.get("action") in (PodAction.MIGRATE, PodAction.EVICT)]

    def in_flight_by_budget(self) -> Counter[str]:
        return Counter(key for p in self.having(PodOutcome.IN_PROGRESS) for key in p.get("disruptionBudgets") or [])

    def before_save(self) -> None:
        self.status["counts"] = counts(self.pods)

    def deadline(self) -> datetime:
        return parse_time(self.status["startTime"]) + timedelta(seconds=self.spec.timeout_seconds)


class World:
    """The cluster as one pass of starts sees it: nodes, every pod, and PodDisruptionBudgets per namespace."""

    def __init__(
        self,
        *,
        nodes: list[dict[str, Any]],
        by_node: Mapping[str, Sequence[Mapping[str, Any]]],
        index: Mapping[tuple[str, str], Mapping[str, Any]],
        claims: Claims,
        policy: client.PolicyV1Api,
    ) -> None:
        self.nodes = nodes
        self.claims = claims
        self.by_node = by_node
        self.index = index
        self._policy = policy
        self._budgets: dict[str, list[disruption.Budget]] = {}
        self.migrations: list[dict[str, Any]] = []  # every PodMigration (for everyone else's disruptions in flight)

    def pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.index.get((namespace, name))

    async def budgets(self, namespace: str) -> list[disruption.Budget]:
        if namespace not in self._budgets:
            listing = await self._policy.list_namespaced_pod_disruption_budget(namespace)
            pdbs = plain(listing).get("items") or []
            self._budgets[namespace] = disruption.budgets(pdbs)
        return self._budgets[namespace]


class NodeDrainReconciler:
    def __init__(
        self,
        *,
        core: client.CoreV1Api,
        custom: client.CustomObjectsApi,
        policy: client.PolicyV1Api,
        poll: float = POLL,
        retry: float = RETRY,
        pods_and_nodes: PodsAndNodes | None = None,
    ) -> None:
        self.core = core
        self.custom = custom
        self.cluster = pods_and_nodes or Listing(core)
        self.recorder = Recorder(core=core, custom=custom, resource=api.NODEDRAINS)
        self.policy = policy
        self.poll = poll
        self.retry = retry
        self._next_eviction: dict[str, float] = {}  # pod uid -> monotonic time of the next attempt (pacing only)
        self.steps = {
            DrainPhase.PENDING: self._cordon,
            DrainPhase.CORDONED: self._plan,
            DrainPhase.DRAINING: self._drain,
        }

    # --- the loop -------------------------------------------------------------------------
    async def reconcile(self, obj: Mapping[str, Any]) -> float | None:
        """Drive one NodeDrain as far as it can go now; seconds until the next look, or None when done."""
        d = Drain(obj)
        try:
            if d.deleting:
                return await self.recorder.attempt(d, lambda: self._cancel(d), save=False)
            if d.phase in api.DRAIN_TERMINAL_PHASES:
                return None
            await self.recorder.hold(d, api.DRAIN_FINALIZER)
            if "startTime" not in d.status:
                d.status.update(
                    phase=DrainPhase.PENDING.value, startTime=iso(now()), pods=[], conditions=[],
                    # One trace for the whole drain: its migrations' traces hang off this root span.
                    traceID=tracing.new_trace_id(), rootSpanID=tracing.new_span_id(),
                )  # fmt: skip
                dry = " (dry run: nothing will be changed)" if d.spec.dry_run else ""
                d.note("Started", f"draining node {d.node}{dry}")
                log.info("nodedrain %s: draining node %s%s", d.name, d.node, dry)
                await self.recorder.save(d)
            while d.phase not in api.DRAIN_TERMINAL_PHASES:
                step = self.steps[DrainPhase(d.phase)]
                delay = await self.recorder.attempt(d, lambda step=step: step(d))
                if delay is not None:
                    return delay
            return None
        except Gone:
            return None

    # --- bookkeeping ----------------------------------------------------------------------
    def _finish(self, d: Drain, phase: DrainPhase, reason: str, message: str) -> None:
        d.status.update(phase=phase.value, reason=reason, message=message, completionTime=iso(now()))
        set_condition(d.status, kind="Complete", value=phase == DrainPhase.SUCCEEDED, reason=reason, message=message)
        d.note(reason, message, warning=phase != DrainPhase.SUCCEEDED)
        log.info("nodedrain %s %s: %s: %s", d.name, phase.value, reason, message)
        self._emit_trace(d)

    def _emit_trace(self, d: Drain) -> None:
        """The drain's root span, with the ids its migrations already name as their parent."""
        if not d.status.get("traceID") or not d.status.get("rootSpanID"):
            return
        c = counts(d.pods)
        failed = d.phase != DrainPhase.SUCCEEDED
        tracing.emit_span(
            name="nodedrain",
            trace_id=d.status["traceID"],
            span_id=d.status["rootSpanID"],
            parent_span_id=None,
            start=parse_time(d.status["startTime"]),
            end=parse_time(d.status.get("completionTime") or iso(now())),
            attributes={
                "podmigrate.drain": d.name, "k8s.node.name": d.node, "podmigrate.outcome": d.phase,
                **{f"podmigrate.pods.{key}": value for key, value in c.items()},
            },
            error=str(d.status.get("message") or d.phase) if failed else None,
        )  # fmt: skip
        tracing.flush()

    @staticmethod
    def _pod_done(entry: dict[str, Any], outcome: PodOutcome, reason: str) -> None:
        entry.update(outcome=outcome.value, reason=reason, completionTime=iso(now()))

    @staticmethod
    def _not_started(entry: dict[str, Any], reason: str) -> None:
        """Recorded as starting, but it never did (the drain was cancelled in between)."""
        for key in ("startTime", "migration", "disruptionBudgets"):
            entry.pop(key, None)
        entry.update(outcome=PodOutcome.PENDING.value, reason=reason)

    def _unmigratable(self, d: Drain, entry: dict[str, Any], why: str) -> None:
        """unmigratablePolicy for a pod found unmigratable while draining: evict it later, or block the drain."""
        for key in ("target", "startTime", "disruptionBudgets"):
            entry.pop(key, None)
        if d.spec.policy == UnmigratablePolicy.EVICT:
            entry.update(
                action=PodAction.EVICT.value,
                outcome=PodOutcome.PENDING.value,
                reason=drainplan.evict_instead(why),
                unmigratable=why,
            )
            return
        self._pod_done(entry, PodOutcome.FAILED, drainplan.not_evicted(why))
        d.status.setdefault("blockedReasons", []).append(f"{entry['namespace']}/{entry['name']}: {why}")
        d.note("Unmigratable", f"pod {entry['namespace']}/{entry['name']} {drainplan.not_evicted(why)}", warning=True)

    # --- reading the world ----------------------------------------------------------------
    async def _node(self, name: str) -> dict[str, Any] | None:
        return await read_plain(self.core.read_node(name))

    async def _pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await read_plain(self.core.read_namespaced_pod(name, namespace))

    async def _drains_of_node(self, d: Drain) -> list[dict[str, Any]]:
        """The node's other NodeDrains."""
        listing = await self.custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.DRAIN_PLURAL)
        return [
            o for o in listing.get("items") or []
            if (o.get("spec") or {}).get("nodeName") == d.node and o["metadata"]["uid"] != d.uid
        ]  # fmt: skip

    async def _world(self, node: str, *, arrived: Sequence[Mapping[str, Any]] = ()) -> World:
        """The nodes and pods (from the caches) and the claims of ``node``'s pods and of ``arrived`` (read now)."""
        # From the caches, grouped by node and indexed by name there already: a pass costs no list of the
        # cluster's pods and no pass over them. What must be current (is the pod still there, with its UID,
        # before its migration starts?) is read directly, in ``_start``.
        nodes, (by_node, index) = await self.cluster.nodes(), await self.cluster.pods_by_node()
        judged = [*by_node.get(node, []), *arrived]
        world = World(
            nodes=nodes, by_node=by_node, index=index, claims=await claims.read_for_pods(self.core, judged), policy=self.policy
        )
        listing = await self.custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.PLURAL)
        world.migrations = list(listing.get("items") or [])
        return world

    async def _set_unschedulable(self, node: str, value: bool) -> None:
        # null removes the field, as kubectl uncordon leaves it.
        await self.core.patch_node(node, {"spec": {"unschedulable": True if value else None}}, _content_type=MERGE_PATCH)

    # --- steps ----------------------------------------------------------------------------
    async def _cordon(self, d: Drain) -> None:
        node = await self._node(d.node)
        if node is None:
            return self._finish(d, DrainPhase.FAILED, "NodeNotFound", f'node "{d.node}" not found')
        if d.spec.dry_run:
            return await self._plan(d)
        others = await self._drains_of_node(d)
        mine = (d.meta.get("creationTimestamp") or "", d.name)
        for other in others:
            theirs = (other["metadata"].get("creationTimestamp") or "", other["metadata"]["name"])
            if api.drain_running(other) and theirs < mine:
                return self._finish(
                    d, DrainPhase.FAILED, "DrainInProgress",
                    f"node {d.node} is already being drained by NodeDrain {other['metadata']['name']}",
                )  # fmt: skip
        if "cordonedByDrain" not in d.status:
            # Recorded before the node is touched, so a cancel after a crash right here still uncordons.
            # A cordon another NodeDrain holds is shared: the last drain holding it releases it.
            held = any((o.get("status") or {}).get("cordonedByDrain") for o in others)
            d.status["cordonedByDrain"] = not unschedulable(node) or held
            await self.recorder.save(d)
        if not unschedulable(node):
            await self._set_unschedulable(d.node, True)
            d.note("Cordoned", f"node {d.node} cordoned")
            set_condition(
                d.status, kind="Cordoned", value=True, reason="Cordoned", message=f"node {d.node} cordoned by this drain"
            )
        else:
            who = "this drain" if d.status["cordonedByDrain"] else "someone else; it stays cordoned when this drain is deleted"
            set_condition(
                d.status,
                kind="Cordoned",
                value=True,
                reason="AlreadyCordoned",
                message=f"node {d.node} was already cordoned (by {who})",
            )
        d.status["phase"] = DrainPhase.CORDONED.value

    async def _plan(self, d: Drain) -> None:
        """List the node's pods once and decide, for each, migrate (and where), evict or leave it."""
        world = await self._world(d.node)
        on_node = world.by_node.get(d.node, [])
        try:
            plan = drainplan.plan(spec=d.spec, pods=on_node, nodes=world.nodes, pods_by_node=world.by_node, claims=world.claims)
        except SelectorError as exc:
            return self._finish(d, DrainPhase.FAILED, "InvalidPodSelector", str(exc))
        d.status["pods"] = [p.entry() for p in plan.pods]
        moves = plan.count(PodAction.MIGRATE)
        summary = f"{moves} pod(s) to migrate, {plan.count(PodAction.EVICT)} to evict, {plan.count(PodAction.SKIP)} left alone"
        if plan.blocked:
            d.status["blockedReasons"] = plan.blocked
            dry = "dry run: the drain would stop here; " if d.spec.dry_run else ""
            return self._finish(
                d, DrainPhase.BLOCKED, "Unmigratable",
                f"{dry}{len(plan.blocked)} pod(s) can be neither migrated nor evicted, so nothing was moved or evicted: "
                + "; ".join(plan.blocked),
            )  # fmt: skip
        if d.spec.dry_run:
            return self._finish(d, DrainPhase.SUCCEEDED, "DryRun", f"dry run: {summary}; nothing was changed")
        d.note("Planned", summary)
        d.status["message"] = summary
        d.status["phase"] = DrainPhase.DRAINING.value

    async def _drain(self, d: Drain) -> None:
        for entry in d.having(PodOutcome.IN_PROGRESS):
            await self._follow(d, entry)
        expired = now() >= d.deadline()
        starting = False
        if not expired and not d.status.get("blockedReasons"):
            starting = await self._adopt_arrivals(d)
        if not expired and not d.status.get("blockedReasons"):
            await self._start(d)
        if d.having(PodOutcome.IN_PROGRESS) or starting:
            raise Wait(self.poll)
        waiting = d.waiting()
        if waiting and not expired and not d.status.get("blockedReasons"):
            raise Wait(self.retry)  # a PodDisruptionBudget said not now
        for entry in waiting:
            if expired:
                self._pod_done(entry, PodOutcome.FAILED, f"not started within timeoutSeconds ({d.spec.timeout_seconds}s)")
            else:
                entry["reason"] = "not started: the drain is blocked"
        c = counts(d.pods)
        tally = f"{c['migrated']} migrated, {c['evicted']} evicted, {c['skipped']} left alone, {c['failed']} failed"
        if d.status.get("blockedReasons"):
            reasons = "; ".join(d.status["blockedReasons"])
            return self._finish(d, DrainPhase.BLOCKED, "Unmigratable", f"stopped ({tally}): cannot be migrated: {reasons}")
        failed = d.having(PodOutcome.FAILED)
        if failed:
            reason = "Timeout" if expired else "MigrationFailed"
            details = "; ".join(f"{p['namespace']}/{p['name']}: {p.get('reason', '')}" for p in failed)
            return self._finish(d, DrainPhase.FAILED, reason, f"node {d.node} not drained ({tally}): {details}")
        self._finish(d, DrainPhase.SUCCEEDED, "Drained", f"node {d.node} drained: {tally}")

    async def _adopt_arrivals(self, d: Drain) -> bool:
        """Pods that landed on the node after the plan (bound by name past the cordon, a DaemonSet's new pod)
        join the drain, judged like the first ones. Not a pod one of this drain's migrations put back here
        after it failed: that one stays, its failure is already recorded.

        A pod that is still starting (Pending, for up to ``ARRIVAL_START_GRACE``) joins once it runs:
        judged while it starts, it would be unmigratable ("no process to checkpoint") and block the
        drain, though a moment later it moves like any other (a flaky end-to-end test showed it).
        True while such a pod is waited for: the drain does not finish before it joins.
        """
        listing = await self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={d.node}")
        known = {entry.get("uid") for entry in d.pods}
        ours = {f"{entry['namespace']}/{entry['migration']}" for entry in d.pods if entry.get("migration")}
        arrived = []
        starting = False
        for item in listing.items:
            pod = plain(item)
            meta = pod["metadata"]
            if meta["uid"] in known or meta.get("deletionTimestamp"):
                continue
            if (meta.get("annotations") or {}).get(api.ANNOTATION_MIGRATION) in ours:
                continue
            created = meta.get("creationTimestamp")
            young = not created or now() - parse_time(created) < ARRIVAL_START_GRACE
            if (pod.get("status") or {}).get("phase") in (None, "", "Pending") and young:
                starting = True
                continue
            arrived.append(pod)
        if not arrived:
            return starting
        world = await self._world(d.node, arrived=arrived)
        try:
            plan = drainplan.plan(spec=d.spec, pods=arrived, nodes=world.nodes, pods_by_node=world.by_node, claims=world.claims)
        except SelectorError:
            return  # the plan already failed the drain for its selector
        names = []
        for p in plan.pods:
            d.status["pods"].append(p.entry())
            names.append(f"{p.namespace}/{p.name}")
        if plan.blocked:
            d.status.setdefault("blockedReasons", []).extend(plan.blocked)
        if names:
            d.note("PodsArrived", f"{len(names)} pod(s) landed on node {d.node} during the drain and join it: {', '.join(names)}")
        return starting

    async def _start(self, d: Drain) -> None:
        """Start migrations (and evictions) while there is room: concurrency, then every PodDisruptionBudget."""
        free = d.spec.max_concurrent - len(d.having(PodOutcome.IN_PROGRESS))
        waiting = d.waiting()
        if free <= 0 or not waiting:
            return
        world = await self._world(d.node)
        windows = disruption.open_windows(d.in_flight_by_budget(), disruption.windows_from_status(d.status.get("budgets") or []))
        d.status["budgets"] = disruption.windows_to_status(windows)
        for entry in waiting:
            if free <= 0 or d.status.get("blockedReasons"):
                return
            pod = await self._pod(entry["namespace"], entry["name"])  # read now: the cache may trail a deletion
            if pod is None or pod["metadata"]["uid"] != entry.get("uid") or pod["spec"].get("nodeName") != d.node:
                self._pod_done(entry, PodOutcome.SKIPPED, "gone from the node before its turn")
                continue
            if pod["metadata"].get("deletionTimestamp"):
                self._pod_done(entry, PodOutcome.SKIPPED, "deleted by someone else before its turn")
                continue
            owner = entry.get("owner") or ""
            busy = [o for o in d.having(PodOutcome.IN_PROGRESS) if owner and o.get("owner") == owner
                    and o["namespace"] == entry["namespace"]]  # fmt: skip
            if busy and entry["action"] == PodAction.MIGRATE:
                # One replica of a controller at a time: each migration takes its pod out of service briefly,
                # so two at once could leave a 2-replica StatefulSet with none (a PDB, if any, is checked too).
                entry["reason"] = f"waiting: {owner}'s pod {busy[0]['name']} is being moved (one at a time per controller)"
                continue
            if entry["action"] == PodAction.MIGRATE:
                assigned: dict[str, list[Mapping[str, Any]]] = {}
                for other in d.having(PodOutcome.IN_PROGRESS):
                    source = world.pod(other["namespace"], other["name"])
                    if other.get("target") and source is not None and source["spec"].get("nodeName") == d.node:
                        assigned.setdefault(other["target"], []).append(source)
                target, why = drainplan.choose_target(
                    pod, spec=d.spec, nodes=world.nodes, pods_by_node=drainplan.with_assignments(world.by_node, assigned),
                    prefer=str(entry.get("target") or ""), claims=world.claims,
                )  # fmt: skip
                if target is None:
                    self._unmigratable(d, entry, why)
                    if entry["action"] != PodAction.EVICT:
                        continue
                else:
                    entry["target"] = target
            budgets = disruption.covering(pod, await world.budgets(entry["namespace"]))
            others = disruption.moving_sources(world.migrations, world.index, except_drain=d.name)
            decision = disruption.check(
                pod, all_budgets=budgets, in_flight=d.in_flight_by_budget(), windows=windows, others=others
            )
            if decision.allowed and entry["action"] == PodAction.MIGRATE:
                decision = await self._dry_run_eviction(pod, decision)
            if decision.refused:
                self._pod_done(entry, PodOutcome.FAILED, f"cannot be disrupted: {decision.reason}")
                continue
            if not decision.allowed:
                entry["reason"] = f"waiting: {decision.reason}; trying again every {self.retry:g}s"
                continue
            windows.update(decision.opens)
            d.status["budgets"] = disruption.windows_to_status(windows)
            entry.update(outcome=PodOutcome.IN_PROGRESS.value, startTime=iso(now()), disruptionBudgets=[b.key for b in budgets])
            if entry["action"] == PodAction.MIGRATE:
                entry["migration"] = drainplan.migration_name(d.node, entry["name"])
                entry["reason"] = f"migrating to {entry['target']}"
                await self.recorder.save(d)  # recorded before the PodMigration exists
                await self._create_migration(d, entry)
            else:
                entry["reason"] = "evicting"
                await self.recorder.save(d)  # recorded before the eviction
                await self._follow_eviction(d, entry)
            free -= 1

    async def _dry_run_eviction(self, pod: Mapping[str, Any], decision: disruption.Decision) -> disruption.Decision:
        """The API server's own PodDisruptionBudget verdict, without evicting anything."""
        meta = pod["metadata"]
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=meta["name"], namespace=meta["namespace"]))
        try:
            await self.core.create_namespaced_pod_eviction(meta["name"], meta["namespace"], body, dry_run="All")
        except client.ApiException as exc:
            if exc.status == 429:
                return disruption.Decision(allowed=False, reason=f"a dry-run eviction was refused: {_api_message(exc)}")
            if exc.status == 500 and "more than one" in _api_message(exc):
                # The eviction API refuses pods under several PDBs outright; so does a drain (it cannot ask).
                return disruption.Decision(allowed=False, reason=_api_message(exc), refused=True)
            if exc.status != 404:  # 404: gone, the next pass sees it
                raise
        return decision

    # --- following pods in flight -----------------------------------------------------------
    async def _follow(self, d: Drain, entry: dict[str, Any]) -> None:
        if entry["action"] == PodAction.MIGRATE:
            await self._follow_migration(d, entry)
        else:
            await self._follow_eviction(d, entry)

    def _ours(self, d: Drain, migration: Mapping[str, Any]) -> bool:
        return any(o.get("uid") == d.uid for o in migration["metadata"].get("ownerReferences") or [])

    async def _create_migration(self, d: Drain, entry: dict[str, Any]) -> None:
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {
                "name": entry["migration"],
                "namespace": entry["namespace"],
                "labels": {api.LABEL_DRAIN: d.name},
                "annotations": self._trace_annotation(d),
                # A namespaced object may have a cluster-scoped owner: deleting the drain deletes its migrations
                # (after the drain's finalizer let them finish).
                "ownerReferences": [
                    {"apiVersion": api.API_VERSION, "kind": api.DRAIN_KIND, "name": d.name, "uid": d.uid, "controller": True}
                ],
            },
            "spec": {
                "podName": entry["name"],
                "targetNode": entry["target"],
                "timeoutSeconds": min(api.DRAIN_MIGRATION_TIMEOUT, d.spec.timeout_seconds),
                **({"deleteEmptyDirData": True} if d.spec.delete_emptydir_data else {}),
            },
        }
        try:
            await self.custom.create_namespaced_custom_object(api.GROUP, api.VERSION, entry["namespace"], api.PLURAL, body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            return  # ours from a pass that died before it could say so, or someone else's: the next look tells
        what = f"pod {entry['namespace']}/{entry['name']} to {entry['target']} (podmigration {entry['migration']})"
        d.note("Migrating", what)

    @staticmethod
    def _trace_annotation(d: Drain) -> dict[str, str]:
        if not d.status.get("traceID") or not d.status.get("rootSpanID"):
            return {}
        return {api.ANNOTATION_TRACEPARENT: tracing.traceparent(trace_id=d.status["traceID"], span_id=d.status["rootSpanID"])}

    async def _follow_migration(self, d: Drain, entry: dict[str, Any]) -> None:
        namespace, name = entry["namespace"], entry["migration"]
        migration = await api.PODMIGRATIONS.get(self.custom, name=name, namespace=namespace)
        if migration is not None and not self._ours(d, migration):
            if migration["metadata"].get("deletionTimestamp") or await self._orphaned(migration):
                entry["reason"] = f"waiting for an older PodMigration {name} to be removed"
                return
            why = f"a PodMigration {namespace}/{name} exists that this drain did not create"
            return self._pod_done(entry, PodOutcome.FAILED, why)
        if migration is None:
            pod = await self._pod(namespace, entry["name"])
            alive = pod is not None and pod["metadata"]["uid"] == entry["uid"] and not pod["metadata"].get("deletionTimestamp")
            if alive and not d.deleting:
                return await self._create_migration(d, entry)  # recorded, then the control service stopped before creating it
            if alive:
                return self._not_started(entry, "not started: the drain was cancelled")
            return self._pod_done(entry, PodOutcome.FAILED, f"its PodMigration {name} was deleted before it finished")
        status = migration.get("status") or {}
        phase = status.get("phase") or api.Phase.PENDING.value
        if phase == api.Phase.SUCCEEDED:
            entry["target"] = status.get("targetNode") or entry.get("target", "")
            return self._pod_done(entry, PodOutcome.MIGRATED, status.get("message") or "migrated")
        if phase == api.Phase.FAILED:
            why = f"{status.get('reason', 'Failed')}: {status.get('message', '')}"
            refused = not status.get("sourceNode") and status.get("reason") not in ("Timeout", "Cancelled", "AlreadyMigrating")
            # Refused before it touched anything: the pod cannot be migrated (another migration of it
            # running is not that: the pod is moving, so this drain reports it failed rather than evicting it).
            if refused:
                self._unmigratable(d, entry, f"its PodMigration refused it: {why}")
                d.note("MigrationRefused", f"pod {entry['namespace']}/{entry['name']}: {why}", warning=True)
                return
            d.note("MigrationFailed", f"pod {entry['namespace']}/{entry['name']}: {why}", warning=True)
            return self._pod_done(entry, PodOutcome.FAILED, f"migration failed: {why}")
        step = f", {status['step']}" if status.get("step") else ""
        entry["reason"] = f"migrating to {entry.get('target')} (podmigration {name}: {phase}{step})"

    async def _orphaned(self, migration: Mapping[str, Any]) -> bool:
        """Does it belong to a NodeDrain that is gone (so the garbage collector is about to delete it)?"""
        for owner in migration["metadata"].get("ownerReferences") or []:
            if owner.get("kind") != api.DRAIN_KIND:
                continue
            drain = await api.NODEDRAINS.get(self.custom, name=owner["name"])
            return drain is None or drain["metadata"]["uid"] != owner.get("uid")
        return False

    async def _follow_eviction(self, d: Drain, entry: dict[str, Any]) -> None:
        """Evict through the Eviction API (PodDisruptionBudgets honoured); 429: again after ``retry`` seconds."""
        namespace, name = entry["namespace"], entry["name"]
        done = drainplan.evicted(str(entry.get("unmigratable") or ""))  # why it was evicted stays in the record
        pod = await self._pod(namespace, name)
        if pod is None or pod["metadata"]["uid"] != entry["uid"]:
            self._next_eviction.pop(entry["uid"], None)
            return self._pod_done(entry, PodOutcome.EVICTED, done)
        if pod["metadata"].get("deletionTimestamp"):
            entry["reason"] = f"{done}; terminating"
            return
        if d.deleting:
            return self._not_started(entry, "not evicted: the drain was cancelled")
        if time.monotonic() < self._next_eviction.get(entry["uid"], 0.0):
            return
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace))
        try:
            await self.core.create_namespaced_pod_eviction(name, namespace, body)
        except client.ApiException as exc:
            if exc.status == 404:
                return self._pod_done(entry, PodOutcome.EVICTED, done)
            if exc.status != 429:
                return self._pod_done(entry, PodOutcome.FAILED, f"eviction failed: {_api_message(exc)}")
            self._next_eviction[entry["uid"]] = time.monotonic() + self.retry
            entry["reason"] = f"eviction refused for now ({_api_message(exc)}); trying again every {self.retry:g}s"
            return
        self._next_eviction.pop(entry["uid"], None)
        entry["reason"] = f"{done}; terminating"
        d.note("Evicting", f"pod {namespace}/{name} evicted")

    # --- cancel ---------------------------------------------------------------------------
    async def _cancel(self, d: Drain) -> None:
        """Deleted: start nothing new, let what is in flight finish, uncordon if this drain holds the cordon, let go."""
        if d.phase not in api.DRAIN_TERMINAL_PHASES:
            for entry in d.waiting():
                entry["reason"] = "not started: the drain was cancelled"
            d.status.update(phase=DrainPhase.CANCELLED.value, reason="Cancelled", message="the NodeDrain was deleted")
            d.note("Cancelled", "the NodeDrain was deleted: nothing new starts; what is in flight finishes", warning=True)
            await self.recorder.save(d)
        for entry in d.having(PodOutcome.IN_PROGRESS):
            await self._follow(d, entry)
        if d.having(PodOutcome.IN_PROGRESS):
            d.status["message"] = f"cancelled; waiting for {len(d.having(PodOutcome.IN_PROGRESS))} pod(s) in flight"
            raise Wait(self.poll)
        if d.phase == DrainPhase.CANCELLED and "completionTime" not in d.status:
            c = counts(d.pods)
            d.status.update(
                completionTime=iso(now()),
                message=f"cancelled: {c['migrated']} migrated, {c['evicted']} evicted, {c['failed']} failed before it stopped",
            )
            set_condition(d.status, kind="Complete", value=False, reason="Cancelled", message=d.status["message"])
            self._emit_trace(d)
            await self.recorder.save(d)
        if d.status.get("cordonedByDrain"):
            others = await self._drains_of_node(d)
            holders = [
                o["metadata"]["name"] for o in others
                if (o.get("status") or {}).get("cordonedByDrain") and not o["metadata"].get("deletionTimestamp")
            ]  # fmt: skip
            if not holders:
                try:
                    await self._set_unschedulable(d.node, False)
                    await self.recorder.event(d, "Uncordoned", f"node {d.node} uncordoned")
                except client.ApiException as exc:
                    if exc.status != 404:
                        raise
        await self._release(d)

    async def _release(self, d: Drain) -> None:
        await self.recorder.release(d, api.DRAIN_FINALIZER)


def _api_message(exc: client.ApiException) -> str:
    """The API server's own words (a 429 names the PodDisruptionBudget)."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    causes = [c.get("message") for c in (body.get("details") or {}).get("causes") or [] if c.get("message")]
    message = body.get("message") or exc.reason or str(exc.status)
    return f"{message} {'; '.join(causes)}".strip() if causes else str(message)
