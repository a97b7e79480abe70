"""Containers: CRI-O's half of the node (OCI spec, root filesystem, stdio, logs, exits).

The kubelet half (``pods``) decides *what* should run and hands this module a
``ContainerRequest``, the same facts a real kubelet sends in a CRI ``CreateContainer``:
image, command, env, mounts, annotations, labels, log path. This module turns that into an
OCI bundle the way CRI-O does, including the ``io.kubernetes.cri-o.Annotations`` annotation
that a later restore requires, and runs it with runc.

Details that matter for checkpoint/restore, learnt the hard way (docs/facts.md, "CRIU and runc"):

* stdio are pipes owned by this process (as conmon does), never host files: CRIU cannot
  dump an fd to a file outside the container's mounts, and runc re-attaches dumped stdio
  pipes to new ones on restore;
* the root filesystem is an overlay of the image, so the container's changes are exactly
  the upper directory: that is the archive's ``rootfs-diff.tar``;
* this process is a child subreaper, so container init processes (and restored ones)
  become its children after runc exits, and their exit codes can be collected.

Security and host namespaces follow CRI-O's translation of what the kubelet sends (the
kubelet's own half, which decides *what* to ask for, is ``securitycontext``): the process user
resolved against the image's ``/etc/passwd`` and ``/etc/group``, CRI-O's default capabilities
changed by ``capabilities.add/drop``, everything the host has for ``privileged`` (capabilities,
devices, no masked paths, ``/sys`` writable), and no pid/ipc/network namespace entry for
``hostPID``/``hostIPC``/``hostNetwork``. The podmigrate install runs a privileged host-network
agent and a non-root, read-only, capability-less controller on every node, so a stand-in that
ran everything as uid 0 in private namespaces would hide exactly the permission mistakes a real
node shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localcluster import nodesetup
from localcluster.node import checkpointfiles
from localcluster.node.images import LocalImage
from localcluster.node.runc import Runc, RuncError
from ocicheckpoint import names, safetar

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# CRI-O's default capabilities.
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_KILL",
]
MASKED_PATHS = [
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
]
# runc reads CRIU options from the file this annotation names (default /etc/criu/runc.conf):
# the knob a CRI-O node's operator has for checkpoint/restore behaviour.
CRIU_CONFIG_ANNOTATION = "org.criu.config"
READONLY_PATHS = ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
# Linux capability names by number (linux/capability.h): the bits of /proc/self/status' CapBnd.
CAPABILITY_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN",
    "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
# What libcontainer's HostDevices() leaves out when a privileged container gets the host's devices.
HOST_DEVICE_SKIPPED_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})
# Mount propagation of a bind mount, as CRI-O writes it (the kubelet's None/HostToContainer/Bidirectional).
PROPAGATIONS = ("rprivate", "rslave", "rshared")


class ContainerError(RuntimeError):
    """CreateContainerError / RunContainerError, with the runtime's message."""

    def __init__(self, message: str, *, reason: str = "CreateContainerError") -> None:
        super().__init__(message)
        self.reason = reason


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


@dataclass(frozen=True, kw_only=True)
class Mount:
    container_path: str
    host_path: str
    readonly: bool = False
    propagation: str = "rprivate"  # one of PROPAGATIONS


@dataclass(frozen=True, kw_only=True)
class Sandbox:
    """What CRI-O knows of a pod sandbox: identity, its namespaces, its directory.

    ``netns_path`` is None for a ``hostNetwork`` pod: its containers stay in the node's network
    namespace. The UTS namespace stays private even then, with the node's name as hostname: the
    machine's own hostname belongs to no node, and a pod on the host network of a real node sees
    that node's name.
    """

    uid: str
    name: str
    namespace: str
    hostname: str
    netns_path: Path | None
    directory: Path
    ip: str = ""  # empty on the host network: CRI-O reports no sandbox IP there
    host_pid: bool = False
    host_ipc: bool = False

    @property
    def host_network(self) -> bool:
        return self.netns_path is None


@dataclass(frozen=True, kw_only=True)
class SecurityContext:
    """CRI's LinuxContainerSecurityContext: what the kubelet resolved (``securitycontext``) for CRI-O.

    ``run_as_user`` is the effective one, the image's uid when the pod names none (the kubelet
    fills it in); ``run_as_username`` is set instead when the image names its user.
    """

    run_as_user: int | None = None
    run_as_username: str = ""
    run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    privileged: bool = False
    readonly_rootfs: bool = False
    no_new_privs: bool = False
    add_capabilities: tuple[str, ...] = ()
    drop_capabilities: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ProcessUser:
    """The container process' credentials, as CRI-O puts them in ``process.user``."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


@dataclass(kw_only=True)
class ContainerRequest:
    """A CRI CreateContainer request, as the kubelet half builds it."""

    name: str
    attempt: int
    image_name: str
    image: LocalImage
    command: list[str]
    args: list[str]
    env: list[str]
    working_dir: str
    mounts: list[Mount]
    annotations: dict[str, str]
    labels: dict[str, str]
    log_path: Path
    memory_limit: int | None = None
    cpu_shares: int | None = None
    security: SecurityContext = field(default_factory=SecurityContext)


@dataclass(kw_only=True)
class Container:
    id: str
    sandbox: Sandbox
    request: ContainerRequest
    bundle: Path
    pid: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    restored: bool = False
    stdin_w: int = -1
    log_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.started_at is not None and self.exit_code is None

    @property
    def rootfs(self) -> Path:
        return self.bundle / "rootfs"

    @property
    def upper(self) -> Path:
        return self.bundle / "upper"


def _spec_env(request: ContainerRequest) -> list[str]:
    env: dict[str, str] = {}
    for item in [DEFAULT_PATH, *request.image.config.env, *request.env]:
        key, _, value = item.partition("=")
        env[key] = value
    return [f"{k}={v}" for k, v in env.items()]


def resolve_argv(*, command: list[str], args: list[str], entrypoint: tuple[str, ...], cmd: tuple[str, ...]) -> list[str]:
    """Kubernetes' rule for combining the pod's command/args with the image's entrypoint/cmd."""
    if command:
        return [*command, *args]
    if args:
        return [*entrypoint, *args]
    return [*entrypoint, *cmd]


def _image_file(root: Path, path: str) -> Path | None:
    """``path`` in an image's root filesystem, symlinks followed inside that root (never out of it), as
    CRI-O's securejoin does; None when it is not a regular file there."""
    pending = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p] + pending
            continue
        resolved.append(part)
    found = root.joinpath(*resolved)
    return found if found.is_file() else None


def _entries(root: Path, path: str) -> list[list[str]]:
    """The colon-separated lines of the image's /etc/passwd or /etc/group (none if it has no such file)."""
    found = _image_file(root, path)
    if found is None:
        return []
    lines = found.read_text(errors="replace").splitlines()
    return [line.split(":") for line in lines if line.strip() and not line.startswith("#")]


def resolve_user(*, root: Path, security: SecurityContext, image_user: str) -> ProcessUser:
    """CRI-O's process user: the user (name or uid, and ``:group``) looked up in the image's passwd and
    group files the way runc's ``GetExecUser`` does, then ``runAsGroup`` and the supplemental groups.

    The user is ``run_as_username``, else ``run_as_user``, else the image's ``User``. When it is the
    image's own user, the group the image names with it (``User: "65532:65532"``) applies too.
    """
    user = security.run_as_username or ("" if security.run_as_user is None else str(security.run_as_user)) or image_user
    if ":" in image_user and image_user.split(":", 1)[0] == user:
        user = image_user
    name, _, group = user.partition(":")
    name = name or "0"
    passwd = [e for e in _entries(root, "/etc/passwd") if len(e) >= 4 and e[2].isdigit() and e[3].isdigit()]
    entry = next((e for e in passwd if e[0] == name or (name.isdigit() and int(e[2]) == int(name))), None)
    if entry is not None:
        uid, gid, username = int(entry[2]), int(entry[3]), entry[0]
    elif name.isdigit():
        uid, gid, username = int(name), 0, ""
    else:
        raise ContainerError(f"unable to find user {name}: no matching entries in passwd file")
    groups = [e for e in _entries(root, "/etc/group") if len(e) >= 3 and e[2].isdigit()]
    sgids: list[int] = []
    if group:
        match = next((e for e in groups if e[0] == group or (group.isdigit() and int(e[2]) == int(group))), None)
        if match is not None:
            gid = int(match[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise ContainerError(f"unable to find group {group}: no matching entries in group file")
    elif username:
        sgids = [int(e[2]) for e in groups if len(e) >= 4 and username in e[3].split(",")]
    if security.run_as_group is not None:
        gid = security.run_as_group
    additional = list(dict.fromkeys([gid, *sgids, *security.supplemental_groups]))
    return ProcessUser(uid=uid, gid=gid, additional_gids=tuple(additional))


def host_capabilities() -> list[str]:
    """Every capability this node process may hand out: its bounding set (what "all" means for
    privileged containers, as containerd's ``WithAllCurrentCapabilities``; a capability outside it
    would make runc fail)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            bits = int(line.split()[1], 16)
            return [cap for i, cap in enumerate(CAPABILITY_NAMES) if bits >> i & 1]
    return list(CAPABILITY_NAMES)


def capabilities(security: SecurityContext) -> list[str]:
    """CRI-O's ``setupCapabilities``: its defaults, plus ``add``, minus ``drop``; ``ALL`` in ``add`` starts
    from every capability, in ``drop`` from none. ``privileged`` ignores both and gets everything."""
    known = host_capabilities()
    if security.privileged:
        return known

    def prefixed(cap: str) -> str:
        return cap if cap.upper().startswith("CAP_") else "CAP_" + cap.upper()

    add_all = any(c.upper() == "ALL" for c in security.add_capabilities)
    drop_all = any(c.upper() == "ALL" for c in security.drop_capabilities)
    caps: list[str] = []
    if add_all:
        caps = list(known)
    if drop_all:
        caps = []
    to_add = [c for c in security.add_capabilities if c.upper() != "ALL"]
    if not (add_all or drop_all):
        to_add += DEFAULT_CAPABILITIES
    for cap in map(prefixed, to_add):
        if cap not in CAPABILITY_NAMES:
            raise ContainerError(f'unknown capability "{cap}" to add')
        if cap not in caps:
            caps.append(cap)
    for cap in (prefixed(c) for c in security.drop_capabilities if c.upper() != "ALL"):
        if cap not in CAPABILITY_NAMES:
            raise ContainerError(f"failed to drop cap {cap} invalid capability: {cap}")
        if cap in caps:
            caps.remove(cap)
    return caps


def host_devices(dev: Path = Path("/dev")) -> list[dict[str, Any]]:
    """The host's device nodes as OCI ``linux.devices`` (what CRI-O gives a privileged container)."""
    found: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(dev):
        dirnames[:] = sorted(d for d in dirnames if d not in HOST_DEVICE_SKIPPED_DIRS)
        for name in sorted(filenames):
            if name == "console":
                continue
            path = Path(dirpath, name)
            try:
                st = path.lstat()
            except OSError:
                continue
            if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                continue
            found.append(
                {
                    "path": str(path),
                    "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                    "major": os.major(st.st_rdev),
                    "minor": os.minor(st.st_rdev),
                    "fileMode": stat.S_IMODE(st.st_mode),
                    "uid": st.st_uid,
                    "gid": st.st_gid,
                }
            )
    return found


def _mount_table(mountinfo: str) -> dict[str, list[str]]:
    """Mount point -> its optional fields (``shared:N``, ``master:N``...); the topmost mount of a point wins."""
    table: dict[str, list[str]] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        table[point] = fields[6 : fields.index("-", 6)]
    return table


def check_propagation(mounts: Sequence[Mount], *, mountinfo: str | None = None) -> None:
    """CRI-O's ``ensureShared`` / ``ensureSharedOrSlave``: an ``rshared`` bind needs its source on a shared
    mount, an ``rslave`` one on a shared or slave mount, or nothing mounted there later would reach the
    container. (A systemd host's ``/`` is shared; this machine's is not, so the local cluster makes its
    nodes' directory a shared mount of its own.)"""
    table = _mount_table(Path("/proc/self/mountinfo").read_text() if mountinfo is None else mountinfo)
    for m in mounts:
        if m.propagation == "rprivate":
            continue
        source = point = os.path.realpath(m.host_path)
        while point not in table and point != "/":
            point = os.path.dirname(point)
        optional = table.get(point, [])
        if m.propagation == "rshared" and not any(o.startswith("shared:") for o in optional):
            raise ContainerError(f'path "{source}" is mounted on "{point}" but it is not a shared mount')
        if m.propagation == "rslave" and not any(o.startswith(("shared:", "master:")) for o in optional):
            raise ContainerError(f'path "{source}" is mounted on "{point}" but it is not a shared or slave mount')


def oci_spec(
    *, sandbox: Sandbox, request: ContainerRequest, container_id: str, cgroups_path: str, criu_config: Path | None = None
) -> dict[str, Any]:
    """The OCI runtime spec CRI-O would generate for this container.

    Not honoured (accepted and ignored, as on a node without the feature): ``seccompProfile``
    (no seccomp filter is installed, RuntimeDefault included), AppArmor and SELinux options, and
    ``procMount`` (always Default). Every other field of the CRI security context is.
    """
    cfg = request.image.config
    sec = request.security
    argv = resolve_argv(command=request.command, args=request.args, entrypoint=cfg.entrypoint, cmd=cfg.cmd)
    if not argv:
        raise ContainerError("no command specified")
    user = resolve_user(root=request.image.root, security=sec, image_user=request.image.user)
    caps = capabilities(sec)
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        # hostIPC: the host's /dev/shm (CRI-O's sandbox shm path is then /dev/shm itself). The mqueue
        # filesystem below shows the IPC namespace of whoever mounts it: the host's, without an ipc entry.
        {"destination": "/dev/shm", "type": "bind", "source": "/dev/shm", "options": ["rbind", "nosuid", "noexec", "nodev"]}
        if sandbox.host_ipc
        else {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "rw" if sec.privileged else "ro"],
        },
        {
            "destination": "/etc/hostname",
            "type": "bind",
            "source": str(sandbox.directory / "hostname"),
            "options": ["rbind", "ro"],
        },
    ]
    # Shallow destinations first, as CRI-O and containerd order them: a mount at /tmp must not cover
    # one at /tmp/a/b that the pod asked for too.
    for m in sorted(request.mounts, key=lambda m: Path(m.container_path).as_posix().rstrip("/").count("/")):
        if m.propagation not in PROPAGATIONS:
            raise ContainerError(f"invalid mount propagation {m.propagation!r} for {m.container_path}")
        mounts.append(
            {
                "destination": m.container_path,
                "type": "bind",
                "source": m.host_path,
                "options": ["rbind", m.propagation, "ro" if m.readonly else "rw"],
            }
        )
    memory: dict[str, int] = {"limit": request.memory_limit} if request.memory_limit else {}
    cpu: dict[str, int] = {"shares": request.cpu_shares} if request.cpu_shares else {}
    annotations = {
        names.CRIO_ANNOTATIONS_KEY: json.dumps(request.annotations, sort_keys=True),
        "io.kubernetes.cri-o.Labels": json.dumps(request.labels, sort_keys=True),
        "io.container.manager": "cri-o",
        "io.kubernetes.cri-o.Metadata": json.dumps({"name": request.name, "attempt": request.attempt}),
        "io.kubernetes.cri-o.Name": f"k8s_{request.name}_{sandbox.name}_{sandbox.namespace}_{sandbox.uid}_{request.attempt}",
        "io.kubernetes.cri-o.SandboxName": f"k8s_{sandbox.name}_{sandbox.namespace}_{sandbox.uid}_0",
        "io.kubernetes.cri-o.Created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "io.kubernetes.cri-o.ContainerType": "container",
        "io.kubernetes.cri-o.ContainerID": container_id,
        "io.kubernetes.cri-o.SandboxID": sandbox.uid,
        "io.kubernetes.cri-o.Image": request.image.image_id,
        "io.kubernetes.cri-o.ImageName": request.image_name,
        "io.kubernetes.cri-o.LogPath": str(request.log_path),
        "io.kubernetes.pod.name": sandbox.name,
        "io.kubernetes.pod.namespace": sandbox.namespace,
        "io.kubernetes.pod.uid": sandbox.uid,
        "io.kubernetes.container.name": request.name,
    }
    if sandbox.ip:
        annotations["io.kubernetes.cri-o.IP.0"] = sandbox.ip
    if criu_config is not None:
        annotations[CRIU_CONFIG_ANNOTATION] = str(criu_config)
    namespaces: list[dict[str, str]] = []
    if not sandbox.host_pid:
        namespaces.append({"type": "pid"})
    if not sandbox.host_ipc:
        namespaces.append({"type": "ipc"})
    namespaces += [{"type": "uts"}, {"type": "mount"}]
    if sandbox.netns_path is not None:
        namespaces.append({"type": "network", "path": str(sandbox.netns_path)})
    linux: dict[str, Any] = {
        "cgroupsPath": cgroups_path,
        "resources": {"devices": [{"allow": sec.privileged, "access": "rwm"}], "memory": memory, "cpu": cpu},
        "namespaces": namespaces,
        "maskedPaths": [] if sec.privileged else MASKED_PATHS,
        "readonlyPaths": [] if sec.privileged else READONLY_PATHS,
    }
    if sec.privileged:
        linux["devices"] = host_devices()
    propagations = {m.propagation for m in request.mounts}
    if "rshared" in propagations:
        linux["rootfsPropagation"] = "rshared"
    elif "rslave" in propagations:
        linux["rootfsPropagation"] = "rslave"
    process_user: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        process_user["additionalGids"] = list(user.additional_gids)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": process_user,
            "args": argv,
            "env": _spec_env(request),
            "cwd": request.working_dir or cfg.working_dir or "/",
            "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": sec.no_new_privs,
        },
        "root": {"path": "rootfs", "readonly": sec.readonly_rootfs},
        "hostname": sandbox.hostname,
        "mounts": mounts,
        "annotations": annotations,
        "linux": linux,
    }


def _cri_log_line(stream: str, line: bytes) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    partial = "F" if line.endswith(b"\n") else "P"
    return f"{now} {stream} {partial} ".encode() + line.rstrip(b"\n") + b"\n"


async def _pump(fd: int, *, stream: str, log_path: Path) -> None:
    """Copy a container's output pipe into its CRI-format log file until the pipe closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
    try:
        with log_path.open("ab", buffering=0) as out:
            while line := await reader.readline():
                out.write(_cri_log_line(stream, line))
    except (asyncio.CancelledError, ValueError):
        pass
    finally:
        transport.close()


def format_cri_log(data: bytes, *, tail: int | None = None, timestamps: bool = False) -> bytes:
    """CRI-format log lines as ``kubectl logs`` shows them (partial lines joined)."""
    lines = data.splitlines()
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    out = bytearray()
    for raw in lines:
        parts = raw.split(b" ", 3)
        if len(parts) < 4:
            continue
        ts, _stream, tag, text = parts
        if timestamps:
            out += ts + b" "
        out += text + (b"\n" if tag == b"F" else b"")
    return bytes(out)


def read_cri_log(path: Path, *, tail: int | None = None, timestamps: bool = False) -> bytes:
    return format_cri_log(path.read_bytes(), tail=tail, timestamps=timestamps) if path.exists() else b""


def _make_mount_point(root: Path, destination: str, *, directory: bool) -> None:
    """Create ``destination`` (a directory, else an empty file) in ``root``, every component resolved inside it."""
    parts = tuple(p for p in destination.split("/") if p)
    if not parts:
        return
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if directory:
            os.close(safetar.open_dir_in_root(root_fd, parts, create=True))
            return
        parent = safetar.open_dir_in_root(root_fd, parts[:-1], create=True)
        try:
            try:
                os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                os.close(os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=parent))
        finally:
            os.close(parent)
    finally:
        os.close(root_fd)


class ContainerRuntime:
    """CRI-O's container lifecycle on top of runc, for one node."""

    def __init__(self, *, runc: Runc, state_dir: Path, cgroup_parent: str, criu_action_scripts: Sequence[Path] = ()) -> None:
        self.runc = runc
        self.state_dir = state_dir
        self.cgroup_parent = cgroup_parent
        state_dir.mkdir(parents=True, exist_ok=True)
        self.criu_config = state_dir / "criu-runc.conf"
        scripts = "".join(f"action-script {script}\n" for script in criu_action_scripts)
        self.criu_config.write_text(nodesetup.CRIU_OPTIONS + scripts)

    def container_id(self, sandbox: Sandbox, request: ContainerRequest) -> str:
        return f"{sandbox.uid}-{request.name}-{request.attempt}"

    async def _prepare(self, *, sandbox: Sandbox, request: ContainerRequest) -> Container:
        cid = self.container_id(sandbox, request)
        bundle = self.state_dir / cid
        # The spec first: what it refuses (user, capabilities, propagation) must leave nothing mounted.
        spec = oci_spec(
            sandbox=sandbox,
            request=request,
            container_id=cid,
            cgroups_path=f"{self.cgroup_parent}/{sandbox.uid}/{cid}",
            criu_config=self.criu_config,
        )
        check_propagation(request.mounts)
        await self._unmount(bundle / "rootfs")
        shutil.rmtree(bundle, ignore_errors=True)
        for sub in ("rootfs", "upper", "work"):
            (bundle / sub).mkdir(parents=True)
        lower = request.image.root
        opts = f"lowerdir={lower},upperdir={bundle / 'upper'},workdir={bundle / 'work'}"
        proc = await asyncio.create_subprocess_exec(
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            opts,
            str(bundle / "rootfs"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise ContainerError(f"mounting the root filesystem: {err.decode().strip()}")
        container = Container(id=cid, sandbox=sandbox, request=request, bundle=bundle)
        # Mount points exist before runc starts, so that a read-only root filesystem needs none created. Made
        # inside the root whatever its symlinks say (an image's /data -> /etc must not create /etc/x on the host).
        try:
            for m in spec["mounts"]:
                if m["type"] == "bind":
                    _make_mount_point(container.rootfs, m["destination"], directory=Path(m["source"]).is_dir())
        except OSError as exc:
            await self._unmount(container.rootfs)
            raise ContainerError(f"creating a mount point: {exc}") from None
        (bundle / "config.json").write_text(json.dumps(spec, indent=1))
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        return container

    def _stdio(self, container: Container) -> tuple[tuple[int, int, int], list[int]]:
        """Pipes for the container's stdin/stdout/stderr; returns (child ends, our read ends)."""
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        container.stdin_w = in_w  # held open, never written: stdin stays a live pipe
        return (in_r, out_w, err_w), [out_r, err_r]

    def _start_pumps(self, container: Container, readers: list[int]) -> None:
        for fd, stream in zip(readers, ("stdout", "stderr"), strict=True):
            container.log_tasks.append(asyncio.create_task(_pump(fd, stream=stream, log_path=container.request.log_path)))

    async def _launch(self, container: Container, *, restore_from: Path | None) -> None:
        child, readers = self._stdio(container)
        pid_file = container.bundle / "pid"
        try:
            if restore_from is None:
                await self.runc.run_detached(container_id=container.id, bundle=container.bundle, pid_file=pid_file, stdio=child)
            else:
                work = container.bundle / "restore-work"
                work.mkdir(exist_ok=True)
                await self.runc.restore_detached(
                    container_id=container.id,
                    bundle=container.bundle,
                    image_path=restore_from,
                    work_path=work,
                    pid_file=pid_file,
                    stdio=child,
                )
        except RuncError as exc:
            for fd in (*readers, container.stdin_w):
                os.close(fd)
            container.stdin_w = -1
            with contextlib.suppress(RuncError):
                await self.runc.delete(container_id=container.id)
            raise ContainerError(str(exc), reason="RunContainerError") from None
        finally:
            for fd in child:
                os.close(fd)
        container.pid = int(pid_file.read_text())
        container.started_at = datetime.now(UTC)
        self._start_pumps(container, readers)

    async def start(self, *, sandbox: Sandbox, request: ContainerRequest) -> Container:
        container = await self._prepare(sandbox=sandbox, request=request)
        try:
            await self._launch(container, restore_from=None)
        except ContainerError:
            await self._unmount(container.rootfs)
            raise
        return container

    async def restore(self, *, sandbox: Sandbox, request: ContainerRequest, checkpoint: Path) -> Container:
        """Start ``request`` by restoring the CRIU images in ``checkpoint``; request.image is the base image.

        ``checkpoint`` is an unpacked checkpoint archive; its rootfs diff is applied on top
        of the base image first, then ``deleted.files`` (CRI-O's order). Both are hostile input,
        confined to the container's root filesystem (``checkpointfiles``): a refusal fails the
        restore (CreateContainerError with the reason) and leaves nothing outside the bundle.
        """
        container = await self._prepare(sandbox=sandbox, request=request)
        try:
            spec = json.loads((container.bundle / "config.json").read_text())
            try:
                await asyncio.to_thread(checkpointfiles.check_checkpoint_directory, checkpoint)
                await asyncio.to_thread(
                    checkpointfiles.apply_rootfs_diff,
                    archive=checkpoint,
                    rootfs=container.rootfs,
                    setid=checkpointfiles.setid_rule(spec),
                )
                await asyncio.to_thread(checkpointfiles.apply_deleted_files, archive=checkpoint, rootfs=container.rootfs)
            except checkpointfiles.CheckpointFileError as exc:
                raise ContainerError(f"restoring from checkpoint: {exc}") from None
            container.restored = True
            await self._launch(container, restore_from=checkpoint / names.CHECKPOINT_DIRECTORY)
        except ContainerError:
            await self._unmount(container.rootfs)
            raise
        return container

    def poll_exit(self, container: Container) -> bool:
        """Collect the container's exit status if its init process has ended. True once exited."""
        if container.exit_code is not None:
            return True
        if not container.pid:
            return False
        try:
            pid, status = os.waitpid(container.pid, os.WNOHANG)
        except ChildProcessError:
            # Not our child (e.g. this node restarted): ask whether the process still exists.
            if Path(f"/proc/{container.pid}").exists():
                return False
            container.exit_code, container.finished_at = 255, datetime.now(UTC)
            return True
        if pid == 0:
            return False
        container.exit_code = os.waitstatus_to_exitcode(status)
        if container.exit_code < 0:
            container.exit_code = 128 - container.exit_code
        container.finished_at = datetime.now(UTC)
        return True

    async def stop(self, container: Container, *, grace_seconds: float) -> None:
        """SIGTERM, wait up to the grace period, then SIGKILL (what the kubelet asks of CRI-O)."""
        if not container.running or self.poll_exit(container):
            return
        with contextlib.suppress(RuncError):
            await self.runc.kill(container_id=container.id, signal="TERM")
        deadline = asyncio.get_running_loop().time() + grace_seconds
        while asyncio.get_running_loop().time() < deadline:
            if self.poll_exit(container):
                return
            await asyncio.sleep(0.1)
        with contextlib.suppress(RuncError):
            await self.runc.kill(container_id=container.id, signal="KILL", all_processes=True)
        for _ in range(100):
            if self.poll_exit(container):
                return
            await asyncio.sleep(0.05)

    async def remove(self, container: Container) -> None:
        if container.running:
            await self.stop(container, grace_seconds=0)
        await self.runc.delete(container_id=container.id)
        for task in container.log_tasks:
            task.cancel()
        if container.stdin_w >= 0:
            os.close(container.stdin_w)
            container.stdin_w = -1
        await self._unmount(container.rootfs)
        shutil.rmtree(container.bundle, ignore_errors=True)

    async def _unmount(self, path: Path) -> None:
        if os.path.ismount(path):
            await _run_checked("umount", "-l", str(path))


async def _run_checked(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise ContainerError(f"{argv[0]}: {err.decode().strip()}")


def remove_cgroups(parent: str) -> None:
    """rmdir a cgroup subtree (bottom-up) in every v1 hierarchy and the v2 one."""
    base = Path("/sys/fs/cgroup")
    roots = [p for p in base.iterdir() if p.is_dir()] if base.exists() else []
    for hierarchy in roots:
        top = hierarchy / parent.lstrip("/")
        if not top.exists():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (deepest first), from /proc/self/mountinfo."""
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_all(path: Path, *, keep: Collection[Path] = ()) -> None:
    """Lazily unmount everything at or below ``path`` except the mount points in ``keep``."""
    kept = {str(p.resolve()) for p in keep}
    for point in mounts_under(path):
        if point not in kept:
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
