"""A thin asynchronous wrapper around the runc CLI: the node's OCI runtime.

runc (not crun) because it is the runtime that checkpoints and restores here (docs/facts.md, "CRIU and runc"):
runc 1.1 + CRIU 4.1 keep PID 1, stdio pipes and an external network namespace across a
restore. Each node passes its own ``--root`` so that nodes sharing one machine do not see
each other's containers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def criu_errors(log: Path, *, lines: int = 4) -> str:
    """CRIU's own error lines from a dump or restore log, for the error message: the cause reaches the
    pod's status (and so the migration's), not only a file on the node."""
    if not log.exists():
        return ""
    errors = [line.strip() for line in log.read_text(errors="replace").splitlines() if "Error" in line]
    return ("; criu: " + " | ".join(errors[-lines:])) if errors else ""


class RuncError(RuntimeError):
    def __init__(self, message: str, *, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class Runc:
    def __init__(self, *, root: Path, binary: str = "runc") -> None:
        self.root = root
        self.binary = binary
        root.mkdir(parents=True, exist_ok=True)

    async def _run(
        self,
        *args: str,
        stdin: int | None = asyncio.subprocess.DEVNULL,
        stdout: int | None = None,
        stderr: int | None = None,
        pass_fds: Sequence[int] = (),
        timeout: float | None = 120.0,
    ) -> str:
        """Run runc; when stdio fds are given (a container's pipes) its own output is not captured."""
        capture = stdout is None
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            "--root",
            str(self.root),
            *args,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE if capture else stdout,
            stderr=asyncio.subprocess.PIPE if stderr is None else stderr,
            pass_fds=pass_fds,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuncError(f"runc {args[0]} timed out after {timeout}s") from None
        if proc.returncode != 0:
            text = (err or b"").decode(errors="replace").strip()
            raise RuncError(f"runc {args[0]} failed: {text}", stderr=text)
        return (out or b"").decode(errors="replace")

    async def run_detached(self, *, container_id: str, bundle: Path, pid_file: Path, stdio: tuple[int, int, int]) -> None:
        """Create and start a container whose stdio are the given fds (pipes owned by the node)."""
        await self._run(
            "run",
            "--detach",
            "--bundle",
            str(bundle),
            "--pid-file",
            str(pid_file),
            container_id,
            stdin=stdio[0],
            stdout=stdio[1],
            stderr=stdio[2],
        )

    async def restore_detached(
        self,
        *,
        container_id: str,
        bundle: Path,
        image_path: Path,
        work_path: Path,
        pid_file: Path,
        stdio: tuple[int, int, int],
    ) -> None:
        """Restore a checkpoint into a new container; runc maps the dumped stdio pipes onto ``stdio``."""
        try:
            await self._run(
                "restore",
                "--detach",
                "--bundle",
                str(bundle),
                "--image-path",
                str(image_path),
                "--work-path",
                str(work_path),
                "--pid-file",
                str(pid_file),
                container_id,
                stdin=stdio[0],
                stdout=stdio[1],
                stderr=stdio[2],
            )
        except RuncError as exc:
            log = work_path / "restore.log"
            raise RuncError(f"{exc}{criu_errors(log)}; see {log}", stderr=exc.stderr) from None

    async def checkpoint(self, *, container_id: str, image_path: Path, work_path: Path, leave_running: bool = True) -> None:
        args = ["checkpoint", "--image-path", str(image_path), "--work-path", str(work_path)]
        if leave_running:
            args.append("--leave-running")
        try:
            await self._run(*args, container_id, timeout=600.0)
        except RuncError as exc:
            log = work_path / "dump.log"
            raise RuncError(f"{exc}{criu_errors(log)}; see {log}", stderr=exc.stderr) from None

    async def kill(self, *, container_id: str, signal: str = "TERM", all_processes: bool = False) -> None:
        args = ["kill"] + (["--all"] if all_processes else []) + [container_id, signal]
        await self._run(*args)

    async def delete(self, *, container_id: str, force: bool = True) -> None:
        try:
            await self._run("delete", *(["--force"] if force else []), container_id)
        except RuncError as exc:
            if "does not exist" not in exc.stderr and "not exist" not in exc.stderr:
                raise

    async def state(self, *, container_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(await self._run("state", container_id))
        except RuncError:
            return None

    async def pause(self, *, container_id: str) -> None:
        await self._run("pause", container_id)

    async def resume(self, *, container_id: str) -> None:
        await self._run("resume", container_id)

    async def exec(self, *, container_id: str, argv: Sequence[str], timeout: float) -> tuple[int, str]:
        """Run a command in a running container (exec probes); returns (exit code, output)."""
        proc = await asyncio.create_subprocess_exec(
            self.binary,
            "--root",
            str(self.root),
            "exec",
            container_id,
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return -1, f"timed out after {timeout}s"
        return proc.returncode or 0, out.decode(errors="replace")

    async def list_ids(self) -> list[str]:
        out = await self._run("list", "--format", "json")
        return [c["id"] for c in (json.loads(out) or [])]
