"""The control service's own admission webhook configurations: their names, and what it writes into them.

Two things in them depend on the running service rather than on the manifests: the ``caBundle``
(the podmigrate CA, ``migrator.certificates``) and the checkpoint repository whose images the
guard webhook must see (``matchConditions``, ``set_checkpoint_repository``). The service writes
both at start and puts them back should a re-applied manifest drop them. Only these three
configurations, by name: the controller's RBAC allows nothing else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

from kubernetes_asyncio import client

from kubeclient.reading import read_plain
from ocicheckpoint.reference import parse_reference

log = logging.getLogger(__name__)

MUTATING: Final = "podmigrate"
EVICTIONS: Final = "podmigrate-evictions"
GUARD: Final = "podmigrate-guard"
GUARD_PODS_WEBHOOK: Final = "checkpoint-images.podmigrate.io"
# The pods webhook's matchCondition tests each container image for ``contains('/<repository path>/')``.
_PATH_LITERAL: Final = re.compile(r"contains\('(/[^']*/)'\)")


def repository_path(repository: str) -> str:
    """``/<path>/`` of ``host[:port]/<path>``, lower case: what every checkpoint image's name contains."""
    return f"/{parse_reference(repository.rstrip('/')).repository.lower()}/"


def configurations(
    admission: client.AdmissionregistrationV1Api,
) -> list[tuple[Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]], str]]:
    """``(read, patch, name)`` of each of podmigrate's webhook configurations."""
    return [
        (admission.read_mutating_webhook_configuration, admission.patch_mutating_webhook_configuration, MUTATING),
        (admission.read_validating_webhook_configuration, admission.patch_validating_webhook_configuration, EVICTIONS),
        (admission.read_validating_webhook_configuration, admission.patch_validating_webhook_configuration, GUARD),
    ]


async def set_checkpoint_repository(*, admission: client.AdmissionregistrationV1Api, repository: str) -> None:
    """Point the guard's pods matchCondition at ``repository``'s path (a JSON patch, only when it differs)."""
    config = await read_plain(admission.read_validating_webhook_configuration(GUARD))
    if config is None:
        log.warning("webhook configuration %s does not exist: checkpoint images are not guarded at admission", GUARD)
        return
    path = repository_path(repository)
    ops = []
    for i, hook in enumerate(config.get("webhooks") or []):
        if hook.get("name") != GUARD_PODS_WEBHOOK:
            continue
        for j, condition in enumerate(hook.get("matchConditions") or []):
            expression = str(condition.get("expression") or "")
            wanted = _PATH_LITERAL.sub(f"contains('{path}')", expression)
            if wanted != expression:
                ops.append({"op": "replace", "path": f"/webhooks/{i}/matchConditions/{j}/expression", "value": wanted})
    if ops:
        await admission.patch_validating_webhook_configuration(GUARD, ops)
        log.info("webhook configuration %s now guards images under %s", GUARD, path)
