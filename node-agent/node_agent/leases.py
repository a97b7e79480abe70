"""Freeze leases: a pod frozen for a migration is thawed when the control service stops renewing it.

Why: after its checkpoint a migrated pod stays frozen until the control service kills it (the move
goes on) or thaws it (the move failed). If the control service dies or loses the node in between,
nobody would ever do either, and the pod would stay frozen, out of service, for good. So a
checkpoint that leaves the pod frozen can come with a lease (``freeze_lease_seconds``); the control
service renews it while it works (``POST /v1/freeze-lease``), and when it lapses the agent thaws the
pod: it runs on where it was, as if the migration had failed before removing it.

A lapsed pod must then never be killed as a migrated source (it has run since its checkpoint, and
its new state would be lost): the agent refuses the kill, and the control service takes the failed
path (the pod stays where it runs). Leases are kept in a file, so an agent restarted in between
still enforces them; a lapse is remembered for a while after the thaw, so a late kill is refused.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

LAPSE_MEMORY_S: Final = 3600.0


class LeaseLapsed(RuntimeError):
    """The pod's freeze lease lapsed: the agent thawed it (it ran since its checkpoint)."""


@dataclass(kw_only=True)
class _Lease:
    expires: float
    lapsed_at: float | None = None


class FreezeLeases:
    def __init__(self, *, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self.clock = clock
        self._leases: dict[str, _Lease] = {}
        if path is not None and path.exists():
            try:
                raw = json.loads(path.read_text())
                self._leases = {k: _Lease(expires=float(v["expires"]), lapsed_at=v.get("lapsed_at")) for k, v in raw.items()}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("freeze leases in %s unreadable (%s): starting with none", path, exc)

    @staticmethod
    def _key(namespace: str, pod: str) -> str:
        return f"{namespace}/{pod}"

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(json.dumps({k: {"expires": v.expires, "lapsed_at": v.lapsed_at} for k, v in self._leases.items()}))
        os.replace(tmp, self._path)

    def grant(self, *, namespace: str, pod: str, seconds: float) -> None:
        self._leases[self._key(namespace, pod)] = _Lease(expires=self.clock() + seconds)
        self._save()

    def renew(self, *, namespace: str, pod: str, seconds: float) -> float:
        """Extend a live lease; the seconds it now has. ``LeaseLapsed`` if it lapsed, ``KeyError`` if there is none."""
        lease = self._leases[self._key(namespace, pod)]
        if lease.lapsed_at is not None:
            raise LeaseLapsed(f"the freeze of {namespace}/{pod} lapsed and the pod was thawed")
        lease.expires = self.clock() + seconds
        self._save()
        return seconds

    def lapsed(self, *, namespace: str, pod: str) -> bool:
        lease = self._leases.get(self._key(namespace, pod))
        return lease is not None and lease.lapsed_at is not None

    def release(self, *, namespace: str, pod: str) -> None:
        """The pod was killed or thawed on request: its lease is over (a lapse stays remembered)."""
        lease = self._leases.get(self._key(namespace, pod))
        if lease is not None and lease.lapsed_at is None:
            del self._leases[self._key(namespace, pod)]
            self._save()

    def due(self) -> list[tuple[str, str]]:
        """Pods whose lease has expired and that are not thawed yet; forgets old lapses."""
        now = self.clock()
        for key in [k for k, v in self._leases.items() if v.lapsed_at is not None and now - v.lapsed_at > LAPSE_MEMORY_S]:
            del self._leases[key]
        due = [k for k, v in self._leases.items() if v.lapsed_at is None and v.expires <= now]
        return [(k.partition("/")[0], k.partition("/")[2]) for k in due]

    def mark_lapsed(self, *, namespace: str, pod: str) -> None:
        lease = self._leases.get(self._key(namespace, pod))
        if lease is not None:
            lease.lapsed_at = self.clock()
            self._save()
