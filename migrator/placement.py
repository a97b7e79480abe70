"""Which node can take a pod: the scheduler's hard rules, checked before anything is frozen.

A migration bypasses the scheduler (the replacement pod is bound to its node by name, because
its memory must land where its checkpoint is restored), so the control service must refuse a
target the scheduler would have refused: not Ready, cordoned, a taint the pod does not
tolerate, a node selector or required node affinity it does not match, or not enough
allocatable CPU, memory or pod slots left. And one rule the scheduler does not have: the
target must run the same container runtime as the source, because a checkpoint archive is
the runtime's own format (containerd restores only from its own archives, which carry its
``status.dump``; a CRI-O archive lacks it). Among the nodes that fit, the one with the most
free resources wins, which spreads a drain's pods.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from migrator import claims as claim_facts
from migrator.claims import Claims

_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity ("250m", "64Mi", "1e3", 2) in base units."""
    if isinstance(text, int | float):
        return float(text)
    match = _QUANTITY.match(text.strip())
    if not match or match.group(2) not in ("", *_SUFFIXES):
        raise ValueError(f"invalid quantity {text!r}")
    return float(match.group(1)) * _SUFFIXES.get(match.group(2), 1)


def pod_requests(pod: Mapping[str, Any]) -> dict[str, float]:
    """Effective requests: max(sum of containers, each init container), like the scheduler."""
    total: dict[str, float] = {}
    for c in pod["spec"].get("containers") or []:
        for key, value in ((c.get("resources") or {}).get("requests") or {}).items():
            total[key] = total.get(key, 0.0) + parse_quantity(value)
    for c in pod["spec"].get("initContainers") or []:
        for key, value in ((c.get("resources") or {}).get("requests") or {}).items():
            total[key] = max(total.get(key, 0.0), parse_quantity(value))
    return total


@dataclass(frozen=True, kw_only=True)
class Verdict:
    node: str
    fits: bool
    reason: str = ""
    free_score: float = 0.0
    pods: int = 0  # pods on the node already: the tie-break when scores tie (pods without requests)


def _is_ready(node: Mapping[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (node.get("status") or {}).get("conditions") or [])


def _tolerated(taint: Mapping[str, Any], tolerations: Iterable[Mapping[str, Any]]) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        op = tol.get("operator") or "Equal"
        if not tol.get("key") and op == "Exists":
            return True
        if tol.get("key") != taint.get("key"):
            continue
        if op == "Exists" or tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def _match_expression(expr: Mapping[str, Any], value: str | None) -> bool:
    op, values = expr["operator"], expr.get("values") or []
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and values:
        try:
            return int(value) > int(values[0]) if op == "Gt" else int(value) < int(values[0])
        except ValueError:
            return False
    return False


def _affinity_ok(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    required = (
        ((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
        or {}
    ).get("nodeSelectorTerms")
    return _terms_match(required, node)


def _terms_match(required: Iterable[Mapping[str, Any]] | None, node: Mapping[str, Any]) -> bool:
    """Does ``node`` match a list of nodeSelectorTerms (a pod's required node affinity, a volume's)?"""
    if not required:
        return True
    labels = node["metadata"].get("labels") or {}
    fields = {"metadata.name": node["metadata"]["name"]}
    for term in required:  # terms are ORed, expressions ANDed
        exprs_ok = all(_match_expression(e, labels.get(e["key"])) for e in term.get("matchExpressions") or [])
        fields_ok = all(_match_expression(e, fields.get(e["key"])) for e in term.get("matchFields") or [])
        if exprs_ok and fields_ok and (term.get("matchExpressions") or term.get("matchFields")):
            return True
    return False


def volume_misfit(*, pod: Mapping[str, Any], node: Mapping[str, Any], claims: Claims | None) -> str | None:
    """Why ``node`` cannot mount one of the pod's persistent volumes (outside its node affinity), or None."""
    for volume, claim in claim_facts.of_pod(pod, claims or {}).items():
        if claim.node_terms and not _terms_match(claim.node_terms, node):
            name = node["metadata"]["name"]
            return f"node {name} is outside the node affinity of persistent volume {claim.volume} (volume {volume})"
    return None


def runtime_of(node: Mapping[str, Any]) -> str:
    """The node's container runtime by name (``containerd``, ``cri-o``), from ``containerRuntimeVersion``."""
    version = str(((node.get("status") or {}).get("nodeInfo") or {}).get("containerRuntimeVersion") or "")
    return version.partition("://")[0].lower()


def check(
    *,
    pod: Mapping[str, Any],
    node: Mapping[str, Any],
    pods_on_node: Iterable[Mapping[str, Any]],
    runtime: str | None = None,
    claims: Claims | None = None,
) -> Verdict:
    """Would the scheduler put ``pod`` on ``node``, given the pods already there (and runs it ``runtime``, if given)?

    With ``claims``, the node must also be inside the node affinity of every persistent volume
    the pod mounts, as the scheduler's volume binding requires.
    """
    name = node["metadata"]["name"]
    if runtime is not None and runtime_of(node) != runtime:
        theirs, ours = runtime_of(node) or "an unknown runtime", runtime or "an unknown one"
        why = f"node {name} runs {theirs}, the pod's node runs {ours}: a checkpoint restores only on the runtime that wrote it"
        return Verdict(node=name, fits=False, reason=why)
    if not _is_ready(node):
        return Verdict(node=name, fits=False, reason=f"node {name} is not Ready")
    if (node.get("spec") or {}).get("unschedulable"):
        return Verdict(node=name, fits=False, reason=f"node {name} is cordoned (unschedulable)")
    tolerations = pod["spec"].get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(taint, tolerations):
            return Verdict(
                node=name, fits=False, reason=f"node {name} has taint {taint['key']}:{taint['effect']} the pod does not tolerate"
            )
    labels = node["metadata"].get("labels") or {}
    for key, value in (pod["spec"].get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return Verdict(node=name, fits=False, reason=f"node {name} does not match nodeSelector {key}={value}")
    if not _affinity_ok(pod, node):
        return Verdict(node=name, fits=False, reason=f"node {name} does not match the pod's required node affinity")
    if why := volume_misfit(pod=pod, node=node, claims=claims):
        return Verdict(node=name, fits=False, reason=why)
    allocatable = {k: parse_quantity(v) for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()}
    used: dict[str, float] = {}
    count = 0
    for other in pods_on_node:
        if (other.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        count += 1
        for key, value in pod_requests(other).items():
            used[key] = used.get(key, 0.0) + value
    if "pods" in allocatable and count + 1 > allocatable["pods"]:
        return Verdict(node=name, fits=False, reason=f"node {name} has no pod slot left ({count} pods)")
    score = 0.0
    for key, want in pod_requests(pod).items():
        if key not in allocatable:
            continue
        free = allocatable[key] - used.get(key, 0.0)
        if want > free:
            return Verdict(node=name, fits=False, reason=f"node {name} has {free:g} {key} free, the pod requests {want:g}")
    for key in ("cpu", "memory"):
        if allocatable.get(key):
            score += (allocatable[key] - used.get(key, 0.0) - pod_requests(pod).get(key, 0.0)) / allocatable[key]
    return Verdict(node=name, fits=True, free_score=score, pods=count)


def choose(
    *,
    pod: Mapping[str, Any],
    nodes: Iterable[Mapping[str, Any]],
    pods_by_node: Mapping[str, list[Mapping[str, Any]]],
    exclude: str,
    runtime: str | None = None,
    claims: Claims | None = None,
) -> tuple[Verdict | None, list[Verdict]]:
    """The best node for ``pod`` other than ``exclude`` (its current node), and every verdict."""
    verdicts = [
        check(pod=pod, node=node, pods_on_node=pods_by_node.get(node["metadata"]["name"], []), runtime=runtime, claims=claims)
        for node in nodes
        if node["metadata"]["name"] != exclude
    ]
    # Most free resources first; on a tie (pods without requests change no score), the least-loaded node, so a
    # drain spreads such pods instead of sending them all to the first node by name.
    fitting = sorted((v for v in verdicts if v.fits), key=lambda v: (-round(v.free_score, 9), v.pods, v.node))
    return (fitting[0] if fitting else None), verdicts
