"""Building and reading OCI images, checkpoint images first among them.

A checkpoint image is the recipe CRI-O's own tests use: an image "from scratch" whose one
layer is the checkpoint archive's contents at ``/``, with annotations naming the container.
The kubelet's archive is already an uncompressed tar whose entries sit at the root, so the
archive *is* the layer: no repacking, and its sha256 is both the layer digest and the
``diff_id`` (uncompressed). Every runtime's annotation keys are set, because each runtime
only looks for its own (see ``names``).

Ordinary images (the base images pods run) are read by the same code: manifest, config
(entrypoint, cmd, env, working dir) and layers.

Given recipients (the nodes' public keys), the layer is encrypted in ocicrypt's format
(``ocicheckpoint.encryption``) into ``<archive>.enc`` beside the archive and the manifest
lists that; the config's ``diff_ids`` stay the plaintext archive's digest, which is what a
runtime checks after it decrypted the layer on pull.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ocicheckpoint import names

if TYPE_CHECKING:
    from ocicheckpoint.encryption import PublicKey

CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about one blob."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Descriptor:
        return cls(
            media_type=str(data["mediaType"]),
            digest=str(data["digest"]),
            size=int(data["size"]),
            annotations=dict(data.get("annotations") or {}),
        )


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """An image manifest, parsed (OCI or Docker v2 schema 2: both list a config and layers)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str]

    @property
    def checkpoint_container(self) -> str | None:
        """The container name a checkpoint image is of, or None for an ordinary image."""
        return checkpoint_name(self.annotations)


@dataclass(frozen=True, kw_only=True)
class ImageConfig:
    """What a runtime takes from an image config to start a container."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    diff_ids: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """Facts about a checkpoint that go into its image's annotations."""

    container: str
    pod: str
    namespace: str
    rootfs_image_name: str
    rootfs_image_ref: str
    runtime: str
    criu_version: str
    engine: str = "CRI-O"
    cgroup_version: str = "v1"
    kernel: str = field(default_factory=lambda: platform.release())
    arch: str = field(default_factory=lambda: go_arch())


def go_arch() -> str:
    """This machine's architecture in OCI (Go) spelling."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def sha256_file(path: Path) -> tuple[str, int]:
    """The ``sha256:`` digest and size of a file, hashed in-process while reading."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def checkpoint_name(annotations: Mapping[str, str]) -> str | None:
    """The checkpointed container's name if these annotations mark a checkpoint image."""
    for key in names.CHECKPOINT_NAME_ANNOTATIONS:
        if value := annotations.get(key):
            return value
    return None


def checkpoint_annotations(info: CheckpointInfo, *, created: datetime | None = None) -> dict[str, str]:
    """Every runtime's checkpoint annotations for one container's checkpoint."""
    when = (created or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        names.ANNOTATION_CRIO_CHECKPOINT_NAME: info.container,
        names.ANNOTATION_CONTAINERD_CHECKPOINT_NAME: info.container,
        names.ANNOTATION_PODMAN_CHECKPOINT_NAME: info.container,
        names.ANNOTATION_ENGINE: info.engine,
        names.ANNOTATION_POD: info.pod,
        names.ANNOTATION_NAMESPACE: info.namespace,
        names.ANNOTATION_ROOTFS_IMAGE_NAME: info.rootfs_image_name,
        names.ANNOTATION_ROOTFS_IMAGE_ID: info.rootfs_image_ref,
        names.ANNOTATION_RUNTIME: info.runtime,
        names.ANNOTATION_CRIU_VERSION: info.criu_version,
        names.ANNOTATION_HOST_ARCH: info.arch,
        names.ANNOTATION_HOST_KERNEL: info.kernel,
        names.ANNOTATION_CGROUP_VERSION: info.cgroup_version,
        names.ANNOTATION_OCI_CREATED: when,
    }


def build_config(
    *,
    diff_ids: list[str],
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    working_dir: str = "",
    labels: Mapping[str, str] | None = None,
    created: datetime | None = None,
) -> bytes:
    """A real OCI image config (runtimes reject unknown config types)."""
    container_config: dict[str, Any] = {}
    if entrypoint:
        container_config["Entrypoint"] = entrypoint
    if cmd:
        container_config["Cmd"] = cmd
    if env:
        container_config["Env"] = env
    if working_dir:
        container_config["WorkingDir"] = working_dir
    if labels:
        container_config["Labels"] = dict(labels)
    doc = {
        "created": (created or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "architecture": go_arch(),
        "os": "linux",
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def build_manifest(*, config: Descriptor, layers: list[Descriptor], annotations: Mapping[str, str] | None = None) -> bytes:
    """An OCI image manifest (the only kind CRI-O reads annotations from)."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": names.MEDIA_TYPE_OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def parse_manifest(data: bytes, *, media_type: str | None = None) -> Manifest:
    doc = json.loads(data)
    kind = doc.get("mediaType") or media_type or names.MEDIA_TYPE_OCI_MANIFEST
    if kind in (names.MEDIA_TYPE_OCI_INDEX, names.MEDIA_TYPE_DOCKER_LIST):
        raise ValueError("this is an image index, not a manifest: pick a platform first")
    return Manifest(
        media_type=kind,
        config=Descriptor.from_json(doc["config"]),
        layers=tuple(Descriptor.from_json(layer) for layer in doc.get("layers", [])),
        annotations=dict(doc.get("annotations") or {}),
    )


def pick_platform(index: bytes, *, os: str = "linux", arch: str | None = None) -> Descriptor:
    """From an image index, the manifest for this platform."""
    want = arch or go_arch()
    for entry in json.loads(index).get("manifests", []):
        plat = entry.get("platform") or {}
        if plat.get("os") == os and plat.get("architecture") == want:
            return Descriptor.from_json(entry)
    raise LookupError(f"image index has no manifest for {os}/{want}")


def parse_config(data: bytes) -> ImageConfig:
    doc = json.loads(data)
    cfg = doc.get("config") or {}
    return ImageConfig(
        entrypoint=tuple(cfg.get("Entrypoint") or ()),
        cmd=tuple(cfg.get("Cmd") or ()),
        env=tuple(cfg.get("Env") or ()),
        working_dir=cfg.get("WorkingDir") or "",
        diff_ids=tuple((doc.get("rootfs") or {}).get("diff_ids") or ()),
        labels=dict(cfg.get("Labels") or {}),
    )


class PushableImage(Protocol):
    """What a publisher pushes: blobs streamed from files, then the config, then the manifest."""

    @property
    def files(self) -> tuple[tuple[Descriptor, Path], ...]: ...

    @property
    def config_bytes(self) -> bytes: ...

    @property
    def config(self) -> Descriptor: ...

    @property
    def manifest_bytes(self) -> bytes: ...

    @property
    def manifest_digest(self) -> str: ...


@dataclass(frozen=True, kw_only=True)
class CheckpointImage:
    """A checkpoint image ready to push: its blobs on disk (or in memory) and its manifest."""

    layer_path: Path
    layer: Descriptor
    config_bytes: bytes
    config: Descriptor
    manifest_bytes: bytes
    manifest_digest: str
    encrypted: bool = False  # layer_path is then the encrypted copy (``encrypted_layer_path``), the caller's to delete

    @property
    def files(self) -> tuple[tuple[Descriptor, Path], ...]:
        return ((self.layer, self.layer_path),)


def encrypted_layer_path(layer: Path) -> Path:
    """Where the encrypted copy of a layer file goes (beside it, deleted with it)."""
    return layer.with_name(layer.name + names.ENCRYPTED_LAYER_FILE_SUFFIX)


def checkpoint_image(
    *,
    archive: Path,
    info: CheckpointInfo,
    archive_digest: str | None = None,
    recipients: Sequence[PublicKey] = (),
) -> CheckpointImage:
    """Make the checkpoint image of a kubelet checkpoint archive (the archive is the layer).

    ``archive_digest`` may be given when it was computed while the archive was written, so
    the archive is not read twice. With ``recipients`` the layer is the archive encrypted to
    them (written to ``encrypted_layer_path(archive)``; reads and writes the whole archive
    once, so call it off the event loop).
    """
    if archive_digest is None:
        digest, size = sha256_file(archive)
    else:
        digest, size = archive_digest, archive.stat().st_size
    layer = Descriptor(media_type=names.MEDIA_TYPE_OCI_LAYER_TAR, digest=digest, size=size)
    layer_path = archive
    if recipients:
        from ocicheckpoint.encryption import encrypt_layer  # here: the encryption module imports this one

        layer_path = encrypted_layer_path(archive)
        layer = encrypt_layer(
            src=archive, dst=layer_path, media_type=layer.media_type, recipients=recipients, plain_digest=digest
        )
    docs = checkpoint_documents(layer=layer, diff_id=digest, info=info)
    return CheckpointImage(
        layer_path=layer_path,
        layer=layer,
        config_bytes=docs.config_bytes,
        config=docs.config,
        manifest_bytes=docs.manifest_bytes,
        manifest_digest=docs.manifest_digest,
        encrypted=bool(recipients),
    )


@dataclass(frozen=True, kw_only=True)
class ImageDocuments:
    """The small documents of an image whose layer is already described: config and manifest."""

    config_bytes: bytes
    config: Descriptor
    manifest_bytes: bytes
    manifest_digest: str


def checkpoint_documents(*, layer: Descriptor, diff_id: str, info: CheckpointInfo) -> ImageDocuments:
    """Config and manifest of a checkpoint image whose one layer is ``layer`` (plaintext digest ``diff_id``).

    Apart from ``checkpoint_image`` because a streamed push knows the layer's descriptor only
    after its bytes are uploaded (``node_agent.publishing``): the documents come last.
    """
    annotations = checkpoint_annotations(info)
    config_bytes = build_config(diff_ids=[diff_id], labels=annotations)
    config = Descriptor(media_type=names.MEDIA_TYPE_OCI_CONFIG, digest=sha256_bytes(config_bytes), size=len(config_bytes))
    manifest_bytes = build_manifest(config=config, layers=[layer], annotations=annotations)
    return ImageDocuments(
        config_bytes=config_bytes, config=config, manifest_bytes=manifest_bytes, manifest_digest=sha256_bytes(manifest_bytes)
    )
