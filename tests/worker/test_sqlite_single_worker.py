"""On a SQLite file only one worker runs: a second refuses to start with its own error code, and once the first
has stopped another may start."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.db import make_engine
from services.core.migrate import upgrade
from services.core.settings import Settings
from services.worker.scheduler import WorkerAlreadyRunning, create_worker


def test_a_second_worker_on_the_same_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    engine = make_engine(url)
    upgrade(engine)
    settings = Settings(database_url=url, environment="test")
    first = create_worker(engine, settings, jobs=[])
    first.start()
    try:
        second = create_worker(engine, settings, jobs=[])
        with pytest.raises(WorkerAlreadyRunning) as refused:
            second.start()
        assert refused.value.code == "worker_already_running"
    finally:
        first.shutdown()
    third = create_worker(engine, settings, jobs=[])
    third.start()
    third.shutdown()
