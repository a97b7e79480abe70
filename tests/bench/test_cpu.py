"""bench.cpu: a stage's busy cores and the registry's CPU from samples, and the sampler itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import cpu
from bench.cpu import CpuSample


def _samples(*rows: tuple[float, float, float | None]) -> list[CpuSample]:
    return [CpuSample(at=at, busy_s=busy, registry_s=registry) for at, busy, registry in rows]


def test_a_window_reads_between_samples_linearly() -> None:
    # 2 cores busy from t=100 to t=101, then 1 core; the registry on one core throughout
    samples = _samples((100.0, 0.0, 10.0), (101.0, 2.0, 11.0), (102.0, 3.0, 12.0))
    whole = cpu.window(samples, start=100.0, end=102.0)
    assert whole is not None and whole.cores == pytest.approx(1.5) and whole.registry_cpu_s == pytest.approx(2.0)
    inner = cpu.window(samples, start=100.5, end=101.5)  # halfway between samples on both ends
    assert inner is not None and inner.cores == pytest.approx(1.5) and inner.registry_cpu_s == pytest.approx(1.0)
    first = cpu.window(samples, start=100.0, end=101.0)
    assert first is not None and first.cores == pytest.approx(2.0)


def test_no_figure_for_a_window_too_short_or_outside_the_samples() -> None:
    samples = _samples((100.0, 0.0, 0.0), (101.0, 1.0, 0.5))
    assert cpu.window(samples, start=100.0, end=100.1) is None, "shorter than MIN_WINDOW_S"
    assert cpu.window(samples, start=99.0, end=100.5) is None, "starts before the first sample"
    assert cpu.window(samples, start=100.5, end=101.5) is None, "ends after the last sample"
    assert cpu.window(samples[:1], start=100.0, end=101.0) is None


def test_a_registry_that_was_gone_or_restarted_gives_cores_only() -> None:
    gone = _samples((100.0, 0.0, 5.0), (101.0, 1.0, None))
    window = cpu.window(gone, start=100.0, end=101.0)
    assert window is not None and window.cores == pytest.approx(1.0) and window.registry_cpu_s is None
    restarted = _samples((100.0, 0.0, 5.0), (101.0, 1.0, 0.2))  # a new process counts from zero
    window = cpu.window(restarted, start=100.0, end=101.0)
    assert window is not None and window.registry_cpu_s is None


def test_process_cpu_seconds_reads_its_own_threads_not_its_children(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    tick = os.sysconf("SC_CLK_TCK")
    # pid (comm with spaces) state ppid ... utime=field 14, stime=15, cutime=16, cstime=17
    fields = ["S", "1"] + ["0"] * 9 + [str(3 * tick), str(tick), str(100 * tick), str(100 * tick)] + ["0"] * 30
    (tmp_path / "42" / "stat").write_text(f"42 (docker registry) {' '.join(fields)}\n")
    assert cpu.process_cpu_seconds(42, proc=tmp_path) == pytest.approx(4.0)
    assert cpu.process_cpu_seconds(43, proc=tmp_path) is None, "gone"
    assert cpu.process_cpu_seconds(None, proc=tmp_path) is None, "no PID known (no registry running)"
    own = cpu.process_cpu_seconds(os.getpid())
    assert own is not None and own > 0


def test_the_sampler_samples_until_stopped() -> None:
    sampler = cpu.CpuSampler(registry_pid=os.getpid(), interval=0.01)
    sampler.start()
    sum(i * i for i in range(200_000))  # some CPU of this process between samples
    samples = sampler.stop()
    assert len(samples) >= 2 and not sampler.is_alive()
    assert [s.at for s in samples] == sorted(s.at for s in samples)
    assert all(s.registry_s is not None for s in samples)
    assert samples[-1].busy_s >= samples[0].busy_s
    missing = cpu.CpuSampler(registry_pid=None, interval=0.01)
    missing.start()
    assert all(s.registry_s is None for s in missing.stop())


def test_machine_busy_seconds_count_every_cpu_state_but_idle_and_iowait(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    #                user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  1000 20 300 5000 400 10 5 15 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    ticks = os.sysconf("SC_CLK_TCK")
    assert cpu.machine_busy_seconds(stat=stat) == pytest.approx((1000 + 20 + 300 + 10 + 5 + 15) / ticks)
    assert cpu.machine_busy_seconds() > 0
