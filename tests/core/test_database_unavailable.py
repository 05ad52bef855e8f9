"""Which database errors mean "the database is away" (the API answers 503 database_unavailable, a client tries
again) and which are bugs (a 500): services.core.db.is_database_unavailable."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from chain.node import free_port
from services.core.db import is_database_unavailable, make_engine


def _error(engine: Engine, sql: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as raised, engine.connect() as conn:
        conn.execute(text(sql))
    return raised.value


def test_a_wrong_statement_is_not_the_database_being_away(engine: Engine) -> None:
    assert not is_database_unavailable(_error(engine, "SELECT * FROM no_such_table"))
    assert not is_database_unavailable(ValueError("not a database error"))


def test_a_refused_connection_is_the_database_being_away() -> None:
    engine = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/creditrail")  # nothing listens there
    try:
        assert is_database_unavailable(_error(engine, "SELECT 1"))
    finally:
        engine.dispose()


@pytest.mark.postgresql_only
def test_a_connection_the_server_ended_is_the_database_being_away(pg_engine: Engine) -> None:
    with pg_engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with pg_engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as raised:
            conn.execute(text("SELECT 1"))
    assert is_database_unavailable(raised.value)
