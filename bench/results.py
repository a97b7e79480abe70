"""What one benchmark run measured: plain data, filled by ``bench.floor``, ``bench.ceiling``, ``bench.migration``,
``bench.drain``, ``bench.warmstart`` and ``bench.scale``, read by the pure ``bench.report`` and ``bench.history``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(kw_only=True)
class FloorRun:
    """A raw CRIU dump + restore of the app as a plain process (no Kubernetes, registry or images)."""

    dump_s: float | None = None  # `criu dump` wall time (freeze, dump, kill)
    restore_s: float | None = None  # `criu restore -d` wall time (until the process runs again)
    answer_s: float | None = None  # restore start -> first GET /healthz 200 from the restored process
    images_bytes: int | None = None  # CRIU's image directory
    dump_stats: dict[str, float] = field(default_factory=dict)  # `criu dump --display-stats`: frozen, memory dump, memory write
    state_ok: bool = False  # the restored process answered GET /state with the same boot_id
    error: str | None = None

    @property
    def floor_s(self) -> float | None:
        if self.dump_s is None or self.restore_s is None:
            return None
        return self.dump_s + self.restore_s

    @property
    def ok(self) -> bool:
        return self.error is None and self.state_ok


@dataclass(kw_only=True)
class MigrationRun:
    """One PodMigration of the app pod from node-1 (or real-1, in a containerd row), as its status recorded it."""

    pod: str = ""
    phase: str = ""  # Succeeded | Failed | "" (never finished)
    reason: str = ""
    total_s: float | None = None  # status.startTime -> status.completionTime
    downtime_s: float | None = None  # status.downtimeSeconds: source frozen -> target Ready
    client_gap_s: float | None = None  # a client polling /healthz: the source's last answer -> the target's first
    ready_lag_s: float | None = None  # the target's first answer -> status.readyAt (Ready reaching the control service)
    phases: dict[str, float] = field(default_factory=dict)  # status.phases[] end - start, by name, in the order they ran
    downtime_phases: list[str] = field(default_factory=list)  # the phases inside frozenAt .. readyAt
    agent: dict[str, float] = field(default_factory=dict)  # the source node's agent: freeze, checkpoint, pack, push, total
    stages: dict[str, float] = field(default_factory=dict)  # status.stages (when the control service writes it): seconds
    stage_bytes: dict[str, int] = field(default_factory=dict)  # status.stages: bytes per stage
    archive_bytes: int | None = None
    image_bytes: int | None = None
    volume_bytes: int | None = None  # status.volumeData.dataBytes: the emptyDir files moved
    agent_peak_bytes: int | None = None  # the source node's agent VmHWM after this run (a high-water mark: never goes down)
    cold_start_s: float | None = None  # pod created -> Ready on the source node (image pull, warm-up, ballast)
    machine_cpu_s: float | None = None  # CPU seconds the whole machine was busy, PodMigration created -> finished seen
    stage_cores: dict[str, float] = field(default_factory=dict)  # per stage: the machine's busy cores (bench.cpu)
    stage_registry_cpu_s: dict[str, float] = field(default_factory=dict)  # per stage: the registry's CPU seconds
    state_ok: bool = False  # same boot_id and the key written before the move, read back on the new pod IP
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.phase == "Succeeded" and self.state_ok


@dataclass(kw_only=True)
class CeilingRun:
    """The local registry at its best, with a raw client: one blob of random bytes pushed in one stream, the same
    bytes as ``streams`` blobs pushed in parallel, and the first blob read back (``bench.ceiling``)."""

    blob_bytes: int = 0
    streams: int = 4
    push_1_s: float | None = None  # POST + PUT of the whole blob, one stream
    push_n_s: float | None = None  # ``streams`` blobs of blob_bytes/streams, all at once, until the last is stored
    get_s: float | None = None  # GET of the whole blob, read to the end and discarded
    push_1_registry_cpu_s: float | None = None  # the registry process's CPU seconds during the one-stream push
    # The agent's own side of an upload, no registry: the blob hashed and encrypted as the agent does it (LayerPass,
    # one recipient), by one thread and with its hashes in lanes of their own (ocicheckpoint.pipe.Lanes)
    encrypt_1_s: float | None = None
    encrypt_lanes_s: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


RUNTIME_STANDIN = "standin"  # the local cluster's stand-in nodes (a Python kubelet + CRI-O stand-in): node-1 -> node-2
RUNTIME_CONTAINERD = "containerd"  # its real nodes (upstream kubelet + containerd 2.3 + runc): real-1 -> real-2


@dataclass(kw_only=True)
class SizeResult:
    size_mib: int
    emptydir_mib: int = 0  # random data in an emptyDir file the app holds open (no floor: the baseline is the same size without)
    # The nodes' runtime: a containerd row is the same app moved between the real nodes; its floors and ceilings are the
    # same size's (raw CRIU and the registry do not depend on the node's runtime).
    runtime: str = RUNTIME_STANDIN
    floors: list[FloorRun] = field(default_factory=list)
    ceilings: list[CeilingRun] = field(default_factory=list)
    migrations: list[MigrationRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            bool(self.migrations)
            and all(m.ok for m in self.migrations)
            and all(f.ok for f in self.floors)
            and all(c.ok for c in self.ceilings)
        )

    @property
    def label(self) -> str:
        runtime = f" {self.runtime}" if self.runtime != RUNTIME_STANDIN else ""
        return f"{self.size_mib}MiB" + (f"+{self.emptydir_mib}MiB emptyDir" if self.emptydir_mib else "") + runtime

    def failures(self) -> list[str]:
        out = []
        for i, f in enumerate(self.floors, 1):
            if not f.ok:
                out.append(f"floor run {i}: {f.error or 'restored process answered with another boot_id'}")
        for i, c in enumerate(self.ceilings, 1):
            if not c.ok:
                out.append(f"registry ceiling run {i}: {c.error}")
        for i, m in enumerate(self.migrations, 1):
            if not m.ok:
                why = m.error or (f"{m.phase or 'unfinished'} {m.reason}".strip() if m.phase != "Succeeded" else "state lost")
                out.append(f"migration run {i} ({m.pod}): {why}")
        return out


@dataclass(kw_only=True)
class DrainRun:
    """A NodeDrain of ``pods`` warm-up pods from node-1 to node-2, ``concurrency`` at a time (``bench.drain``)."""

    pods: int
    concurrency: int
    size_mib: int
    name: str = ""
    phase: str = ""  # the NodeDrain's: Succeeded | Failed | Blocked | Cancelled | "" (never finished)
    message: str = ""
    wall_s: float | None = None  # NodeDrain status.startTime -> completionTime
    observed_s: float | None = None  # the bench's own clock: NodeDrain created -> a final phase seen
    migrated: int = 0  # status.counts.migrated
    pod_totals: list[float] = field(default_factory=list)  # each PodMigration's startTime -> completionTime
    pod_downtimes: list[float] = field(default_factory=list)  # each PodMigration's downtimeSeconds
    single_total_s: float | None = None  # one pod of the same size moved alone in this run: the goal's unit
    machine_cpu_s: float | None = None  # CPU seconds the whole machine was busy, NodeDrain created -> a final phase seen
    single_cpu_s: float | None = None  # the same for one pod of the same size moved alone in this run (median)
    cores: int | None = None  # the machine's CPUs
    reference: MigrationRun | None = None  # that single migration, when no --sizes row had the drain's size
    state_ok: bool = False  # every pod on node-2, Ready, with the boot_id it had before the drain
    error: str | None = None

    @property
    def label(self) -> str:
        return f"drain {self.pods}x{self.size_mib}MiB k={self.concurrency}"

    @property
    def ok(self) -> bool:
        drained = self.error is None and self.phase == "Succeeded" and self.state_ok
        return drained and (self.reference is None or self.reference.ok)

    def failures(self) -> list[str]:
        out = []
        if not (self.error is None and self.phase == "Succeeded" and self.state_ok):
            why = self.error or f"{self.phase or 'unfinished'} {self.message}".strip()
            out.append(f"NodeDrain {self.name or '?'}: {why}")
        if self.reference is not None and not self.reference.ok:
            why = self.reference.error or self.reference.phase or "unfinished"
            out.append(f"reference migration ({self.reference.pod}): {why}")
        return out


@dataclass(kw_only=True)
class WarmStartRun:
    """One repeat of the warm start row (``bench.warmstart``): a Deployment scaled up from 1 to 1+N replicas with its
    new pods restored from a PodCheckpoint of its first pod, and a Deployment of the same template scaled up cold.

    A new pod's time is the scale request until it first answered ``GET /healthz`` 200 (polled every 50 ms); the
    first pod's is the API's own clock (creationTimestamp to the Ready condition's lastTransitionTime, whole seconds)."""

    pods: int  # new pods per scale-up (N)
    first_s: float | None = None  # the annotated Deployment's first pod (started cold): created -> Ready
    checkpoint: str = ""  # the PodCheckpoint's name
    checkpoint_s: float | None = None  # PodCheckpoint status.startTime -> completionTime (the pod ran on)
    checkpoint_bytes: int | None = None  # PodCheckpoint status.totalBytes
    warm_pods: list[float] = field(default_factory=list)  # each new pod of the annotated Deployment: created -> Ready
    cold_pods: list[float] = field(default_factory=list)  # each new pod of the Deployment without the annotation
    restored: int = 0  # new pods of the annotated Deployment with the checkpoint's annotation and its boot_id
    not_restored: list[str] = field(default_factory=list)  # the others: name and why (warm-start-skipped, boot_id)
    error: str | None = None

    @property
    def ok(self) -> bool:
        every = self.pods
        return self.error is None and self.restored == every and len(self.warm_pods) == every and len(self.cold_pods) == every


@dataclass(kw_only=True)
class WarmStartResult:
    """The warm start row: ``pods`` new pods per scale-up, of the smallest size, ``warmup_seconds`` of warm-up."""

    pods: int
    size_mib: int
    warmup_seconds: float
    runs: list[WarmStartRun] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"warm start {self.pods}x{self.size_mib}MiB warmup={self.warmup_seconds:g}s"

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.ok for r in self.runs)

    def failures(self) -> list[str]:
        out = []
        for i, r in enumerate(self.runs, 1):
            if r.ok:
                continue
            why = [r.error] if r.error else []
            why += [f"not restored: {', '.join(r.not_restored)}"] if r.not_restored else []
            if not why:
                why = [f"{len(r.warm_pods)} warm and {len(r.cold_pods)} cold pods of {r.pods} measured, {r.restored} restored"]
            out.append(f"run {i}: " + "; ".join(why))
        return out


@dataclass(kw_only=True)
class ScaleSample:
    """One drain of the scale row (``bench.scale``), with what the control service's own ``/metrics`` said around it.

    Counters are deltas between a scrape before ``bench.drain.measure`` and one after it (its pods started, drained
    and cleaned up); gauges are read after. A metric the control service does not export is None."""

    size: str  # "small" (the cluster as brought up) or "large" (grown with registration-only nodes and pods)
    nodes: int | None = None  # Node objects in the cluster right before the drain
    pods: int | None = None  # Pod objects in the cluster right before the drain (not yet its own)
    drain: DrainRun | None = None
    leader: str = ""  # the control service's leading pod both scrapes came from
    window_s: float | None = None  # between the two scrapes
    requests: float | None = None  # sum over every series of podmigrate_kube_requests_total, delta
    requests_by: dict[str, float] = field(default_factory=dict)  # "verb resource" -> delta, the series that moved
    cpu_s: float | None = None  # process_cpu_seconds_total, delta
    rss_before_bytes: int | None = None  # process_resident_memory_bytes before
    rss_after_bytes: int | None = None  # ... after
    rss_peak_bytes: int | None = None  # process_resident_memory_peak_bytes (VmHWM) after
    cache_pods: float | None = None  # podmigrate_informer_objects{resource="pods"} after
    cache_nodes: float | None = None  # podmigrate_informer_objects{resource="nodes"} after
    idle_s: float | None = None  # a window of nothing right before the drain: the control service's background cost
    idle_requests: float | None = None
    idle_cpu_s: float | None = None
    metrics_error: str | None = None  # why the figures are missing (no leader, scrape failed, leader changed)

    @property
    def ok(self) -> bool:
        return self.drain is not None and self.drain.ok


@dataclass(kw_only=True)
class ScaleResult:
    """The scale row: the same drain in the cluster as brought up and again after growing it to ``nodes`` nodes
    and ``pods`` more pods (registration-only: no kubelet runs them); what each costs the control service."""

    nodes: int  # the cluster's nodes after growing: its own plus registration-only ones
    pods: int  # registration-only pods added
    drain_pods: int
    concurrency: int
    size_mib: int
    small: ScaleSample | None = None
    large: ScaleSample | None = None
    added_nodes: int = 0  # registration-only Nodes created (and Ready)
    added_pods: int = 0  # registration-only Pods created
    nodes_s: float | None = None  # creating the Nodes and their status
    namespaces_s: float | None = None  # creating the namespaces, until each has its default ServiceAccount
    pods_s: float | None = None  # creating the Pods
    cache_wait_s: float | None = None  # the Pods created -> the control service's pod cache holds as many
    cache_pods_grown: float | None = None  # podmigrate_informer_objects{resource="pods"} then
    rss_grown_bytes: int | None = None  # process_resident_memory_bytes then
    error: str | None = None  # the growth failed (the large drain was not run)
    cleanup_error: str | None = None  # something of the growth was not removed (reported, never a failure)

    @property
    def label(self) -> str:
        return f"scale {self.nodes} nodes+{self.pods} pods, drain {self.drain_pods}x{self.size_mib}MiB k={self.concurrency}"

    @property
    def pods_per_s(self) -> float | None:
        return self.added_pods / self.pods_s if self.pods_s and self.added_pods else None

    @property
    def ok(self) -> bool:
        samples = (self.small, self.large)
        return self.error is None and all(s is not None and s.ok for s in samples)

    def failures(self) -> list[str]:
        out = [f"growing the cluster: {self.error}"] if self.error else []
        for sample in (self.small, self.large):
            if sample is None:
                continue
            if sample.drain is None:
                out.append(f"{sample.size} drain: not run")
            else:
                out += [f"{sample.size} {line}" for line in sample.drain.failures()]
        if self.small is None:
            out.append("small drain: not run")
        if self.large is None and self.error is None:
            out.append("large drain: not run")
        return out
