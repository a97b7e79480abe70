"""CRI-O's rules for creating a container from a checkpoint image, checked before any work.

When a container's image carries a checkpoint annotation, CRI-O (``CRImportCheckpoint``):

1. reads ``spec.dump`` and ``config.dump`` from the image, and refuses an archive whose spec
   lacks the ``io.kubernetes.cri-o.Annotations`` annotation;
2. requires every mount of the original container (except the ones it recreates itself,
   ``names.CRIO_RESTORE_IGNORED_MOUNTS``) to be requested again by the new container, and
   otherwise fails with ``restoring "<image>" expects following bind mounts defined (...)``;
3. runs the container on the *base* image named in ``config.dump``, which must already be
   in local storage: it never pulls it.

The error texts are CRI-O's, so that what a migration tool sees in ``containerStatuses`` is
what it would see on a real node.

Stricter than CRI-O, because the archive is hostile input (written by the pod's own processes
and by whoever can push to the registry): the dump files are read confined to the archive and
size-limited, ``checkpoint/`` may hold no symlinks (``checkpointfiles``), and the base image
``config.dump`` names must be the one the checkpoint image's annotations name
(``org.criu.checkpoint.rootfsImageName``/``rootfsImageID``, written by the checkpointing node
from the same dump) and, when the caller knows it, the image the pod's original spec named.
CRI-O takes the base from local storage *by name*, so without this an archive could run the
restored processes on any image that happens to be on the node. Refusals are RestoreErrors
(CreateContainerError with the reason).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster.node import checkpointfiles
from localcluster.node.containers import ContainerRequest
from localcluster.node.images import ImageStore, LocalImage
from ocicheckpoint import names
from ocicheckpoint.reference import parse_reference

# Fault injection for tests, at the node's own interface: while its Node carries this
# annotation, the node refuses every restore with the annotation's text, as a node with a
# broken or mismatched CRIU would. Product code cannot tell it from a real restore failure.
FAIL_RESTORES_ANNOTATION = "localcluster.podmigrate.io/fail-restores"
# Likewise for the kubelet's checkpoint API: it answers 500 with the annotation's text.
FAIL_CHECKPOINTS_ANNOTATION = "localcluster.podmigrate.io/fail-checkpoints"


class RestoreError(RuntimeError):
    reason = "CreateContainerError"


@dataclass(frozen=True, kw_only=True)
class RestorePlan:
    base_image: LocalImage
    config_dump: dict[str, Any]
    spec_dump: dict[str, Any]


def _same_image(a: str, b: str) -> bool:
    """Whether two image names are the same repository and tag (or digest), ``:latest`` implied."""
    if a == b:
        return True
    try:
        ra, rb = parse_reference(a), parse_reference(b)
    except ValueError:
        return False
    if (ra.registry, ra.repository) != (rb.registry, rb.repository):
        return False
    if ra.digest and rb.digest:
        return ra.digest == rb.digest
    if ra.digest or rb.digest:  # one pinned, the other not: only the same explicit tag says "same image"
        return bool(ra.tag and ra.tag == rb.tag)
    return (ra.tag or "latest") == (rb.tag or "latest")


def _same_repository(a: str, b: str) -> bool:
    try:
        ra, rb = parse_reference(a), parse_reference(b)
    except ValueError:
        return False
    return (ra.registry, ra.repository) == (rb.registry, rb.repository)


def check_base_image(
    *, config_dump: Mapping[str, Any], annotations: Mapping[str, str], image: str, original_image: str | None = None
) -> str:
    """The base image to take from local storage, once ``config.dump`` agrees with everyone who names it.

    CRI-O's choice is ``rootfsImageRef`` when set, else ``rootfsImageName``. Both must equal what the
    checkpoint image's annotations say (the checkpointing node copies them from the dump). When
    ``original_image`` (the image the pod's own spec named before the migration) is given, the name
    (or the pinned reference) must be that image, and a reference pinned in the same repository must
    have its digest.

    Not required: that the pinned reference be of the named repository. A container this node
    restored is named after its checkpoint image while running on the base (``checkpointing``
    writes both), so its next checkpoint's name and reference differ by design.
    """
    name = config_dump.get("rootfsImageName") or config_dump.get("rootfsImage") or ""
    ref = config_dump.get("rootfsImageRef") or ""
    if not isinstance(name, str) or not isinstance(ref, str):
        raise RestoreError(f'restoring "{image}": "{names.CONFIG_DUMP_FILE}" has a malformed base image name')
    annotated_name = annotations.get(names.ANNOTATION_ROOTFS_IMAGE_NAME, "")
    annotated_ref = annotations.get(names.ANNOTATION_ROOTFS_IMAGE_ID, "")
    if not (annotated_name or annotated_ref):
        raise RestoreError(
            f'restoring "{image}": the checkpoint image names no base image '
            f"(annotation {names.ANNOTATION_ROOTFS_IMAGE_NAME}), refusing the one "
            f'"{names.CONFIG_DUMP_FILE}" names ("{ref or name}")'
        )
    for key, dumped, annotated in (
        (names.ANNOTATION_ROOTFS_IMAGE_NAME, name, annotated_name),
        (names.ANNOTATION_ROOTFS_IMAGE_ID, ref, annotated_ref),
    ):
        if dumped != annotated:
            raise RestoreError(
                f'restoring "{image}": "{names.CONFIG_DUMP_FILE}" names base image "{dumped}" '
                f'but the checkpoint image\'s annotation {key} names "{annotated}"'
            )
    if original_image is not None:
        if not (_same_image(name, original_image) or ("@" in ref and _same_image(ref, original_image))):
            raise RestoreError(
                f'restoring "{image}": "{names.CONFIG_DUMP_FILE}" names base image "{name or ref}" '
                f'but the pod\'s original spec names "{original_image}"'
            )
        pinned = original_image.partition("@")[2]
        if pinned and "@" in ref and _same_repository(ref, original_image) and ref.partition("@")[2] != pinned:
            raise RestoreError(
                f'restoring "{image}": "{names.CONFIG_DUMP_FILE}" pins base image "{ref}" '
                f'but the pod\'s original spec pins "{original_image}"'
            )
    return ref or name


def _dump(archive: Path, file: str) -> dict[str, Any]:
    try:
        doc = checkpointfiles.read_dump_json(archive, file)
    except checkpointfiles.CheckpointFileError as exc:
        raise RestoreError(str(exc)) from None
    if not isinstance(doc, dict):
        raise RestoreError(f'failed to read "{file}": not a JSON object')
    return doc


def prepare_restore(
    *, checkpoint: LocalImage, request: ContainerRequest, images: ImageStore, original_image: str | None = None
) -> RestorePlan:
    """CRI-O's checks of a checkpoint image before any work, plus the hostile-archive ones (module docstring).

    ``original_image`` is the image the pod's spec named before it was migrated (the kubelet half
    knows it from the pod; None when it does not): the base image must be that one too.
    """
    root = checkpoint.root
    image = request.image_name
    spec_dump = _dump(root, names.SPEC_DUMP_FILE)
    config_dump = _dump(root, names.CONFIG_DUMP_FILE)
    try:
        json.loads((spec_dump.get("annotations") or {})[names.CRIO_ANNOTATIONS_KEY])
    except (KeyError, ValueError, TypeError, AttributeError):
        raise RestoreError(f'failed to read "{names.CRIO_ANNOTATIONS_KEY}"') from None
    try:
        checkpointfiles.check_checkpoint_directory(root)
    except checkpointfiles.CheckpointFileError as exc:
        raise RestoreError(f'restoring "{image}": {exc}') from None
    mounts = spec_dump.get("mounts") or []
    if not isinstance(mounts, list) or not all(isinstance(m, dict) and isinstance(m.get("destination"), str) for m in mounts):
        raise RestoreError(f'failed to read "{names.SPEC_DUMP_FILE}": malformed mounts')
    requested = {m.container_path for m in request.mounts}
    missing = [
        m["destination"]
        for m in mounts
        if m["destination"] not in names.CRIO_RESTORE_IGNORED_MOUNTS and m["destination"] not in requested
    ]
    if missing:
        raise RestoreError(f'restoring "{image}" expects following bind mounts defined ({",".join(missing)})')
    # CRI-O's rule: the pinned reference when the archive has one, else the name (docs/facts.md, "CRI-O restore").
    base_name = check_base_image(
        config_dump=config_dump, annotations=checkpoint.manifest.annotations, image=image, original_image=original_image
    )
    try:
        base = images.local(base_name) if base_name else None
    except ValueError:
        base = None
    if base is None:
        raise RestoreError(
            f'restoring "{image}": base image "{base_name}" is not present in local storage (pull it on this node first)'
        )
    return RestorePlan(base_image=base, config_dump=config_dump, spec_dump=spec_dump)
