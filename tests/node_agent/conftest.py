"""Fixtures of the node agent's tests, self-contained until the project's shared conftest exists.

``agent_cluster`` brings up a real local cluster (instance 3: its own API server port,
registry port, node addresses and cgroups, so it does not collide with other clusters on the
machine) in a short temporary state directory, and takes it down afterwards. Set
``NODE_AGENT_TEST_CLUSTER=<state dir>`` to reuse a cluster that is already up instead (it is
then left running).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent_localcluster import INSTANCE, LocalCluster, localcluster


@pytest.fixture(scope="module")
def agent_cluster() -> Iterator[LocalCluster]:
    if os.geteuid() != 0:
        pytest.skip("the local cluster runs containers and network namespaces: needs root")
    reuse = os.environ.get("NODE_AGENT_TEST_CLUSTER")
    if reuse:
        yield LocalCluster.load(Path(reuse))
        return
    # A short path on purpose: runc and CRIU put sockets under the nodes' state directories.
    state = Path(tempfile.mkdtemp(prefix="lc-agent-", dir="/tmp"))
    up = localcluster("--state-dir", str(state), "up", "--nodes", "2", "--instance", str(INSTANCE))
    try:
        if up.returncode != 0:
            raise AssertionError(f"localcluster up failed:\n{up.stdout}\n{up.stderr}")
        yield LocalCluster.load(state)
    finally:
        down = localcluster("--state-dir", str(state), "down")
        if state.exists() and not any(state.iterdir()):
            state.rmdir()
        if down.returncode != 0 and up.returncode == 0:
            raise AssertionError(f"localcluster down failed:\n{down.stdout}\n{down.stderr}")
