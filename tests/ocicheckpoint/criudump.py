"""A real ``criu dump`` of a small process tree, for the tests of the CRIU image reader.

Why real: ``ocicheckpoint.criuimages`` is written by hand against CRIU's ``.proto`` files, and only
images CRIU itself wrote show that it reads what CRIU writes (hand-made bytes show only that it
reads what we think CRIU writes). The tree is ``sh`` with two children: ``sleep``, and a Python
process holding what an application holds: a TCP listener, a UDP socket on ``::1`` (when the host
has IPv6), a listening unix socket, a connected unix socket pair and an open log file. Everything
starts in its own session with stdin, stdout and stderr on ``/dev/null`` and no other inherited
descriptor (CRIU refuses one it cannot place: bench/floor.py). ``criu dump`` kills the tree once it
is written; whatever is left (a failed dump) is killed by PID, checked against its start time so a
reused PID is never signalled, and the directory is removed.

Needs root and CRIU (``localcluster/install-deps.sh``). CI has both and runs these tests there
(``CI=true``: missing either fails the test); elsewhere they are skipped without them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localcluster import cluster as lc
from ocicheckpoint import names

APP = """
import json, os, socket, sys, time
ready, workdir = sys.argv[1], sys.argv[2]
tcp = socket.socket()
tcp.bind(("127.0.0.1", 0))
tcp.listen()
try:
    udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp6.bind(("::1", 0))
except OSError:
    udp6 = None
unix = socket.socket(socket.AF_UNIX)
unix.bind(os.path.join(workdir, "app.sock"))
unix.listen()
left, right = socket.socketpair()
log = open(os.path.join(workdir, "app.log"), "a")
info = {
    "tcp": [tcp.fileno(), tcp.getsockname()[1]],
    "udp6": [udp6.fileno(), udp6.getsockname()[1]] if udp6 else None,
    "unix": [unix.fileno(), os.path.join(workdir, "app.sock")],
    "pair": [left.fileno(), right.fileno()],
    "log": [log.fileno(), os.path.join(workdir, "app.log")],
}
with open(ready + ".tmp", "w") as out:
    json.dump(info, out)
os.rename(ready + ".tmp", ready)
time.sleep(1000)
"""


@dataclass(frozen=True, kw_only=True)
class Dump:
    images: Path  # the ``criu dump -D`` directory
    workdir: Path  # the tree's cwd
    shell: int
    sleep: int
    python: int
    app: dict[str, Any]  # what the Python process opened: name -> [fd, port or path], as APP writes it


def running_in_ci() -> bool:
    return os.environ.get("CI") == "true"


def criu() -> Path:
    """CRIU, as root: CI fails without it, a developer's machine skips."""
    reason = ""
    if os.geteuid() != 0:
        reason = "criu dump needs root"
    else:
        try:
            return lc.tool("criu")
        except lc.ClusterError as exc:
            reason = str(exc)
    if running_in_ci():
        pytest.fail(f"CI must run the real CRIU dump tests: {reason}", pytrace=False)
    pytest.skip(reason)


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _kill(pid: int, started: str | None) -> None:
    """SIGKILL ``pid`` if it is still the process that started at ``started``."""
    if started is not None and _start_time(pid) == started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no dump.log)"
    return " | ".join(([line for line in lines if "Error" in line] or lines)[-5:])


@contextlib.contextmanager
def dumped_tree() -> Iterator[Dump]:
    """Start the tree, ``criu dump`` it, yield the images; always kill what is left and remove the directory."""
    binary = criu()
    # Short: a unix socket's path must fit in 108 bytes, which pytest's tmp_path need not.
    workdir = Path(tempfile.mkdtemp(prefix="pm-criu-"))
    images = workdir / "images"
    images.mkdir()
    script = workdir / "app.py"
    script.write_text(APP)
    ready = workdir / "ready.json"
    command = f"sleep 1000 & {shlex.quote(sys.executable)} -I -S {shlex.quote(str(script))} {ready} {workdir} & wait"
    shell = subprocess.Popen(
        ["sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
        cwd=workdir,
        env={"PATH": "/usr/bin:/bin"},
    )
    started: dict[int, str | None] = {}
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() or len(_children(shell.pid)) < 2:
            if time.monotonic() > deadline or shell.poll() is not None:
                pytest.fail(f"the process tree to dump never got ready (sh exited {shell.poll()})", pytrace=False)
            time.sleep(0.02)
        children = _children(shell.pid)
        started = {pid: _start_time(pid) for pid in children}
        by_comm = {_comm(pid): pid for pid in children}
        python = next(pid for comm, pid in by_comm.items() if comm.startswith("python"))
        dump = subprocess.run(
            [str(binary), "dump", "-t", str(shell.pid), "-D", str(images), "-o", "dump.log"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        if dump.returncode != 0:
            pytest.fail(f"criu dump failed ({dump.returncode}): {_tail(images / 'dump.log')}", pytrace=False)
        shell.wait(timeout=10)  # the dump killed it: reap it
        yield Dump(
            images=images,
            workdir=workdir,
            shell=shell.pid,
            sleep=by_comm["sleep"],
            python=python,
            app=json.loads(ready.read_text()),
        )
    finally:
        for pid, when in started.items():
            _kill(pid, when)
        if shell.poll() is None:
            shell.kill()
            shell.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def archive_of(dump: Dump, path: Path, *, config: dict[str, Any] | None = None) -> Path:
    """The dump as a kubelet archive (CRI-O layout): ``config.dump``, ``spec.dump`` and the images under ``checkpoint/``."""
    config = config or {"id": "app", "name": "app", "rootfsImageName": "example.com/app:1", "runtime": "runc"}
    with tarfile.open(path, "w") as tar:
        for name, data in (
            (names.CONFIG_DUMP_FILE, json.dumps(config).encode()),
            (names.SPEC_DUMP_FILE, json.dumps({"ociVersion": "1.0.0", "annotations": {}, "mounts": []}).encode()),
        ):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, fileobj=io.BytesIO(data))
        tar.add(dump.images, arcname=names.CHECKPOINT_DIRECTORY)
    return path
