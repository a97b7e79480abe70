"""What draining a node means for each of its pods, decided without touching anything.

Pure functions over the objects as the API returns them (JSON-shaped dicts) and a NodeDrain's
spec, shared by the NodeDrain reconciler and ``kubectl migrate drain --dry-run``, so that the
preview and the real drain cannot disagree. The pods are classified as ``kubectl drain`` does:

- not considered at all: pods the podSelector does not select;
- left alone (``skip``): static (mirror) pods, DaemonSet pods (with ignoreDaemonSets), finished
  pods and pods already being deleted;
- blocking whatever the policy (kubectl drain refuses these too): DaemonSet pods without
  ignoreDaemonSets (emptyDir files move with their pods: kubectl drain's refusal of them has no
  reason here, and deleteEmptyDirData only says to leave them behind);
- unmigratable (``unmigratablePolicy`` decides: evict them, or stop Blocked): pods a
  PodMigration would refuse (``migrator.movability``: host network, hostPath or persistent
  volumes, devices, not Running, an owner whose replacement cannot be restored) and pods no
  node can take;
- everything else is migrated, each to the node that fits best, counting the pods this drain
  already sends there, so a drain spreads its pods instead of piling them on the emptiest node.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from migrator import placement
from migrator.api import PodAction, PodOutcome, UnmigratablePolicy
from migrator.claims import Claims
from migrator.movability import controller_of, empty_dirs, is_control_service, obstacles

NAME_LIMIT: Final = 63  # PodMigration names from a drain, and NodeDrain names (they become label values)


# --- the spec, with the CRD's defaults ------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class DrainSpec:
    node: str
    target_nodes: tuple[str, ...] = ()
    target_selector: Mapping[str, str] = field(default_factory=dict)
    pod_selector: str = ""
    max_concurrent: int = 2
    timeout_seconds: int = 1800
    policy: UnmigratablePolicy = UnmigratablePolicy.BLOCK
    delete_emptydir_data: bool = False
    ignore_daemonsets: bool = True
    dry_run: bool = False

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> DrainSpec:
        """A NodeDrain's ``spec`` (defaults filled in as the API server's schema would)."""
        return cls(
            node=str(spec["nodeName"]),
            target_nodes=tuple(spec.get("targetNodes") or ()),
            target_selector=dict(spec.get("targetSelector") or {}),
            pod_selector=str(spec.get("podSelector") or ""),
            max_concurrent=int(spec.get("maxConcurrent") or 2),
            timeout_seconds=int(spec.get("timeoutSeconds") or 1800),
            policy=UnmigratablePolicy(spec.get("unmigratablePolicy") or UnmigratablePolicy.BLOCK),
            delete_emptydir_data=bool(spec.get("deleteEmptyDirData", False)),
            ignore_daemonsets=bool(spec.get("ignoreDaemonSets", True)),
            dry_run=bool(spec.get("dryRun", False)),
        )


# --- label selectors --------------------------------------------------------------------------
class SelectorError(ValueError):
    """A podSelector that kubectl would not accept either."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator in ("=", "in"):
            return value is not None and value in self.values
        if self.operator in ("!=", "notin"):
            return value is None or value not in self.values
        if self.operator == "exists":
            return value is not None
        return value is None  # "!"


_KEY = r"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_TERM = re.compile(rf"^({_KEY})\s+(in|notin)\s+\(([^()]*)\)$")
_EQUALITY_TERM = re.compile(rf"^({_KEY})\s*(==|!=|=)\s*({_VALUE})$")
_EXISTS_TERM = re.compile(rf"^(!?)\s*({_KEY})$")


def _split_terms(text: str) -> list[str]:
    """Commas separate terms, except inside ``in (a, b)``."""
    terms, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [t.strip() for t in terms]


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """A label selector in kubectl's syntax: ``app=web,tier!=db,env in (a,b),!legacy,canary``; empty selects all."""
    if not text.strip():
        return ()
    requirements = []
    for term in _split_terms(text):
        if match := _SET_TERM.match(term):
            values = tuple(v.strip() for v in match.group(3).split(","))
            if not all(values) or not all(re.fullmatch(_VALUE, v) for v in values):
                raise SelectorError(f'invalid values in "{term}"')
            requirements.append(Requirement(match.group(1), match.group(2), values))
        elif match := _EQUALITY_TERM.match(term):
            op = "=" if match.group(2) == "==" else match.group(2)
            requirements.append(Requirement(match.group(1), op, (match.group(3),)))
        elif match := _EXISTS_TERM.match(term):
            requirements.append(Requirement(match.group(2), "!" if match.group(1) else "exists"))
        else:
            raise SelectorError(f'invalid label selector term "{term}" in "{text}"')
    return tuple(requirements)


def selector_matches(requirements: Iterable[Requirement], labels: Mapping[str, str] | None) -> bool:
    return all(r.matches(labels or {}) for r in requirements)


def label_selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """A metav1.LabelSelector (matchLabels, matchExpressions); as in policy/v1, null selects nothing, {} everything."""
    if selector is None:
        return False
    labels = labels or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        if expr.get("operator") not in ops:
            return False
        if not Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ())).matches(labels):
            return False
    return True


# --- names -----------------------------------------------------------------------------------
def _fit(name: str, *, seed: str, limit: int = NAME_LIMIT) -> str:
    """``name`` if it fits in ``limit``; else a prefix of it and a hash of ``seed`` (still unique, still valid)."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(seed.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-.')}-{digest}"


def migration_name(node: str, pod: str) -> str:
    """The PodMigration a drain of ``node`` creates for ``pod`` (in the pod's namespace)."""
    return _fit(f"drain-{node}-{pod}", seed=f"{node}/{pod}")


def auto_drain_name(node: str) -> str:
    """The NodeDrain the ``podmigrate.io/drain`` node annotation asks for."""
    return _fit(f"auto-{node}", seed=node)


def drain_generate_name(node: str) -> str:
    """``generateName`` for a NodeDrain of ``node``: the API server appends 5 characters."""
    return f"{node[: NAME_LIMIT - 6].rstrip('-.')}-"


# --- one pod ---------------------------------------------------------------------------------
def owner_of(pod: Mapping[str, Any]) -> str:
    """``Kind/name`` of the pod's controller; empty for a bare pod."""
    owner = controller_of(pod)
    return f"{owner['kind']}/{owner['name']}" if owner else ""


def pod_key(pod: Mapping[str, Any]) -> tuple[str, str]:
    return str(pod["metadata"].get("namespace", "")), str(pod["metadata"]["name"])


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """A pod judged on its own merits, before any node is considered."""

    action: PodAction
    reason: str = ""
    blocks: bool = False  # blocks the drain whatever unmigratablePolicy says
    unmigratable: bool = False  # cannot be migrated: unmigratablePolicy decides


def judge(pod: Mapping[str, Any], *, spec: DrainSpec, claims: Claims | None = None) -> Verdict:
    """The pod's fate in this drain, from what ``movability`` says stands in the way of moving it."""
    if is_control_service(pod) and not (pod["metadata"].get("deletionTimestamp")):
        # Its replicas keep no state (migrations resume from status) and it cannot checkpoint itself: it is
        # evicted as kubectl drain would, whatever unmigratablePolicy says; its PodDisruptionBudget keeps one.
        return Verdict(action=PodAction.EVICT, reason="podmigrate's own control service: evicted (another replica leads on)")
    found = obstacles(pod, claims=claims)
    skip = next((o for o in found if o.kind == "skip"), None)
    if skip is not None:
        owner = (controller_of(pod) or {}).get("name")
        phase = (pod.get("status") or {}).get("phase")
        if skip.reason == "DaemonSetPod" and not spec.ignore_daemonsets:
            why = f"managed by DaemonSet {owner}: it can neither move nor leave (set ignoreDaemonSets to drain anyway)"
            return Verdict(action=PodAction.SKIP, blocks=True, reason=why)
        said = {  # how kubectl drain's users know these
            "StaticPod": "static (mirror) pod: the kubelet owns it",
            "PodNotRunning": f"finished ({phase}): nothing runs to move",
            "PodTerminating": "already being deleted",
            "DaemonSetPod": f"DaemonSet pod ({owner}): stays, it tolerates the cordon",
        }
        return Verdict(action=PodAction.SKIP, reason=said.get(skip.reason, skip.message))
    never = next((o for o in found if o.kind == "never"), None)
    if never is not None:
        return Verdict(action=PodAction.MIGRATE, unmigratable=True, reason=never.message)
    dirs = empty_dirs(pod)
    if dirs and spec.delete_emptydir_data:
        reason = "emptyDir files left behind (deleteEmptyDirData)"
    else:
        reason = f"with its emptyDir files ({', '.join(dirs)})" if dirs else ""
    return Verdict(action=PodAction.MIGRATE, reason=reason)


# --- where to -----------------------------------------------------------------------------------
def candidate_nodes(spec: DrainSpec, nodes: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The nodes a drain may send pods to: targetNodes, or those with targetSelector's labels, or all; never its own."""
    chosen = []
    for node in nodes:
        name = node["metadata"]["name"]
        labels = node["metadata"].get("labels") or {}
        if name == spec.node:
            continue
        if spec.target_nodes and name not in spec.target_nodes:
            continue
        if any(labels.get(k) != v for k, v in spec.target_selector.items()):
            continue
        chosen.append(node)
    return chosen


def with_assignments(
    pods_by_node: Mapping[str, Sequence[Mapping[str, Any]]], assigned: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, list[Mapping[str, Any]]]:
    """The pods per node, plus those this drain has sent there but that have not landed yet."""
    merged = {node: list(pods) for node, pods in pods_by_node.items()}
    for node, pods in assigned.items():
        there = {pod_key(p) for p in merged.get(node, [])}
        merged.setdefault(node, []).extend(p for p in pods if pod_key(p) not in there)
    return merged


def choose_target(
    pod: Mapping[str, Any],
    *,
    spec: DrainSpec,
    nodes: Sequence[Mapping[str, Any]],
    pods_by_node: Mapping[str, Sequence[Mapping[str, Any]]],
    prefer: str = "",
    claims: Claims | None = None,
) -> tuple[str | None, str]:
    """The node for ``pod`` (``prefer`` while it still fits), or None and why no node can take it."""
    candidates = candidate_nodes(spec, nodes)
    by_node: Mapping[str, list[Mapping[str, Any]]] = {k: list(v) for k, v in pods_by_node.items()}
    source = next((n for n in nodes if n["metadata"]["name"] == spec.node), None)
    runtime = placement.runtime_of(source) if source is not None else None
    preferred = next((n for n in candidates if n["metadata"]["name"] == prefer), None)
    fits = preferred is not None and placement.check(
        pod=pod, node=preferred, pods_on_node=by_node.get(prefer, []), runtime=runtime, claims=claims
    )
    if fits and fits.fits:
        return prefer, ""
    best, verdicts = placement.choose(
        pod=pod, nodes=candidates, pods_by_node=by_node, exclude=spec.node, runtime=runtime, claims=claims
    )
    if best is not None:
        return best.node, ""
    missing = [n for n in spec.target_nodes if n not in {c["metadata"]["name"] for c in candidates}]
    reasons = [v.reason for v in verdicts] + [f"node {n} not found" for n in missing]
    if not reasons:
        reasons = ["no node matches targetSelector" if spec.target_selector else "the cluster has no other node"]
    return None, "no node can take it: " + "; ".join(reasons)


# --- the whole node -----------------------------------------------------------------------------
@dataclass(kw_only=True)
class PodPlan:
    namespace: str
    name: str
    uid: str
    owner: str
    action: PodAction
    reason: str = ""
    target: str = ""
    blocks: bool = False
    unmigratable: str = ""  # why it cannot be migrated (kept for the outcome of an eviction instead)

    def entry(self) -> dict[str, Any]:
        """The pod's line in NodeDrain ``status.pods`` before anything has happened to it."""
        if self.blocks:
            outcome = PodOutcome.FAILED
        else:
            outcome = PodOutcome.SKIPPED if self.action == PodAction.SKIP else PodOutcome.PENDING
        record: dict[str, Any] = {
            "namespace": self.namespace, "name": self.name, "uid": self.uid, "owner": self.owner,
            "action": self.action.value, "outcome": outcome.value, "reason": self.reason,
        }  # fmt: skip
        if self.target:
            record["target"] = self.target
        if self.unmigratable:
            record["unmigratable"] = self.unmigratable
        return record


@dataclass(kw_only=True)
class Plan:
    pods: list[PodPlan]  # the pods the podSelector selects, by namespace and name
    blocked: list[str]  # "<namespace>/<name>: why"; non-empty means the drain stops Blocked before it starts
    unselected: int = 0  # pods on the node the podSelector left out

    def count(self, action: PodAction) -> int:
        return sum(1 for p in self.pods if p.action == action and not p.blocks)


def evict_instead(why: str) -> str:
    return f"cannot be migrated ({why}); to be evicted instead (unmigratablePolicy Evict)"


def evicted(why: str) -> str:
    """The outcome of an eviction, with why the pod was evicted rather than migrated (if it was)."""
    return f"evicted: it cannot be migrated ({why})" if why else "evicted"


def not_evicted(why: str) -> str:
    return f"cannot be migrated: {why} (unmigratablePolicy Block: not evicted)"


def unmigratable(plan: PodPlan, why: str, *, policy: UnmigratablePolicy) -> str | None:
    """Apply unmigratablePolicy to a pod that cannot be migrated; the blocking reason, or None if it is to be evicted."""
    if policy == UnmigratablePolicy.EVICT:
        plan.action, plan.target, plan.reason, plan.unmigratable = PodAction.EVICT, "", evict_instead(why), why
        return None
    plan.blocks, plan.reason = True, not_evicted(why)
    return f"{plan.namespace}/{plan.name}: {why}"


def plan(
    *,
    spec: DrainSpec,
    pods: Iterable[Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]],
    pods_by_node: Mapping[str, Sequence[Mapping[str, Any]]],
    claims: Claims | None = None,
) -> Plan:
    """Classify the node's ``pods`` and give each pod to migrate its target, spreading them.

    ``claims`` are the persistent volume claims the pods mount (``claims.read_all``).

    ``pods_by_node`` is every node's pods (as placement needs them); the targets chosen here are
    counted as they are made, so two pods that each fit a node alone do not both go there if
    together they do not. Raises ``SelectorError`` for a bad podSelector.
    """
    selector = parse_selector(spec.pod_selector)
    every = list(pods)
    selected = [p for p in every if selector_matches(selector, p["metadata"].get("labels"))]
    assigned: dict[str, list[Mapping[str, Any]]] = {}
    plans, blocked = [], []
    for pod in sorted(selected, key=pod_key):
        namespace, name = pod_key(pod)
        verdict = judge(pod, spec=spec, claims=claims)
        p = PodPlan(
            namespace=namespace, name=name, uid=str(pod["metadata"].get("uid", "")), owner=owner_of(pod),
            action=verdict.action, reason=verdict.reason, blocks=verdict.blocks,
        )  # fmt: skip
        plans.append(p)
        if verdict.blocks:
            blocked.append(f"{namespace}/{name}: {verdict.reason}")
            continue
        if verdict.unmigratable:
            if why := unmigratable(p, verdict.reason, policy=spec.policy):
                blocked.append(why)
            continue
        if p.action != PodAction.MIGRATE:
            continue
        target, why = choose_target(
            pod, spec=spec, nodes=nodes, pods_by_node=with_assignments(pods_by_node, assigned), claims=claims
        )
        if target is None:
            if blocking := unmigratable(p, why, policy=spec.policy):
                blocked.append(blocking)
            continue
        p.target = target
        assigned.setdefault(target, []).append(pod)
    return Plan(pods=plans, blocked=blocked, unselected=len(every) - len(selected))
