"""The agent client's token file: what the controller shows agents (a projected token for their audience)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentapi.client import TokenFile


async def test_the_token_is_reread_when_the_kubelet_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    token = TokenFile(path)
    token.check()
    assert await token() == "first"
    replacement = tmp_path / "token.new"
    replacement.write_text("second")
    os.replace(replacement, path)  # the kubelet's atomic swap
    assert await token() == "second"


def test_a_missing_or_empty_token_is_an_error_at_start(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        TokenFile(tmp_path / "absent").check()
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="empty"):
        TokenFile(tmp_path / "empty").check()
