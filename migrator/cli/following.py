"""``--wait``: following one object through its watch until it is done, deleted, or the wait gives up.

Every ``--wait`` (a PodMigration, a NodeDrain, a PodCheckpoint or PodRestore) is the same loop:
the object now and after every change; what each version means is the caller's (``on_change``
prints progress and says when it is done, with the exit code); a deletion while waiting is an
error; a timeout is exit 2 with the last status, which the caller turns into its hint. Only the
loop lives here, so the three cannot drift apart on what a deletion or a timeout means.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Any

from migrator.cli.errors import CliError


async def follow(
    changes: AsyncIterator[dict[str, Any] | None],
    *,
    what: str,
    timeout: float,
    on_change: Callable[[Mapping[str, Any]], int | None],
) -> tuple[int | None, Mapping[str, Any]]:
    """Feed each version of the watched object to ``on_change`` until it returns an exit code.

    ``what`` names the object in the error a deletion raises (``podmigration "x"``). Returns the
    exit code and the last status, or (None, the last status) when ``timeout`` ran out first.
    """
    status: Mapping[str, Any] = {}
    try:
        async with asyncio.timeout(timeout), aclosing(changes):
            async for obj in changes:
                if obj is None:
                    raise CliError(f"{what} was deleted while waiting for it")
                status = obj.get("status") or {}
                code = on_change(obj)
                if code is not None:
                    return code, status
    except TimeoutError:
        pass
    return None, status
