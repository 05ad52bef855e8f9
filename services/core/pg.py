"""psycopg plumbing for the few paths that talk to PostgreSQL's driver directly (pipelines, COPY, statements
built once as bytes): the session's psycopg connection, timestamps as the columns take them, and driver errors
raised as SQLAlchemy raises what goes through it. Which paths do so, and why, is listed in
``services.ledger.store``'s docstring."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast
from weakref import WeakKeyDictionary

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, StatementError
from sqlmodel import Session

PgConnection = psycopg.Connection[tuple[Any, ...]]
PgCursor = psycopg.Cursor[tuple[Any, ...]]

# Pipeline mode needs libpq 14 or later.
PIPELINE = psycopg.Pipeline.is_supported()


def driver_of(session: Session | Connection) -> PgConnection | None:
    """The session's psycopg connection when it runs on PostgreSQL through psycopg with pipeline mode, else None.
    A Core connection standing in for a session works too."""
    connection = session if isinstance(session, Connection) else session.connection()
    if not PIPELINE or connection.dialect.driver != "psycopg":
        return None
    return cast(PgConnection, connection.connection.driver_connection)


# Each connection's cursors (see ``cursors``), gone with the connection.
_CURSORS: WeakKeyDictionary[PgConnection, tuple[PgCursor, PgCursor]] = WeakKeyDictionary()


def cursors(conn: PgConnection) -> tuple[PgCursor, PgCursor]:
    """Two cursors of ``conn``, made once and kept as long as the connection lives (a connection serves one unit
    of work at a time, and its cursors with it). A cursor learns how to adapt each type of value it sends and reads;
    a new one learns it again, which is a third of what the client spends sending a statement with thirty values."""
    kept = _CURSORS.get(conn)
    if kept is None or kept[0].closed:
        kept = _CURSORS[conn] = (conn.cursor(), conn.cursor())
    return kept


def aware(moment: datetime) -> datetime:
    """``moment`` as a ``timestamptz`` column takes it: a naive datetime is refused, as the Core path's UTC column
    type (``services.core.db.UTCDateTime``) refuses it, with the error SQLAlchemy raises for it."""
    if moment.tzinfo is None:
        refusal = ValueError("naive datetime given where UTC is required")
        raise StatementError(str(refusal), None, None, refusal)
    return moment


def raised(exc: psycopg.Error | OverflowError, statement: str | None = None) -> DBAPIError:
    """A driver error as SQLAlchemy raises what goes through it (IntegrityError for a constraint, and so on: the
    class named as the driver's); a value the driver cannot send (OverflowError) as a DBAPIError."""
    if isinstance(exc, psycopg.Error):
        return cast(DBAPIError, DBAPIError.instance(statement, None, exc, psycopg.Error))
    return DBAPIError(statement, None, exc)


@contextmanager
def translated(statement: str | None = None) -> Iterator[None]:
    """Raise any driver error of the block as SQLAlchemy would (see ``raised``)."""
    try:
        yield
    except (psycopg.Error, OverflowError) as exc:
        raise raised(exc, statement) from exc


def bigint_array(values: Iterable[int | None]) -> str:
    """A bigint[] literal: whole numbers need no quoting, and text is cheaper to send than a list to adapt."""
    return "{" + ",".join(["NULL" if value is None else str(value) for value in values]) + "}"


def text_array(values: Iterable[str | None]) -> str:
    """A text[] literal: every element quoted (a backslash or double quote escaped), None as NULL; cheaper to send
    than a list to adapt."""
    return "{" + ",".join(["NULL" if value is None else _quoted(value) for value in values]) + "}"


def _quoted(value: str) -> str:
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'


def timestamp_array(values: Iterable[datetime]) -> str:
    """A timestamptz[] literal of aware datetimes (ISO 8601 with their offsets, which need no quoting)."""
    return "{" + ",".join([aware(value).isoformat() for value in values]) + "}"


@contextmanager
def pipeline(conn: PgConnection) -> Iterator[None]:
    """A pipeline on ``conn`` that also begins the transaction when it has not begun yet, so that the BEGIN travels
    with the pipeline's statements. (psycopg begins a transaction itself before a statement when none is open, but in
    pipeline mode it then waits for that BEGIN alone: a round trip of its own.)

    The BEGIN is psycopg's own (the connection's isolation level and read-only settings are its defaults, or psycopg
    begins as usual): it is sent as a statement while the connection is in autocommit mode for the pipeline, and the
    connection is then left exactly as psycopg leaves one it began a transaction on (in the transaction, not in
    autocommit mode; the commit or rollback is the caller's, as ever)."""
    begin = (
        conn.info.transaction_status == TransactionStatus.IDLE
        and not conn.autocommit
        and conn.isolation_level is None
        and conn.read_only is None
        and not conn.deferrable
    )
    if not begin:
        with conn.pipeline():
            yield
        return
    conn.autocommit = True  # allowed, and free, while no transaction is open
    try:
        with conn.pipeline():
            conn.execute(b"BEGIN")
            yield
    finally:
        # psycopg refuses to leave autocommit mode inside a transaction through its setter; the transaction it is
        # in is one psycopg would have begun, so its flag is set as psycopg's BEGIN leaves it.
        conn._autocommit = False
