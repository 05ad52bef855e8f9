"""The ``creditrail`` command against a SQLite file: accounts, keys, grants, balance, invariant check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from services.cli import main
from services.core.db import make_engine
from services.core.settings import get_settings


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CREDITRAIL_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, list(args))
        return result.exit_code, result.output

    yield invoke
    get_settings.cache_clear()


def test_accounts_keys_grant_and_check(cli) -> None:
    code, out = cli("accounts", "create", "acme")
    assert code == 0, out
    account_id = json.loads(out)["id"]
    code, out = cli("keys", "create", "--role", "customer", "--account", str(account_id))
    assert code == 0, out
    assert json.loads(out)["key"].startswith("cr_")
    code, out = cli("grant", str(account_id), "750", "--key", "welcome", "--reason", "trial")
    assert code == 0, out
    code, out = cli("grant", str(account_id), "750", "--key", "welcome", "--reason", "trial")
    assert json.loads(out)["replayed"] is True
    code, out = cli("accounts", "balance", str(account_id))
    assert json.loads(out)["available_credits"] == 750
    code, out = cli("check")
    assert code == 0
    assert json.loads(out) == {"ok": True, "violations": []}


def test_check_exits_nonzero_on_a_violation(cli, tmp_path: Path) -> None:
    code, out = cli("accounts", "create", "acme")
    account_id = json.loads(out)["id"]
    cli("grant", str(account_id), "100", "--key", "g")
    engine = make_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE lots SET remaining_credits = remaining_credits + 1"))
    code, out = cli("check")
    assert code == 1
    assert {v["invariant"] for v in json.loads(out)["violations"]} >= {"balance_matches_lots"}


def test_domain_errors_are_one_line_with_a_code(cli) -> None:
    code, out = cli("grant", "424242", "100", "--key", "g")
    assert code == 2
    assert "account_not_found" in out
