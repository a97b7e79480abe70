"""Structured logs: every line says which migration (and which trace) it is about.

The control service works on many migrations at once, one asyncio task each; context
variables follow the task, so a line logged anywhere below a reconcile carries that
migration's name and trace id without passing them around. ``--log-format json`` prints one
JSON object per line for log pipelines; the text format shows the same fields.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

migration: ContextVar[str] = ContextVar("migration", default="")
trace_id: ContextVar[str] = ContextVar("trace_id", default="")


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.migration = migration.get()
        record.trace_id = trace_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("migration", "trace_id"):
            if value := getattr(record, key, ""):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={v}" for k in ("migration", "trace_id") if (v := getattr(record, k, "")))
        return f"{line} [{context}]" if context else line


def setup_logging(*, json_output: bool = False, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter() if json_output else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
