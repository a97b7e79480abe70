"""Builds (once per ocicrypt version) the Go reference tool ``ocicheckpoint/ocicrypt-check``.

Why a Go program in the tests: our layer encryption must be byte-compatible with what the
runtimes run (containers/ocicrypt, via containerd's imgcrypt and CRI-O), and the only proof
that survives an upstream change is to run upstream's code on our output and ours on its.
The binary goes to ``$PODMIGRATE_CACHE/ocicrypt-check-<ocicrypt version>/`` (outside the
checkout), keyed by the version pinned in its go.mod; an flock serializes concurrent
builders and the binary is renamed into place, so a half-written one is never run.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "ocicheckpoint" / "ocicrypt-check"
MODULE = "github.com/containers/ocicrypt"
CACHE = Path(os.environ.get("PODMIGRATE_CACHE", Path.home() / ".cache" / "podmigrate"))
BUILD_TIMEOUT_S = 900


def ocicrypt_version() -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(MODULE)}\s+(v\S+)", (SOURCE / "go.mod").read_text(), re.M)
    assert match, f"{MODULE} not pinned in {SOURCE / 'go.mod'}"
    return match.group(1)


def _go() -> str:
    found = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no Go toolchain: CI must have one to cross-check the ocicrypt format", pytrace=False)
        pytest.skip("no Go toolchain on this machine (needed to cross-check the ocicrypt format)")
    return found


def build() -> Path:
    """The path of the built tool (built now if this version is not in the cache yet)."""
    out_dir = CACHE / f"ocicrypt-check-{ocicrypt_version()}"
    binary = out_dir / "ocicrypt-check"
    if binary.exists():
        return binary
    go = _go()
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():
            return binary
        tmp = out_dir / f"ocicrypt-check.tmp.{os.getpid()}"
        env = {**os.environ, "CGO_ENABLED": "0", "PATH": f"{os.environ.get('PATH', '')}:{Path(go).parent}"}
        result = subprocess.run(
            [go, "build", "-mod=readonly", "-trimpath", "-buildvcs=false", "-o", str(tmp), "."],
            cwd=SOURCE,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            tmp.unlink(missing_ok=True)
            pytest.fail(f"building ocicrypt-check failed:\n{result.stderr}", pytrace=False)
        tmp.replace(binary)
    return binary


def run(tool: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool), *map(str, args)], capture_output=True, text=True, errors="replace", timeout=300, check=False
    )


def go_decrypt(
    tool: Path, *, descriptor: dict[str, Any], src: Path, dst: Path, keys: list[Path]
) -> subprocess.CompletedProcess[str]:
    """Run ocicrypt's DecryptLayer on ``src``; returncode 0 and ``{"digest": ...}`` on stdout on success."""
    desc = dst.with_name(dst.name + ".desc.json")
    desc.write_text(json.dumps(descriptor))
    key_args = [a for k in keys for a in ("-key", str(k))]
    return run(tool, "decrypt", "-desc", desc, "-in", src, "-out", dst, *key_args)


def go_encrypt(tool: Path, *, src: Path, dst: Path, media_type: str, recipients: list[Path]) -> dict[str, Any]:
    """Run ocicrypt's EncryptLayer on ``src``; the encrypted descriptor it made."""
    key_args = [a for k in recipients for a in ("-pubkey", str(k))]
    result = run(tool, "encrypt", "-media-type", media_type, "-in", src, "-out", dst, *key_args)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc
