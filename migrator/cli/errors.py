"""The one kind of failure the CLI reports: a single line ``error: <message>`` and an exit code."""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1  # any error, including a migration that Failed
EXIT_TIMEOUT: Final = 2  # --wait gave up before the migration finished


def one_line(text: str) -> str:
    """Messages from the API server may span lines; the CLI prints each error on one."""
    return "; ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


class CliError(Exception):
    """Something the user can act on: printed as ``error: <message>``, then exit ``code``."""

    def __init__(self, message: str, *, code: int = EXIT_ERROR) -> None:
        super().__init__(one_line(message))
        self.message = one_line(message)
        self.code = code
