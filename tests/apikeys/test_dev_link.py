"""The development run's link to the credits page: a fresh session of the demo customer on every start."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from services.apikeys.sessions import authenticate_session
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import Settings
from services.dev import bootstrap_demo, demo_session_url


def test_every_start_prints_a_fresh_twelve_hour_link_for_the_demo_customer(engine: Engine, tmp_path: Path) -> None:
    settings = Settings(environment="development", database_url=str(engine.url), api_port=8123)
    assert demo_session_url(engine, settings, tmp_path) is None  # no demo set up yet
    demo = bootstrap_demo(engine, tmp_path)
    assert demo is not None
    first = demo_session_url(engine, settings, tmp_path)
    second = demo_session_url(engine, settings, tmp_path)
    assert first is not None
    assert second is not None
    assert first != second
    for link in (first, second):
        page, _, fragment = link.partition("#session=")
        assert page == "http://127.0.0.1:8123/credits"
        with unit_of_work(engine) as session:
            view = authenticate_session(session, fragment)
        assert view.account_id == demo.account_id
        assert abs(view.expires_at - (utcnow() + timedelta(hours=12))) < timedelta(minutes=1)
