"""One error type that carries its HTTP status and migration stage, so handlers stay flat.

Every failure of a checkpoint is answered the same way (``{"error", "stage"}`` with a status
the caller can act on: 404 unknown, 409 wrong node or phase, 502 kubelet, 500 otherwise), and
the place that knows which case it is raises it; the HTTP layer only renders it.
"""

from __future__ import annotations

from agentapi.contract import Stage


class AgentError(Exception):
    """A request failed; ``status`` is the HTTP status to answer with, ``stage`` where it failed."""

    def __init__(self, message: str, *, status: int, stage: Stage | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.stage = stage

    def with_stage(self, stage: Stage) -> AgentError:
        """The same error attributed to ``stage`` unless it already names one."""
        if self.stage is None:
            self.stage = stage
        return self
