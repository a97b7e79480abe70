"""The floor: a raw CRIU dump + restore of the same app, without Kubernetes, a registry or images.

The warmup server runs as a plain process with the host's Debian ``python3`` (the very binary
the test image copies), the same ``BALLAST_MB``, in its own session with stdin/stdout/stderr on
``/dev/null`` and no inherited descriptors: CRIU refuses a descriptor pointing at a host file it
cannot place (docs/facts.md, "CRIU and runc": "Can't lookup mount=... for fd=10"). ``criu dump`` kills the process
after dumping (no ``--leave-running``); we reap it so its PID is free for ``criu restore``, which
must recreate the process with the same PID.
"""

from __future__ import annotations

import contextlib
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
from pathlib import Path
from typing import Any, Final

from bench import stats
from bench.results import FloorRun

REPO: Final = Path(__file__).resolve().parent.parent
APP: Final = REPO / "localcluster" / "apps" / "warmup_server.py"
PYTHON: Final = Path("/usr/bin/python3")


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(url: str, *, timeout: float = 2.0) -> tuple[int, Any]:
    """GET ``url``; (status, parsed body). Connection errors are status 0."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return int(exc.code), None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def _wait_healthy(url: str, *, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_json(url, timeout=1.0)[0] == 200:
            return True
        time.sleep(interval)
    return False


def _is_app(pid: int) -> bool:
    """True if ``pid`` is a live process running the warmup server (never signal a recycled PID)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and os.fsencode(APP) in argv


def _stop_restored(pid: int) -> None:
    """SIGTERM the restored process (not our child: CRIU detached it), SIGKILL after 5 s, wait until it is gone."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if not _is_app(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _is_app(pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def _criu_tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in text if "Error" in line] or text
    return " | ".join(errors[-lines:])


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(*, size_mib: int, workdir: Path, criu: Path, warmup_seconds: float = 1.0, images_dir: Path | None = None) -> FloorRun:
    """Start the app, dump it, restore it, check it is the same process, stop it; always clean up.

    ``images_dir`` is where CRIU's image files go (default: under ``workdir``). The bench puts them
    on a tmpfs, because the local nodes' checkpoints directories are tmpfs mounts: the floor is
    the best case, so it is measured on the same medium the pipeline writes to.
    """
    run = FloorRun()
    images = (images_dir or workdir) / f"criu-{size_mib}mib"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    pidfile = workdir / f"criu-{size_mib}mib.pid"
    pidfile.unlink(missing_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PORT": str(port),
        "WARMUP_SECONDS": str(warmup_seconds),
        "BALLAST_MB": str(size_mib),
    }
    proc = subprocess.Popen(
        [str(PYTHON), "-u", str(APP)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
        env=env,
        cwd="/",
    )
    restored: int | None = None
    try:
        if not _wait_healthy(f"{base}/healthz", timeout=60 + size_mib / 10):
            run.error = f"the app (pid {proc.pid}) never answered GET /healthz on 127.0.0.1:{port}"
            return run
        code, before = http_json(f"{base}/state")
        if code != 200 or not isinstance(before, dict):
            run.error = f"GET /state answered {code} before the dump"
            return run

        t0 = time.monotonic()
        dump = subprocess.run(
            [str(criu), "dump", "-t", str(proc.pid), "-D", str(images), "-o", "dump.log",
             "--shell-job", "--tcp-close", "--skip-in-flight", "--display-stats"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
        )  # fmt: skip
        run.dump_s = time.monotonic() - t0
        if dump.returncode != 0:
            run.dump_s = None
            run.error = f"criu dump failed ({dump.returncode}): {_criu_tail(images / 'dump.log')}"
            return run
        run.dump_stats = stats.criu_stat_times(dump.stdout + dump.stderr)
        proc.wait(timeout=10)  # dump killed it: reap the zombie so the PID is free for the restore
        run.images_bytes = _dir_bytes(images)

        t0 = time.monotonic()
        restore = subprocess.run(
            [str(criu), "restore", "-D", str(images), "-o", "restore.log", "-d",
             "--shell-job", "--tcp-close", "--pidfile", str(pidfile)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
            close_fds=True,
        )  # fmt: skip
        run.restore_s = time.monotonic() - t0
        with contextlib.suppress(OSError, ValueError):
            restored = int(pidfile.read_text().strip())
        if restore.returncode != 0:
            run.restore_s = None
            run.error = f"criu restore failed ({restore.returncode}): {_criu_tail(images / 'restore.log')}"
            return run
        if not _wait_healthy(f"{base}/healthz", timeout=30, interval=0.002):
            run.error = "the restored process never answered GET /healthz"
            return run
        run.answer_s = time.monotonic() - t0
        code, after = http_json(f"{base}/state")
        run.state_ok = code == 200 and isinstance(after, dict) and after.get("boot_id") == before.get("boot_id")
        if not run.state_ok:
            got = after.get("boot_id") if isinstance(after, dict) else code
            run.error = f"restored process answered boot_id {got}, expected {before.get('boot_id')}"
        return run
    except (OSError, subprocess.SubprocessError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        return run
    finally:
        if proc.poll() is None:  # never dumped (or the dump left it running): it is still our child
            proc.kill()
            proc.wait(timeout=10)
        if restored is not None:
            _stop_restored(restored)
        shutil.rmtree(images, ignore_errors=True)
        pidfile.unlink(missing_ok=True)
