"""The kubelet's volume manager, for the volume types a local node can honestly provide.

emptyDir, configMap, secret, downwardAPI, projected (including the ServiceAccount token the
API server's admission adds to every pod, fetched with the TokenRequest API as a real kubelet
does) and hostPath. Anything else (PVCs, CSI) is refused with a clear message rather than
faked. Paths follow the kubelet's layout under the pod directory so that a checkpoint's
bind mounts look like a real node's.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client


class VolumeError(RuntimeError):
    """CreateContainerConfigError: a volume cannot be prepared."""


def _write_files(directory: Path, files: dict[str, bytes], *, mode: int) -> None:
    """Replace a volume directory's content atomically enough for a starting pod."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for rel, data in files.items():
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        os.chmod(target, mode)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def _select(data: dict[str, bytes], items: list[dict[str, Any]] | None, *, what: str, optional: bool) -> dict[str, bytes]:
    if not items:
        return data
    out: dict[str, bytes] = {}
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise VolumeError(f"{what}: key {item['key']!r} not found")
        out[item["path"]] = data[item["key"]]
    return out


def field_value(pod: dict[str, Any], path: str) -> str:
    """Resolve a downward-API fieldRef (metadata.name, status.podIP, metadata.labels['x'], ...)."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
    }
    if path in simple:
        return simple[path]
    for prefix, source in (
        ("metadata.labels", meta.get("labels") or {}),
        ("metadata.annotations", meta.get("annotations") or {}),
    ):
        if path == prefix:
            return "\n".join(f'{k}="{v}"' for k, v in sorted(source.items()))
        if path.startswith(prefix + "['") and path.endswith("']"):
            return source.get(path[len(prefix) + 2 : -2], "")
    raise VolumeError(f"unsupported fieldRef {path!r}")


class VolumeManager:
    def __init__(self, *, core: client.CoreV1Api, pod_dir: Path) -> None:
        self._core = core
        self._pod_dir = pod_dir

    async def _config_map(self, namespace: str, name: str, *, optional: bool) -> dict[str, bytes]:
        try:
            cm = await self._core.read_namespaced_config_map(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise VolumeError(f'configmap "{name}" not found') from None
        data = {k: v.encode() for k, v in (cm.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        return data

    async def _secret(self, namespace: str, name: str, *, optional: bool) -> dict[str, bytes]:
        try:
            secret = await self._core.read_namespaced_secret(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise VolumeError(f'secret "{name}" not found') from None
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    async def _token(self, pod: dict[str, Any], source: dict[str, Any]) -> bytes:
        meta = pod["metadata"]
        body = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[source["audience"]] if source.get("audience") else [],
                expiration_seconds=source.get("expirationSeconds", 3607),
                bound_object_ref=client.V1BoundObjectReference(kind="Pod", api_version="v1", name=meta["name"], uid=meta["uid"]),
            )
        )
        sa = pod["spec"].get("serviceAccountName") or "default"
        result = await self._core.create_namespaced_service_account_token(sa, meta["namespace"], body)
        return result.status.token.encode()

    async def prepare(self, pod: dict[str, Any]) -> dict[str, Path]:
        """Materialise every volume of the pod; returns volume name -> host path."""
        namespace = pod["metadata"]["namespace"]
        paths: dict[str, Path] = {}
        for vol in pod["spec"].get("volumes") or []:
            name = vol["name"]
            if "emptyDir" in vol:
                path = self._pod_dir / "volumes" / "kubernetes.io~empty-dir" / name
                path.mkdir(parents=True, exist_ok=True)
            elif "hostPath" in vol:
                path = Path(vol["hostPath"]["path"])
                kind = vol["hostPath"].get("type") or ""
                if kind == "DirectoryOrCreate":
                    path.mkdir(parents=True, exist_ok=True)
                elif kind == "FileOrCreate" and not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                elif kind and not path.exists():
                    raise VolumeError(f"hostPath {path} does not exist")
            elif "configMap" in vol:
                src = vol["configMap"]
                optional = bool(src.get("optional"))
                data = await self._config_map(namespace, src["name"], optional=optional)
                path = self._pod_dir / "volumes" / "kubernetes.io~configmap" / name
                files = _select(data, src.get("items"), what=f'configmap "{src["name"]}"', optional=optional)
                _write_files(path, files, mode=src.get("defaultMode", 0o644))
            elif "secret" in vol:
                src = vol["secret"]
                optional = bool(src.get("optional"))
                data = await self._secret(namespace, src["secretName"], optional=optional)
                path = self._pod_dir / "volumes" / "kubernetes.io~secret" / name
                files = _select(data, src.get("items"), what=f'secret "{src["secretName"]}"', optional=optional)
                _write_files(path, files, mode=src.get("defaultMode", 0o644))
            elif "downwardAPI" in vol:
                path = self._pod_dir / "volumes" / "kubernetes.io~downward-api" / name
                files = {i["path"]: field_value(pod, i["fieldRef"]["fieldPath"]).encode() for i in vol["downwardAPI"]["items"]}
                _write_files(path, files, mode=vol["downwardAPI"].get("defaultMode", 0o644))
            elif "projected" in vol:
                files = {}
                for source in vol["projected"].get("sources") or []:
                    if "serviceAccountToken" in source:
                        files[source["serviceAccountToken"]["path"]] = await self._token(pod, source["serviceAccountToken"])
                    elif "configMap" in source:
                        src = source["configMap"]
                        optional = bool(src.get("optional"))
                        data = await self._config_map(namespace, src["name"], optional=optional)
                        files.update(_select(data, src.get("items"), what=f'configmap "{src["name"]}"', optional=optional))
                    elif "secret" in source:
                        src = source["secret"]
                        optional = bool(src.get("optional"))
                        data = await self._secret(namespace, src["name"], optional=optional)
                        files.update(_select(data, src.get("items"), what=f'secret "{src["name"]}"', optional=optional))
                    elif "downwardAPI" in source:
                        for item in source["downwardAPI"]["items"]:
                            files[item["path"]] = field_value(pod, item["fieldRef"]["fieldPath"]).encode()
                path = self._pod_dir / "volumes" / "kubernetes.io~projected" / name
                _write_files(path, files, mode=vol["projected"].get("defaultMode", 0o644))
            else:
                kinds = sorted(k for k in vol if k != "name")
                raise VolumeError(f"volume {name!r}: type {kinds} is not supported by this node")
            paths[name] = path
        return paths
