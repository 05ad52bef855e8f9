"""What every ``creditrail`` command shares: one line for whatever stops it, and no secret in that line.

A bad configuration, an unreachable database or an unreachable chain node ends a command with one line on stderr,
naming the setting, the database (host, port, name, user: never the password) or the chain (its id: never the RPC
URL, whose path often holds an API key), and a non-zero exit status, instead of a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from chain.errors import ChainRpcError
from chain.rpc import redact_url
from services.core.settings import Settings

_MAX_REASON_CHARS = 300


def silence_migration_logs() -> None:
    """Alembic narrates every migration at INFO; commands say what migrating did in one line of their own."""
    logging.getLogger("alembic").setLevel(logging.WARNING)


def describe_database(database_url: str) -> str:
    """Where the database is, without its password: ``postgresql://user@host:port/name`` or the SQLite file."""
    try:
        url = make_url(database_url)
    except Exception:
        return "(an unreadable CREDITRAIL_DATABASE_URL)"
    if url.get_backend_name() == "sqlite":
        return f"sqlite file {url.database or ':memory:'}"
    user = f"{url.username}@" if url.username else ""
    port = f":{url.port}" if url.port else ""
    return f"{url.get_backend_name()}://{user}{url.host or 'localhost'}{port}/{url.database or ''}"


def database_error_line(exc: DBAPIError, settings: Settings) -> str:
    """The one line for a database that cannot be reached or used."""
    original = exc.orig if exc.orig is not None else exc
    reason = (str(original).strip().splitlines() or [type(original).__name__])[0]
    reason = reason.removeprefix("connection failed: ")
    where = describe_database(settings.database_url)
    return f"database_unavailable: cannot use the database at {where}: {scrub(reason, settings)}"


def _chain_ids(exc: ChainRpcError, settings: Settings) -> list[int]:
    return [chain.chain_id for chain in settings.usdc_chains if redact_url(chain.rpc_url) == exc.endpoint]


def chain_error_line(exc: ChainRpcError, settings: Settings) -> str:
    """The one line for a chain node that failed: the chain by its id, the node's URL left out."""
    ids = _chain_ids(exc, settings)
    chain = f"chain {', '.join(map(str, ids))}" if ids else "a chain"
    return f"chain_unavailable: the node of {chain} failed: {scrub(exc.message, settings)}"


def _secrets(settings: Settings) -> Iterable[str]:
    for chain in settings.usdc_chains:
        parts = urlsplit(chain.rpc_url)
        yield chain.rpc_url
        if parts.path.strip("/") or parts.query:
            yield parts.path + (f"?{parts.query}" if parts.query else "")
        if parts.password:
            yield parts.password
    try:
        password = make_url(settings.database_url).password
    except Exception:
        password = None
    if password:
        yield str(password)


def scrub(text: str, settings: Settings) -> str:
    """``text`` without any RPC URL (or its path, which may be a key) or database password from the settings,
    shortened to one line."""
    for secret in sorted(set(_secrets(settings)), key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "/..." if secret.startswith("/") else "***")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 3] + "..."
