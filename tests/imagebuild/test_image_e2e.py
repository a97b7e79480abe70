"""The built image really works: build and push it to the local cluster's registry, pull it back,
unpack its layers into a directory and run the commands in it, chrooted, as uid 65532.

The build runs twice: the second must come from the wheel cache only (no PyPI), be fast, and give
the same layers (the same manifest digest when nobody edited the tree in between).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from imagebuild import project
from localcluster import cluster as lc
from localcluster import registryauth
from ocicheckpoint import image as oci
from ocicheckpoint import names
from ocicheckpoint.credentials import Credentials
from ocicheckpoint.registry import RegistryClient

CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(os.geteuid() != 0 or not Path(CHROOT).exists(), reason="runs the image with chroot: needs root"),
]

REPO = Path(__file__).resolve().parents[2]
REPOSITORY = "podmigrate/test-image"  # under the cluster's own images: cluster-images pushes there
UID = 65532
IMPORTS = "import aiohttp, kubernetes_asyncio, cryptography, opentelemetry.sdk, yaml, node_agent, migrator"
# dlopen (RTLD_NOW) every extension module and bundled library: a missing shared library or symbol fails here.
LOAD_ALL = """
import ctypes, pathlib, sys
bad = []
for root in ("/usr/lib/python3.11/lib-dynload", "/usr/local/lib/python3.11/dist-packages"):
    for so in sorted(pathlib.Path(root).rglob("*.so*")):
        try:
            ctypes.CDLL(str(so))
        except OSError as exc:
            bad.append(str(exc))
print(len(bad), "failed:", *bad, sep="\\n")
sys.exit(1 if bad else 0)
"""
CHECKS = """
import importlib.metadata, os, ssl, sys
from node_agent import dumphook
assert dumphook.SCRIPT.is_file() and os.access(dumphook.SCRIPT, os.X_OK), dumphook.SCRIPT
assert os.getuid() == 65532 and os.getgid() == 65532
import pwd; assert pwd.getpwuid(65532).pw_name == "nonroot"
assert ssl.create_default_context().cert_store_stats()["x509_ca"] > 0, "no CA certificates"
exporters = {ep.name for ep in importlib.metadata.entry_points(group="opentelemetry_traces_exporter")}
assert "otlp_proto_http" in exporters, exporters
from cryptography import x509; import grpc; import yaml; assert yaml.__with_libyaml__
print("ok", sys.version)
"""


@dataclass(frozen=True, kw_only=True)
class Build:
    reference: str
    stderr: str
    seconds: float
    source_hash: str


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in project.source_files(root=REPO):
        digest.update(str(path).encode() + b"\0" + (REPO / path).read_bytes())
    return digest.hexdigest()


def _build(cluster: lc.Cluster, tag: str) -> Build:
    before = _source_hash()
    started = time.monotonic()
    creds = str(cluster.registry_credentials_file(registryauth.IMAGES_USER))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "imagebuild",
            "--registry",
            cluster.registry,
            "--repository",
            REPOSITORY,
            "--tag",
            tag,
            "--registry-credentials",
            creds,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    unchanged = before == _source_hash()
    return Build(reference=result.stdout.strip(), stderr=result.stderr, seconds=seconds, source_hash=before if unchanged else "")


@dataclass(frozen=True, kw_only=True)
class Pulled:
    manifest: oci.Manifest
    config: dict[str, Any]
    rootfs: Path
    members: list[tarfile.TarInfo]


async def _pull(reference: str, work: Path, credentials: Credentials | None) -> Pulled:
    registry, _, rest = reference.partition("/")
    repository, _, digest = rest.partition("@")
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(host=registry, session=session, plain_http=True, credentials=credentials)
        body, _, got = await client.get_manifest(repository=repository, reference=digest)
        assert got == digest
        manifest = oci.parse_manifest(body)
        config = json.loads(await client.get_blob_bytes(repository=repository, digest=manifest.config.digest))
        blobs = []
        for i, layer in enumerate(manifest.layers):
            blobs.append(work / f"layer{i}.tar.gz")
            await client.get_blob_to_file(repository=repository, digest=layer.digest, path=blobs[-1])
    rootfs = work / "rootfs"
    rootfs.mkdir()
    members: list[tarfile.TarInfo] = []
    for blob in blobs:
        with tarfile.open(blob, "r:gz") as tar:
            members += tar.getmembers()
            # Our own image, digest-verified: keep every mode (the sticky /tmp) as a runtime would.
            tar.extractall(rootfs, numeric_owner=True, filter="fully_trusted")
    return Pulled(manifest=manifest, config=config, rootfs=rootfs, members=members)


def _run(rootfs: Path, *argv: str, env: list[str]) -> subprocess.CompletedProcess[str]:
    """As a runtime would: the image's environment only, uid and gid 65532, / = the image."""
    return subprocess.run(
        [CHROOT, f"--userspec={UID}:{UID}", str(rootfs), *argv],
        env=dict(item.split("=", 1) for item in env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def builds(cluster: lc.Cluster) -> tuple[Build, Build]:
    return _build(cluster, "e2e-1"), _build(cluster, "e2e-2")


def _reader(cluster: lc.Cluster) -> Credentials | None:
    return cluster.registry_credentials(registryauth.NODE_USER).for_registry(cluster.registry)


@pytest.fixture(scope="module")
def pulled(builds: tuple[Build, Build], cluster: lc.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Pulled:
    return asyncio.run(_pull(builds[0].reference, tmp_path_factory.mktemp("image"), _reader(cluster)))


def test_build_prints_the_reference_by_digest_and_the_size(builds, cluster):
    first, _ = builds
    assert re.fullmatch(rf"{re.escape(cluster.registry)}/{REPOSITORY}@sha256:[0-9a-f]{{64}}", first.reference)
    size = int(re.search(r"image size \(compressed\): .* \((\d+) bytes", first.stderr).group(1))
    assert 10 << 20 < size < 80 << 20, f"{size} bytes"


def test_second_build_uses_the_cache_and_gives_the_same_layers(builds, pulled, cluster):
    first, second = builds
    assert "wheels: all from the cache" in second.stderr
    assert second.seconds < 120, f"{second.seconds:.0f}s"
    again = asyncio.run(_manifest(second.reference, _reader(cluster)))
    # runtime and dependencies never change with the tree; the podmigrate layer only if it was edited meanwhile
    assert [layer.digest for layer in again.layers][:2] == [layer.digest for layer in pulled.manifest.layers][:2]
    if first.source_hash and first.source_hash == second.source_hash:
        assert second.reference == first.reference


async def _manifest(reference: str, credentials: Credentials | None) -> oci.Manifest:
    registry, _, rest = reference.partition("/")
    repository, _, digest = rest.partition("@")
    async with aiohttp.ClientSession() as session:
        body, _, _ = await RegistryClient(host=registry, session=session, plain_http=True, credentials=credentials).get_manifest(
            repository=repository, reference=digest
        )
    return oci.parse_manifest(body)


def test_config_and_layers(pulled):
    cfg = pulled.config["config"]
    assert cfg["User"] == "65532:65532"
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"} <= set(cfg["Env"])
    proj = project.load_project(root=REPO)
    assert cfg["Labels"]["org.opencontainers.image.version"] == proj.version
    assert cfg["Labels"]["org.opencontainers.image.revision"].startswith(project.read_revision(root=REPO).commit)
    assert len(pulled.manifest.layers) == 3
    assert all(layer.media_type == names.MEDIA_TYPE_OCI_LAYER_GZIP for layer in pulled.manifest.layers)
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in pulled.members)
    tmp = next(m for m in pulled.members if m.name == "tmp")
    assert tmp.mode & 0o7777 == 0o1777
    assert not any("/test/" in m.name or "tkinter" in m.name for m in pulled.members)


@pytest.mark.parametrize("command", ["podmigrate-agent", "podmigrate-controller", "kubectl-migrate"])
def test_console_scripts_run_as_nonroot(pulled, command):
    result = _run(pulled.rootfs, f"/usr/local/bin/{command}", "--help", env=pulled.config["config"]["Env"])
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_imports_and_checks_run_as_nonroot(pulled):
    env = pulled.config["config"]["Env"]
    result = _run(pulled.rootfs, "python3", "-c", IMPORTS, env=env)
    assert result.returncode == 0, result.stderr
    result = _run(pulled.rootfs, "python3", "-c", CHECKS, env=env)
    assert result.returncode == 0 and result.stdout.startswith("ok 3.11"), result.stderr


def test_every_shared_library_resolves(pulled):
    result = _run(pulled.rootfs, "python3", "-c", LOAD_ALL, env=pulled.config["config"]["Env"])
    assert result.returncode == 0, result.stdout + result.stderr
