"""Structured logs: one JSON object per line, through the standard logging module.

A record's fields are passed as ``extra={"fields": {...}}``; the formatter puts them at the top level next to the
time, level, logger and event (the message).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["traceback"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, separators=(",", ":"))


def configure_json_logging(level: str | int = "INFO", stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stderr by default) as one JSON line, replacing the root's handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # APScheduler narrates every submission at INFO, and warns at every interval that falls inside a long run (the
    # one-instance limit doing its job). Each run's own line says what happened; APScheduler's errors still show.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
