"""Migration 0016 (alert settings and states) goes up and down on both databases."""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from services.core.migrate import current_revision, downgrade, upgrade

REVISION = "0016"


def test_alerts_migration_goes_up_and_down(blank_engine: Engine) -> None:
    engine = blank_engine
    upgrade(engine, REVISION)
    assert {"alert_settings", "alert_states"} <= set(inspect(engine).get_table_names())
    assert "ix_alert_states_kind_ref" in {index["name"] for index in inspect(engine).get_indexes("alert_states")}
    downgrade(engine, "0015")
    assert current_revision(engine) == "0015"
    assert not {"alert_settings", "alert_states"} & set(inspect(engine).get_table_names())
    upgrade(engine, REVISION)
    assert current_revision(engine) == REVISION
