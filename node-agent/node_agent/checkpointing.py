"""Checkpointing a pod on this node: freeze, kubelet checkpoint, pack, push, delete -- or undo.

The order is the point:

1. read the pod: it must exist (404), be bound to *this* node and be Running (409);
2. freeze every running container of the pod (``freezer``) *before* the first checkpoint, so
   no container acts after its own checkpoint or after another's; on a runtime that will not
   checkpoint a frozen container (containerd), each container is instead stopped at the end of
   its own dump by the node's CRIU hook and frozen right after (``dumphook``);
3. per container, ask the kubelet for an archive (one at a time, as the runtime would anyway);
   as soon as an archive exists its upload starts in the background, overlapping the next
   container's checkpoint. The archive is read once: ``config.dump`` parsed, the CRIU images
   described for the answer (processes, memory, files, sockets: ``archives``), every byte hashed,
   encrypted to the nodes' public keys (the archive is the process's memory:
   ``ocicheckpoint.encryption``) and streamed to the registry as it is read
   (``publishing.push_streamed``); the image's config and manifest (``ocicheckpoint.image``)
   follow, and the archive is deleted;
4. answer with each image pinned by digest. The pod stays frozen: the caller thaws it (a
   failed migration) or deletes it (a finished one).

On any failure everything this request did is undone: pushes in flight are cancelled,
archives deleted, images already pushed for it deleted, and the containers *this request*
froze are thawed (a pod that was already frozen stays frozen: someone else froze it).
Requests for the same pod (checkpoint, thaw) are serialized.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from agentapi.contract import (
    STAGE_DUMP,
    STAGE_FREEZE,
    STAGE_UPLOAD,
    STAGE_VOLUMES,
    CheckpointRequest,
    CheckpointResponse,
    ContainerCheckpoint,
    ContainerTimings,
    FrozenState,
    PodRef,
    Stage,
    StageRecord,
    VolumeDataCheckpoint,
)
from node_agent import archives, dumphook, tags
from node_agent.archives import ArchiveError, ArchiveFacts
from node_agent.dumphook import DumpHook
from node_agent.errors import AgentError
from node_agent.freezer import CgroupFreezer, FreezeError, KillRefused, container_id_from_status
from node_agent.kubelet import KubeletEndpoint, KubeletError
from node_agent.leases import FreezeLeases, LeaseLapsed
from node_agent.metrics import AgentMetrics
from node_agent.pods import NodeView, PodSource, PodView
from node_agent.publishing import Publisher, describe
from node_agent.volumedata import EmptyDir, VolumeData, VolumeDataError
from ocicheckpoint.encryption import PublicKey
from ocicheckpoint.image import Descriptor, ImageDocuments, checkpoint_documents
from ocicheckpoint.names import MEDIA_TYPE_OCI_LAYER_TAR
from ocicheckpoint.reference import Reference, parse_reference
from ocicheckpoint.registry import RegistryError
from ocicheckpoint.volumedata import volume_data_image

log = logging.getLogger(__name__)
# How long the look at what a tag names before a push may take (``Checkpointer._tagged_before``).
TAG_LOOKUP_TIMEOUT_S = 10.0

REQUEST_MEMORY_S = 600.0  # how long a finished checkpoint's answer is given again to a retry with its request id
OUTCOME_BY_STAGE: dict[Stage, str] = {"freeze": "freeze_failed", "checkpoint": "checkpoint_failed", "push": "push_failed"}


class Kubelet(Protocol):
    async def checkpoint(
        self, *, endpoint: KubeletEndpoint, namespace: str, pod: str, container: str, timeout_seconds: int
    ) -> str: ...


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass(frozen=True, kw_only=True)
class _Frozen:
    name: str
    cgroup: Path


def _throughput(nbytes: int, seconds: float) -> float:
    return nbytes / seconds if seconds > 0 else 0.0


class Checkpointer:
    def __init__(
        self,
        *,
        node_name: str,
        pods: PodSource,
        freezer: CgroupFreezer,
        kubelet: Kubelet,
        publisher: Publisher,
        metrics: AgentMetrics,
        criu_version: str,
        host_root: Path = Path("/"),
        freeze_timeout_s: float = 10.0,
        tracer: trace.Tracer | None = None,
        dump_hook: DumpHook | None = None,
        volume_data: VolumeData | None = None,
        leases: FreezeLeases | None = None,
        recipients: Sequence[PublicKey] = (),
    ) -> None:
        self.node_name = node_name
        self._pods = pods
        self._freezer = freezer
        self._kubelet = kubelet
        self._publisher = publisher
        self._metrics = metrics
        self._criu_version = criu_version
        self._host_root = host_root
        self._freeze_timeout = freeze_timeout_s
        self._tracer = tracer or trace.get_tracer("node_agent")
        self._locks = KeyedLocks()
        self._hook = dump_hook or DumpHook()
        # Checkpoints by request id: in flight, or done and remembered for REQUEST_MEMORY_S (idempotent retries).
        self._requests: dict[str, tuple[CheckpointRequest, asyncio.Task[CheckpointResponse]]] = {}
        self._volume_data = volume_data or VolumeData()
        self.leases = leases or FreezeLeases()
        # The nodes' public keys: every layer pushed is encrypted to them (none: pushed in the clear, --no-encryption).
        self._recipients = tuple(recipients)
        # Archives a request holds (written by the kubelet, not yet pushed and deleted): a sweep leaves them.
        self._archives_in_use: set[Path] = set()

    # --- reading the pod --------------------------------------------------------------------
    async def _pod_here(self, ref: PodRef, *, stage: Stage | None, running: bool) -> PodView:
        try:
            pod = await self._pods.read_pod(namespace=ref.namespace, name=ref.pod)
        except Exception as exc:
            raise AgentError(f"reading pod {ref.namespace}/{ref.pod}: {exc}", status=500, stage=stage) from exc
        if pod is None:
            raise AgentError(f'pod "{ref.namespace}/{ref.pod}" not found', status=404, stage=stage)
        if pod.node_name != self.node_name:
            raise AgentError(
                f'pod "{ref.namespace}/{ref.pod}" runs on node "{pod.node_name}", this agent is on "{self.node_name}"',
                status=409,
                stage=stage,
            )
        if running and pod.phase != "Running":
            raise AgentError(f'pod "{ref.namespace}/{ref.pod}" is {pod.phase}, not Running', status=409, stage=stage)
        return pod

    def _cgroup(self, name: str, container_id: str) -> Path | None:
        try:
            return self._freezer.find(container_id_from_status(container_id))
        except FreezeError as exc:
            raise AgentError(f"container {name}: {exc}", status=500, stage="freeze") from None

    # --- freeze / thaw ----------------------------------------------------------------------
    async def _freeze_pod(self, pod: PodView, *, frozen_by_us: list[_Frozen]) -> None:
        """Freeze every running container; what this call froze is appended to ``frozen_by_us`` as it goes."""
        running = pod.running_container_ids()
        with self._tracer.start_as_current_span(
            "agent.freeze",
            attributes={
                "pod": pod.name,
                "namespace": pod.namespace,
                "node": self.node_name,
                "containers": sorted(running),
                "cgroup.version": self._freezer.version,
            },
        ) as span:
            already = []
            for name, cid in running.items():
                cgroup = self._cgroup(name, cid)
                if cgroup is None:
                    raise AgentError(
                        f"no cgroup for running container {name} ({cid}) under {self._freezer.hierarchy}",
                        status=500,
                        stage="freeze",
                    )
                try:
                    if self._freezer.state(cgroup) == "FROZEN":
                        already.append(name)
                        continue
                    frozen_by_us.append(_Frozen(name=name, cgroup=cgroup))
                    await self._freezer.freeze(cgroup, timeout=self._freeze_timeout)
                except (FreezeError, OSError) as exc:
                    raise AgentError(f"freezing container {name}: {exc}", status=500, stage="freeze") from None
            span.set_attribute("already_frozen", already)

    async def _rollback(self, frozen_by_us: list[_Frozen]) -> None:
        for item in reversed(frozen_by_us):
            try:
                await self._freezer.thaw(item.cgroup, timeout=self._freeze_timeout)
                self._metrics.thaws.inc(reason="rollback")
            except FreezeError as exc:
                log.error("rollback: could not thaw container %s (%s): %s", item.name, item.cgroup, exc)

    async def _unpublish(self, pushed: list[ContainerCheckpoint | VolumeDataCheckpoint]) -> None:
        """Delete the images of a failed request's containers that did get pushed (they hold process memory too)."""
        for item in pushed:
            try:
                await self._publisher.delete(image=parse_reference(item.image))
            except Exception as exc:
                log.error("could not delete image %s of a failed checkpoint: %s", item.image, exc)

    def _state_of(self, pod: PodView) -> FrozenState:
        states: dict[str, str] = {}
        for name, cid in pod.running_container_ids().items():
            cgroup = self._cgroup(name, cid)
            states[name] = "absent" if cgroup is None else self._freezer.state(cgroup)
        return FrozenState(frozen=bool(states) and all(s == "FROZEN" for s in states.values()), containers=states)

    async def frozen(self, ref: PodRef) -> FrozenState:
        pod = await self._pod_here(ref, stage=None, running=False)
        try:
            return self._state_of(pod)
        except (FreezeError, OSError) as exc:
            raise AgentError(f"reading freezer state: {exc}", status=500, stage="freeze") from None

    async def thaw(self, ref: PodRef, *, parent: otel_context.Context | None = None) -> list[str]:
        """Thaw every container of the pod that is frozen; returns their names (idempotent)."""
        with self._tracer.start_as_current_span(
            "agent.thaw", context=parent, kind=SpanKind.SERVER, attributes={"pod": ref.pod, "namespace": ref.namespace}
        ) as span:
            async with self._locks.hold((ref.namespace, ref.pod)):
                pod = await self._pod_here(ref, stage=None, running=False)
                thawed = []
                for name, cid in pod.known_container_ids().items():
                    cgroup = self._cgroup(name, cid)
                    if cgroup is None:
                        continue
                    try:
                        if self._freezer.state(cgroup) != "THAWED":
                            await self._freezer.thaw(cgroup, timeout=self._freeze_timeout)
                            thawed.append(name)
                        if self._freezer.continue_stopped(cgroup) and name not in thawed:
                            thawed.append(name)  # stopped by the CRIU hook, never frozen: the agent died in between
                    except (FreezeError, OSError) as exc:
                        raise AgentError(f"thawing container {name}: {exc}", status=500, stage="freeze") from None
                self._metrics.thaws.inc(len(thawed), reason="request")
                self.leases.release(namespace=ref.namespace, pod=ref.pod)
                span.set_attribute("thawed", thawed)
                return thawed

    async def kill(self, ref: PodRef, *, parent: otel_context.Context | None = None) -> list[str]:
        """End a frozen (checkpointed) pod's containers without letting them run again (idempotent).

        The control service calls this before deleting a migrated source, so the deletion needs
        no grace period: the containers are already dead, and were dead before they could thaw.
        """
        with self._tracer.start_as_current_span(
            "agent.kill", context=parent, kind=SpanKind.SERVER, attributes={"pod": ref.pod, "namespace": ref.namespace}
        ) as span:
            async with self._locks.hold((ref.namespace, ref.pod)):
                if self.leases.lapsed(namespace=ref.namespace, pod=ref.pod):
                    raise AgentError(
                        f"the freeze of {ref.namespace}/{ref.pod} lapsed (the control service stopped renewing it) and the "
                        "pod was thawed: it has run since its checkpoint, so it is not killed",
                        status=409, stage="freeze",
                    )  # fmt: skip
                pod = await self._pod_here(ref, stage=None, running=False)
                killed = []
                for name, cid in pod.known_container_ids().items():
                    cgroup = self._cgroup(name, cid)
                    if cgroup is None:
                        continue
                    try:
                        await self._freezer.kill_frozen(cgroup, timeout=self._freeze_timeout)
                        killed.append(name)
                    except FileNotFoundError:
                        continue  # already gone
                    except KillRefused as exc:
                        if killed:  # some containers are dead already: no way back for this pod
                            raise AgentError(f"killing container {name}: {exc}", status=409, stage="freeze") from None
                        raise AgentError(
                            f"not killed: {exc}", status=409, stage="freeze"
                        ) from None  # the pod is frozen and whole: the control service thaws it and gives up
                    except (FreezeError, OSError) as exc:
                        raise AgentError(f"killing container {name}: {exc}", status=409, stage="freeze") from None
                self.leases.release(namespace=ref.namespace, pod=ref.pod)
                span.set_attribute("killed", killed)
                return killed

    # --- freeze leases (node_agent.leases) ---------------------------------------------------
    def pod_lock(self, namespace: str, pod: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self._locks.hold((namespace, pod))

    def renew_lease(self, *, namespace: str, pod: str, seconds: int) -> int:
        try:
            self.leases.renew(namespace=namespace, pod=pod, seconds=seconds)
        except LeaseLapsed as exc:
            raise AgentError(str(exc), status=409, stage="freeze") from None
        except KeyError:
            raise AgentError(f"pod {namespace}/{pod} holds no freeze lease here", status=404, stage="freeze") from None
        return seconds

    async def expire_leases(self) -> list[str]:
        """Thaw every pod whose freeze lease lapsed (run every second by the agent); their names."""
        thawed = []
        for namespace, pod in self.leases.due():
            log.warning("freeze lease of %s/%s lapsed: the control service stopped renewing it; thawing", namespace, pod)
            self.leases.mark_lapsed(namespace=namespace, pod=pod)  # first: from now on a kill is refused
            try:
                await self.thaw(PodRef(namespace=namespace, pod=pod))
            except AgentError as exc:
                if exc.status not in (404, 409):  # gone, or on another node: nothing to thaw here
                    log.error("thawing %s/%s after its lease lapsed: %s", namespace, pod, exc.message)
            self._metrics.thaws.inc(reason="lease")
            thawed.append(f"{namespace}/{pod}")
        return thawed

    async def keep_leases(self, *, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire_leases()
            except Exception:
                log.exception("checking freeze leases")

    # --- leftover archives (node_agent.archives.sweep) ---------------------------------------
    async def sweep_archives(self, checkpoints_dir: Path, *, older_than_s: float, when: str) -> list[Path]:
        """Delete leftover archives no request of this agent holds; counted by ``when`` (start, periodic)."""
        removed = await asyncio.to_thread(
            archives.sweep, checkpoints_dir, older_than_s=older_than_s, keep=frozenset(self._archives_in_use)
        )
        self._metrics.archives_swept.inc(len(removed), when=when)
        return removed

    def _release_archive(self, archive: Path) -> None:
        archives.remove_archive(archive)  # streamed: no encrypted copy is ever written beside it
        self._archives_in_use.discard(archive)

    # --- images a retried checkpoint replaces under its tag (node_agent.tags) -----------------
    async def _tagged_before(self, *, ref: Reference, tag: str) -> str | None:
        """What ``tag`` names before this request pushes under it (None: nothing, or the registry would not say)."""
        try:
            # Bounded: only a retry's leftover depends on it, and a stalled registry must not hold the checkpoint
            # (the push that follows meets the same registry under its own deadline).
            lookup = tags.tagged_digest(self._publisher, registry=ref.registry, repository=ref.repository, tag=tag)
            return await asyncio.wait_for(lookup, timeout=TAG_LOOKUP_TIMEOUT_S)
        except Exception as exc:
            log.warning("could not read what %s/%s:%s names before pushing over it: %s", ref.registry, ref.repository, tag,
                        describe(exc))  # fmt: skip
            return None

    async def _delete_superseded(self, *, ref: Reference, tag: str, previous: str | None, pushed: str) -> None:
        """The manifest ``tag`` named before this push, unless it is the one pushed: nobody names it any more."""
        if previous is None or previous == pushed:
            return
        image = Reference(registry=ref.registry, repository=ref.repository, digest=previous)
        try:
            deleted = await self._publisher.delete(image=image)
        except Exception as exc:
            self._metrics.superseded_images.inc(outcome="error")
            log.error("could not delete %s, which a retried checkpoint replaced under %s (it holds process memory): %s",
                      image, tag, describe(exc))  # fmt: skip
            return
        self._metrics.superseded_images.inc(outcome="deleted" if deleted else "not_found")
        log.info("deleted %s: a retried checkpoint replaced it under tag %s with %s", image, tag, pushed)

    # --- checkpoint -------------------------------------------------------------------------
    async def checkpoint(self, req: CheckpointRequest, *, parent: otel_context.Context | None = None) -> CheckpointResponse:
        """Checkpoint the pod; with a ``request_id``, once: a retry joins the one in flight or gets its answer again.

        Why: the caller retries a call whose answer it did not get (a timeout, a reset connection).
        Without an id each retry would freeze and push again and orphan the first images. The
        work goes on if the caller goes away, so that its retry finds it; a failed checkpoint is
        forgotten at once (a retry starts afresh: the failure undid everything).
        """
        if req.request_id is None:
            return await self._checkpoint_once(req, parent=parent)
        known = self._requests.get(req.request_id)
        if known is not None:
            first, task = known
            if (first.namespace, first.pod, first.image_repository, first.tag) != (
                req.namespace,
                req.pod,
                req.image_repository,
                req.tag,
            ):
                raise AgentError(f"request id {req.request_id} was used for another checkpoint", status=409, stage="checkpoint")
            log.info("checkpoint %s of %s/%s: joining the one already %s", req.request_id, req.namespace, req.pod,
                     "done" if task.done() else "in flight")  # fmt: skip
            return await self._await_shielded(task)
        task = asyncio.create_task(self._checkpoint_once(req, parent=parent))
        self._requests[req.request_id] = (req, task)
        task.add_done_callback(lambda t, rid=req.request_id: self._remember(rid, t))
        return await self._await_shielded(task)

    @staticmethod
    async def _await_shielded(task: asyncio.Task[CheckpointResponse]) -> CheckpointResponse:
        """The checkpoint's result; it goes on if this caller goes away, and an abort is answered, not dropped."""
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                raise AgentError(
                    "the checkpoint was aborted (DELETE /v1/checkpoint) and undone", status=409, stage="checkpoint"
                ) from None
            raise

    async def abort(self, request_id: str) -> tuple[bool, list[str]]:
        """The caller gave up on this checkpoint (its deadline passed): undo it. (aborted?, images deleted)

        In flight: cancelled, which undoes it as any failure does (pushes cancelled, images deleted,
        what it froze thawed). Finished: its images are deleted (they hold process memory and nobody
        will use them); the pod stays as the checkpoint left it, for the caller's thaw.
        """
        known = self._requests.pop(request_id, None)
        if known is None:
            return False, []
        _, task = known
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            return True, []
        if task.cancelled() or task.exception() is not None:
            return False, []
        response = task.result()
        pushed: list[ContainerCheckpoint | VolumeDataCheckpoint] = [*response.containers]
        if response.volume_data is not None:
            pushed.append(response.volume_data)
        await self._unpublish(pushed)
        return False, [item.image for item in pushed]

    def _remember(self, request_id: str, task: asyncio.Task[CheckpointResponse]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._requests.pop(request_id, None)
            return
        asyncio.get_running_loop().call_later(REQUEST_MEMORY_S, self._requests.pop, request_id, None)

    async def _checkpoint_once(self, req: CheckpointRequest, *, parent: otel_context.Context | None) -> CheckpointResponse:
        started = time.monotonic()
        with self._tracer.start_as_current_span(
            "agent.checkpoint",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"pod": req.pod, "namespace": req.namespace, "node": self.node_name, "freeze": req.freeze},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                async with self._locks.hold((req.namespace, req.pod)):
                    response = await self._checkpoint(req, started=started)
            except AgentError as exc:
                # 404/409: the pod or container is not (or no longer) something to checkpoint here.
                rejected = exc.status in (400, 404, 409)
                self._metrics.checkpoints.inc(outcome="rejected" if rejected else OUTCOME_BY_STAGE[exc.stage or "checkpoint"])
                span.set_status(Status(StatusCode.ERROR, exc.message))
                span.set_attributes({"error.stage": exc.stage or "", "http.response.status_code": exc.status})
                raise
            except Exception as exc:
                self._metrics.checkpoints.inc(outcome="checkpoint_failed")
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise
            total = time.monotonic() - started
            self._metrics.checkpoints.inc(outcome="success")
            self._metrics.duration.observe(total, phase="total")
            span.set_attributes({"frozen": response.frozen, "containers": [c.name for c in response.containers]})
            images = ", ".join(f"{c.name} -> {c.image} ({c.archive_bytes} bytes)" for c in response.containers)
            log.info("checkpointed %s/%s in %.2fs: %s", req.namespace, req.pod, total, images)
            return response

    async def _checkpoint(self, req: CheckpointRequest, *, started: float) -> CheckpointResponse:
        pod = await self._pod_here(PodRef(namespace=req.namespace, pod=req.pod), stage="checkpoint", running=True)
        wanted = req.containers or pod.containers
        unknown = [name for name in wanted if name not in pod.containers]
        if unknown:
            raise AgentError(
                f'container "{unknown[0]}" not found in pod "{req.namespace}/{req.pod}"', status=404, stage="checkpoint"
            )
        missing = [v.name for v in req.volumes if v.name not in pod.empty_dirs]
        if missing:
            raise AgentError(
                f'pod "{req.namespace}/{req.pod}" has no emptyDir volume "{missing[0]}"', status=404, stage="checkpoint"
            )
        try:
            node = await self._pods.read_node(name=self.node_name)
        except Exception as exc:
            raise AgentError(f"reading node {self.node_name}: {exc}", status=500, stage="checkpoint") from exc

        frozen_by_us: list[_Frozen] = []
        kubelet_archives: list[Path] = []
        pushes: list[asyncio.Task[tuple[ContainerCheckpoint, StageRecord]]] = []
        volume_push: asyncio.Task[tuple[VolumeDataCheckpoint, StageRecord]] | None = None
        stages: list[StageRecord] = []
        freeze_s = 0.0
        stop_in_dump = req.freeze and not node.checkpoints_frozen_containers
        try:
            if req.freeze and not stop_in_dump:
                wall, t0 = time.time(), time.monotonic()
                await self._freeze_pod(pod, frozen_by_us=frozen_by_us)
                freeze_s = time.monotonic() - t0
                stages.append(StageRecord(name=STAGE_FREEZE, start=wall, end=wall + freeze_s))
                self._metrics.duration.observe(freeze_s, phase="freeze")
            multiple = len(wanted) > 1
            for name in wanted:
                wall = time.time()
                if stop_in_dump:
                    archive, checkpoint_s = await self._checkpoint_and_stop(req, pod=pod, node=node, container=name,
                                                                            frozen_by_us=frozen_by_us, stages=stages)  # fmt: skip
                else:
                    archive, checkpoint_s = await self._kubelet_checkpoint(req, node=node, container=name)
                kubelet_archives.append(archive)
                stages.append(StageRecord(name=STAGE_DUMP, start=wall, end=wall + checkpoint_s, container=name))
                pushes.append(
                    asyncio.create_task(
                        self._pack_and_push(
                            req, node=node, container=name, archive=archive, checkpoint_s=checkpoint_s, multiple=multiple
                        )
                    )
                )
                failed = next((t for t in pushes if t.done() and not t.cancelled() and t.exception()), None)
                if failed is not None:
                    await failed  # raises its error: stop checkpointing the rest
            if req.volumes:
                # Every container is dumped and stopped now: the files are the ones the memory images saw.
                volume_push = asyncio.create_task(self._capture_and_push_volumes(req, pod=pod))
            uploaded = await asyncio.gather(*pushes)
            results = [checkpoint for checkpoint, _ in uploaded]
            stages += [stage for _, stage in uploaded]
            volume_data = None
            if volume_push is not None:
                volume_data, volume_stage = await volume_push
                stages.append(volume_stage)
        except BaseException:
            tasks: list[asyncio.Task[Any]] = [*pushes, *([volume_push] if volume_push else [])]
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            await self._rollback(frozen_by_us)
            await self._unpublish([o[0] for o in outcomes if isinstance(o, tuple)])
            raise
        finally:
            for archive in kubelet_archives:
                self._release_archive(archive)
        frozen = True
        if req.freeze and req.freeze_lease_seconds:
            self.leases.grant(namespace=req.namespace, pod=req.pod, seconds=req.freeze_lease_seconds)
        if not req.freeze:
            try:
                frozen = self._state_of(pod).frozen
            except (AgentError, FreezeError, OSError):
                frozen = False
        return CheckpointResponse(
            frozen=frozen,
            containers=tuple(results),
            freeze_s=freeze_s,
            total_s=time.monotonic() - started,
            volume_data=volume_data,
            stages=tuple(sorted(stages, key=lambda stage: stage.start)),
        )

    async def _capture_and_push_volumes(
        self, req: CheckpointRequest, *, pod: PodView
    ) -> tuple[VolumeDataCheckpoint, StageRecord]:
        """Tar the pod's emptyDir volumes (frozen: nothing writes them) and push them as one artifact."""
        common = {"pod": req.pod, "namespace": req.namespace, "node": self.node_name}
        volumes = [EmptyDir(name=v.name, medium=v.medium) for v in req.volumes]
        ref = req.repository
        before = asyncio.create_task(self._tagged_before(ref=ref, tag=req.volume_tag))  # read while the files are captured
        with self._tracer.start_as_current_span(
            "volumes.capture", attributes={**common, "volumes": [v.name for v in volumes]}
        ) as span:
            started_at, t0 = time.time(), time.monotonic()
            try:
                layers = await asyncio.to_thread(self._volume_data.capture, pod_uid=pod.uid, volumes=volumes)
            except (VolumeDataError, OSError) as exc:
                before.cancel()
                raise AgentError(f"capturing emptyDir data: {exc}", status=500, stage="checkpoint") from None
            except BaseException:
                before.cancel()
                raise
            capture_s = time.monotonic() - t0
            data_bytes = sum(layer.size for layer in layers)
            span.set_attributes({"bytes": data_bytes, "throughput": _throughput(data_bytes, capture_s)})
        try:
            image = await asyncio.to_thread(
                volume_data_image, layers=layers, namespace=req.namespace, pod=req.pod, recipients=self._recipients
            )
            previous = await before
            with self._tracer.start_as_current_span(
                "registry.push",
                attributes={**common, "registry": ref.registry, "repository": ref.repository, "tag": req.volume_tag},
            ) as span:
                t0 = time.monotonic()
                try:
                    pushed = await self._publisher.push(
                        image=image, registry=ref.registry, repository=ref.repository, tag=req.volume_tag
                    )
                except Exception as exc:
                    raise AgentError(
                        f"pushing volume data to {ref.registry}/{ref.repository}: {exc}", status=500, stage="push"
                    ) from None
                push_s = time.monotonic() - t0
                span.set_attributes({"bytes": pushed.uploaded_bytes, "digest": pushed.manifest_digest})
                self._metrics.pushed_bytes.inc(pushed.uploaded_bytes)
            await self._delete_superseded(ref=ref, tag=req.volume_tag, previous=previous, pushed=pushed.manifest_digest)
        finally:
            if not before.done():
                before.cancel()
            self._volume_data.discard(layers)  # the pod's files: never kept past their push
        checkpoint = VolumeDataCheckpoint(
            image=f"{ref.registry}/{ref.repository}@{pushed.manifest_digest}",
            digest=pushed.manifest_digest,
            volumes=tuple(layer.name for layer in layers),
            data_bytes=data_bytes,
            capture_s=capture_s,
            push_s=push_s,
        )
        stage = StageRecord(name=STAGE_VOLUMES, start=started_at, end=time.time(), bytes=data_bytes)
        return checkpoint, stage

    async def _checkpoint_and_stop(
        self,
        req: CheckpointRequest,
        *,
        pod: PodView,
        node: NodeView,
        container: str,
        frozen_by_us: list[_Frozen],
        stages: list[StageRecord],
    ) -> tuple[Path, float]:
        """The kubelet checkpoint with the node's CRIU hook armed: the container stops as its dump ends, then is frozen.

        Its ``freeze`` stage (appended to ``stages``) is therefore the container's, after its ``dump``.
        """
        cid = pod.running_container_ids().get(container)
        if cid is None:
            raise AgentError(f"container {container} is not running", status=409, stage="freeze")
        container_id = container_id_from_status(cid)
        cgroup = self._cgroup(container, cid)
        if cgroup is None:
            raise AgentError(f"no cgroup for running container {container} ({cid})", status=500, stage="freeze")
        self._hook.arm(container_id)
        try:
            try:
                archive, checkpoint_s = await self._kubelet_checkpoint(req, node=node, container=container)
            except BaseException:
                dumphook.resume(self._hook.stopped(container_id) or [])  # dumped, then the checkpoint failed
                raise
            if self._hook.stopped(container_id) is None:
                self._release_archive(archive)
                raise AgentError(
                    f"container {container} was checkpointed but not stopped: the node's CRIU configuration does not "
                    f"run podmigrate's post-dump hook ({dumphook.SCRIPT.name}; see docs/facts.md, \"Freezing on "
                    f"containerd\"), so the container ran on after its checkpoint and stays where it is",
                    status=500, stage="freeze",
                )  # fmt: skip
            try:
                frozen_by_us.append(_Frozen(name=container, cgroup=cgroup))
                wall, t0 = time.time(), time.monotonic()
                await self._freezer.freeze_stopped(cgroup, timeout=self._freeze_timeout)
                freeze_s = time.monotonic() - t0
                stages.append(StageRecord(name=STAGE_FREEZE, start=wall, end=wall + freeze_s, container=container))
                self._metrics.duration.observe(freeze_s, phase="freeze")
            except (FreezeError, OSError) as exc:
                raise AgentError(
                    f"freezing container {container} after its checkpoint: {exc}", status=500, stage="freeze"
                ) from None
            return archive, checkpoint_s
        finally:
            self._hook.disarm(container_id)

    async def _kubelet_checkpoint(self, req: CheckpointRequest, *, node: NodeView, container: str) -> tuple[Path, float]:
        with self._tracer.start_as_current_span(
            "kubelet.checkpoint",
            attributes={
                "pod": req.pod,
                "namespace": req.namespace,
                "container": container,
                "node": self.node_name,
                "kubelet": node.kubelet.base_url,
            },
        ) as span:
            t0 = time.monotonic()
            try:
                reported = await self._kubelet.checkpoint(
                    endpoint=node.kubelet,
                    namespace=req.namespace,
                    pod=req.pod,
                    container=container,
                    timeout_seconds=req.timeout_seconds,
                )
            except KubeletError as exc:
                status = 404 if exc.status == 404 else 502
                raise AgentError(str(exc), status=status, stage="checkpoint") from None
            elapsed = time.monotonic() - t0
            try:
                archive = archives.archive_on_host(reported, host_root=self._host_root)
            except ArchiveError as exc:
                raise AgentError(str(exc), status=500, stage="checkpoint") from None
            self._archives_in_use.add(archive)
            size = archive.stat().st_size
            span.set_attributes({"bytes": size, "archive": str(archive)})
            self._metrics.duration.observe(elapsed, phase="checkpoint")
            self._metrics.archive_bytes.inc(size)
            return archive, elapsed

    async def _pack_and_push(
        self, req: CheckpointRequest, *, node: NodeView, container: str, archive: Path, checkpoint_s: float, multiple: bool
    ) -> tuple[ContainerCheckpoint, StageRecord]:
        """Read the archive once: parse its ``config.dump``, hash, encrypt and upload it as it is read.

        Nothing waits for a whole-archive pass before the push starts (``Publisher.push_streamed``):
        the read, the hashes, the encryption and the registry's ingest overlap, on two cores.
        """
        common = {"pod": req.pod, "namespace": req.namespace, "container": container, "node": self.node_name}
        ref = req.repository
        tag = req.tag_for(container, multiple=multiple)
        # Read while the archive streams (off the frozen pod's critical path), before the push moves the tag.
        before = asyncio.create_task(self._tagged_before(ref=ref, tag=tag))

        def documents(layer: Descriptor, diff_id: str, facts: ArchiveFacts) -> ImageDocuments:
            info = archives.checkpoint_info(
                facts=facts,
                pod=req.pod,
                namespace=req.namespace,
                container=container,
                criu_version=self._criu_version,
                engine=node.engine,
                cgroup_version=self._freezer.version,
            )
            return checkpoint_documents(layer=layer, diff_id=diff_id, info=info)

        try:
            with self._tracer.start_as_current_span(
                "registry.push", attributes={**common, "registry": ref.registry, "repository": ref.repository, "tag": tag}
            ) as span:
                started_at, t0 = time.time(), time.monotonic()
                try:
                    pushed = await self._publisher.push_streamed(
                        registry=ref.registry,
                        repository=ref.repository,
                        tag=tag,
                        size=archive.stat().st_size,
                        media_type=MEDIA_TYPE_OCI_LAYER_TAR,
                        recipients=self._recipients,
                        produce=lambda sink: archives.inspect_archive(archive, sink=sink),
                        documents=documents,
                        before_tag=lambda: asyncio.wait([before]),
                    )
                except ArchiveError as exc:
                    raise AgentError(str(exc), status=500, stage="checkpoint") from None
                except RegistryError as exc:
                    raise AgentError(f"pushing to {ref.registry}/{ref.repository}: {exc}", status=500, stage="push") from None
                except Exception as exc:  # connection errors and timeouts, after the retries ran out
                    raise AgentError(
                        f"pushing to {ref.registry}/{ref.repository}: {describe(exc)}", status=500, stage="push"
                    ) from None
                push_s = time.monotonic() - t0
                facts = pushed.produced
                span.set_attributes(
                    {
                        "bytes": pushed.result.uploaded_bytes,
                        "archive.bytes": facts.size,
                        "digest": pushed.result.manifest_digest,
                        "layer.digest": pushed.layer.digest,
                        "diff_id": pushed.diff_id,
                        "encrypted": bool(self._recipients),
                        "throughput": _throughput(pushed.result.uploaded_bytes, push_s),
                    }
                )
                self._metrics.duration.observe(push_s, phase="push")
                self._metrics.pushed_bytes.inc(pushed.result.uploaded_bytes)
            previous = await before  # done: the push waited for it before moving the tag
            await self._delete_superseded(ref=ref, tag=tag, previous=previous, pushed=pushed.result.manifest_digest)
        finally:
            if not before.done():
                before.cancel()
            self._release_archive(archive)  # holds process memory: never keep it past this point
        docs = pushed.documents
        image_bytes = pushed.layer.size + docs.config.size + len(docs.manifest_bytes)
        stage = StageRecord(
            name=STAGE_UPLOAD, start=started_at, end=started_at + push_s, container=container, bytes=pushed.layer.size
        )
        checkpoint = ContainerCheckpoint(
            name=container,
            # repo@sha256 without the tag: containers/image (CRI-O, skopeo, Podman) refuses tag+digest references.
            image=f"{ref.registry}/{ref.repository}@{pushed.result.manifest_digest}",
            digest=pushed.result.manifest_digest,
            base_image=facts.base_image,
            archive_bytes=facts.size,
            image_bytes=image_bytes,
            timings=ContainerTimings(checkpoint_s=checkpoint_s, push_s=push_s),
            inspection=facts.inspection.to_json() if facts.inspection is not None else None,
            criu_version=self._criu_version,
        )
        return checkpoint, stage
