"""The image's Python packages: the runtime dependencies from PyPI and podmigrate itself, via pip.

Why pip ``--target`` into a staging directory, run by the image's own interpreter: Debian's
``/usr/bin/python3`` picks exactly the wheels that interpreter can load (its version, ABI and
glibc), as ``pip install`` in the Containerfile's build stage does for its Python. When Debian's
pip is not installed, the venv's pip does it instead, told the target's version, implementation,
ABI and manylinux platforms. Only wheels (``--only-binary=:all:``): nothing is compiled, so no
compiler is needed and the result is the same on every machine.

Wheels are kept under ``~/.cache/podmigrate/imagebuild/python-<version>/wheels`` and the install is
tried offline from there first: a second build does not touch the network. ``refresh`` asks
PyPI again (newer releases of the dependencies).

The project itself is built into a wheel from a copy of its source (git's view of the working
tree), never in the checkout (setuptools would leave ``build/`` and ``*.egg-info`` there), and
installed by name from a directory holding just that wheel, so no ``direct_url.json`` records a
temporary path.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from imagebuild import runtime
from imagebuild.project import Project, source_files
from localcluster.testimages import SYSTEM_PYTHON

CACHE_ROOT: Final = Path(os.environ.get("PODMIGRATE_CACHE", Path.home() / ".cache" / "podmigrate"))
PIP_QUIET: Final = ("--quiet", "--disable-pip-version-check", "--no-input")


class PipError(RuntimeError):
    """pip failed; the message carries its output."""


@dataclass(frozen=True, kw_only=True)
class Installer:
    """How pip runs for the image's interpreter: its argv, plus the target description when it is another Python's pip."""

    argv: tuple[str, ...]
    target_args: tuple[str, ...] = ()

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.argv, *args], capture_output=True, text=True, check=False)


def _ask(python: Path, code: str) -> str:
    """What ``python -c code`` prints ("" if it fails)."""
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def full_version(python: Path = SYSTEM_PYTHON) -> str:
    """``3.11.2``: the interpreter's exact version (the cache key: wheels are chosen for it)."""
    return _ask(python, "import platform; print(platform.python_version())") or runtime.python_version(python)


def _glibc_minor(python: Path) -> int:
    libc = _ask(python, "import os; print(os.confstr('CS_GNU_LIBC_VERSION'))")  # "glibc 2.36"
    return int(libc.split()[-1].split(".")[1]) if libc else 17


def target_args(*, version: str, glibc_minor: int, machine: str) -> tuple[str, ...]:
    """pip options describing the image's interpreter to a pip that runs on another one."""
    major_minor = "".join(version.split(".")[:2])
    platforms = [f"manylinux2014_{machine}"] + [f"manylinux_2_{m}_{machine}" for m in range(17, glibc_minor + 1)]
    args = ["--implementation", "cp", "--python-version", ".".join(version.split(".")[:2]), "--abi", f"cp{major_minor}"]
    for plat in platforms:
        args += ["--platform", plat]
    return tuple(args)


def find_installer(*, python: Path = SYSTEM_PYTHON, fallback: Path = Path(sys.executable)) -> Installer:
    """``python -m pip`` if Debian's pip is installed, else this venv's pip told about ``python``."""
    probe = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True, text=True, check=False)
    if probe.returncode == 0:
        return Installer(argv=(str(python), "-m", "pip"))
    return Installer(
        argv=(str(fallback), "-m", "pip"),
        target_args=target_args(version=full_version(python), glibc_minor=_glibc_minor(python), machine=platform.machine()),
    )


def cache_dir(*, python: Path = SYSTEM_PYTHON, root: Path = CACHE_ROOT) -> Path:
    """The wheel cache of one interpreter version."""
    path = root / "imagebuild" / f"python-{full_version(python)}" / "wheels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise PipError(f"{what} failed (pip exit {result.returncode}):\n{result.stderr.strip() or result.stdout.strip()}")


def ensure_wheels(*, installer: Installer, wheels: Path, requirements: Sequence[str], refresh: bool = False) -> bool:
    """Make ``wheels`` hold wheels for ``requirements`` (and their dependencies); True if PyPI was asked."""
    common = ["--only-binary=:all:", "--dest", str(wheels), *installer.target_args, *PIP_QUIET]
    if not refresh:
        offline = installer.run("download", "--no-index", "--find-links", str(wheels), *common, *requirements)
        if offline.returncode == 0:
            return False
    _check(installer.run("download", *common, *requirements), "downloading wheels from PyPI")
    return True


def install(*, installer: Installer, find_links: Sequence[Path], target: Path, requirements: Sequence[str], deps: bool) -> None:
    """``pip install --target`` offline from ``find_links``; drops the ``bin/`` pip writes (the image has its own wrappers)."""
    links = [arg for path in find_links for arg in ("--find-links", str(path))]
    argv = ["install", "--no-index", *links, "--only-binary=:all:", "--no-compile", "--target", str(target)]
    argv += [*installer.target_args, *PIP_QUIET, "--root-user-action=ignore"]
    if not deps:
        argv.append("--no-deps")
    _check(installer.run(*argv, *requirements), f"installing {' '.join(requirements)}")
    shutil.rmtree(target / "bin", ignore_errors=True)


def stage_source(*, project: Project, dest: Path) -> Path:
    """Copy the checkout as git sees it (tracked and untracked files, minus ignored ones) to ``dest``."""
    for relative in source_files(root=project.root):
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project.root / relative, target)
    return dest


def build_project_wheel(*, installer: Installer, project: Project, wheels: Path, work: Path) -> Path:
    """Build podmigrate's wheel from a staged copy of the source; returns the directory holding only it."""
    source = stage_source(project=project, dest=work / "source")
    dist = work / "dist"
    # Its build requirements (setuptools) come from the wheel cache too: no network on a cached build.
    argv = ["wheel", "--no-deps", "--no-index", "--find-links", str(wheels), "--wheel-dir", str(dist), *PIP_QUIET, str(source)]
    # A pure-Python wheel: whichever Python runs this pip builds the same one (no target options needed).
    _check(installer.run(*argv), "building podmigrate's wheel")
    return dist


def wrapper_script(*, entry_point: str, python: Path = SYSTEM_PYTHON) -> str:
    """A console script like pip's: the image's python runs ``module:function`` and exits with its result."""
    module, _, attribute = entry_point.partition(":")
    if not module or not attribute:
        raise ValueError(f"entry point {entry_point!r} is not module:function")
    head = attribute.split(".")[0]
    return f"#!{python}\nimport sys\n\nfrom {module} import {head}\n\nsys.exit({attribute}())\n"


def write_wrappers(*, root: Path, scripts: dict[str, str], python: Path = SYSTEM_PYTHON) -> list[Path]:
    """``/usr/local/bin/<script>`` for every console script the image serves."""
    bin_dir = root / "usr" / "local" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, entry_point in sorted(scripts.items()):
        path = bin_dir / name
        path.write_text(wrapper_script(entry_point=entry_point, python=python))
        path.chmod(0o755)
        written.append(path)
    return written


def compile_bytecode(*, root: Path, directory: Path, python: Path = SYSTEM_PYTHON) -> None:
    """Precompile ``directory`` (an image path under ``root``) with the image's interpreter.

    Hash-checked ``.pyc`` (PEP 552): valid whatever the files' mtimes (the layers set them to 0), so
    the controller and agent do not compile kubernetes_asyncio's thousands of modules at each start
    on a read-only root filesystem. ``PYTHONHASHSEED=0`` keeps the bytes the same from build to build.
    """
    staged = runtime.image_path(root, directory)
    argv = [str(python), "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "checked-hash"]
    argv += ["-s", str(root), "-p", "/", str(staged)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise PipError(f"compiling {directory} failed:\n{result.stdout.strip()}\n{result.stderr.strip()}")
