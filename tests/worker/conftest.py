"""Fixtures of the worker's tests: a URL another process can open on the test's database."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.engine import Engine, make_url

from tests.conftest import PostgresTestDatabase


@pytest.fixture
def database_url(engine: Engine, backend: str, request: pytest.FixtureRequest) -> str:
    """The test's database as a URL (on PostgreSQL the test schema rides in the URL's search_path, and an
    application name of its own lets a test find the worker's connections in pg_stat_activity)."""
    if backend == "sqlite":
        return engine.url.render_as_string(hide_password=False)
    database: PostgresTestDatabase = request.getfixturevalue("postgres_database")
    return pg_url(database)


@pytest.fixture
def pg_database_url(pg_engine: Engine, request: pytest.FixtureRequest) -> str:
    database: PostgresTestDatabase = request.getfixturevalue("postgres_database")
    return pg_url(database)


def pg_url(database: PostgresTestDatabase) -> str:
    url = make_url(database.url).update_query_dict(
        {"options": f"-csearch_path={database.schema}", "application_name": application_name()}
    )
    return url.render_as_string(hide_password=False)


def application_name() -> str:
    return f"creditrail-worker-test-{uuid.uuid4().hex[:8]}"
