"""Daemons of the local cluster: start them, find them again, stop only our own.

Every long-running process the local cluster starts (control-plane components, the
registry, node processes) goes through here, so there is one answer to "is PID n really
ours?": a PID in a file is not proof (PIDs are recycled), so a process counts as ours only if
its command line names it and points into our state directory. Processes run in their own
session (a Ctrl-C aimed at the caller does not kill them half-way) with stdout and stderr
appended to ``logs/<name>.log``, and their PIDs in ``pids/<name>.pid`` so that another process
(``localcluster down``) can stop them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

LOG_TAIL_LINES: Final = 40


class ProcessError(RuntimeError):
    """A daemon failed to start, become ready or stop."""


def log_tail(path: Path, *, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def cached_build(*, script: Path, binaries: Iterable[str]) -> Path:
    """Run a build script that caches binaries by version; the bin dir it names, every binary checked.

    The script owns the version-to-path rule: it prints the bin dir as its last stdout line and
    is a fast no-op once the binaries exist; a first build's progress goes to our stderr.
    """
    proc = subprocess.run(["bash", str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ProcessError(f"{script} failed with exit code {proc.returncode}")
    bin_dir = Path(lines[-1])
    for name in binaries:
        if not os.access(bin_dir / name, os.X_OK):
            raise ProcessError(f"{bin_dir / name} is missing after {script}")
    return bin_dir


def pid_file(*, state_dir: Path, name: str) -> Path:
    return state_dir / "pids" / f"{name}.pid"


DAEMON_ENV = "LOCALCLUSTER_DAEMON"


def daemon_tag(*, state_dir: Path, name: str) -> str:
    """The value of ``DAEMON_ENV`` in every process ``Launcher`` starts: who it is, for which cluster."""
    return f"{state_dir}:{name}"


def is_ours(*, pid: int, name: str, state_dir: Path) -> bool:
    """True if ``pid`` is a live (non-zombie) ``name`` process started for ``state_dir``.

    PIDs are recycled, so a number in a file is not proof. The process must carry our tag in
    its environment (``Launcher`` sets it), or, for processes started otherwise, argv[0] must
    be the binary ``name`` (or ``name`` one of its arguments, as in ``--name node-1``) and one
    of its arguments must point into this state dir.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    if state in ("Z", "X") or not argv:
        return False
    if os.fsencode(f"{DAEMON_ENV}={daemon_tag(state_dir=state_dir, name=name)}") in environ:
        return True
    if Path(os.fsdecode(argv[0])).name != name and os.fsencode(name) not in argv[1:]:
        return False
    marker = os.fsencode(state_dir)
    return any(marker in arg for arg in argv[1:])


def terminate(
    *,
    pids: Mapping[str, int],
    state_dir: Path,
    children: Mapping[str, subprocess.Popen[bytes]],
    timeout: float,
) -> None:
    """SIGTERM ``pids`` together, wait up to ``timeout``, then SIGKILL what is left."""

    def alive(name: str, pid: int) -> bool:
        child = children.get(name)
        if child is not None and child.pid == pid:
            return child.poll() is None  # also reaps our own zombie
        return is_ours(pid=pid, name=name, state_dir=state_dir)

    targets = {n: p for n, p in pids.items() if alive(n, p)}
    for pid in targets.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while targets and time.monotonic() < deadline:
        targets = {n: p for n, p in targets.items() if alive(n, p)}
        if targets:
            time.sleep(0.05)
    for name, pid in targets.items():
        if alive(name, pid):  # re-check right before the kill: never SIGKILL a stranger
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    kill_deadline = time.monotonic() + 5.0
    while targets and time.monotonic() < kill_deadline:
        targets = {n: p for n, p in targets.items() if alive(n, p)}
        if targets:
            time.sleep(0.05)
    if targets:
        raise ProcessError(f"processes survived SIGKILL: {targets}")


class Launcher:
    """Starts processes and turns 'it died' or 'it never got ready' into a clear error."""

    def __init__(self, *, state_dir: Path, deadline: float) -> None:
        self.state_dir = state_dir
        self.deadline = deadline
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def launch(self, *, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        log_path = self.log(name)
        with log_path.open("ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            log.write(f"\n===== podmigrate: {stamp} starting: {' '.join(argv)}\n".encode())
            log.flush()
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,  # out of the caller's process group: no stray SIGINT
                close_fds=True,
                env={**os.environ, **(env or {}), DAEMON_ENV: daemon_tag(state_dir=self.state_dir, name=name)},
            )
        self.children[name] = child
        pid_file(state_dir=self.state_dir, name=name).write_text(f"{child.pid}\n")

    def fail(self, *, name: str, problem: str) -> ProcessError:
        return ProcessError(f"{name} {problem}; last lines of {self.log(name)}:\n{log_tail(self.log(name))}")

    def check_alive(self) -> None:
        for name, child in self.children.items():
            code = child.poll()
            if code is not None:
                raise self.fail(name=name, problem=f"exited with code {code}")

    def wait(self, *, name: str, what: str, ready: Callable[[], bool], interval: float = 0.1) -> None:
        """Poll ``ready()`` until true; blame ``name`` on timeout."""
        while True:
            self.check_alive()
            if ready():
                return
            if time.monotonic() > self.deadline:
                raise self.fail(name=name, problem=f"not ready in time: {what}")
            time.sleep(interval)
