"""Bring the whole local cluster up and down: control plane, registry, test images, nodes.

Layout under the state directory (default ``.localcluster/`` in the checkout):

* ``controlplane/``   etcd, API server, controllers, scheduler, PKI, kubeconfigs (``controlplane``)
* ``registry/``       the registry's storage; ``registry.yml`` its configuration
* ``registry-auth/``  the registry's token server: signing key, users, one ``<user>.dockerconfigjson`` each
  (``localcluster.registryauth`` says who may do what; anonymous pull and push are refused)
* ``nodes/<name>/``   each node's kubelet/CRI-O state (pods, images, checkpoints, runc root)
* ``logs/``, ``pids/`` the registry's and nodes' logs and PIDs (``processes``)
* ``cluster.json``    where everything is: what tests and the demo read

Nodes are ``node-1`` .. ``node-N`` on 127.0.1.1 .. 127.0.1.N, port 10250, so the API server
reaches each at its InternalIP like a real kubelet. ``down`` stops the nodes first (each
removes its containers, mounts, network namespaces and cgroups), then the registry, then the
control plane, checks that nothing is left, and removes the state directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from localcluster import controlplane, nodesetup, processes, realnode, registryauth, testimages
from ocicheckpoint.credentials import DockerConfig

CACHE: Final = Path(os.environ.get("PODMIGRATE_CACHE", Path.home() / ".cache" / "podmigrate"))
INSTALL_DEPS: Final = Path(__file__).resolve().parent / "install-deps.sh"
NODE_PORT: Final = 10250
DEFAULT_REGISTRY_PORT: Final = 5310
# The registry's token server (localcluster/registryauth.py), next to it: 5320+k for instance k.
DEFAULT_REGISTRY_AUTH_PORT: Final = 5320
REGISTRY_AUTH_DIR: Final = "registry-auth"


REGISTRY: Final = "docker-registry"  # the registry's process name (pid file, logs)
# Put on the real nodes by the test session and the benchmark (``Cluster.taint_real_nodes``), so that nothing
# scheduled lands there; what a test or bench row puts on them tolerates it.
REAL_NODE_TAINT: Final = "podmigrate.io/real-node"


class ClusterError(processes.ProcessError):
    """The local cluster cannot be brought up (or down) as asked; the message says why."""


@dataclass(frozen=True, kw_only=True)
class NodeInfo:
    name: str
    index: int
    address: str
    state_dir: str
    kind: str = "standin"  # "standin" (localcluster/node) or "real" (kubelet + containerd, localcluster/realnode)


@dataclass(frozen=True, kw_only=True)
class Cluster:
    state_dir: str
    kubeconfig: str
    server: str
    ca_cert: str
    kubectl: str
    registry: str
    images: dict[str, str]
    nodes: list[NodeInfo]
    registry_auth: str = ""  # the token server's directory: users, signing certificate, one dockerconfigjson per user

    @classmethod
    def load(cls, state_dir: Path) -> Cluster:
        path = state_dir / "cluster.json"
        if not path.exists():
            raise ClusterError(f"no local cluster at {state_dir} (run `make cluster-up`)")
        data = json.loads(path.read_text())
        data["nodes"] = [NodeInfo(**n) for n in data["nodes"]]
        return cls(**data)

    def save(self) -> None:
        path = Path(self.state_dir) / "cluster.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    def registry_credentials(self, user: str) -> DockerConfig:
        """A registry user's credentials (``registryauth.PUSH_USER``, ``PULL_USER``, ``IMAGES_USER``, ``NODE_USER``)."""
        if not self.registry_auth:
            return DockerConfig()
        return registryauth.Paths(directory=Path(self.registry_auth)).credentials(user)

    def registry_credentials_file(self, user: str) -> Path:
        """The ``.dockerconfigjson`` file holding ``user``'s credentials."""
        return registryauth.Paths(directory=Path(self.registry_auth)).dockerconfig(user)

    def controlplane(self) -> controlplane.ControlPlane:
        return controlplane.ControlPlane.load(state_dir=Path(self.state_dir) / "controlplane")

    def taint_real_nodes(self) -> None:
        """Taint every real node ``REAL_NODE_TAINT=true:NoSchedule``: scheduled pods stay on the stand-ins."""
        for node in self.nodes:
            if node.kind == "real":
                self.controlplane().kubectl("taint", "node", node.name, f"{REAL_NODE_TAINT}=true:NoSchedule", "--overwrite")

    # --- fault injection: the registry goes away and comes back ---------------------------
    def registry_pid(self) -> int | None:
        state = Path(self.state_dir)
        try:
            pid = int(processes.pid_file(state_dir=state, name=REGISTRY).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if processes.is_ours(pid=pid, name=REGISTRY, state_dir=state) else None

    def kill_registry(self) -> None:
        """SIGKILL the registry (its storage stays): pushes and pulls fail with connection refused."""
        pid = self.registry_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.registry_pid() is not None and time.monotonic() < deadline:
                time.sleep(0.05)

    def pause_node(self, name: str, *, paused: bool) -> None:
        """Stop (SIGSTOP) or continue a stand-in node's kubelet process: a node that stops answering and
        heartbeating while its containers run on, as after a partition. Real nodes are not paused this way."""
        node = next(n for n in self.nodes if n.name == name)
        if node.kind != "standin":
            raise ClusterError(f"node {name} is a {node.kind} node: only stand-in nodes can be paused")
        state = Path(self.state_dir)
        pid = int(processes.pid_file(state_dir=state, name=name).read_text().strip())
        if not processes.is_ours(pid=pid, name=name, state_dir=state):
            raise ClusterError(f"node {name}'s process is not running")
        os.kill(pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def pause_registry(self, *, paused: bool) -> None:
        """Stop (SIGSTOP) or continue the registry: connections are accepted and never answered, as a stalled one."""
        pid = self.registry_pid()
        if pid is None:
            raise ClusterError("the registry is not running")
        os.kill(pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def collect_registry_garbage(self) -> int:
        """Reclaim the storage of deleted images: stop the registry, run its ``garbage-collect``, start it again.

        Deleting a manifest only unlinks it; its blobs (a checkpoint's memory) stay on the registry's
        disk until a garbage collection, which must not run beside a push (docs/registry.md). The
        benchmark calls this between runs, when nothing pushes: a run at 4 GiB otherwise leaves tens of
        GB behind. Returns the bytes freed.
        """
        storage = Path(self.state_dir) / "registry"
        before = _tree_bytes(storage)
        pid = self.registry_pid()
        if pid is not None:
            processes.terminate(pids={REGISTRY: pid}, state_dir=Path(self.state_dir), children={}, timeout=10)
        config = Path(self.state_dir) / "registry.yml"
        result = subprocess.run(
            [str(tool("docker-registry")), "garbage-collect", str(config)], capture_output=True, text=True, check=False
        )
        self.start_registry()
        if result.returncode != 0:
            raise ClusterError(f"docker-registry garbage-collect failed: {result.stderr.strip()[-500:]}")
        return before - _tree_bytes(storage)

    def start_registry(self) -> None:
        """Start the registry again, on its address and storage."""
        launcher = processes.Launcher(state_dir=Path(self.state_dir), deadline=time.monotonic() + 30)
        config = Path(self.state_dir) / "registry.yml"
        launcher.launch(name=REGISTRY, argv=[str(tool("docker-registry")), "serve", str(config)])
        url = f"http://{self.registry}/v2/"
        launcher.wait(name=REGISTRY, what=f"GET {url}", ready=lambda: _http_answers(url))


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def tool(name: str) -> Path:
    """A tool installed by install-deps.sh (cached builds first, then PATH)."""
    cached = CACHE / "bin" / name
    if cached.exists():
        return cached
    found = shutil.which(name)
    if found is None:
        raise ClusterError(f"{name} not found: run `bash {INSTALL_DEPS}` (or `make deps`) first")
    return Path(found)


def check_host() -> None:
    """CRIU must pass `criu check` and runc must exist before any node starts."""
    criu = tool("criu")
    result = subprocess.run([str(criu), "check"], capture_output=True, text=True, check=False)
    if result.returncode != 0 or "Looks good" not in result.stdout + result.stderr:
        detail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        raise ClusterError(f"`{criu} check` failed, nodes cannot checkpoint here: {' | '.join(detail)}")
    version = subprocess.run([str(criu), "--version"], capture_output=True, text=True, check=False).stdout
    major = int(version.split("Version:")[1].split(".")[0]) if "Version:" in version else 0
    if major < 4:
        raise ClusterError(f"CRIU >= 4 is required, found: {version.strip()}")
    tool("runc")
    if os.geteuid() != 0:
        raise ClusterError("the local cluster runs containers and network namespaces: run it as root")


def _http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _http_answers(url: str) -> bool:
    """The registry answers: 200, or 401 once it authenticates (``GET /v2/`` needs a token too)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            return resp.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except (urllib.error.URLError, OSError):
        return False


def _start_registry_auth(*, launcher: processes.Launcher, state: Path, port: int, registry: str) -> tuple[str, Path]:
    """The token server (``registryauth``), with fresh users and signing key: its address and directory."""
    address = f"127.0.0.1:{port}"
    if not _port_free(port):
        raise ClusterError(f"{address} is in use by something else (the registry's token server goes there)")
    paths = registryauth.prepare(directory=state / REGISTRY_AUTH_DIR, registry=registry)
    launcher.launch(
        name=registryauth.NAME,
        argv=[sys.executable, "-m", "localcluster.registryauth", "--name", registryauth.NAME,
              "--dir", str(paths.directory), "--listen", address],
    )  # fmt: skip
    url = f"http://{address}{registryauth.TOKEN_PATH}"
    launcher.wait(name=registryauth.NAME, what=f"GET {url}", ready=lambda: _http_ok(url))
    return address, paths.directory


def _start_registry(*, launcher: processes.Launcher, state: Path, port: int, auth_port: int) -> str:
    address = f"127.0.0.1:{port}"
    if not _port_free(port):
        raise ClusterError(f"{address} is in use by something else; pass another --registry-port")
    auth_address, auth_dir = _start_registry_auth(launcher=launcher, state=state, port=auth_port, registry=address)
    storage = state / "registry"
    storage.mkdir(parents=True, exist_ok=True)
    config = state / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n"
        + registryauth.registry_auth_config(paths=registryauth.Paths(directory=auth_dir), address=auth_address)
    )
    launcher.launch(name=REGISTRY, argv=[str(tool("docker-registry")), "serve", str(config)])
    launcher.wait(name=REGISTRY, what=f"GET http://{address}/v2/", ready=lambda: _http_answers(f"http://{address}/v2/"))
    return address


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # Like the registry itself (Go sets SO_REUSEADDR): a TIME_WAIT left by a previous run is not "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _nodes_ready(cp: controlplane.ControlPlane, names: list[str]) -> bool:
    result = cp.kubectl("get", "nodes", "-o", "json", check=False)
    if result.returncode != 0:
        return False
    ready = {
        item["metadata"]["name"]
        for item in json.loads(result.stdout)["items"]
        for cond in item.get("status", {}).get("conditions", [])
        if cond["type"] == "Ready" and cond["status"] == "True" and not item["spec"].get("taints")
    }
    return set(names) <= ready


def up(*, state_dir: Path, nodes: int = 2, instance: int = 0, real_nodes: int = 0) -> Cluster:
    """Start everything and wait until every node is Ready and untainted.

    ``nodes`` stand-in nodes (``node-i``) and ``real_nodes`` real ones (``real-i``: upstream
    kubelet + containerd, see ``localcluster.realnode``); either may be 0, not both.

    ``instance`` (0..5) lets several clusters share the machine: it shifts the API server
    port (6443+k), the registry port (5310+k), the node addresses (127.0.<1+k>.N) and the
    nodes' link-local pod ranges, so none of them collide.
    """
    if not 0 <= instance <= 5:
        raise ClusterError("--instance must be between 0 and 5")
    registry_port, api_port = DEFAULT_REGISTRY_PORT + instance, 6443 + instance
    auth_port = DEFAULT_REGISTRY_AUTH_PORT + instance
    state = state_dir.resolve()
    if (state / "cluster.json").exists():
        raise ClusterError(f"a local cluster is already recorded at {state}: run `localcluster down` first")
    if not (0 <= nodes <= 9 and 0 <= real_nodes <= 9 and nodes + real_nodes >= 1):
        raise ClusterError("--nodes and --real-nodes must be between 0 and 9, and at least one node is needed")
    started = time.monotonic()
    check_host()
    for sub in ("logs", "pids", "nodes"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    share_nodes_dir(state / "nodes")
    # The nodes' encryption keypair: checkpoint images are encrypted to it, only nodes hold its private key.
    nodesetup.make_encryption_keys(
        cluster_state=state,
        node_states=[
            *(state / "nodes" / f"node-{i}" for i in range(1, nodes + 1)),
            *(realnode.RealNode.plan(cluster_state=state, instance=instance, i=i).state for i in range(1, real_nodes + 1)),
        ],
    )
    os.environ["PATH"] = f"{CACHE / 'bin'}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    cp = controlplane.start(state_dir=state / "controlplane", api_port=api_port)
    launcher = processes.Launcher(state_dir=state, deadline=time.monotonic() + 180 + 60 * real_nodes)
    try:
        registry = _start_registry(launcher=launcher, state=state, port=registry_port, auth_port=auth_port)
        auth = registryauth.Paths(directory=state / REGISTRY_AUTH_DIR)
        images = asyncio.run(
            testimages.build_and_push_all(registry=registry, credentials=auth.credentials(registryauth.IMAGES_USER))
        )
        infos: list[NodeInfo] = []
        for i in range(1, nodes + 1):
            name, address = f"node-{i}", f"127.0.{1 + instance}.{i}"
            node_state = state / "nodes" / name
            node_state.mkdir(parents=True, exist_ok=True)
            nodesetup.keep_checkpoints_in_memory(node_state)
            kubeconfig = cp.kubeconfig_for(user=name, cn=f"system:node:{name}", orgs=["system:nodes"])
            cert, key = cp.issue_serving_cert(name=name, ips=[address], dns=[name])
            launcher.launch(
                name=name,
                argv=[
                    sys.executable,
                    "-m",
                    "localcluster.node.main",
                    "--name",
                    name,
                    "--index",
                    str(10 * instance + i),
                    "--address",
                    address,
                    "--port",
                    str(NODE_PORT),
                    "--kubeconfig",
                    str(kubeconfig),
                    "--tls-cert",
                    str(cert),
                    "--tls-key",
                    str(key),
                    "--client-ca",
                    str(cp.ca_cert),
                    "--state-dir",
                    str(node_state),
                    "--plain-http-registry",
                    registry,
                    "--criu-action-script",
                    str(nodesetup.CRIU_HOOK_SCRIPT),
                    "--registry-credentials",
                    str(auth.dockerconfig(registryauth.NODE_USER)),
                    "--decryption-keys-path",
                    str(nodesetup.decryption_key_dir(node_state)),
                ],
                env={nodesetup.VOLUME_DIR_ENV: str(nodesetup.volume_dir(node_state))},
            )
            nodesetup.volume_dir(node_state).mkdir(mode=0o700, exist_ok=True)
            infos.append(NodeInfo(name=name, index=10 * instance + i, address=address, state_dir=str(node_state)))
        if real_nodes:
            bin_dir = realnode.ensure_binaries()
            sandbox_image = realnode.push_pause_image(
                registry=registry, bin_dir=bin_dir, credentials=auth.credentials(registryauth.IMAGES_USER)
            )
            reals = [realnode.RealNode.plan(cluster_state=state, instance=instance, i=i) for i in range(1, real_nodes + 1)]
            for rn in reals:
                realnode.start(
                    node=rn, cp=cp, launcher=launcher, bin_dir=bin_dir, registry=registry, sandbox_image=sandbox_image,
                    node_credentials=auth.dockerconfig(registryauth.NODE_USER),
                )  # fmt: skip
                nodesetup.keep_checkpoints_in_memory(rn.state)  # after start: under the kubelet root's own mount
            for rn in reals:
                realnode.patch_address(node=rn, cp=cp, launcher=launcher)
                infos.append(NodeInfo(name=rn.name, index=rn.index, address=rn.address, state_dir=rn.state_dir, kind="real"))
        names = [n.name for n in infos]
        launcher.wait(name=names[0], what="every node Ready and untainted", ready=lambda: _nodes_ready(cp, names), interval=0.5)
    except BaseException:
        _stop_daemons(state)
        cp.stop()
        raise
    cluster = Cluster(
        state_dir=str(state),
        kubeconfig=str(cp.kubeconfig),
        server=cp.server,
        ca_cert=str(cp.ca_cert),
        kubectl=str(cp.bin_dir / "kubectl"),
        registry=registry,
        images=images,
        nodes=infos,
        registry_auth=str(auth.directory),
    )
    cluster.save()
    print(f"local cluster up in {time.monotonic() - started:.1f}s: {len(infos)} nodes, registry {registry}", file=sys.stderr)
    return cluster


def _stop_daemons(state: Path, *, timeout: float = 30.0) -> list[str]:
    """Stop podmigrate's daemons, then the nodes (they clean up after themselves on SIGTERM), then the registry."""
    stopped: list[str] = []
    pids_dir = state / "pids"
    if not pids_dir.exists():
        return stopped
    nodes = sorted(p.stem for p in pids_dir.glob("node-*.pid"))
    podmigrate = sorted(p.stem for p in pids_dir.glob("podmigrate-*.pid"))  # installed by localcluster.podmigrate
    for group in (podmigrate, nodes, [REGISTRY, registryauth.NAME]):
        if group is nodes:  # real nodes: kubelets, their pods, containerd, mounts, cgroups
            stopped.extend(realnode.stop_all(state, timeout=timeout))
        pids: dict[str, int] = {}
        for name in group:
            try:
                pid = int(processes.pid_file(state_dir=state, name=name).read_text().strip())
            except (OSError, ValueError):
                continue
            if processes.is_ours(pid=pid, name=name, state_dir=state):
                pids[name] = pid
        processes.terminate(pids=pids, state_dir=state, children={}, timeout=timeout)
        stopped.extend(pids)
        for name in group:
            processes.pid_file(state_dir=state, name=name).unlink(missing_ok=True)
    return stopped


def share_nodes_dir(nodes: Path) -> None:
    """Make the nodes' directory a shared mount of its own.

    The agents' DaemonSet mounts it with ``mountPropagation: HostToContainer`` (the tmpfs of a
    memory-backed emptyDir is mounted after the agent starts, and the agent must see it), and a
    runtime accepts that only for a path on a shared or slave mount ("path ... is mounted on /
    but it is not a shared or slave mount"). On a node that is ``/var/lib/kubelet`` under a
    shared ``/``; here, a bind mount of the directory onto itself, removed at ``down``.
    """
    if str(nodes) not in realnode.mounts_under(nodes):
        subprocess.run(["mount", "--bind", str(nodes), str(nodes)], check=True)
    subprocess.run(["mount", "--make-shared", str(nodes)], check=True)


def _unshare_nodes_dir(nodes: Path) -> None:
    while str(nodes) in realnode.mounts_under(nodes):
        if subprocess.run(["umount", str(nodes)], check=False, capture_output=True).returncode != 0:
            return  # something is still mounted below it: leftovers() names it


def leftovers(state: Path) -> list[str]:
    """Anything of this cluster still on the machine: mounts, network namespaces, cgroups, veths."""
    found = [f"mount {line.split()[4]}" for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(state) in line]
    try:
        nodes = [n for n in Cluster.load(state).nodes if n.kind == "standin"]
    except (ClusterError, OSError, ValueError, TypeError):
        nodes = []
    prefixes = tuple(f"pm{n.index:02d}" for n in nodes)
    netns = Path("/run/netns")
    if netns.exists() and prefixes:
        found += [f"netns {p.name}" for p in netns.iterdir() if p.name.startswith(prefixes)]
    links = Path("/sys/class/net")
    if prefixes:
        found += [f"link {p.name}" for p in links.iterdir() if p.name.startswith(prefixes)]
    cgroups = Path("/sys/fs/cgroup")
    names = {f"localcluster-n{n.index:02d}" for n in nodes}
    found += [f"cgroup {h / name}" for h in cgroups.iterdir() if h.is_dir() for name in names if (h / name).exists()]
    found += realnode.leftovers(state)
    return found


def down(*, state_dir: Path) -> list[str]:
    """Stop everything recorded under ``state_dir`` and remove it. Returns what was stopped."""
    state = state_dir.resolve()
    if not state.exists():
        return []
    stopped = _stop_daemons(state)
    nodesetup.release_checkpoint_mounts(state / "nodes")
    _unshare_nodes_dir(state / "nodes")
    if (state / "controlplane").exists():
        stopped += controlplane.stop_state_dir(state_dir=state / "controlplane")
    left = leftovers(state)
    if left:
        raise ClusterError("cluster stopped but left behind: " + ", ".join(left))
    shutil.rmtree(state)
    return stopped
