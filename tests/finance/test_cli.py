"""``creditrail finance`` against a SQLite file: the exceptions queue, resolving one, the report and the trial
balance as JSON and CSV, and a reconciliation refused for a rail that is off."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from services.core.db import unit_of_work
from services.core.migrate import ready_engine
from services.core.settings import get_settings
from services.finance.matching import reconcile_card
from services.ledger.accounts import create_customer_account
from tests.finance.mirror_support import PERIOD_END, PERIOD_START, at, balance_txn, card_lot, checkout_session

Cli = Callable[..., tuple[int, str]]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    monkeypatch.setenv("CREDITRAIL_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, list(args))
        return result.exit_code, result.output

    yield invoke
    get_settings.cache_clear()


def _seed() -> int:
    engine = ready_engine(get_settings())
    with unit_of_work(engine) as s:
        bob = create_customer_account(s, name="bob")
        balance_txn(s, "txn_lost", amount_cents=2_500, created=at(11), charge_id="ch_lost", payment_intent_id="pi_lost")
        checkout_session(s, "cs_lost", payment_intent_id="pi_lost", amount_cents=2_500, account_id=bob, created=at(11))
        card_lot(s, bob, "cs_paid_late", credits=500, cost_cents=500, credited=at(12))
    later = PERIOD_END + timedelta(days=1)
    with unit_of_work(engine) as s:
        reconcile_card(s, period_start=PERIOD_START, period_end=PERIOD_END, cutoff=later, now=later)
    return bob


def test_exceptions_resolve_report_and_trial_balance(cli: Cli) -> None:
    bob = _seed()
    code, out = cli("finance", "exceptions")
    assert code == 0, out
    queue = json.loads(out)
    assert sorted(e["kind"] for e in queue) == ["reconciliation_missing_externally", "reconciliation_missing_in_ledger"]
    lost = next(e for e in queue if e["kind"] == "reconciliation_missing_in_ledger")
    code, out = cli(
        "finance", "resolve", str(lost["id"]), "--action", "mint", "--reason", "webhook lost", "--by", "ops@example"
    )
    assert code == 0, out
    assert json.loads(out)["action"] == "mint"
    code, out = cli("finance", "resolve", str(lost["id"]), "--action", "ignore", "--reason", "x", "--by", "ops")
    assert code == 2
    assert "finance_exception_closed" in out
    code, out = cli("accounts", "balance", str(bob))
    assert json.loads(out)["available_credits"] == 3_000

    code, out = cli("finance", "report", "--rail", "card", "--from", "2026-11-10", "--to", "2026-11-11")
    assert code == 0, out
    assert json.loads(out)["rail"] == "card"
    code, out = cli("finance", "report", "--rail", "card", "--from", "2026-11-10", "--to", "2026-11-11", "--csv")
    assert code == 0, out
    assert list(csv.reader(io.StringIO(out)))
    code, out = cli("finance", "trial-balance", "--at", "2026-11-20")
    assert code == 0, out
    assert json.loads(out)
    code, out = cli("finance", "trial-balance", "--at", "2026-11-20", "--csv")
    assert code == 0, out
    assert len(list(csv.reader(io.StringIO(out)))) > 1


def test_reconciling_a_rail_that_is_off_is_refused(cli: Cli) -> None:
    code, out = cli("finance", "reconcile", "--rail", "card", "--from", "2026-11-10", "--to", "2026-11-11")
    assert code == 2
    assert "rail_not_configured" in out
