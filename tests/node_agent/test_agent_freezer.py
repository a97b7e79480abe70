"""The freezer's cgroup lookup and state machine, on fake cgroup trees (v1, v2, hybrid)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node_agent.freezer import CgroupFreezer, FreezeError, cgroup_names, container_id_from_status

CID = "0123abcd" * 8


def _v1_cgroup(root: Path, *parts: str) -> Path:
    d = root.joinpath("freezer", *parts)
    d.mkdir(parents=True)
    (d / "freezer.state").write_text("THAWED\n")
    return d


def _v2_cgroup(base: Path, *parts: str) -> Path:
    d = base.joinpath(*parts)
    d.mkdir(parents=True)
    (d / "cgroup.freeze").write_text("0\n")
    (d / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    return d


def test_container_id_from_status() -> None:
    assert container_id_from_status(f"cri-o://{CID}") == CID
    assert container_id_from_status(f"containerd://{CID}") == CID
    assert container_id_from_status(CID) == CID
    for bad in ("cri-o://../../etc", "cri-o://a/b", "cri-o://", ""):
        with pytest.raises(FreezeError):
            container_id_from_status(bad)


@pytest.mark.parametrize(
    "parts",
    [
        ("localcluster-n31", "pod-uid", CID),  # cgroupfs driver: the local cluster's layout
        ("kubepods.slice", "kubepods-burstable.slice", "kubepods-burstable-pod1.slice", f"crio-{CID}.scope"),  # systemd
        ("kubepods", "burstable", "pod1", f"crio-{CID}"),  # cgroupfs driver with CRI-O's prefix
    ],
)
def test_find_v1_every_naming(tmp_path: Path, parts: tuple[str, ...]) -> None:
    expected = _v1_cgroup(tmp_path, *parts)
    _v1_cgroup(tmp_path, "kubepods", f"crio-conmon-{CID}.scope")  # conmon's cgroup must not match
    (tmp_path / "unified").mkdir()
    freezer = CgroupFreezer(root=tmp_path)
    assert freezer.version == "v1"
    assert freezer.hierarchy == tmp_path / "freezer"
    assert freezer.find(CID) == expected
    assert freezer.find("f" * 64) is None


def test_find_is_cached_and_revalidated(tmp_path: Path) -> None:
    first = _v1_cgroup(tmp_path, "a", CID)
    freezer = CgroupFreezer(root=tmp_path)
    assert freezer.find(CID) == first
    (first / "freezer.state").unlink()
    first.rmdir()
    moved = _v1_cgroup(tmp_path, "b", CID)
    assert freezer.find(CID) == moved


def test_cgroup_names() -> None:
    assert cgroup_names("x") >= {"x", "crio-x.scope", "crio-x"}


async def test_freeze_and_thaw_v1(tmp_path: Path) -> None:
    cg = _v1_cgroup(tmp_path, "pod", CID)
    freezer = CgroupFreezer(root=tmp_path)
    await freezer.freeze(cg, timeout=1)
    assert (cg / "freezer.state").read_text() == "FROZEN"
    assert freezer.state(cg) == "FROZEN"
    await freezer.thaw(cg, timeout=1)
    assert freezer.state(cg) == "THAWED"


async def test_v1_waits_through_freezing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may report FREEZING for a while; freeze() waits (and asks again) until FROZEN."""
    cg = _v1_cgroup(tmp_path, "pod", CID)
    freezer = CgroupFreezer(root=tmp_path)
    kernel = ["FREEZING", "FREEZING", "FROZEN"]
    read: list[str] = []

    def state(_cg: Path) -> str:
        read.append(kernel[min(len(read), len(kernel) - 1)])
        return read[-1]

    monkeypatch.setattr(freezer, "state", state)
    await freezer.freeze(cg, timeout=1)
    assert (cg / "freezer.state").read_text() == "FROZEN", "it asked the kernel to freeze"
    assert read == ["FREEZING", "FREEZING", "FROZEN"], "freeze() returned before the kernel said FROZEN"


async def test_v1_asks_again_while_freezing_lingers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A v1 freeze stuck in FREEZING is written again (the kernel's advice); here only the second write completes."""
    cg = _v1_cgroup(tmp_path, "pod", CID)
    freezer = CgroupFreezer(root=tmp_path)
    writes: list[str] = []

    def state(_cg: Path) -> str:  # the kernel: every "FROZEN" written is taken up and shows as FREEZING until done
        if (written := (cg / "freezer.state").read_text()) != "FREEZING":
            writes.append(written)
            (cg / "freezer.state").write_text("FREEZING")
        return "FROZEN" if len(writes) >= 2 else "FREEZING"

    monkeypatch.setattr(freezer, "state", state)
    await freezer.freeze(cg, timeout=2)
    assert writes == ["FROZEN", "FROZEN"]


async def test_v1_freeze_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cg = _v1_cgroup(tmp_path, "pod", CID)
    freezer = CgroupFreezer(root=tmp_path)
    monkeypatch.setattr(freezer, "state", lambda _cg: "FREEZING")
    with pytest.raises(FreezeError, match="still FREEZING"):
        await freezer.freeze(cg, timeout=0.05)


@pytest.mark.parametrize("hybrid", [False, True])
async def test_freeze_and_thaw_v2(tmp_path: Path, hybrid: bool) -> None:
    if hybrid:  # no v1 freezer mounted: the unified hierarchy under <root>/unified
        base = tmp_path / "unified"
        base.mkdir()
    else:
        base = tmp_path
        (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    cg = _v2_cgroup(base, "kubepods.slice", f"crio-{CID}.scope")
    freezer = CgroupFreezer(root=tmp_path)
    assert freezer.version == "v2"
    assert freezer.hierarchy == base
    assert freezer.find(CID) == cg

    async def kernel() -> None:  # what the kernel does a little after "1" is written to cgroup.freeze
        for _ in range(1000):
            if (cg / "cgroup.freeze").read_text().strip() == "1":
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.02)
        (cg / "cgroup.events").write_text("populated 1\nfrozen 1\n")

    task = asyncio.create_task(kernel())
    assert freezer.state(cg) == "THAWED"
    await freezer.freeze(cg, timeout=1)
    await task
    assert freezer.state(cg) == "FROZEN"

    (cg / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    await freezer.thaw(cg, timeout=1)
    assert (cg / "cgroup.freeze").read_text() == "0"
    assert freezer.state(cg) == "THAWED"


async def test_v2_freeze_times_out_when_kernel_never_confirms(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("")
    cg = _v2_cgroup(tmp_path, "x", CID)
    freezer = CgroupFreezer(root=tmp_path)
    with pytest.raises(FreezeError):
        await freezer.freeze(cg, timeout=0.05)
    assert freezer.state(cg) == "FREEZING"


async def test_thaw_of_a_vanished_cgroup_is_quiet(tmp_path: Path) -> None:
    cg = _v1_cgroup(tmp_path, "pod", CID)
    (cg / "freezer.state").unlink()
    cg.rmdir()
    await CgroupFreezer(root=tmp_path).thaw(cg, timeout=0.1)


def test_a_thaw_also_continues_tasks_the_criu_hook_stopped(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    def state(pid: int) -> str:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]

    stopped, running = subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "60"])
    try:
        stopped.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while state(stopped.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        cgroup = _v1_cgroup(tmp_path, "pod", CID)
        (cgroup / "cgroup.procs").write_text(f"{stopped.pid}\n{running.pid}\n")
        assert CgroupFreezer(root=tmp_path).continue_stopped(cgroup) == 1
        deadline = time.monotonic() + 5
        while state(stopped.pid) == "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state(stopped.pid) != "T", "the stopped task runs again"
    finally:
        for proc in (stopped, running):
            proc.kill()
            proc.wait()


async def test_freeze_of_a_vanished_cgroup_fails(tmp_path: Path) -> None:
    (tmp_path / "freezer").mkdir()
    with pytest.raises(FreezeError):
        await CgroupFreezer(root=tmp_path).freeze(tmp_path / "freezer" / "gone", timeout=0.1)


async def test_kill_refuses_a_container_that_is_not_frozen(tmp_path: Path) -> None:
    cgroup = _v1_cgroup(tmp_path, "kubepods", "crio-abc.scope")
    (cgroup / "freezer.state").write_text("THAWED")
    (cgroup / "cgroup.procs").write_text("")
    with pytest.raises(FreezeError, match="not frozen"):
        await CgroupFreezer(root=tmp_path).kill_frozen(cgroup)


async def test_kill_of_a_frozen_cgroup_kills_before_it_thaws(tmp_path: Path) -> None:
    import subprocess

    victim = subprocess.Popen(["sleep", "60"])
    cgroup = _v1_cgroup(tmp_path, "kubepods", "crio-abc.scope")
    (cgroup / "freezer.state").write_text("FROZEN")
    (cgroup / "cgroup.procs").write_text(f"{victim.pid}\n")
    order: list[str] = []
    freezer = CgroupFreezer(root=tmp_path)

    async def thaw(path: Path, *, timeout: float = 10.0) -> None:
        order.append("thaw")
        assert victim.wait(timeout=5) == -9, "SIGKILL was sent before the thaw"
        (path / "freezer.state").write_text("THAWED")
        (path / "cgroup.procs").write_text("")  # the kernel empties it as the tasks die

    freezer.thaw = thaw  # type: ignore[method-assign]
    assert await freezer.kill_frozen(cgroup) == 1
    assert order == ["thaw"]


@pytest.mark.parametrize("listed", ["", "0\n0\n"], ids=["v1-other-pid-namespace", "v2-other-pid-namespace"])
async def test_kill_refuses_a_frozen_cgroup_whose_processes_it_cannot_see(tmp_path: Path, listed: str) -> None:
    """From a PID namespace of its own (hostPID: false) the agent reads no PIDs (v1) or zeros (v2): a kill would
    end nothing and the thaw would let the source run on after its checkpoint. It must refuse and stay frozen."""
    cgroup = _v1_cgroup(tmp_path, "kubepods", "crio-abc.scope")
    (cgroup / "freezer.state").write_text("FROZEN")
    (cgroup / "cgroup.procs").write_text(listed)
    freezer = CgroupFreezer(root=tmp_path)
    with pytest.raises(FreezeError, match=r"hostPID: true"):
        await freezer.kill_frozen(cgroup)
    assert (cgroup / "freezer.state").read_text() == "FROZEN", "not thawed"
