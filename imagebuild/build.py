"""Assemble podmigrate's image from this machine's files and PyPI, and push it.

Why three layers instead of one: they change at different rates. ``runtime`` (Debian's Python,
its libraries, the stdlib, /etc) changes when the machine's Python does; ``dependencies`` (the
wheels of pyproject's ``dependencies``, and the shared libraries their extension modules link)
when a dependency is upgraded; ``podmigrate`` (the project's packages and the console scripts) at
every commit. Each layer is reproducible (``layers``), so a rebuild after a code change pushes
only the last one, a few hundred kilobytes, and a rebuild of the same tree gives the same
manifest digest.

The config is what the Containerfile's final stage says: user 65532:65532, PATH with
``/usr/local/bin`` first, ``PYTHONDONTWRITEBYTECODE=1``, ``PYTHONUNBUFFERED=1``, and the
``org.opencontainers.image.*`` labels (version from pyproject, revision = the commit). Its
``created`` is the commit's time, not the build's, for the same reason.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import aiohttp

from imagebuild import layers, packages, runtime
from imagebuild.layers import Layer
from imagebuild.project import Project, Revision
from localcluster.testimages import SYSTEM_PYTHON
from ocicheckpoint import image as oci
from ocicheckpoint import names
from ocicheckpoint.credentials import DockerConfig
from ocicheckpoint.registry import RegistryClient

USER: Final = f"{runtime.NONROOT_UID}:{runtime.NONROOT_UID}"
ENV: Final = (
    "PATH=/usr/local/bin:/usr/bin:/bin",
    "LANG=C.UTF-8",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
)
DEFAULT_CMD: Final = ("podmigrate-controller", "--help")


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    """An image ready to push: its layers on disk, its config and manifest in memory."""

    layers: tuple[Layer, ...]
    config_bytes: bytes
    config: oci.Descriptor
    manifest_bytes: bytes
    manifest_digest: str

    @property
    def files(self) -> tuple[tuple[oci.Descriptor, Path], ...]:
        return tuple((layer.descriptor, layer.path) for layer in self.layers)

    @property
    def compressed_size(self) -> int:
        """What a pull downloads: the layers as stored in the registry, plus the config."""
        return sum(layer.descriptor.size for layer in self.layers) + self.config.size


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """Where the wheels are cached, whether to ask PyPI again, whether to ship .pyc, which Python."""

    cache: Path
    refresh: bool = False
    bytecode: bool = True
    python: Path = SYSTEM_PYTHON


def labels(*, project: Project, revision: Revision) -> dict[str, str]:
    """The ``org.opencontainers.image.*`` labels (the Containerfile sets the same from its build args)."""
    return {
        "org.opencontainers.image.title": project.name,
        "org.opencontainers.image.description": project.description,
        "org.opencontainers.image.version": project.version,
        "org.opencontainers.image.revision": revision.label,
    }


def created(revision: Revision) -> datetime:
    return datetime.fromtimestamp(revision.timestamp, tz=UTC)


def image_config(*, project: Project, revision: Revision, diff_ids: Sequence[str]) -> bytes:
    """The OCI image config: ``oci.build_config``'s, plus the user (which it has no parameter for)."""
    base = oci.build_config(
        diff_ids=list(diff_ids),
        cmd=list(DEFAULT_CMD),
        env=list(ENV),
        labels=labels(project=project, revision=revision),
        created=created(revision),
    )
    doc = json.loads(base)
    doc["config"]["User"] = USER
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def stage_runtime(*, root: Path, options: BuildOptions) -> list[Path]:
    libraries = runtime.python_runtime(root=root, python=options.python)
    runtime.system_files(root=root)
    if options.bytecode:
        packages.compile_bytecode(root=root, directory=runtime.stdlib_dir(options.python), python=options.python)
    return libraries


def stage_dependencies(
    *, root: Path, project: Project, installer: packages.Installer, options: BuildOptions, present: Sequence[Path]
) -> None:
    site = runtime.image_path(root, runtime.site_packages(options.python))
    packages.install(installer=installer, find_links=[options.cache], target=site, requirements=project.dependencies, deps=True)
    # Extension modules of the wheels: the libraries they link that the runtime layer lacks (libstdc++...).
    modules = sorted(p for p in site.rglob("*.so*") if p.is_file() and not p.is_symlink())
    runtime.copy_libraries(root=root, binaries=modules, present=present)
    if options.bytecode:
        packages.compile_bytecode(root=root, directory=runtime.site_packages(options.python), python=options.python)


def stage_project(*, root: Path, project: Project, installer: packages.Installer, options: BuildOptions, work: Path) -> None:
    dist = packages.build_project_wheel(installer=installer, project=project, wheels=options.cache, work=work)
    site = runtime.image_path(root, runtime.site_packages(options.python))
    requirement = f"{project.name}=={project.version}"
    packages.install(installer=installer, find_links=[dist], target=site, requirements=[requirement], deps=False)
    packages.write_wrappers(root=root, scripts=project.image_scripts(), python=options.python)
    if options.bytecode:
        packages.compile_bytecode(root=root, directory=runtime.site_packages(options.python), python=options.python)


def prepare_wheels(*, project: Project, installer: packages.Installer, options: BuildOptions) -> bool:
    """Wheels for the dependencies and the build requirements in the cache; True if PyPI was asked."""
    requirements = [*project.dependencies, *project.build_requires]
    return packages.ensure_wheels(installer=installer, wheels=options.cache, requirements=requirements, refresh=options.refresh)


def build_image(
    *, project: Project, revision: Revision, options: BuildOptions, installer: packages.Installer, work: Path
) -> BuiltImage:
    """Stage the three root filesystems under ``work`` (wheels already cached), tar them, and describe the image."""
    roots = {name: work / "rootfs" / name for name in ("runtime", "dependencies", "podmigrate")}
    for root in roots.values():
        root.mkdir(parents=True)
    libraries = stage_runtime(root=roots["runtime"], options=options)
    stage_dependencies(root=roots["dependencies"], project=project, installer=installer, options=options, present=libraries)
    stage_project(root=roots["podmigrate"], project=project, installer=installer, options=options, work=work / "project")
    built = tuple(layers.build_layer(name=name, rootfs=root, work=work) for name, root in roots.items())
    return describe(project=project, revision=revision, built=built)


def describe(*, project: Project, revision: Revision, built: Sequence[Layer]) -> BuiltImage:
    """Config and manifest for layers already built."""
    config_bytes = image_config(project=project, revision=revision, diff_ids=[layer.diff_id for layer in built])
    config = oci.Descriptor(media_type=names.MEDIA_TYPE_OCI_CONFIG, digest=oci.sha256_bytes(config_bytes), size=len(config_bytes))
    manifest_bytes = oci.build_manifest(config=config, layers=[layer.descriptor for layer in built])
    return BuiltImage(
        layers=tuple(built),
        config_bytes=config_bytes,
        config=config,
        manifest_bytes=manifest_bytes,
        manifest_digest=oci.sha256_bytes(manifest_bytes),
    )


async def push(*, image: BuiltImage, client: RegistryClient, repository: str, tags: Sequence[str]) -> str:
    """Push the blobs once and the manifest under every tag; returns the manifest digest the registry reports."""
    if not tags:
        raise ValueError("at least one tag")
    digest = await client.push_image(
        repository=repository,
        tag=tags[0],
        layers=image.files,
        config=image.config,
        config_bytes=image.config_bytes,
        manifest=image.manifest_bytes,
    )
    for tag in tags[1:]:
        await client.push_manifest(
            repository=repository, reference=tag, manifest=image.manifest_bytes, media_type=names.MEDIA_TYPE_OCI_MANIFEST
        )
    if digest != image.manifest_digest:
        raise RuntimeError(f"the registry stored the manifest as {digest}, not {image.manifest_digest}")
    return digest


@dataclass(frozen=True, kw_only=True)
class Pushed:
    reference: str  # registry/repository@sha256:...
    tags: tuple[str, ...]
    compressed_size: int
    layer_sizes: dict[str, int]
    wheels_downloaded: bool  # False: every wheel came from the cache (no network)


async def build_and_push(
    *,
    project: Project,
    revision: Revision,
    options: BuildOptions,
    registry: str,
    repository: str,
    tags: Sequence[str],
    plain_http: bool,
    credentials: DockerConfig | None = None,
) -> Pushed:
    """Build in a temporary directory and push; the directory is gone when this returns."""
    installer = await asyncio.to_thread(packages.find_installer, python=options.python)
    downloaded = await asyncio.to_thread(prepare_wheels, project=project, installer=installer, options=options)
    with tempfile.TemporaryDirectory(prefix="podmigrate-image-") as tmp:
        image = await asyncio.to_thread(
            build_image, project=project, revision=revision, options=options, installer=installer, work=Path(tmp)
        )
        async with aiohttp.ClientSession() as session:
            cred = credentials.for_registry(registry) if credentials is not None else None
            client = RegistryClient(host=registry, session=session, plain_http=plain_http, credentials=cred)
            digest = await push(image=image, client=client, repository=repository, tags=tags)
    return Pushed(
        reference=f"{registry}/{repository}@{digest}",
        tags=tuple(f"{registry}/{repository}:{tag}" for tag in tags),
        compressed_size=image.compressed_size,
        layer_sizes={layer.name: layer.descriptor.size for layer in image.layers},
        wheels_downloaded=downloaded,
    )
