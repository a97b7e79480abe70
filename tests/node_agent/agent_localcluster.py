"""The local cluster as the node agent's end-to-end tests see it (paths, kubectl, cluster.json).

A plain module rather than part of ``conftest`` so test modules can import it by a name no
other test directory uses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
AGENT_SRC = REPO / "node-agent"
if str(AGENT_SRC) not in sys.path:  # until the editable install is refreshed with the new package dir
    sys.path.insert(0, str(AGENT_SRC))

INSTANCE = 3  # its own API server port, registry port, node addresses and cgroups


@dataclass(frozen=True, kw_only=True)
class LocalCluster:
    state_dir: Path
    info: dict[str, Any]

    @property
    def kubeconfig(self) -> str:
        return self.info["kubeconfig"]

    @property
    def registry(self) -> str:
        return self.info["registry"]

    def node(self, name: str) -> dict[str, Any]:
        return next(n for n in self.info["nodes"] if n["name"] == name)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.info["kubectl"], f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(self, manifest: str | dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=manifest if isinstance(manifest, str) else json.dumps(manifest))

    @classmethod
    def load(cls, state_dir: Path) -> LocalCluster:
        return cls(state_dir=state_dir, info=json.loads((state_dir / "cluster.json").read_text()))


def localcluster(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m localcluster ARGS`` from the checkout."""
    return subprocess.run(
        [sys.executable, "-m", "localcluster", *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=600
    )
