"""cluster-up is fast when warm, and cluster-down leaves the machine as it found it.

Why this module starts a cluster of its own (a second one: 1 node, the instance after the
session's) instead of only using the session's shared one: what it tests is ``up`` and ``down``
themselves, which the shared cluster cannot show. Its start is timed (warm: binaries and images
already cached, which the session cluster guarantees by being up first); it must come up *beside*
the session cluster on its own loopback addresses, ports and cgroups (instances sharing a
machine); and after ``down`` nothing of it may be left (no process mentioning its state
directory, no mount, netns, link or cgroup) while the session cluster keeps running. Tearing the
shared cluster down to check that would take it away from every other test. The other tests
here start nothing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from pathlib import Path

import pytest

from localcluster import cluster as lc
from localcluster import controlplane

PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


def _processes_mentioning(path: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and os.fsencode(path) in cmdline:
            found.append(int(proc.name))
    return found


@pytest.mark.cluster
def test_second_cluster_up_is_warm_fast_and_down_leaves_nothing(tmp_path: Path, cluster: lc.Cluster) -> None:
    # ``cluster`` (the session's) guarantees the binaries and images are cached: this is a warm start.
    state = tmp_path / "second"
    # The instance after the session's (1 beside the default 0); 5 stays the benchmark's.
    instance = (cluster.nodes[0].index // 10 + 1) % 5
    started = time.monotonic()
    second = lc.up(state_dir=state, nodes=1, instance=instance)
    elapsed = time.monotonic() - started
    try:
        assert elapsed < 60, f"warm cluster-up took {elapsed:.1f}s"
        assert second.nodes[0].address == f"127.0.{1 + instance}.1", f"instance {instance} lives on its own loopback addresses"
        cp = second.controlplane()
        assert not any(ipaddress.ip_network(cp.service_cidr).overlaps(p) for p in PRIVATE)
        nodes = json.loads(cp.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        assert [n["metadata"]["name"] for n in nodes] == ["node-1"]
        assert _processes_mentioning(state)
    finally:
        lc.down(state_dir=state)
    assert not state.exists()
    assert _processes_mentioning(state) == []
    assert lc.leftovers(state) == []
    assert not any(p.name.startswith(f"pm{instance}1") for p in Path("/sys/class/net").iterdir())
    assert not any(Path(h, f"localcluster-n{instance}1").exists() for h in Path("/sys/fs/cgroup").iterdir())
    assert _processes_mentioning(Path(cluster.state_dir)), "the session cluster beside it still runs"


def test_down_of_nothing_is_harmless(tmp_path: Path) -> None:
    assert lc.down(state_dir=tmp_path / "never-started") == []


def test_up_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(lc.ClusterError, match="--nodes"):
        lc.up(state_dir=tmp_path, nodes=0)
    with pytest.raises(lc.ClusterError, match="--instance"):
        lc.up(state_dir=tmp_path, instance=9)


def test_control_plane_refuses_private_service_ranges(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"forbidden by the network rule"):
        controlplane.start(state_dir=tmp_path / "cp", service_cidr="10.96.0.0/12", api_port=6449)
