"""Engines, column types and the unit of work.

Services and repositories receive a ``Session`` and never commit: the boundary that opened the unit of work (an
HTTP request, an inbox event, a batch of a scheduler job) commits it. On SQLite every transaction begins
``IMMEDIATE`` so writers serialise from their first statement; on PostgreSQL a customer's operations serialise on
that customer's account row (``SELECT ... FOR UPDATE``).
"""

from __future__ import annotations

import json
import select
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
from sqlalchemy import BigInteger, DateTime, Integer, Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Dialect, Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, create_engine

# Identifiers: 64-bit on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python; ``timestamptz`` on PostgreSQL, naive UTC text on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def table_of(model: type[Any]) -> Table:
    """A SQLModel table class's Core table, for statements written in SQLAlchemy Core."""
    return cast(Table, model.__table__)


def insert_for(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into ``table`` in the session's dialect, which can say ``ON CONFLICT DO NOTHING`` or ``DO UPDATE``
    (both databases spell it alike, but SQLAlchemy builds it per dialect)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def normalise_url(url: str | URL) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str | URL, *, schema: str | None = None, pool_size: int = 10, echo: bool = False) -> Engine:
    """An engine for ``url``. ``schema`` (PostgreSQL only) puts every table in that schema via search_path."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=NullPool if parsed.database in (None, "", ":memory:") else None,
            json_serializer=json_text,
        )
        _configure_sqlite(engine)
        return engine
    connect_args: dict[str, Any] = {}
    if schema:
        connect_args["options"] = f"-c search_path={schema}"
    engine = create_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args=connect_args,
        json_serializer=json_text,
    )
    event.listen(engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """The pool's check of a PostgreSQL connection it hands out, without a round trip (a pre-ping costs one per
    unit of work): an idle connection has nothing to read, so a socket with something to read, or an end of file, is
    a connection the server closed (a restart, a terminated backend, an idle timeout) or told something unexpected.
    Either way the pool drops it and connects again (``DisconnectionError``). A connection lost without a word
    (a network cut) fails on its first statement, is invalidated there, and the pool's other connections with it."""
    conn = cast(psycopg.Connection[Any], dbapi_connection)
    if conn.closed or conn.broken:
        raise DisconnectionError("the connection is closed")
    try:
        socket = conn.pgconn.socket
    except psycopg.OperationalError as exc:
        raise DisconnectionError(str(exc)) from exc
    poller = select.poll()
    poller.register(socket, select.POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the server closed the connection or sent something while it was idle")


def json_text(value: Any) -> str:
    """JSON columns' text, as every engine writes it (compact, keys sorted)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN itself, rather than the driver deferring it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[Session]:
    """One database transaction: committed when the block ends normally, rolled back otherwise."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def commit_without_waiting_for_disk(session: Session) -> None:
    """Let the current transaction's commit return before its WAL is flushed (PostgreSQL ``synchronous_commit =
    off``, for this transaction only; nothing on SQLite). A crash may lose such a commit, never corrupt anything.
    Only for writes safe to lose: a sender's record that a message went out (lost, the message is sent again under
    the same Message-ID or event id, which the receiver recognises), never the ledger's."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit = off"))


def utc(value: datetime) -> datetime:
    """Normalise a datetime read back from the database to aware UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLSTATE classes of a server going away: connection exceptions (08), operator intervention (57: shutting down,
# restarting, a statement cancelled).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "57")


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached or dropped the connection (a restart, an outage),
    rather than that the statement was wrong: a connection SQLAlchemy found dead, or a PostgreSQL driver error with
    no SQLSTATE (the client could not connect) or one of a server going away."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc.orig, psycopg.OperationalError):
        return False
    sqlstate = exc.orig.sqlstate
    return sqlstate is None or sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
