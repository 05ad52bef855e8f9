"""Progress of long commands: drawn on a terminal, silent anywhere else (pipes, files, the worker, tests)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from services.cli import main
from services.core import progress
from services.core.db import unit_of_work
from services.core.settings import get_settings
from services.ledger.invariants import check_invariants


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_shown_when_the_stream_is_not_a_terminal() -> None:
    stream = io.StringIO()
    with progress.on_terminal(stream):
        for done in range(5):
            progress.report("copying (items)", done, 4)
    assert stream.getvalue() == ""


def test_nothing_is_shown_when_no_command_asked_for_it(capsys: pytest.CaptureFixture[str]) -> None:
    progress.report("copying (items)", 1, 4)
    assert capsys.readouterr() == ("", "")


def test_a_terminal_sees_a_task_move_and_end_on_its_own_line() -> None:
    ticks = iter(float(second) for second in range(100))
    stream = Terminal()
    drawer = progress.TerminalProgress(stream, interval=0.5, clock=lambda: next(ticks))
    drawer("scanning (blocks)", 0, 2_000)
    drawer("scanning (blocks)", 1_000, 2_000)
    drawer("scanning (blocks)", 2_000, 2_000)
    drawer("pulling (records)", 7, None)
    drawer.finish()
    assert stream.getvalue() == (
        "\rscanning (blocks): 0/2,000 (0%)"
        "\rscanning (blocks): 1,000/2,000 (50%)"
        "\rscanning (blocks): 2,000/2,000 (100%)\n"
        "\rpulling (records): 7\n"
    )


def test_the_invariant_check_reports_each_check_on_a_terminal(engine: Engine) -> None:
    stream = Terminal()
    with unit_of_work(engine) as session, progress.on_terminal(stream):
        assert check_invariants(session) == []
    assert stream.getvalue().endswith("checking the ledger's invariants (checks): 10/10 (100%)\n")


def test_creditrail_check_writes_no_progress_when_stderr_is_not_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDITRAIL_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["check"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout.startswith("{")
