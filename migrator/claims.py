"""A pod's persistent volumes as the API describes them: the facts ``movability`` and ``placement`` judge.

Why a module of its own: whether a pod with a PersistentVolumeClaim can move depends on objects
other than the pod (the claim, and the PersistentVolume it is bound to), which every path that
starts a move must read the same way: ``kubectl migrate pod``, the PodMigration's Validate step,
drains (their plan and its ``--dry-run`` preview) and the eviction webhook. Reading happens here,
once per caller (one pod's claims, or every claim for a drain); judging stays pure.

What is read, and why it is enough:

* the claim's phase and bound volume (a claim that is not Bound has nothing to carry yet);
* the volume's access modes: ``ReadWriteMany``/``ReadOnlyMany`` storage is mounted on any node at
  once, so the target mounts the same data while the source is frozen, and a process holding a
  file open there finds it at the same path and size. ``ReadWriteOnce`` would need the volume
  detached from the source and attached to the target with the pod frozen in between
  (VolumeAttachment, CSI): not supported, and refused before anything freezes;
* the volume's node affinity (``spec.nodeAffinity.required``): a local volume, or any volume
  whose topology excludes the target, cannot follow the pod there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from kubeclient.reading import plain, read_plain

SHARED_MODES = frozenset({"ReadWriteMany", "ReadOnlyMany"})


@dataclass(frozen=True, kw_only=True)
class Claim:
    namespace: str
    name: str
    found: bool
    bound: bool = False
    volume: str = ""
    access_modes: frozenset[str] = frozenset()
    node_terms: tuple[Mapping[str, Any], ...] = ()  # the volume's required nodeSelectorTerms (ORed); () = anywhere
    source: str = ""  # what backs the volume: hostPath, local, nfs, csi:<driver>, ...

    @property
    def shared(self) -> bool:
        return bool(self.access_modes & SHARED_MODES)


Claims = Mapping[tuple[str, str], Claim]  # (namespace, claim name) -> facts


def claim_names(pod: Mapping[str, Any]) -> dict[str, str]:
    """volume name -> claim name, for PVC volumes and generic ephemeral volumes (claim ``<pod>-<volume>``)."""
    out: dict[str, str] = {}
    pod_name = pod["metadata"].get("name", "")
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        if "persistentVolumeClaim" in vol:
            out[vol["name"]] = vol["persistentVolumeClaim"]["claimName"]
        elif "ephemeral" in vol:
            out[vol["name"]] = f"{pod_name}-{vol['name']}"
    return out


def _source(spec: Mapping[str, Any]) -> str:
    if "csi" in spec:
        return f"csi:{spec['csi'].get('driver', '')}"
    known = ("hostPath", "local", "nfs", "iscsi", "fc", "cephfs", "rbd", "glusterfs", "azureFile", "azureDisk",
             "gcePersistentDisk", "awsElasticBlockStore", "vsphereVolume", "portworxVolume", "flexVolume")  # fmt: skip
    return next((k for k in known if k in spec), "unknown")


def from_objects(*, pvcs: Iterable[Mapping[str, Any]], pvs: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Claim]:
    """Facts of every claim in ``pvcs``, with the volumes in ``pvs`` they are bound to."""
    volumes = {pv["metadata"]["name"]: pv for pv in pvs}
    out: dict[tuple[str, str], Claim] = {}
    for pvc in pvcs:
        meta, spec, status = pvc["metadata"], pvc.get("spec") or {}, pvc.get("status") or {}
        key = (meta["namespace"], meta["name"])
        volume = spec.get("volumeName") or ""
        pv = volumes.get(volume)
        if status.get("phase") != "Bound" or pv is None:
            out[key] = Claim(namespace=key[0], name=key[1], found=True, volume=volume)
            continue
        pv_spec = pv.get("spec") or {}
        terms = (((pv_spec.get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms")) or []
        out[key] = Claim(
            namespace=key[0], name=key[1], found=True, bound=True, volume=volume,
            access_modes=frozenset(pv_spec.get("accessModes") or status.get("accessModes") or []),
            node_terms=tuple(terms), source=_source(pv_spec),
        )  # fmt: skip
    return out


async def read_for_pod(core: client.CoreV1Api, pod: Mapping[str, Any]) -> dict[tuple[str, str], Claim]:
    """The facts of ``pod``'s claims (a claim that does not exist is recorded as not found)."""
    return await read_for_pods(core, [pod])


async def read_for_pods(core: client.CoreV1Api, pods: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Claim]:
    """The facts of the claims these pods mount, each read once: what a drain judges, in a cluster of any size.

    Two reads per claim (the claim, its volume) and none for a pod without one, where listing every
    claim and volume of the cluster would cost the same for each pass of each drain however few
    the node's pods mount.
    """
    wanted = sorted({(pod["metadata"]["namespace"], name) for pod in pods for name in claim_names(pod).values()})
    out: dict[tuple[str, str], Claim] = {}
    for namespace, name in wanted:
        pvc = await read_plain(core.read_namespaced_persistent_volume_claim(name, namespace))
        if pvc is None:
            out[(namespace, name)] = Claim(namespace=namespace, name=name, found=False)
            continue
        volume = (pvc.get("spec") or {}).get("volumeName")
        pv = await read_plain(core.read_persistent_volume(volume)) if volume else None
        out.update(from_objects(pvcs=[pvc], pvs=[pv] if pv else []))
    return out


async def read_all(core: client.CoreV1Api) -> dict[tuple[str, str], Claim]:
    """Every claim in the cluster with its volume, in two lists (a one-shot preview of a drain from the CLI)."""
    pvcs = (await core.list_persistent_volume_claim_for_all_namespaces()).items
    pvs = (await core.list_persistent_volume()).items
    return from_objects(pvcs=[plain(p) for p in pvcs], pvs=[plain(p) for p in pvs])


def of_pod(pod: Mapping[str, Any], claims: Claims) -> dict[str, Claim]:
    """volume name -> facts of its claim (not found when ``claims`` has no record of it)."""
    namespace = pod["metadata"].get("namespace", "")
    return {
        vol: claims.get((namespace, name)) or Claim(namespace=namespace, name=name, found=False)
        for vol, name in claim_names(pod).items()
    }
