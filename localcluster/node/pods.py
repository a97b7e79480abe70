"""The kubelet's half of the node: one worker per pod bound here, level-triggered.

Each ``PodWorker`` is told the latest version of its pod and, on every pass, moves the world
one step closer to it: sandbox (a network namespace, or the node's own for ``hostNetwork``),
volumes, init containers in order, then
the containers, restarts with back-off by restart policy, probes, and a status written back
through the API server. When the pod gets a deletion timestamp it stops the containers within
the grace period and then deletes the pod object with grace 0, exactly as a kubelet does, so
the API server, the controllers and ``kubectl`` see a real node's pod lifecycle.

A container whose image is a checkpoint image is *restored* instead of started, with CRI-O's
rules (see ``restoring``). Security contexts are resolved and checked as the kubelet does it
(``securitycontext``) before the runtime half sees them.

A ``hostNetwork`` pod gets no namespace and no veth: its IP is the node's InternalIP, its
hostname the node's name and its /etc/hosts the host's, as on a real node.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from kubeclient.events import record_event
from localcluster.node import probes
from localcluster.node.containers import (
    Container,
    ContainerError,
    ContainerRequest,
    ContainerRuntime,
    Mount,
    Sandbox,
    remove_cgroups,
    unmount_all,
)
from localcluster.node.images import ImagePullError, ImageStore, LocalImage
from localcluster.node.network import NetworkAllocator, NetworkError
from localcluster.node.restoring import FAIL_RESTORES_ANNOTATION, RestoreError, prepare_restore
from localcluster.node.securitycontext import container_security, mount_propagation
from localcluster.node.volumes import VolumeError, VolumeManager, field_value, quantity_bytes
from ocicheckpoint.credentials import CredentialsError, DockerConfig, from_secret

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
SYNC_PERIOD = 1.0
HOST_HOSTS_FILE = Path("/etc/hosts")


def rfc3339(when: datetime | None) -> str | None:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


@dataclass(kw_only=True)
class NodeContext:
    """What every pod worker on one node shares."""

    name: str
    node_ip: str
    core: client.CoreV1Api
    runtime: ContainerRuntime
    images: ImageStore
    network: NetworkAllocator
    pods_dir: Path
    logs_dir: Path
    session: aiohttp.ClientSession
    cgroup_parent: str

    async def event(self, pod: dict[str, Any], *, reason: str, message: str, type_: str = "Normal") -> None:
        """Record a core/v1 Event on the pod, as the kubelet does (best effort)."""
        meta = pod["metadata"]
        involved = client.V1ObjectReference(
            kind="Pod", name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], api_version="v1"
        )
        await record_event(self.core, namespace=meta["namespace"], involved=involved, reason=reason, message=message,
                           component="kubelet", warning=type_ == "Warning", host=self.name)  # fmt: skip


@dataclass(kw_only=True)
class Slot:
    """The kubelet's record of one container of the pod, across its restarts."""

    spec: dict[str, Any]
    init: bool
    current: Container | None = None
    restart_count: int = 0
    last_state: dict[str, Any] = field(default_factory=dict)
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    backoff: float = BACKOFF_INITIAL
    not_before: float = 0.0
    probe_states: dict[str, probes.ProbeState] = field(default_factory=dict)
    probe_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    image: LocalImage | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def probe_ok(self, kind: str) -> bool:
        state = self.probe_states.get(kind)
        return state is None or state.success

    @property
    def succeeded(self) -> bool:
        return self.current is not None and self.current.exit_code == 0


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion ($$ escapes)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value
    )


def _cpu_shares(quantity: str | None) -> int | None:
    if not quantity:
        return None
    millis = float(quantity[:-1]) if quantity.endswith("m") else float(quantity) * 1000
    return max(2, int(millis * 1024 / 1000))


class PodWorker:
    def __init__(self, *, ctx: NodeContext, pod: dict[str, Any]) -> None:
        self.ctx = ctx
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.gone = False  # the API object no longer exists
        self.finished = False
        self._poke = asyncio.Event()
        self._sandbox: Sandbox | None = None
        self._volumes: dict[str, Path] | None = None
        self._slots: dict[str, Slot] = {}
        self._conditions: dict[str, dict[str, Any]] = {}
        self._last_status: dict[str, Any] | None = None
        self._start_time = datetime.now(UTC)
        self._pod_ip = ""
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # --- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def pod_dir(self) -> Path:
        return self.ctx.pods_dir / self.uid

    def slot(self, name: str) -> Slot | None:
        return self._slots.get(name)

    def log_path(self, container: str, restart: int) -> Path:
        return self.ctx.logs_dir / f"{self.namespace}_{self.name}_{self.uid}" / container / f"{restart}.log"

    # --- driving --------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pod {self.namespace}/{self.name}")

    def update(self, pod: dict[str, Any] | None) -> None:
        if pod is None:
            self.gone = True
        else:
            self.pod = pod
        self._poke.set()

    async def _run(self) -> None:
        while not self.finished:
            # Cleared before the pass, not after: a poke that comes while the pass runs (a readiness
            # probe that succeeds right after the container it started) starts the next pass at once.
            # Cleared after, it was lost, and the pod's Ready waited up to SYNC_PERIOD to be written:
            # up to 1 s of every restored pod's downtime.
            self._poke.clear()
            try:
                async with self._lock:
                    await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sync of pod %s/%s failed", self.namespace, self.name)
            if self.finished:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), SYNC_PERIOD)

    async def stop(self) -> None:
        """Node shutdown: stop every container now (the pods stay bound to the node)."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._teardown(grace=2.0)

    # --- one pass -------------------------------------------------------------------------
    async def _sync(self) -> None:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        if self.gone or meta.get("deletionTimestamp"):
            grace = (
                0.0
                if self.gone
                else float(meta.get("deletionGracePeriodSeconds") or spec.get("terminationGracePeriodSeconds", 30))
            )
            await self._teardown(grace=grace)
            if not self.gone:
                await self._write_status()
                with contextlib.suppress(client.ApiException):
                    await self.ctx.core.delete_namespaced_pod(
                        self.name,
                        self.namespace,
                        body=client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=self.uid)),
                    )
            self.finished = True
            return
        if not self._slots:
            for c in spec.get("initContainers") or []:
                self._slots[c["name"]] = Slot(spec=c, init=True)
            for c in spec.get("containers") or []:
                self._slots[c["name"]] = Slot(spec=c, init=False)
        if self._terminal_phase():
            await self._write_status()
            return
        if self._sandbox is None:
            await self._make_sandbox()
        if self._volumes is None:
            try:
                self._volumes = await VolumeManager(core=self.ctx.core, pod_dir=self.pod_dir).prepare(self.pod)
            except (VolumeError, client.ApiException) as exc:
                message = str(exc) if isinstance(exc, VolumeError) else f"{exc.status} {exc.reason}"
                for slot in self._slots.values():
                    slot.waiting_reason, slot.waiting_message = "CreateContainerConfigError", message
                await self._write_status()
                return
        for slot in self._slots.values():
            if slot.current is not None and slot.current.running:
                self.ctx.runtime.poll_exit(slot.current)
        if await self._sync_init_containers():
            for slot in self._slots.values():
                if not slot.init:
                    await self._sync_container(slot)
        await self._write_status()

    def _restart_policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy") or "Always")

    def _should_restart(self, slot: Slot) -> bool:
        assert slot.current is not None
        policy = self._restart_policy()
        if slot.init:
            return slot.current.exit_code != 0 and policy != "Never"
        return policy == "Always" or (policy == "OnFailure" and slot.current.exit_code != 0)

    def _terminal_phase(self) -> bool:
        phase = (self._last_status or {}).get("phase")
        return phase in ("Succeeded", "Failed")

    @property
    def host_network(self) -> bool:
        return bool(self.pod["spec"].get("hostNetwork"))

    async def _make_sandbox(self) -> None:
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        spec = self.pod["spec"]
        netns_path: Path | None = None
        if self.host_network:
            # The node's network namespace: nothing to create, and the pod's address is the node's.
            self._pod_ip, sandbox_ip, hostname = self.ctx.node_ip, "", self.ctx.name
            host_hosts = HOST_HOSTS_FILE.read_text() if HOST_HOSTS_FILE.exists() else ""
            hosts = (
                "# Kubernetes-managed hosts file (host network).\n"
                + host_hosts
                + ("" if host_hosts.endswith("\n") or not host_hosts else "\n")
                + f"{self.ctx.node_ip}\t{self.ctx.name}\n"  # what this node's own /etc/hosts would say of it
            )
        else:
            try:
                net = await self.ctx.network.setup(pod_uid=self.uid)
            except NetworkError as exc:
                for slot in self._slots.values():
                    slot.waiting_message = f"Failed to create pod sandbox: {exc}"
                raise
            self._pod_ip = sandbox_ip = net.pod_ip
            netns_path = net.netns_path
            hostname = spec.get("hostname") or self.name
            hosts = f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{net.pod_ip}\t{hostname}\n"
        (self.pod_dir / "hostname").write_text(hostname + "\n")
        (self.pod_dir / "etc-hosts").write_text(hosts)
        self._sandbox = Sandbox(
            uid=self.uid,
            name=self.name,
            namespace=self.namespace,
            hostname=hostname,
            netns_path=netns_path,
            directory=self.pod_dir,
            ip=sandbox_ip,
            host_pid=bool(spec.get("hostPID")),
            host_ipc=bool(spec.get("hostIPC")),
        )
        self._set_condition("PodReadyToStartContainers", True)

    async def _sync_init_containers(self) -> bool:
        """Run init containers one at a time; True once all have succeeded."""
        for slot in self._slots.values():
            if not slot.init or slot.succeeded:
                continue
            if slot.current is not None and slot.current.running:
                return False
            failed = slot.current is not None and slot.current.exit_code not in (None, 0)
            if failed and not self._should_restart(slot):
                return False  # the pod fails (phase computed in status)
            await self._maybe_start(slot)
            return False
        return True

    async def _sync_container(self, slot: Slot) -> None:
        if slot.current is not None:
            if slot.current.running:
                if not slot.probe_ok("liveness"):
                    state = slot.probe_states["liveness"]
                    await self.ctx.event(
                        self.pod, reason="Unhealthy", message=f"Liveness probe failed: {state.last_message}", type_="Warning"
                    )
                    await self.ctx.event(
                        self.pod, reason="Killing", message=f"Container {slot.name} failed liveness probe, will be restarted"
                    )
                    grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
                    await self.ctx.runtime.stop(slot.current, grace_seconds=grace)
                return
            if not self._should_restart(slot):
                return
        await self._maybe_start(slot)

    async def _maybe_start(self, slot: Slot) -> None:
        now = time.monotonic()
        if now < slot.not_before:
            return
        previous = slot.current
        if previous is not None:
            # A restart: remember how it ended, back off exponentially like the kubelet.
            slot.last_state = {"terminated": self._terminated(previous)}
            self._cancel_probes(slot)
            with contextlib.suppress(Exception):
                await self.ctx.runtime.remove(previous)
            slot.current = None
            slot.restart_count += 1
        try:
            container = await self._start(slot)
        except (ImagePullError, ContainerError, RestoreError, VolumeError, client.ApiException) as exc:
            reason = "ErrImagePull" if isinstance(exc, ImagePullError) else getattr(exc, "reason", "CreateContainerError")
            if isinstance(exc, client.ApiException):
                reason = "CreateContainerConfigError"
            slot.waiting_reason, slot.waiting_message = str(reason), str(exc)
            slot.not_before = time.monotonic() + slot.backoff
            slot.backoff = min(slot.backoff * 2, BACKOFF_MAX)
            await self.ctx.event(self.pod, reason="Failed", message=f"Error: {exc}", type_="Warning")
            return
        slot.current = container
        if previous is not None:
            slot.not_before = time.monotonic() + slot.backoff
            slot.backoff = min(slot.backoff * 2, BACKOFF_MAX)
        self._start_probes(slot)

    async def _pull_secrets(self) -> list[DockerConfig]:
        """The pod's ``imagePullSecrets``, read like a kubelet does: a missing or unreadable one is skipped with a warning.

        (The Node authorizer lets a node read exactly the Secrets its pods reference.)
        """
        configs: list[DockerConfig] = []
        for ref in self.pod["spec"].get("imagePullSecrets") or []:
            name = ref.get("name") or ""
            try:
                secret = await self.ctx.core.read_namespaced_secret(name, self.namespace)
                configs.append(from_secret({"type": secret.type, "data": secret.data or {}}))
            except (client.ApiException, CredentialsError, ValueError) as exc:
                log.warning("pod %s/%s: image pull secret %r not used: %s", self.namespace, self.name, name, exc)
        return configs

    async def _start(self, slot: Slot) -> Container:
        spec = slot.spec
        image_name = spec["image"]
        policy = spec.get("imagePullPolicy") or (
            "Always" if image_name.endswith(":latest") or ":" not in image_name.rsplit("/", 1)[-1] else "IfNotPresent"
        )
        image = await self.ctx.images.pull(image_name, policy=policy, pull_secrets=await self._pull_secrets())
        slot.image = image
        await self.ctx.event(self.pod, reason="Pulled", message=f'Container image "{image_name}" present: {image.image_id}')
        request = await self._request(slot, image=image, image_name=image_name)
        assert self._sandbox is not None
        if image.manifest.checkpoint_container:
            node = await self.ctx.core.read_node(self.ctx.name)
            if refused := (node.metadata.annotations or {}).get(FAIL_RESTORES_ANNOTATION):
                raise RestoreError(f"restore of container {slot.name} failed: {refused}")
            plan = prepare_restore(checkpoint=image, request=request, images=self.ctx.images)
            request.image = plan.base_image
            container = await self.ctx.runtime.restore(sandbox=self._sandbox, request=request, checkpoint=image.root)
            await self.ctx.event(
                self.pod, reason="Restored", message=f"Restored container {slot.name} from checkpoint {image.image_id}"
            )
        else:
            container = await self.ctx.runtime.start(sandbox=self._sandbox, request=request)
            await self.ctx.event(self.pod, reason="Started", message=f"Started container {slot.name}")
        return container

    async def _env(self, spec: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                cm = await self.ctx.core.read_namespaced_config_map(source["configMapRef"]["name"], self.namespace)
                env.update({prefix + k: v for k, v in (cm.data or {}).items()})
            elif "secretRef" in source:
                secret = await self.ctx.core.read_namespaced_secret(source["secretRef"]["name"], self.namespace)
                env.update({prefix + k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()})
        for item in spec.get("env") or []:
            if "value" in item or "valueFrom" not in item:
                env[item["name"]] = _expand(item.get("value", ""), env)
                continue
            source = item["valueFrom"]
            if "fieldRef" in source:
                status = dict(self.pod.get("status") or {}, podIP=self._pod_ip, hostIP=self.ctx.node_ip)
                env[item["name"]] = field_value(dict(self.pod, status=status), source["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                cm = await self.ctx.core.read_namespaced_config_map(ref["name"], self.namespace)
                env[item["name"]] = (cm.data or {}).get(ref["key"], "")
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = await self.ctx.core.read_namespaced_secret(ref["name"], self.namespace)
                env[item["name"]] = base64.b64decode((secret.data or {}).get(ref["key"], "")).decode()
            else:
                raise VolumeError(f"env {item['name']}: unsupported valueFrom {sorted(source)}")
        return env

    async def _request(self, slot: Slot, *, image: LocalImage, image_name: str) -> ContainerRequest:
        spec = slot.spec
        assert self._volumes is not None
        env = await self._env(spec)
        security = container_security(self.pod, spec, image=image)
        mounts: list[Mount] = []
        for vm in spec.get("volumeMounts") or []:
            if vm["name"] not in self._volumes:
                raise VolumeError(f"volumeMount {vm['name']!r} names no volume of the pod")
            host = self._volumes[vm["name"]]
            if vm.get("subPath"):
                host = host / vm["subPath"]
                host.mkdir(parents=True, exist_ok=True)
            mounts.append(
                Mount(
                    container_path=vm["mountPath"],
                    host_path=str(host),
                    readonly=bool(vm.get("readOnly")),
                    propagation=mount_propagation(vm, privileged=security.privileged),
                )
            )
        mounts.append(Mount(container_path="/etc/hosts", host_path=str(self.pod_dir / "etc-hosts")))
        term_path = spec.get("terminationMessagePath") or "/dev/termination-log"
        term_file = self.pod_dir / "containers" / slot.name / f"termination-{slot.restart_count}"
        term_file.parent.mkdir(parents=True, exist_ok=True)
        term_file.touch()
        term_file.chmod(0o666)  # the kubelet's: whatever user the container runs as writes its message
        mounts.append(Mount(container_path=term_path, host_path=str(term_file)))
        spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
        resources = spec.get("resources") or {}
        return ContainerRequest(
            name=slot.name,
            attempt=slot.restart_count,
            image_name=image_name,
            image=image,
            command=[_expand(a, env) for a in spec.get("command") or []],
            args=[_expand(a, env) for a in spec.get("args") or []],
            env=[f"{k}={v}" for k, v in env.items()],
            working_dir=spec.get("workingDir") or "",
            mounts=mounts,
            annotations={
                "io.kubernetes.container.hash": spec_hash,
                "io.kubernetes.container.restartCount": str(slot.restart_count),
                "io.kubernetes.container.terminationMessagePath": term_path,
                "io.kubernetes.container.terminationMessagePolicy": spec.get("terminationMessagePolicy") or "File",
                "io.kubernetes.pod.terminationGracePeriod": str(self.pod["spec"].get("terminationGracePeriodSeconds", 30)),
            },
            labels={
                "io.kubernetes.container.name": slot.name,
                "io.kubernetes.pod.name": self.name,
                "io.kubernetes.pod.namespace": self.namespace,
                "io.kubernetes.pod.uid": self.uid,
            },
            log_path=self.log_path(slot.name, slot.restart_count),
            memory_limit=quantity_bytes((resources.get("limits") or {}).get("memory")),
            cpu_shares=_cpu_shares((resources.get("requests") or {}).get("cpu")),
            security=security,
        )

    # --- probes ---------------------------------------------------------------------------
    def _start_probes(self, slot: Slot) -> None:
        container = slot.current
        assert container is not None
        slot.probe_states = {}

        async def exec_in(argv: list[str], timeout: float) -> tuple[int, str]:
            return await self.ctx.runtime.runc.exec(container_id=container.id, argv=argv, timeout=timeout)

        for kind, key in (("liveness", "livenessProbe"), ("readiness", "readinessProbe"), ("startup", "startupProbe")):
            probe = slot.spec.get(key)
            if not probe or slot.init:
                continue
            state = probes.ProbeState(kind=kind, success=(kind == "liveness"))
            slot.probe_states[kind] = state
            slot.probe_tasks.append(
                asyncio.create_task(
                    probes.probe_loop(
                        probe,
                        state,
                        container=slot.spec,
                        pod_ip=self._pod_ip,
                        session=self.ctx.session,
                        exec_in_container=exec_in,
                        on_change=self._poke.set,
                    )
                )
            )

    def _cancel_probes(self, slot: Slot) -> None:
        for task in slot.probe_tasks:
            task.cancel()
        slot.probe_tasks = []

    # --- teardown -------------------------------------------------------------------------
    async def _teardown(self, *, grace: float) -> None:
        running = [s for s in self._slots.values() if s.current is not None]
        for slot in running:
            self._cancel_probes(slot)
        if any(s.current is not None and s.current.running for s in running):
            await self.ctx.event(self.pod, reason="Killing", message="Stopping containers")
        await asyncio.gather(
            *(self.ctx.runtime.stop(s.current, grace_seconds=grace) for s in running if s.current is not None),
            return_exceptions=True,
        )
        for slot in running:
            assert slot.current is not None
            with contextlib.suppress(Exception):
                await self.ctx.runtime.remove(slot.current)
        if not self.host_network:  # a host-network pod never had a namespace or veth of its own
            await self.ctx.network.teardown(pod_uid=self.uid)
        remove_cgroups(f"{self.ctx.cgroup_parent}/{self.uid}")
        unmount_all(self.pod_dir)  # memory-backed emptyDirs
        shutil.rmtree(self.pod_dir, ignore_errors=True)
        self._sandbox = None

    # --- status ---------------------------------------------------------------------------
    @staticmethod
    def _terminated(container: Container) -> dict[str, Any]:
        code = container.exit_code if container.exit_code is not None else 137
        return {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": rfc3339(container.started_at),
            "finishedAt": rfc3339(container.finished_at),
            "containerID": f"cri-o://{container.id}",
        }

    def _container_status(self, slot: Slot) -> dict[str, Any]:
        c = slot.current
        state: dict[str, Any]
        if c is not None and c.running:
            state = {"running": {"startedAt": rfc3339(c.started_at)}}
        elif (
            c is not None and c.exit_code is not None and not (time.monotonic() < slot.not_before and self._should_restart(slot))
        ):
            state = {"terminated": self._terminated(c)}
        elif c is not None and c.exit_code is not None:
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off restarting failed container {slot.name}"}}
        else:
            state = {
                "waiting": {"reason": slot.waiting_reason, **({"message": slot.waiting_message} if slot.waiting_message else {})}
            }
        running = c is not None and c.running
        started = running and slot.probe_ok("startup")
        status: dict[str, Any] = {
            "name": slot.name,
            "image": slot.spec["image"],
            "imageID": slot.image.image_id if slot.image else "",
            "ready": bool(started and slot.probe_ok("readiness") and (slot.init is False)),
            "restartCount": slot.restart_count,
            "started": bool(started),
            "state": state,
            "lastState": slot.last_state,
        }
        if c is not None:
            status["containerID"] = f"cri-o://{c.id}"
        return status

    def _set_condition(self, kind: str, value: bool, *, reason: str | None = None) -> None:
        text = "True" if value else "False"
        current = self._conditions.get(kind)
        if current is None or current["status"] != text:
            self._conditions[kind] = {
                "type": kind,
                "status": text,
                "lastTransitionTime": rfc3339(datetime.now(UTC)),
                "lastProbeTime": None,
            }
            if reason:
                self._conditions[kind]["reason"] = reason

    def _phase(self) -> str:
        inits = [s for s in self._slots.values() if s.init]
        mains = [s for s in self._slots.values() if not s.init]
        policy = self._restart_policy()
        for s in inits:
            if s.current is not None and s.current.exit_code not in (None, 0) and policy == "Never":
                return "Failed"
        if not all(s.succeeded for s in inits):
            return "Pending"
        if any(s.current is not None and s.current.running for s in mains):
            return "Running"
        if mains and all(s.current is not None and s.current.exit_code is not None for s in mains):
            if policy == "Always":
                return "Running"
            if all(s.current is not None and s.current.exit_code == 0 for s in mains):
                return "Succeeded"
            if policy == "Never":
                return "Failed"
            return "Running"
        return "Pending"

    async def _write_status(self) -> None:
        if self.gone:
            return
        if self._terminal_phase():
            return
        inits = [s for s in self._slots.values() if s.init]
        mains = [s for s in self._slots.values() if not s.init]
        phase = self._phase()
        initialized = all(s.succeeded for s in inits)
        ready = bool(mains) and all(self._container_status(s)["ready"] for s in mains) and phase == "Running"
        self._set_condition("Initialized", initialized)
        self._set_condition("ContainersReady", ready, reason=None if ready else "ContainersNotReady")
        self._set_condition("Ready", ready, reason=None if ready else "ContainersNotReady")
        if self.pod["metadata"].get("deletionTimestamp"):
            self._set_condition("Ready", False, reason="PodCompleted")
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": self.ctx.node_ip,
            "hostIPs": [{"ip": self.ctx.node_ip}],
            "startTime": rfc3339(self._start_time),
            "conditions": list(self._conditions.values()),
            "containerStatuses": [self._container_status(s) for s in mains],
            "initContainerStatuses": [self._container_status(s) for s in inits],
        }
        if self._pod_ip:
            status["podIP"] = self._pod_ip
            status["podIPs"] = [{"ip": self._pod_ip}]
        # Like the kubelet's status manager, reconcile against what the API server holds, not only against what
        # was last written: the node lifecycle controller marks every pod of a node NotReady while the node is
        # silent, and nothing but the kubelet sets them Ready again.
        on_server = {c.get("type"): c.get("status") for c in (self.pod.get("status") or {}).get("conditions") or []}
        drifted = any(on_server.get(c["type"]) != c["status"] for c in status["conditions"] if c["type"] == "Ready")
        if status == self._last_status and not drifted:
            return
        try:
            await self.ctx.core.patch_namespaced_pod_status(self.name, self.namespace, {"status": status})
            self._last_status = status
        except client.ApiException as exc:
            if exc.status == 404:
                self.gone = True
            else:
                log.warning("status update of %s/%s failed: %s", self.namespace, self.name, exc.reason)
