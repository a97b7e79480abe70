"""Real nodes for the local cluster: upstream's kubelet on containerd, runc and CRIU.

A real node is two processes, both started through :class:`processes.Launcher` (so
``localcluster down`` finds and stops them by PID, like every other daemon):

* ``<node>-containerd``: containerd v2 with the node's own root, state, sockets, runc root,
  CNI configuration (bridge + host-local on a link-local /24) and registry hosts (the local
  registry over plain HTTP). Its runc shims outlive it by design; :func:`stop` removes them.
* ``<node>-kubelet``: the kubelet, in its own mount namespace (``unshare --mount
  --propagation unchanged``) where the kernel tunables it rewrites at start
  (``vm.overcommit_memory`` 0->1, ``kernel.panic`` ->10, ``kernel.panic_on_oops`` 0->1, ...)
  are ordinary files bind-mounted over ``/proc/sys``: on this shared machine
  ``panic_on_oops=1`` would turn any kernel oops into a reboot. Its root dir is a *shared*
  bind mount made in the host namespace first, so the volumes it mounts there (projected
  ServiceAccount tokens, secrets) propagate to containerd, which runs in the host namespace.

Per node (index ``n = 10 * instance + i``, so clusters with different ``instance`` never
collide): the name ``real-<i>``, the address ``127.0.<1+instance>.<100+i>`` (kubelet API on
port 10250), the cgroup root ``/localcluster-rn<nn>`` in every hierarchy, the pod subnet
``169.254.<170+n>.0/24`` on the bridge ``pmrb<nn>`` (gateway address set by us: the bridge
plugin's ``isGateway`` would switch on the host's ``net.ipv4.ip_forward``), sockets under
``/run/podmigrate-rn<nn>`` (short: unix socket paths are limited to 108 bytes), everything
else under ``<state>/nodes/real-<i>/``.

The kubelet refuses loopback and link-local node IPs (``--node-ip``), and left to itself it
picks the VM's own address. So it runs with ``--cloud-provider=external``: it registers its
Node with only a Hostname address and a ``node.cloudprovider.kubernetes.io/uninitialized``
taint, and keeps addresses set by someone else. :func:`patch_address` then does what a cloud
controller would: sets the node's loopback address as its InternalIP (which the API server,
``--kubelet-preferred-address-types=InternalIP``, uses to reach the kubelet, whose serving
certificate from the cluster CA names that address) and removes the taint.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import aiohttp

from localcluster import controlplane, nodesetup, processes, testimages
from ocicheckpoint.credentials import DockerConfig

HERE: Final = Path(__file__).resolve().parent
BUILD_SCRIPT: Final = HERE / "build.sh"
TEMPLATES: Final = HERE / "templates"
FAULT_SCRIPT: Final = Path(__file__).resolve().parent / "faults.sh"
FAULTS: Final = frozenset({"fail-restore"})
BINARIES: Final = (
    "kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "bridge", "host-local", "loopback", "pause", "ctd-decoder"
)  # fmt: skip
KUBELET_PORT: Final = 10250
PAUSE_REPOSITORY: Final = "podmigrate/pause"
# The kubelet's node-level registry credentials: <root-dir>/config.json, the first place it looks
# ("Configuring nodes to authenticate to a private registry" in the Kubernetes docs).
KUBELET_DOCKER_CONFIG: Final = "config.json"
PAUSE_TAG: Final = "3.10"
SPEC_FILE: Final = "realnode.json"
CLOUD_TAINT: Final = "node.cloudprovider.kubernetes.io/uninitialized"
CGROUP_FS: Final = Path("/sys/fs/cgroup")
# What the kubelet's setupKernelTunables writes (pkg/kubelet/cm/container_manager_linux.go).
KUBELET_SYSCTLS: Final = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Host settings a node must leave alone (tests compare them before and after).
WATCHED_SYSCTLS: Final = (*KUBELET_SYSCTLS, "net/ipv4/ip_forward")

# Runs as /bin/sh inside the kubelet's new mount namespace, then execs the kubelet.
_KUBELET_WRAPPER: Final = """set -eu
shadow=$1; shift
mount --make-rprivate /proc
for f in {sysctls}; do
  mount --bind "$shadow/$(echo "$f" | tr / _)" "/proc/sys/$f"
done
exec "$@"
""".format(sysctls=" ".join(KUBELET_SYSCTLS))


class RealNodeError(processes.ProcessError):
    """A real node failed to build, start, become ready or stop cleanly."""


# --------------------------------------------------------------------------- binaries


def ensure_binaries() -> Path:
    """The bin dir with kubelet, containerd, shim, ctr, CNI plugins and pause (built once, cached)."""
    try:
        return processes.cached_build(script=BUILD_SCRIPT, binaries=BINARIES)
    except processes.ProcessError as exc:
        raise RealNodeError(str(exc)) from None


async def _push_pause(*, registry: str, bin_dir: Path, credentials: DockerConfig) -> str:
    with tempfile.TemporaryDirectory(prefix="localcluster-pause-") as tmp:
        work = Path(tmp)
        rootfs = work / "pause"
        rootfs.mkdir()
        (rootfs / "pause").write_bytes((bin_dir / "pause").read_bytes())
        (rootfs / "pause").chmod(0o755)
        image = testimages.TestImage(
            repository=PAUSE_REPOSITORY, tag=PAUSE_TAG, rootfs=rootfs, entrypoint=["/pause"], cmd=[], env=[]
        )
        async with aiohttp.ClientSession() as session:
            return await testimages.push(image, registry=registry, session=session, work=work, credentials=credentials)


def push_pause_image(*, registry: str, bin_dir: Path, credentials: DockerConfig) -> str:
    """Push the sandbox image (one static binary, go/pause) to the local registry; returns its reference."""
    return asyncio.run(_push_pause(registry=registry, bin_dir=bin_dir, credentials=credentials))


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True, kw_only=True)
class RealNode:
    """Where one real node lives; saved as ``<state_dir>/realnode.json`` before anything starts."""

    name: str
    index: int
    address: str
    state_dir: str
    run_dir: str
    cluster_state: str

    @classmethod
    def plan(cls, *, cluster_state: Path, instance: int, i: int) -> RealNode:
        if not (0 <= instance <= 5 and 1 <= i <= 9):
            raise ValueError("instance must be 0..5 and the node number 1..9")
        name = f"real-{i}"
        index = 10 * instance + i
        return cls(
            name=name,
            index=index,
            address=f"127.0.{1 + instance}.{100 + i}",
            state_dir=str(cluster_state / "nodes" / name),
            run_dir=f"/run/podmigrate-rn{index:02d}",
            cluster_state=str(cluster_state),
        )

    @classmethod
    def load(cls, path: Path) -> RealNode:
        return cls(**json.loads(path.read_text()))

    def save(self) -> None:
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.state_dir) / SPEC_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    # -- derived names
    @property
    def state(self) -> Path:
        return Path(self.state_dir)

    @property
    def run(self) -> Path:
        return Path(self.run_dir)

    @property
    def kubelet_root(self) -> Path:
        return nodesetup.kubelet_root(self.state)

    @property
    def socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def cgroup_name(self) -> str:
        return f"localcluster-rn{self.index:02d}"

    @property
    def bridge(self) -> str:
        return f"pmrb{self.index:02d}"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"169.254.{170 + self.index}.0/24")

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def containerd_name(self) -> str:
        return f"{self.name}-containerd"

    @property
    def kubelet_name(self) -> str:
        return f"{self.name}-kubelet"

    @property
    def checkpoints_dir(self) -> Path:
        return self.kubelet_root / "checkpoints"

    @property
    def criu_config(self) -> Path:
        return self.state / "criu.conf"

    @property
    def fault_dir(self) -> Path:
        """Faults injected into this node (``faults.sh``; ``inject_fault``)."""
        return self.run / "faults"

    @property
    def dump_hook_dir(self) -> Path:
        """Where the node agent arms podmigrate's CRIU post-dump hook (node_agent.dumphook)."""
        return nodesetup.dump_hook_dir(self.state)


def inject_fault(node: RealNode, fault: str, reason: str | None) -> None:
    """Make every restore on ``node`` fail (``fail-restore``) with ``reason``, or stop doing so (None)."""
    if fault not in FAULTS:
        raise RealNodeError(f"unknown fault {fault!r} (known: {', '.join(sorted(FAULTS))})")
    path = node.fault_dir / fault
    if reason is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(reason + "\n")


def planned_nodes(cluster_state: Path) -> list[RealNode]:
    """Every real node recorded under a cluster's state dir (also half-started ones)."""
    nodes_dir = cluster_state / "nodes"
    if not nodes_dir.exists():
        return []
    found = []
    for spec in sorted(nodes_dir.glob(f"*/{SPEC_FILE}")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            found.append(RealNode.load(spec))
    return found


# --------------------------------------------------------------------------- helpers


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if check and result.returncode != 0:
        raise RealNodeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _render(template: str, out: Path, **values: str) -> Path:
    text = string.Template((TEMPLATES / template).read_text()).substitute(values)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts_under(*roots: Path) -> list[str]:
    """Mount points at or below any of ``roots`` (host mount namespace), deepest first."""
    prefixes = [str(r) for r in roots]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: (p.count("/"), p), reverse=True)


def _cgroup_dirs(node: RealNode) -> list[Path]:
    """The node's cgroup root in every mounted hierarchy that has it."""
    if not CGROUP_FS.exists():
        return []
    return [h / node.cgroup_name for h in sorted(CGROUP_FS.iterdir()) if (h / node.cgroup_name).is_dir()]


def _create_cgroups(node: RealNode) -> None:
    """Create the kubelet's cgroupRoot in every hierarchy (cpuset: copy the parent's cpus/mems)."""
    for hierarchy in sorted(CGROUP_FS.iterdir()):
        if not (hierarchy / "cgroup.procs").exists():
            continue
        target = hierarchy / node.cgroup_name
        target.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (target / knob).exists() and not (target / knob).read_text().strip():
                (target / knob).write_text((hierarchy / knob).read_text())


def _shim_pids(node: RealNode) -> list[int]:
    """containerd-shim-runc-v2 processes started by this node's containerd (their -address is our socket)."""
    pids = []
    marker = os.fsencode(str(node.socket))
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and marker in argv:
            pids.append(int(proc.name))
    return pids


def _dirs_under(root: Path) -> list[Path]:
    """Every directory below ``root``; ones that vanish during the walk (a shim removing its cgroup) are skipped.

    ``Path.rglob`` raises FileNotFoundError when a directory goes between listing and descending;
    ``os.walk`` ignores such errors.
    """
    return [Path(top) / d for top, dirs, _files in os.walk(root) for d in dirs]


def _cgroup_pids(node: RealNode) -> set[int]:
    pids: set[int] = set()
    for root in _cgroup_dirs(node):
        for procs in (d / "cgroup.procs" for d in (root, *_dirs_under(root))):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def read_sysctls() -> dict[str, str]:
    """The host's current values of the settings a node must not change."""
    values = {}
    for name in WATCHED_SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = (Path("/proc/sys") / name).read_text().strip()
    return values


# --------------------------------------------------------------------------- start


def start(
    *,
    node: RealNode,
    cp: controlplane.ControlPlane,
    launcher: processes.Launcher,
    bin_dir: Path,
    registry: str,
    sandbox_image: str,
    node_credentials: Path | None = None,
) -> None:
    """Prepare one node and launch its containerd and kubelet (does not wait for Ready).

    The spec is saved first, so :func:`stop` can undo a start that failed half-way.
    ``node_credentials`` (a dockerconfigjson) become the kubelet's node-level registry
    credentials, ``<root-dir>/config.json``: the file a kubelet reads for every pull, merged
    after a pod's ``imagePullSecrets`` (the kubelet passes them to containerd with each pull,
    the sandbox image included).
    """
    node.save()
    state, run = node.state, node.run
    for d in (state, run, node.kubelet_root, state / "pod-logs", state / "cni" / "net.d", state / "cni" / "ipam"):
        d.mkdir(parents=True, exist_ok=True)
    run.chmod(0o700)
    if node_credentials is not None:
        config_json = node.kubelet_root / KUBELET_DOCKER_CONFIG
        config_json.write_bytes(node_credentials.read_bytes())
        config_json.chmod(0o600)

    # Identity: client certificate for the API server, serving certificate for port 10250.
    kubeconfig = cp.kubeconfig_for(user=node.name, cn=f"system:node:{node.name}", orgs=["system:nodes"])
    cert, key = cp.issue_serving_cert(name=node.name, ips=[node.address], dns=[node.name])

    # Network: the bridge with the pod subnet's gateway address, made here (see module doc).
    if not Path(f"/sys/class/net/{node.bridge}").exists():
        _run("ip", "link", "add", node.bridge, "type", "bridge")
    _run("ip", "addr", "replace", f"{node.gateway}/{node.subnet.prefixlen}", "dev", node.bridge)
    _run("ip", "link", "set", node.bridge, "up")
    hosts = list(node.subnet.hosts())
    _render(
        "cni.conflist",
        state / "cni" / "net.d" / "10-podmigrate.conflist",
        network_name=f"podmigrate-rn{node.index:02d}",
        bridge=node.bridge,
        ipam_dir=str(state / "cni" / "ipam"),
        subnet=str(node.subnet),
        range_start=str(hosts[9]),
        range_end=str(hosts[-5]),
    )

    # Registry: plain HTTP through hosts.toml, for the CRI image service and the transfer service.
    hosts_dir = state / "certs.d" / registry
    hosts_dir.mkdir(parents=True, exist_ok=True)
    (hosts_dir / "hosts.toml").write_text(
        f'server = "http://{registry}"\n\n[host."http://{registry}"]\n  capabilities = ["pull", "resolve", "push"]\n'
    )

    config = _render(
        "containerd.toml",
        state / "containerd.toml",
        root=str(state / "containerd"),
        state=str(run / "state"),
        temp=str(run / "tmp"),
        sandbox_image=sandbox_image,
        registry_config=str(state / "certs.d"),
        runc_root=str(run / "runc"),
        cni_bin_dir=str(bin_dir),
        cni_conf_dir=str(state / "cni" / "net.d"),
        socket=str(node.socket),
        shim_socket_dir=str(run / "s"),
        ctd_decoder=str(bin_dir / "ctd-decoder"),
        decryption_keys_path=str(nodesetup.decryption_key_dir(node.state)),
    )
    (run / "tmp").mkdir(exist_ok=True)
    # The node's CRIU configuration, what an operator puts in /etc/criu/runc.conf: here a file of the
    # node's own, named by CRIU_CONFIG_FILE in containerd's environment (which its shims, runc and
    # CRIU inherit), so the host's /etc is never touched. Options as on the stand-in nodes
    # (nodesetup.CRIU_OPTIONS says why), plus podmigrate's hook, which stops a container the
    # agent armed at the end of its dump (containerd pauses and resumes the container around its
    # checkpoint, so it cannot be frozen before: node_agent/dumphook.py) and moves a restored pod's
    # staged emptyDir files into it before its processes are restored (node_agent/volumedata.py).
    # And the local cluster's fault injection (faults.sh: a failing pre-restore while a fault file exists).
    node.dump_hook_dir.mkdir(mode=0o700, exist_ok=True)
    node.fault_dir.mkdir(mode=0o700, exist_ok=True)
    nodesetup.volume_dir(node.state).mkdir(mode=0o700, exist_ok=True)
    hook = nodesetup.CRIU_HOOK_SCRIPT
    node.criu_config.write_text(f"{nodesetup.CRIU_OPTIONS}action-script {hook}\naction-script {FAULT_SCRIPT}\n")
    path = f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    launcher.launch(
        name=node.containerd_name,
        argv=[str(bin_dir / "containerd"), "--config", str(config)],
        env={
            "PATH": path,
            "TMPDIR": str(run / "tmp"),
            "CRIU_CONFIG_FILE": str(node.criu_config),
            "PODMIGRATE_HOOK_DIR": str(node.dump_hook_dir),
            nodesetup.VOLUME_DIR_ENV: str(nodesetup.volume_dir(node.state)),
            "PODMIGRATE_FAULT_DIR": str(node.fault_dir),
        },
    )
    launcher.wait(
        name=node.containerd_name,
        what=f"containerd answers on {node.socket}",
        ready=lambda: (
            node.socket.exists()
            and _run(str(bin_dir / "ctr"), "--address", str(node.socket), "version", check=False).returncode == 0
        ),
    )

    # cgroups: the kubelet's cgroupRoot must exist in every hierarchy.
    _create_cgroups(node)

    # The kubelet's root dir: a shared bind mount made in the host namespace, so mounts the
    # kubelet makes below it (in its own namespace) propagate to containerd.
    root = node.kubelet_root
    if str(root) not in mounts_under(root):
        _run("mount", "--bind", str(root), str(root))
    _run("mount", "--make-shared", str(root))

    # Ordinary files standing in for the kernel tunables the kubelet rewrites.
    shadow = state / "sysctl-shadow"
    shadow.mkdir(exist_ok=True)
    for name in KUBELET_SYSCTLS:
        (shadow / name.replace("/", "_")).write_text((Path("/proc/sys") / name).read_text())

    kubelet_config = _render(
        "kubelet-config.yaml",
        state / "kubelet-config.yaml",
        address=node.address,
        tls_cert=str(cert),
        tls_key=str(key),
        client_ca=str(cp.ca_cert),
        containerd_socket=str(node.socket),
        cgroup_root=f"/{node.cgroup_name}",
        pod_logs_dir=str(state / "pod-logs"),
        volume_plugin_dir=str(state / "volume-plugins"),
    )
    launcher.launch(
        name=node.kubelet_name,
        argv=[
            "unshare",
            "--mount",
            "--propagation",
            "unchanged",
            "--",
            "/bin/sh",
            "-c",
            _KUBELET_WRAPPER,
            "realnode-kubelet",
            str(shadow),
            str(bin_dir / "kubelet"),
            f"--config={kubelet_config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={root}",
            f"--cert-dir={state / 'kubelet-pki'}",
            f"--hostname-override={node.name}",
            # No --node-ip (loopback is refused) and no auto-detection (it would pick the VM's
            # eth0 address): as with an external cloud provider, the kubelet registers its Node
            # with only a Hostname address and keeps whatever addresses are set afterwards;
            # patch_address plays the cloud controller's part.
            "--cloud-provider=external",
            "--node-labels=podmigrate.io/node-kind=real",
            "--v=2",
        ],
        env={"PATH": path},
    )


def _node_json(cp: controlplane.ControlPlane, name: str) -> dict | None:
    result = cp.kubectl("get", "node", name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def patch_address(*, node: RealNode, cp: controlplane.ControlPlane, launcher: processes.Launcher) -> None:
    """Wait for the kubelet to register its Node, then give it its loopback InternalIP."""
    registered = lambda: _node_json(cp, node.name) is not None  # noqa: E731
    launcher.wait(name=node.kubelet_name, what=f"Node {node.name} registered", ready=registered, interval=0.3)
    addresses = [{"type": "InternalIP", "address": node.address}, {"type": "Hostname", "address": node.name}]
    patch = {"status": {"addresses": addresses}}
    cp.kubectl("patch", "node", node.name, "--subresource=status", "--type=merge", "-p", json.dumps(patch))
    # What a cloud controller does once it has initialized a node: lift the kubelet's taint.
    cp.kubectl("taint", "node", node.name, f"{CLOUD_TAINT}:NoSchedule-", check=False)


def has_address(*, node: RealNode, cp: controlplane.ControlPlane) -> bool:
    data = _node_json(cp, node.name) or {}
    return any(a.get("address") == node.address for a in data.get("status", {}).get("addresses", []))


# --------------------------------------------------------------------------- stop


def _pid_of(node: RealNode, name: str) -> int | None:
    state = Path(node.cluster_state)
    try:
        pid = int(processes.pid_file(state_dir=state, name=name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if processes.is_ours(pid=pid, name=name, state_dir=state) else None


def _terminate(node: RealNode, name: str, timeout: float) -> bool:
    state = Path(node.cluster_state)
    pid = _pid_of(node, name)
    if pid is not None:
        processes.terminate(pids={name: pid}, state_dir=state, children={}, timeout=timeout)
    processes.pid_file(state_dir=state, name=name).unlink(missing_ok=True)
    return pid is not None


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def stop(node: RealNode, *, timeout: float = 20.0) -> list[str]:
    """Stop one node and remove everything it made; returns the daemons stopped.

    Order: the kubelet; then every process in the node's cgroups (the pods' containers and
    pause processes: ours by construction), while containerd still runs, so it sees the
    exits, deletes the tasks (each runc shim then exits) and unmounts the rootfs; then
    containerd; then whatever is left by force: shims (by PID, only those whose -address is
    our socket), mounts (container rootfs, pod netns, kubelet volumes, the kubelet root's
    bind mount), the bridge, the cgroups, the run dir.
    """
    stopped = []
    t0 = time.monotonic()
    steps: list[str] = []

    def step(what: str) -> None:
        steps.append(f"{what} {time.monotonic() - t0:.1f}s")

    if _terminate(node, node.kubelet_name, timeout):
        stopped.append(node.kubelet_name)
    step("kubelet stopped")
    for _ in range(3):
        pids = _cgroup_pids(node)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait(lambda: not _cgroup_pids(node), 5.0)
    step("pods killed")
    if _pid_of(node, node.containerd_name) is not None:
        # Usually ~0.1 s. A shim that served a checkpoint (leave-running) has been seen to stay
        # for good: it is stopped by force below, after containerd, like any other leftover.
        _wait(lambda: not _shim_pids(node), min(timeout, 5.0))
    step(f"shims exited ({len(_shim_pids(node))} left)")
    if _terminate(node, node.containerd_name, timeout):
        stopped.append(node.containerd_name)
    step("containerd stopped")
    for pid in _shim_pids(node):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait(lambda: not _shim_pids(node), 5.0)
    for point in mounts_under(node.state, node.run):
        _run("umount", "--lazy", point, check=False)
    if Path(f"/sys/class/net/{node.bridge}").exists():
        _run("ip", "link", "del", node.bridge, check=False)
    for root in _cgroup_dirs(node):
        for d in sorted(_dirs_under(root), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()
    if node.run.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(node.run)], check=False)
    step("cleaned up")
    if time.monotonic() - t0 > 5:
        print(f"realnode: stopping {node.name} took long: {', '.join(steps)}", file=sys.stderr)
    return stopped


def stop_all(cluster_state: Path, *, timeout: float = 20.0) -> list[str]:
    stopped = []
    for node in planned_nodes(cluster_state):
        stopped += stop(node, timeout=timeout)
    return stopped


def leftovers(cluster_state: Path) -> list[str]:
    """What real nodes of this cluster left on the machine (empty when clean)."""
    found = []
    for node in planned_nodes(cluster_state):
        found += [f"mount {p}" for p in mounts_under(node.state, node.run)]
        found += [f"process {pid} (containerd-shim-runc-v2 of {node.name})" for pid in _shim_pids(node)]
        for name in (node.kubelet_name, node.containerd_name):
            pid = _pid_of(node, name)
            if pid is not None:
                found.append(f"process {pid} ({name})")
        if Path(f"/sys/class/net/{node.bridge}").exists():
            found.append(f"link {node.bridge}")
        found += [f"cgroup {d}" for d in _cgroup_dirs(node)]
        if node.run.exists():
            found.append(f"dir {node.run}")
    return found
