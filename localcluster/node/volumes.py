"""The kubelet's volume manager, for the volume types a local node can honestly provide.

emptyDir (a tmpfs for ``medium: Memory``), configMap, secret, downwardAPI, projected (including the ServiceAccount token the
API server's admission adds to every pod, fetched with the TokenRequest API as a real kubelet
does) and hostPath. Anything else (PVCs, CSI) is refused with a clear message rather than
faked. Paths follow the kubelet's layout under the pod directory so that a checkpoint's
bind mounts look like a real node's.

Permissions are the kubelet's, because pods that run as a non-root user must read what it
writes: configMap, secret, downwardAPI and projected files get ``defaultMode`` (0644 unless the
pod says otherwise) or their item's ``mode``; a projected ServiceAccount token is 0600 and owned
by the pods' common ``runAsUser`` when there is one (or when an ``fsGroup`` is set); emptyDir
directories are 0777; and with an ``fsGroup`` every volume but hostPath is chowned to that group
with group read (and write, for emptyDir) and setgid directories.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from localcluster.node.securitycontext import fs_user


class VolumeError(RuntimeError):
    """CreateContainerConfigError: a volume cannot be prepared."""


@dataclass(frozen=True)
class File:
    """One file of a configMap/secret/downwardAPI/projected volume: its content, and mode/owner if not the default."""

    data: bytes
    mode: int | None = None
    uid: int | None = None


def _write_files(directory: Path, files: dict[str, File], *, mode: int) -> None:
    """Replace a volume directory's content atomically enough for a starting pod."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    os.chmod(tmp, 0o755)
    for rel, file in files.items():
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.data)
        os.chmod(target, mode if file.mode is None else file.mode)
        if file.uid is not None:
            os.chown(target, file.uid, -1)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def _select(data: dict[str, bytes], items: list[dict[str, Any]] | None, *, what: str, optional: bool) -> dict[str, File]:
    """The files a configMap/secret source projects: every key, or the listed items (with their ``mode``)."""
    if not items:
        return {k: File(v) for k, v in data.items()}
    out: dict[str, File] = {}
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise VolumeError(f"{what}: key {item['key']!r} not found")
        out[item["path"]] = File(data[item["key"]], mode=item.get("mode"))
    return out


def _downward(pod: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, File]:
    return {i["path"]: File(field_value(pod, i["fieldRef"]["fieldPath"]).encode(), mode=i.get("mode")) for i in items}


def apply_fs_group(path: Path, gid: int, *, writable: bool) -> None:
    """The kubelet's ``SetVolumeOwnership``: group ``gid`` on everything, group read (and write when the
    volume is writable), setgid and group search on directories."""
    mask = 0o660 if writable else 0o440
    for dirpath, dirnames, filenames in os.walk(path):
        for entry in [Path(dirpath), *(Path(dirpath, n) for n in dirnames + filenames)]:
            st = entry.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue
            os.chown(entry, -1, gid)
            extra = mask | (stat.S_ISGID | 0o110 if stat.S_ISDIR(st.st_mode) else 0)
            os.chmod(entry, stat.S_IMODE(st.st_mode) | extra)


def quantity_bytes(quantity: str | None) -> int | None:
    """A memory/storage quantity ("64Mi", "1G", "512") in bytes; None when not set."""
    if not quantity:
        return None
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(float(quantity))


async def _mount_tmpfs(path: Path, *, size: int | None) -> None:
    """A memory-backed emptyDir: a tmpfs on the volume's directory (``size=`` its sizeLimit), as the kubelet
    mounts it; the pod's teardown unmounts it. No ``mode=``: a tmpfs root is 1777, as on a real node."""
    if os.path.ismount(path):
        return
    proc = await asyncio.create_subprocess_exec(
        "mount", "-t", "tmpfs", *(["-o", f"size={size}"] if size else []), "tmpfs", str(path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise VolumeError(f"mounting tmpfs for emptyDir {path.name}: {err.decode().strip()}")


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
        fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
        token_owner = fs_user(pod["spec"])
        paths: dict[str, Path] = {}
        for vol in pod["spec"].get("volumes") or []:
            name = vol["name"]
            writable = False
            if "emptyDir" in vol:
                path = self._pod_dir / "volumes" / "kubernetes.io~empty-dir" / name
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o777)  # the kubelet's: any container user may write it
                if (vol["emptyDir"] or {}).get("medium") == "Memory":
                    await _mount_tmpfs(path, size=quantity_bytes((vol["emptyDir"] or {}).get("sizeLimit")))
                writable = True
            elif "hostPath" in vol:
                paths[name] = self._host_path(vol["hostPath"])
                continue  # never chowned to the fsGroup
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
                files = _downward(pod, vol["downwardAPI"]["items"])
                _write_files(path, files, mode=vol["downwardAPI"].get("defaultMode", 0o644))
            elif "projected" in vol:
                files = {}
                for source in vol["projected"].get("sources") or []:
                    if "serviceAccountToken" in source:
                        token = await self._token(pod, source["serviceAccountToken"])
                        if token_owner is not None or fs_group is not None:
                            files[source["serviceAccountToken"]["path"]] = File(token, mode=0o600, uid=token_owner)
                        else:
                            files[source["serviceAccountToken"]["path"]] = File(token)
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
                        files.update(_downward(pod, source["downwardAPI"]["items"]))
                path = self._pod_dir / "volumes" / "kubernetes.io~projected" / name
                _write_files(path, files, mode=vol["projected"].get("defaultMode", 0o644))
            else:
                kinds = sorted(k for k in vol if k != "name")
                raise VolumeError(f"volume {name!r}: type {kinds} is not supported by this node")
            if fs_group is not None:
                apply_fs_group(path, int(fs_group), writable=writable)
            paths[name] = path
        return paths

    @staticmethod
    def _host_path(source: dict[str, Any]) -> Path:
        """A hostPath volume, its ``type`` checked (and ``...OrCreate`` created) as the kubelet does."""
        path = Path(source["path"])
        kind = source.get("type") or ""
        if kind == "DirectoryOrCreate":
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        elif kind == "FileOrCreate" and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o644)
        checks = {
            "Directory": (Path.is_dir, "a directory"),
            "DirectoryOrCreate": (Path.is_dir, "a directory"),
            "File": (Path.is_file, "a file"),
            "FileOrCreate": (Path.is_file, "a file"),
            "Socket": (Path.is_socket, "a socket"),
            "CharDevice": (Path.is_char_device, "a character device"),
            "BlockDevice": (Path.is_block_device, "a block device"),
        }
        if kind in checks:
            check, what = checks[kind]
            if not check(path):
                raise VolumeError(f"hostPath type check failed: {path} is not {what}")
        elif kind:
            raise VolumeError(f"hostPath {path}: unsupported type {kind!r}")
        return path
