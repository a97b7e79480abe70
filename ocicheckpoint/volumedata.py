"""The volume-data artifact: a pod's emptyDir contents as an OCI artifact, built and read here.

Why a separate artifact and not more layers of the checkpoint image: a runtime unpacks every
layer of a checkpoint image into the container's checkpoint directory (containerd) or reads
it as the archive (CRI-O); files of a volume have no place there, and a pod's emptyDir volumes
belong to the pod, not to one container. So the source agent pushes one artifact per pod
(``names.ARTIFACT_TYPE_VOLUME_DATA``) with one uncompressed tar layer per volume, annotated
with the volume's name and medium; the registry stores, deduplicates and deletes it like any
image, and its digest is recorded next to the checkpoint images.

The volumes hold the pod's data as much as the checkpoint holds its memory, so with recipients
each layer is encrypted like a checkpoint layer (ocicrypt's format, ``+encrypted`` media type,
the volume annotations kept beside the encryption ones); the restoring agent decrypts with its
node's private keys.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocicheckpoint import encryption, names
from ocicheckpoint.image import Descriptor, Manifest, encrypted_layer_path, sha256_bytes


@dataclass(frozen=True, kw_only=True)
class VolumeLayer:
    """One emptyDir volume's tar, on disk, ready to push."""

    name: str
    medium: str  # "" or "Memory"
    path: Path
    digest: str
    size: int

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(
            media_type=names.MEDIA_TYPE_VOLUME_DATA_LAYER,
            digest=self.digest,
            size=self.size,
            annotations={names.ANNOTATION_VOLUME_NAME: self.name, names.ANNOTATION_VOLUME_MEDIUM: self.medium},
        )


@dataclass(frozen=True, kw_only=True)
class VolumeDataImage:
    """The artifact ready to push (``image.PushableImage``)."""

    files: tuple[tuple[Descriptor, Path], ...]
    config_bytes: bytes
    config: Descriptor
    manifest_bytes: bytes
    manifest_digest: str


def volume_data_image(
    *, layers: Sequence[VolumeLayer], namespace: str, pod: str, recipients: Sequence[encryption.PublicKey] = ()
) -> VolumeDataImage:
    """The artifact of these volume tars; with ``recipients`` each layer is encrypted to them into
    ``encrypted_layer_path(layer.path)`` (the caller deletes those with the tars)."""
    files: list[tuple[Descriptor, Path]] = []
    for layer in layers:
        if recipients:
            dst = encrypted_layer_path(layer.path)
            plain = layer.descriptor
            enc = encryption.encrypt_layer(
                src=layer.path,
                dst=dst,
                media_type=plain.media_type,
                recipients=recipients,
                plain_digest=plain.digest,
                annotations=plain.annotations,
            )
            files.append((enc, dst))
        else:
            files.append((layer.descriptor, layer.path))
    config_bytes = json.dumps(
        {"volumes": [{"name": layer.name, "medium": layer.medium, "size": layer.size} for layer in layers]},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    config = Descriptor(media_type=names.MEDIA_TYPE_VOLUME_DATA_CONFIG, digest=sha256_bytes(config_bytes), size=len(config_bytes))
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": names.MEDIA_TYPE_OCI_MANIFEST,
        "artifactType": names.ARTIFACT_TYPE_VOLUME_DATA,
        "config": config.to_json(),
        "layers": [descriptor.to_json() for descriptor, _ in files],
        "annotations": {names.ANNOTATION_VOLUME_POD: f"{namespace}/{pod}"},
    }
    manifest = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return VolumeDataImage(
        files=tuple(files),
        config_bytes=config_bytes,
        config=config,
        manifest_bytes=manifest,
        manifest_digest=sha256_bytes(manifest),
    )


def volume_layers(manifest: Manifest) -> dict[str, Descriptor]:
    """volume name -> its layer, from a volume-data manifest; ValueError for anything else."""
    if manifest.config.media_type != names.MEDIA_TYPE_VOLUME_DATA_CONFIG:
        raise ValueError(f"not a podmigrate volume-data artifact (config media type {manifest.config.media_type})")
    out: dict[str, Descriptor] = {}
    for layer in manifest.layers:
        name = layer.annotations.get(names.ANNOTATION_VOLUME_NAME, "")
        media_type = layer.media_type
        if encryption.is_encrypted(media_type):
            media_type = encryption.plaintext_media_type(media_type)
        if media_type != names.MEDIA_TYPE_VOLUME_DATA_LAYER or not name or "/" in name or name in (".", ".."):
            raise ValueError(f"unexpected layer in a volume-data artifact: {layer.media_type} {name!r}")
        if name in out:
            raise ValueError(f"volume {name!r} appears twice in the volume-data artifact")
        out[name] = layer
    return out
