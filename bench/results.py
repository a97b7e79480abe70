"""What one benchmark run measured: plain data, filled by ``bench.floor`` and ``bench.migration``."""

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
    """One PodMigration of the app pod from node-1, as its status recorded it."""

    pod: str = ""
    phase: str = ""  # Succeeded | Failed | "" (never finished)
    reason: str = ""
    total_s: float | None = None  # status.startTime -> status.completionTime
    downtime_s: float | None = None  # status.downtimeSeconds: source frozen -> target Ready
    client_gap_s: float | None = None  # a client polling /healthz: the source's last answer -> the target's first
    ready_lag_s: float | None = None  # the target's first answer -> status.readyAt (Ready reaching the control service)
    phases: dict[str, float] = field(default_factory=dict)  # status.phases[] end - start, by name, in the order they ran
    downtime_phases: list[str] = field(default_factory=list)  # the phases inside frozenAt .. readyAt
    agent: dict[str, float] = field(default_factory=dict)  # node-1 agent: freeze, checkpoint, pack, push, total
    archive_bytes: int | None = None
    image_bytes: int | None = None
    volume_bytes: int | None = None  # status.volumeData.dataBytes: the emptyDir files moved
    agent_peak_bytes: int | None = None  # node-1 agent VmHWM after this run (a high-water mark: never goes down)
    cold_start_s: float | None = None  # pod created -> Ready on node-1 (image pull, warm-up, ballast)
    state_ok: bool = False  # same boot_id and the key written before the move, read back on the new pod IP
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.phase == "Succeeded" and self.state_ok


@dataclass(kw_only=True)
class SizeResult:
    size_mib: int
    emptydir_mib: int = 0  # random data in an emptyDir file the app holds open (no floor: the baseline is the same size without)
    floors: list[FloorRun] = field(default_factory=list)
    migrations: list[MigrationRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.migrations) and all(m.ok for m in self.migrations) and all(f.ok for f in self.floors)

    @property
    def label(self) -> str:
        return f"{self.size_mib}MiB" + (f"+{self.emptydir_mib}MiB emptyDir" if self.emptydir_mib else "")

    def failures(self) -> list[str]:
        out = []
        for i, f in enumerate(self.floors, 1):
            if not f.ok:
                out.append(f"floor run {i}: {f.error or 'restored process answered with another boot_id'}")
        for i, m in enumerate(self.migrations, 1):
            if not m.ok:
                why = m.error or (f"{m.phase or 'unfinished'} {m.reason}".strip() if m.phase != "Succeeded" else "state lost")
                out.append(f"migration run {i} ({m.pod}): {why}")
        return out
