"""Persistent volumes: which follow a pod (``migrator.claims`` read, ``movability`` and ``placement`` judge)."""

from __future__ import annotations

from typing import Any

import pytest

from migrator import claims, movability, placement
from tests.fakekube import FakeKube, make_node


def pvc_pod(*volumes: dict[str, Any], name: str = "db") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "img"}], "volumes": list(volumes)},
        "status": {"phase": "Running"},
    }


def claim_volume(claim: str, name: str = "data") -> dict[str, Any]:
    return {"name": name, "persistentVolumeClaim": {"claimName": claim}}


def world() -> FakeKube:
    kube = FakeKube()
    kube.add_volume("pv-shared", claim=("shop", "shared"), modes=["ReadWriteMany"])
    kube.add_volume("pv-readonly", claim=("shop", "reference"), modes=["ReadOnlyMany"])
    kube.add_volume("pv-single", claim=("shop", "single"), modes=["ReadWriteOnce"])
    kube.add_volume("pv-local", claim=("shop", "local"), modes=["ReadWriteMany"], node="node-1")
    kube.claims[("shop", "waiting")] = {
        "metadata": {"name": "waiting", "namespace": "shop"},
        "spec": {},
        "status": {"phase": "Pending"},
    }
    return kube


async def test_facts_are_read_from_the_claim_and_its_volume() -> None:
    kube = world()
    pod = pvc_pod(claim_volume("shared"), claim_volume("local", "cache"), {"name": "tmp", "emptyDir": {}})
    facts = await claims.read_for_pod(kube, pod)  # type: ignore[arg-type]
    shared, local = facts[("shop", "shared")], facts[("shop", "local")]
    assert shared.bound and shared.shared and shared.volume == "pv-shared" and shared.source == "hostPath"
    assert shared.node_terms == ()
    assert local.node_terms and local.node_terms[0]["matchExpressions"][0]["values"] == ["node-1"]
    assert await claims.read_all(kube) == {  # type: ignore[arg-type]
        **facts, **await claims.read_for_pod(kube, pvc_pod(claim_volume("single"), claim_volume("reference", "r"),
                                                           claim_volume("waiting", "w"))),  # type: ignore[arg-type]
    }  # fmt: skip


def test_generic_ephemeral_volumes_are_claims_named_after_the_pod() -> None:
    pod = pvc_pod({"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}}, claim_volume("shared"), name="web")
    assert claims.claim_names(pod) == {"scratch": "web-scratch", "data": "shared"}


@pytest.mark.parametrize(
    ("claim", "refusal"),
    [
        ("shared", None),
        ("reference", None),
        ("single", "mounts persistent volume pv-single (claim single, ReadWriteOnce): only storage that every node mounts"),
        ("waiting", "mounts volume data of claim waiting, which is not bound to a volume"),
        ("missing", "mounts volume data of claim missing, which does not exist"),
    ],
)
async def test_only_storage_every_node_mounts_at_once_follows_the_pod(claim: str, refusal: str | None) -> None:
    pod = pvc_pod(claim_volume(claim))
    facts = await claims.read_for_pod(world(), pod)  # type: ignore[arg-type]
    found = movability.first_refusal(pod, claims=facts)
    if refusal is None:
        assert found is None
    else:
        assert found is not None and found.reason == "PersistentVolume" and found.kind == "never"
        assert found.message.startswith(refusal), found.message


def test_claims_nobody_looked_up_are_refused() -> None:
    found = movability.first_refusal(pvc_pod(claim_volume("shared")))
    assert found is not None and "was not looked up" in found.message


async def test_the_target_stays_inside_the_volumes_node_affinity() -> None:
    pod = pvc_pod(claim_volume("local"))
    facts = await claims.read_for_pod(world(), pod)  # type: ignore[arg-type]
    nodes = [make_node(f"node-{i}") for i in (1, 2, 3)]
    for node in nodes:
        node["metadata"].setdefault("labels", {})["kubernetes.io/hostname"] = node["metadata"]["name"]
    best, verdicts = placement.choose(pod=pod, nodes=nodes, pods_by_node={}, exclude="node-1", claims=facts)
    assert best is None
    assert [v.reason for v in verdicts] == [
        "node node-2 is outside the node affinity of persistent volume pv-local (volume data)",
        "node node-3 is outside the node affinity of persistent volume pv-local (volume data)",
    ]
    shared = pvc_pod(claim_volume("shared"))
    best, _ = placement.choose(pod=shared, nodes=nodes, pods_by_node={}, exclude="node-1",
                               claims=await claims.read_for_pod(world(), shared))  # type: ignore[arg-type]  # fmt: skip
    assert best is not None and best.node in ("node-2", "node-3")


async def test_a_drains_claims_are_read_per_claim_its_pods_mount_each_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No list of the cluster's claims and volumes: a pass costs two reads per claim mounted, none without one."""
    kube = world()
    reads: list[str] = []
    read_claim, read_volume = kube.read_namespaced_persistent_volume_claim, kube.read_persistent_volume

    async def claim(name: str, namespace: str, **kwargs: Any) -> Any:
        reads.append(f"pvc {namespace}/{name}")
        return await read_claim(name, namespace, **kwargs)

    async def volume(name: str, **kwargs: Any) -> Any:
        reads.append(f"pv {name}")
        return await read_volume(name, **kwargs)

    async def listed(*_: Any, **__: Any) -> Any:
        raise AssertionError("listed every claim or volume")

    monkeypatch.setattr(kube, "read_namespaced_persistent_volume_claim", claim)
    monkeypatch.setattr(kube, "read_persistent_volume", volume)
    monkeypatch.setattr(kube, "list_persistent_volume_claim_for_all_namespaces", listed)
    monkeypatch.setattr(kube, "list_persistent_volume", listed)
    pods = [
        pvc_pod(claim_volume("shared"), name="a"),
        pvc_pod(claim_volume("shared"), claim_volume("missing", "m"), name="b"),
        pvc_pod({"name": "tmp", "emptyDir": {}}, name="c"),
    ]
    facts = await claims.read_for_pods(kube, pods)  # type: ignore[arg-type]
    assert sorted(facts) == [("shop", "missing"), ("shop", "shared")]
    assert facts[("shop", "shared")].shared and not facts[("shop", "missing")].found
    assert reads == ["pvc shop/missing", "pvc shop/shared", "pv pv-shared"]
    reads.clear()
    assert await claims.read_for_pods(kube, [pods[2]]) == {} and reads == []  # type: ignore[arg-type]
