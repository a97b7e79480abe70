"""The guard's matchCondition follows the control service's checkpoint repository (migrator/webhookconfig.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from migrator import webhookconfig
from tests.fakekube import json_patch

MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "deploy" / "webhook.yaml"


class FakeAdmission:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.patches: list[list[dict[str, Any]]] = []

    async def read_validating_webhook_configuration(self, name: str, **_: Any) -> dict[str, Any]:
        assert name == webhookconfig.GUARD
        return self.config

    async def patch_validating_webhook_configuration(self, name: str, body: list[dict[str, Any]], **_: Any) -> None:
        self.patches.append(body)
        self.config = json_patch(self.config, body)


def guard_manifest() -> dict[str, Any]:
    return next(d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["metadata"]["name"] == webhookconfig.GUARD)


def test_the_repository_path_is_what_every_checkpoint_image_name_contains() -> None:
    assert webhookconfig.repository_path("127.0.0.1:5310/team/checkpoints/") == "/team/checkpoints/"


async def test_the_pods_condition_is_pointed_at_the_repository_once() -> None:
    admission = FakeAdmission(guard_manifest())
    await webhookconfig.set_checkpoint_repository(admission=admission, repository="reg.example:5000/ckpt")  # type: ignore[arg-type]
    (hook,) = [h for h in admission.config["webhooks"] if h["name"] == webhookconfig.GUARD_PODS_WEBHOOK]
    (condition,) = hook["matchConditions"]
    assert "contains('/ckpt/')" in condition["expression"] and "podmigrate-checkpoints" not in condition["expression"]
    await webhookconfig.set_checkpoint_repository(admission=admission, repository="reg.example:5000/ckpt")  # type: ignore[arg-type]
    assert len(admission.patches) == 1, "nothing to change the second time"
