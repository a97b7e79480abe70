"""Freeze leases on their own (``node_agent.leases``): kept on disk, so a restarted agent still enforces them."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.leases import LAPSE_MEMORY_S, FreezeLeases, LeaseLapsed
from tests.node_agent.conftest import ManualClock


def test_a_restarted_agent_still_thaws_a_lapsed_freeze_and_refuses_its_kill(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "freeze-leases.json"
    FreezeLeases(path=path, clock=clock).grant(namespace="shop", pod="web", seconds=30)
    clock.now += 31
    again = FreezeLeases(path=path, clock=clock)  # the agent restarted
    assert again.due() == [("shop", "web")]
    again.mark_lapsed(namespace="shop", pod="web")
    assert again.due() == [], "thawed once"
    later = FreezeLeases(path=path, clock=clock)
    assert later.lapsed(namespace="shop", pod="web"), "the lapse is remembered: a late kill is refused"
    later.release(namespace="shop", pod="web")
    assert later.lapsed(namespace="shop", pod="web"), "a thaw on request does not forget a lapse"
    with pytest.raises(LeaseLapsed):
        later.renew(namespace="shop", pod="web", seconds=30)
    clock.now += LAPSE_MEMORY_S + 1
    later.due()
    assert not later.lapsed(namespace="shop", pod="web"), "forgotten after an hour"


def test_an_unreadable_file_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "freeze-leases.json"
    path.write_text("{not json")
    assert FreezeLeases(path=path).due() == []
