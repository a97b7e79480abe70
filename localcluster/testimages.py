"""Test images, built locally (no Docker) and pushed to the local registry.

* ``counter``: busybox counting once a second on stdout. Its state is a shell variable, so
  a restore that does not continue from the checkpoint is visible at once in its log.
* ``warmup``: a Python HTTP service that does real work before it serves (the kind of app
  migration exists for: a cold start pays the warm-up again, a restore does not), keeps
  writes in memory, and can hold a memory ballast for benchmarks.

Both are ordinary OCI images (manifest, config, one layer), built from files of this
machine: Debian's static busybox, and Debian's own ``/usr/bin/python3`` with the shared
libraries it links and its standard library.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ocicheckpoint import image as oci
from ocicheckpoint import names
from ocicheckpoint.credentials import Credentials, DockerConfig
from ocicheckpoint.registry import RegistryClient

BUSYBOX = Path("/bin/busybox")
SYSTEM_PYTHON = Path("/usr/bin/python3")
APP_DIR = Path(__file__).with_name("apps")

COUNTER_SCRIPT = 'i=0; while true; do i=$((i+1)); echo "$i"; sleep 1; done'


@dataclass(frozen=True, kw_only=True)
class TestImage:
    repository: str
    tag: str
    rootfs: Path
    entrypoint: list[str]
    cmd: list[str]
    env: list[str]


def _busybox_rootfs(root: Path) -> None:
    if not BUSYBOX.exists():
        raise FileNotFoundError(f"{BUSYBOX} missing: install Debian's busybox-static (localcluster/install-deps.sh)")
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    for d in ("tmp", "etc", "proc", "sys", "dev", "var"):
        (root / d).mkdir(exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")


def _shared_libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        match = re.search(r"(/\S+)", line.split("=>")[-1])
        if match:
            libs.append(Path(match.group(1)))
    return libs


def _python_rootfs(root: Path) -> None:
    _busybox_rootfs(root)
    python = SYSTEM_PYTHON.resolve()
    if not python.exists():
        raise FileNotFoundError(f"{SYSTEM_PYTHON} missing: install Debian's python3 (localcluster/install-deps.sh)")
    for path in [python, *_shared_libraries(python)]:
        target = root / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    if python.name != "python3":
        (root / "usr" / "bin" / "python3").symlink_to(python.name)
    version = python.name.removeprefix("python")
    stdlib = Path(f"/usr/lib/python{version}")
    skip = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages", "dist-packages", "__pycache__"}
    shutil.copytree(
        stdlib,
        root / str(stdlib).lstrip("/"),
        symlinks=True,
        ignore=lambda _d, entries: [e for e in entries if e in skip or e.startswith("config-")],
    )
    # C extension modules link libraries of their own (libssl, libffi, ...): bring those too.
    for module in (root / str(stdlib).lstrip("/") / "lib-dynload").glob("*.so"):
        for lib in _shared_libraries(module):
            target = root / str(lib).lstrip("/")
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(lib, target)
    app = root / "app"
    app.mkdir()
    shutil.copy2(APP_DIR / "warmup_server.py", app / "server.py")


def _layer(rootfs: Path, out: Path) -> oci.Descriptor:
    """An uncompressed, reproducible layer tar of a root filesystem."""

    def reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(rootfs.iterdir()):
            tar.add(entry, arcname=entry.name, filter=reset)
    digest, size = oci.sha256_file(out)
    return oci.Descriptor(media_type=names.MEDIA_TYPE_OCI_LAYER_TAR, digest=digest, size=size)


def counter_image(work: Path) -> TestImage:
    rootfs = work / "counter"
    _busybox_rootfs(rootfs)
    return TestImage(
        repository="podmigrate/counter",
        tag="v1",
        rootfs=rootfs,
        entrypoint=["/bin/sh", "-c", COUNTER_SCRIPT],
        cmd=[],
        env=["PATH=/bin"],
    )


def warmup_image(work: Path) -> TestImage:
    rootfs = work / "warmup"
    _python_rootfs(rootfs)
    return TestImage(
        repository="podmigrate/warmup",
        tag="v1",
        rootfs=rootfs,
        entrypoint=["/usr/bin/python3", "-u", "/app/server.py"],
        cmd=[],
        env=["PATH=/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1"],
    )


async def push(image: TestImage, *, registry: str, session: aiohttp.ClientSession, work: Path, credentials: DockerConfig) -> str:
    """Push one image with ``credentials`` (the registry refuses anonymous pushes); returns registry/repo:tag."""
    client = RegistryClient(host=registry, session=session, plain_http=True, credentials=credentials.for_registry(registry))
    layer_path = work / f"{image.repository.replace('/', '_')}.tar"
    layer = await asyncio.to_thread(_layer, image.rootfs, layer_path)
    config_bytes = oci.build_config(diff_ids=[layer.digest], entrypoint=image.entrypoint, cmd=image.cmd, env=image.env)
    config = oci.Descriptor(media_type=names.MEDIA_TYPE_OCI_CONFIG, digest=oci.sha256_bytes(config_bytes), size=len(config_bytes))
    manifest = oci.build_manifest(config=config, layers=[layer])
    await client.push_image(
        repository=image.repository,
        tag=image.tag,
        layers=[(layer, layer_path)],
        config=config,
        config_bytes=config_bytes,
        manifest=manifest,
    )
    return f"{registry}/{image.repository}:{image.tag}"


async def push_checkpoint(
    *, archive: Path, info: oci.CheckpointInfo, registry: str, repository: str, tag: str, credentials: Credentials | None
) -> str:
    """Push a kubelet checkpoint ``archive`` as a checkpoint image (what a node's agent would, unencrypted), for tests
    that restore by hand; returns its manifest digest."""
    img = oci.checkpoint_image(archive=archive, info=info)
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(host=registry, session=session, plain_http=True, credentials=credentials)
        return await client.push_image(
            repository=repository,
            tag=tag,
            layers=[(img.layer, img.layer_path)],
            config=img.config,
            config_bytes=img.config_bytes,
            manifest=img.manifest_bytes,
        )


async def build_and_push_all(*, registry: str, credentials: DockerConfig) -> dict[str, str]:
    """Build every test image and push it with ``credentials``; returns name -> reference."""
    with tempfile.TemporaryDirectory(prefix="localcluster-images-") as tmp:
        work = Path(tmp)
        async with aiohttp.ClientSession() as session:
            refs = {}
            for name, make in (("counter", counter_image), ("warmup", warmup_image)):
                built = await asyncio.to_thread(make, work)
                refs[name] = await push(built, registry=registry, session=session, work=work, credentials=credentials)
            return refs
