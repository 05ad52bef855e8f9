"""Logs: one line per record, JSON objects in production or readable text in development, and never a secret.

Every process configures logging once with :func:`configure_logging` (the API, the worker, the command line). A
record's fields are passed as ``extra={"fields": {...}}``; the JSON formatter puts them at the top level beside the
time, level, logger and event (the message), the text formatter appends them as ``key=value``. While a request is
served its id (``X-Request-Id``) is added to every record (see :data:`request_id`).

Redaction is the last line of defence: the handler's :class:`RedactionFilter` renders each record (message,
fields, traceback) and replaces anything that looks like a secret (Stripe keys, webhook secrets, bearer tokens,
creditrail API keys) and every configured secret (the Stripe key, webhook secrets, the metrics token, chain RPC
URLs and their paths, which often carry a provider key) before a formatter sees it. Code should still never log
them: log a chain's id, not its RPC URL.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

from services.core.settings import Settings

REDACTED = "[redacted]"

# What a secret looks like. creditrail's own API keys read "cr_<12 hex prefix>_<secret>" (services.apikeys), its
# customer sessions "crs_<12 hex prefix>_<secret>": the prefix is kept (it names the key, it is no secret), the rest
# goes.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b((?:sk|rk)_(?:live|test))_[A-Za-z0-9]+"), rf"\1_{REDACTED}"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]+"), f"whsec_{REDACTED}"),
    (re.compile(r"\b(crs?_[0-9a-f]{12})_[A-Za-z0-9_-]+"), rf"\1_{REDACTED}"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {REDACTED}"),
    (
        re.compile(
            r"""(?i)(["']?(?:authorization|x-api-key|stripe-signature)["']?\s*[:=]\s*)"""
            r"""("[^"]*"|'[^']*'|[^\s,}]+(?:[ \t]+[A-Za-z0-9._~+/=-]+)?)"""
        ),
        rf"\1{REDACTED}",
    ),
)

# The id of the request being served, if any: added to every log record made while it is served.
request_id: ContextVar[str | None] = ContextVar("creditrail_request_id", default=None)


def secrets_of(settings: Settings) -> list[str]:
    """The configured secrets that must never appear in a log line."""
    found = [settings.stripe_secret_key.get_secret_value()]
    found += [secret.get_secret_value() for secret in settings.stripe_webhook_secrets]
    if settings.metrics_token is not None:
        found.append(settings.metrics_token.get_secret_value())
    for chain in settings.usdc_chains:
        found.append(chain.rpc_url)
        parts = urlsplit(chain.rpc_url)
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        if len(tail.strip("/")) >= 6:  # "/" or "/rpc" say nothing; "/v2/<key>" does
            found.append(tail)
        if parts.password:
            found.append(parts.password)
    return sorted({secret for secret in found if len(secret) >= 6}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the configured ``secrets`` and anything that looks like a secret replaced."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any, secrets: Iterable[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {key: _redact_value(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item, secrets) for item in value]
    return value


class RedactionFilter(logging.Filter):
    """Renders a record's message and traceback and redacts them, its fields too (a handler's filter: it runs for
    every record the handler writes, whichever logger made it)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = _redact_value(fields, self.secrets)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


class RequestIdFilter(logging.Filter):
    """Adds the id of the request being served (if any) to the record's fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_id.get()
        if current is not None:
            fields = getattr(record, "fields", None)
            if not isinstance(fields, dict):
                record.fields = {"request_id": current}
            elif "request_id" not in fields:
                record.fields = {**fields, "request_id": current}
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_text:
        return record.exc_text
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        payload.update(_fields(record))
        traceback = _traceback(self, record)
        if traceback:
            payload["traceback"] = traceback
        return json.dumps(payload, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """A readable line: time, level, logger, event, then ``key=value`` fields; a traceback below it."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        parts = [moment, f"{record.levelname:<7}", record.name, record.getMessage()]
        parts += [f"{key}={_text_value(value)}" for key, value in _fields(record).items()]
        line = " ".join(parts)
        traceback = _traceback(self, record)
        return f"{line}\n{traceback}" if traceback else line


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))
    return json.dumps(text) if not text or any(c.isspace() for c in text) else text


def make_handler(
    log_format: str, *, stream: TextIO | None = None, secrets: Iterable[str] = ()
) -> logging.StreamHandler[TextIO]:
    """A handler writing ``log_format`` ("json" or "text") lines, with the request id and redaction filters."""
    handler: logging.StreamHandler[TextIO] = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactionFilter(secrets))
    return handler


def configure_logging(
    settings: Settings, *, level: str | int | None = None, stream: TextIO | None = None, log_format: str | None = None
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr by default) in the configured format, replacing the root's
    handlers; returns the handler."""
    handler = make_handler(log_format or settings.log_format_in_effect, stream=stream, secrets=secrets_of(settings))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    chosen = settings.log_level if level is None else level
    root.setLevel(chosen if isinstance(chosen, int) else chosen.upper())
    # APScheduler narrates every submission at INFO, and warns at every interval that falls inside a long run (the
    # one-instance limit doing its job). Each run's own line says what happened; APScheduler's errors still show.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    # Each request has its own line (services.ops.http_log): uvicorn's access lines would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
    # The Stripe SDK narrates every request and response at INFO; the rail's own errors say what matters.
    logging.getLogger("stripe").setLevel(logging.WARNING)
    # The development mail server (aiosmtpd) narrates every SMTP command; the outbox's own lines say what was sent.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    return handler


class IdleRunsQuiet(logging.Filter):
    """Drops the line of a job run that succeeded with nothing to do, for a console a person reads (development):
    with polling every few seconds those lines would bury everything else. Operators' logs keep every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "fields", None)
        if record.msg != "job_run" or not isinstance(fields, dict):
            return True
        return not (fields.get("outcome") == "success" and not fields.get("items"))
