"""The image's base: Debian's own Python, the shared libraries it links, a trimmed stdlib, /etc, /tmp.

Why this machine's ``/usr/bin/python3`` and not a Python from somewhere else: no base image can be
pulled here, and the Debian interpreter is the one every library on this machine was built
against, so copying it with what ``ldd`` says it needs gives a runtime that works the same way the
local cluster's ``warmup`` test image does (``localcluster.testimages``).

What is left out is what a controller and an agent never import but that would pull in large
libraries: the interactive (readline, curses), the test modules, Tk, the Kerberos stack behind
``nis``, Berkeley DB behind ``dbm``, SQLite. The precompiled ``__pycache__`` of the host is left
out too (its timestamps would not match the image's files); ``packages`` compiles fresh ones.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from localcluster.testimages import SYSTEM_PYTHON, _shared_libraries

# Whole stdlib packages and modules not copied (by name, at any depth).
STDLIB_SKIP: Final = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "turtle.py",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
        "sqlite3",
        "dbm",
        "curses",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "sitecustomize.py",  # Debian's is a symlink into /etc/python3.X, which the image has not
    }
)
# C extension modules (lib-dynload) not copied, by the name before the first dot.
EXTENSION_SKIP: Final = frozenset(
    {"_tkinter", "_curses", "_curses_panel", "readline", "_dbm", "_gdbm", "nis", "_sqlite3", "ossaudiodev", "_ctypes_test"}
)
EXTENSION_SKIP_PREFIXES: Final = ("_test", "xxlimited", "_xxtestfuzz")

CA_BUNDLE: Final = Path("/etc/ssl/certs/ca-certificates.crt")
NONROOT_UID: Final = 65532
PASSWD: Final = (
    f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP: Final = f"root:x:0:\nnonroot:x:{NONROOT_UID}:\n"


def image_path(root: Path, path: Path) -> Path:
    """Where an absolute path of this machine goes under ``root``."""
    return root / str(path).lstrip("/")


def copy_file(*, root: Path, path: Path) -> Path:
    """Copy one file of this machine (symlinks followed) to the same place under ``root``."""
    target = image_path(root, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, target)
    return target


def copy_libraries(*, root: Path, binaries: Iterable[Path], present: Iterable[Path] = ()) -> list[Path]:
    """Copy every shared library ``ldd`` lists for ``binaries`` that is not in ``present`` nor yet under ``root``.

    Returns the libraries copied (host paths), so a layer on top can skip the ones a lower layer has.
    """
    have = set(present)
    copied: list[Path] = []
    for binary in binaries:
        for lib in _shared_libraries(binary):
            # A library a wheel bundles (found through $ORIGIN) resolves inside ``root``: already there.
            if lib in have or lib.is_relative_to(root) or image_path(root, lib).exists():
                continue
            copy_file(root=root, path=lib)
            have.add(lib)
            copied.append(lib)
    return copied


def _stdlib_ignore(directory: str, entries: list[str]) -> list[str]:
    skipped = [e for e in entries if e in STDLIB_SKIP or e.startswith("config-")]
    if os.path.basename(directory) == "lib-dynload":
        skipped += [e for e in entries if e.split(".")[0] in EXTENSION_SKIP or e.startswith(EXTENSION_SKIP_PREFIXES)]
    return skipped


def python_version(python: Path = SYSTEM_PYTHON) -> str:
    """``3.11`` for ``/usr/bin/python3 -> python3.11``."""
    return python.resolve().name.removeprefix("python")


def stdlib_dir(python: Path = SYSTEM_PYTHON) -> Path:
    return Path(f"/usr/lib/python{python_version(python)}")


def site_packages(python: Path = SYSTEM_PYTHON) -> Path:
    """Where the image's packages go: Debian's Python has ``/usr/local/lib/python3.X/dist-packages`` on its path."""
    return Path(f"/usr/local/lib/python{python_version(python)}/dist-packages")


def python_runtime(*, root: Path, python: Path = SYSTEM_PYTHON) -> list[Path]:
    """Interpreter, its libraries and the trimmed stdlib under ``root``; returns every library copied."""
    binary = python.resolve()
    if not binary.exists():
        raise FileNotFoundError(f"{python} missing: install Debian's python3 (localcluster/install-deps.sh)")
    copy_file(root=root, path=binary)
    if binary.name != python.name:
        (image_path(root, python)).symlink_to(binary.name)
    libraries = copy_libraries(root=root, binaries=[binary])
    stdlib = stdlib_dir(python)
    shutil.copytree(stdlib, image_path(root, stdlib), symlinks=True, ignore=_stdlib_ignore)
    # C extension modules link libraries of their own (libssl, libffi, ...): bring those too.
    modules = sorted(image_path(root, stdlib / "lib-dynload").glob("*.so"))
    libraries += copy_libraries(root=root, binaries=modules, present=libraries)
    return libraries


def system_files(*, root: Path) -> None:
    """/etc/passwd and /etc/group (root, nonroot:65532), CA certificates where OpenSSL looks, /tmp 1777."""
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    if CA_BUNDLE.exists():
        copy_file(root=root, path=CA_BUNDLE)
        ssl_dir = root / "usr" / "lib" / "ssl"
        ssl_dir.mkdir(parents=True, exist_ok=True)
        (ssl_dir / "certs").symlink_to(CA_BUNDLE.parent)
        (ssl_dir / "cert.pem").symlink_to(CA_BUNDLE)
    for name in ("tmp", "home/nonroot", "proc", "sys", "dev", "run", "var/tmp"):
        (root / name).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "var" / "tmp", 0o1777)
