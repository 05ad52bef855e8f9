"""The database away: a request gets 503 ``database_unavailable`` with a Retry-After (a client tries again later),
never a 500; the API serves again once the database is back (tests/faults/test_postgres_restart.py restarts a
real server under load)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from chain.node import free_port
from services.app.app import create_app
from services.core.db import make_engine
from services.core.settings import Settings


def test_requests_while_the_database_refuses_connections_get_503_database_unavailable() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/creditrail"  # nothing listens there
    engine = make_engine(url)
    app = create_app(Settings(environment="test", database_url=url), engine=engine)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            headers = {"Authorization": "Bearer cr_000000000000_secret", "Idempotency-Key": "k1"}
            answers = [
                client.get("/v1/balance", headers=headers),
                client.post("/v1/charges", json={"amount_credits": 5}, headers=headers),
            ]
            healthz = client.get("/healthz")
    finally:
        engine.dispose()
    for response in answers:
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "database_unavailable"
        assert response.headers["Retry-After"] == "1"
    assert healthz.status_code == 200  # the process itself is alive
