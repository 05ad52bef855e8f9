"""The worker's logs: the same lines as every process's (services.core.logs), one per job run.

Kept for the worker's command line and its tests: :func:`configure_worker_logging` sets the process up in the
configured format at the worker's level; each run's line is written by the runner (``job_run`` with its fields).
"""

from __future__ import annotations

import logging
from typing import TextIO

from services.core.logs import JsonFormatter, TextFormatter, configure_logging
from services.core.settings import Settings

__all__ = ["JsonFormatter", "TextFormatter", "configure_worker_logging"]


def configure_worker_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Every log record to ``stream`` (stderr by default), in the configured format, at the worker's level."""
    return configure_logging(settings, level=settings.worker_log_level, stream=stream)
