"""What the image is built from: the project's metadata and the commit it is built at.

Why read ``pyproject.toml`` and git instead of asking the caller: the image's tags, labels and
dependency list must never disagree with the package they ship. The version, the runtime
dependencies, the build requirements and the console scripts all come from the one place pip
reads them from, and the revision from the checkout itself (``-dirty`` when the working tree
has changes, because that is what gets built: the working tree, not the commit).
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
# The commands the image serves (the controller, the agent and the kubectl plugin); the dev-only
# scripts of [project.scripts] (localcluster...) are left out.
IMAGE_SCRIPTS: Final = ("podmigrate-controller", "podmigrate-agent", "kubectl-migrate")


@dataclass(frozen=True, kw_only=True)
class Revision:
    """The commit a build is made at, and whether the working tree differs from it."""

    commit: str
    short: str
    dirty: bool
    timestamp: int  # the commit's time (or SOURCE_DATE_EPOCH): the image's "created"

    @property
    def label(self) -> str:
        """The revision label's value: the full commit, ``-dirty`` when the tree has changes."""
        return f"{self.commit}-dirty" if self.dirty else self.commit


@dataclass(frozen=True, kw_only=True)
class Project:
    """The parts of ``pyproject.toml`` an image build needs."""

    root: Path
    name: str
    version: str
    description: str
    dependencies: tuple[str, ...]
    build_requires: tuple[str, ...]
    scripts: dict[str, str]  # console script name -> "module:function"

    def image_scripts(self) -> dict[str, str]:
        """The console scripts the image puts on PATH (``IMAGE_SCRIPTS``), with their entry points."""
        missing = [name for name in IMAGE_SCRIPTS if name not in self.scripts]
        if missing:
            raise ValueError(f"[project.scripts] in pyproject.toml lacks {', '.join(missing)}")
        return {name: self.scripts[name] for name in IMAGE_SCRIPTS}


def load_project(*, root: Path = ROOT) -> Project:
    """Read ``pyproject.toml`` under ``root``."""
    doc = tomllib.loads((root / "pyproject.toml").read_text())
    project = doc["project"]
    return Project(
        root=root,
        name=str(project["name"]),
        version=str(project["version"]),
        description=str(project.get("description", "")),
        dependencies=tuple(project.get("dependencies", ())),
        build_requires=tuple(doc.get("build-system", {}).get("requires", ())),
        scripts=dict(project.get("scripts", {})),
    )


def _git(*args: str, root: Path) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def read_revision(*, root: Path = ROOT) -> Revision:
    """The checkout's HEAD commit, its time, and whether the working tree is dirty."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return Revision(
        commit=_git("rev-parse", "HEAD", root=root),
        short=_git("rev-parse", "--short", "HEAD", root=root),
        dirty=bool(_git("status", "--porcelain", "--untracked-files=normal", root=root)),
        timestamp=int(epoch) if epoch else int(_git("log", "-1", "--format=%ct", "HEAD", root=root)),
    )


def default_tags(*, version: str, revision: Revision) -> list[str]:
    """``<version>`` and ``<version>-<short commit>[-dirty]``."""
    exact = f"{version}-{revision.short}" + ("-dirty" if revision.dirty else "")
    return [version, exact]


def source_files(*, root: Path = ROOT) -> list[Path]:
    """The checkout's files as git sees them (tracked and untracked, minus ignored), relative to ``root``.

    This is the build context: a ``.venv``, caches, ``*.egg-info`` and ``__pycache__`` never get in,
    and uncommitted edits do (the tag says ``-dirty`` then).
    """
    out = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", root=root)
    paths = sorted({Path(p) for p in out.split("\0") if p})
    return [p for p in paths if (root / p).is_file()]
