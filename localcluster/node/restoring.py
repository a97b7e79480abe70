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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from localcluster.node.containers import ContainerRequest
from localcluster.node.images import ImageStore, LocalImage
from ocicheckpoint import names

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


def prepare_restore(*, checkpoint: LocalImage, request: ContainerRequest, images: ImageStore) -> RestorePlan:
    root = checkpoint.root
    image = request.image_name
    try:
        spec_dump = json.loads((root / names.SPEC_DUMP_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise RestoreError(f'failed to read "{names.SPEC_DUMP_FILE}": {exc}') from None
    try:
        config_dump = json.loads((root / names.CONFIG_DUMP_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise RestoreError(f'failed to read "{names.CONFIG_DUMP_FILE}": {exc}') from None
    try:
        json.loads((spec_dump.get("annotations") or {})[names.CRIO_ANNOTATIONS_KEY])
    except (KeyError, ValueError, TypeError):
        raise RestoreError(f'failed to read "{names.CRIO_ANNOTATIONS_KEY}"') from None
    requested = {m.container_path for m in request.mounts}
    missing = [
        m["destination"]
        for m in spec_dump.get("mounts") or []
        if m["destination"] not in names.CRIO_RESTORE_IGNORED_MOUNTS and m["destination"] not in requested
    ]
    if missing:
        raise RestoreError(f'restoring "{image}" expects following bind mounts defined ({",".join(missing)})')
    # CRI-O's rule: the pinned reference when the archive has one, else the name (docs/facts.md, "CRI-O restore").
    base_name = config_dump.get("rootfsImageRef") or config_dump.get("rootfsImageName") or config_dump.get("rootfsImage") or ""
    base = images.local(base_name) if base_name else None
    if base is None:
        raise RestoreError(
            f'restoring "{image}": base image "{base_name}" is not present in local storage (pull it on this node first)'
        )
    return RestorePlan(base_image=base, config_dump=config_dump, spec_dump=spec_dump)
