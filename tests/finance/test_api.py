"""Finance over HTTP: only finance (and admin) keys get in; the exceptions queue is listed, paged and resolved;
reconciliation items, reports and the trial balance come as JSON and as CSV; bad input is refused with its code
and changes nothing."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from services.core.db import unit_of_work
from services.finance.matching import reconcile_card
from services.ledger.accounts import create_customer_account
from services.ledger.repository import lots
from tests.card.conftest import Card
from tests.finance.mirror_support import PERIOD_END, PERIOD_START, at, balance_txn, card_lot, checkout_session

LATER = PERIOD_END + timedelta(days=1)
QUERY = {"period_start": PERIOD_START.isoformat(), "period_end": PERIOD_END.isoformat()}


def _discrepancies(card: Card) -> int:
    with unit_of_work(card.engine) as s:
        bob = create_customer_account(s, name="bob")
        balance_txn(s, "txn_ok", amount_cents=1_000, created=at(9), charge_id="ch_ok", payment_intent_id="pi_ok")
        checkout_session(s, "cs_ok", payment_intent_id="pi_ok", amount_cents=1_000, account_id=bob, created=at(9))
        card_lot(s, bob, "cs_ok", credits=1_000, cost_cents=1_000, credited=at(9, 1))
        balance_txn(s, "txn_lost", amount_cents=2_500, created=at(11), charge_id="ch_lost", payment_intent_id="pi_lost")
        checkout_session(s, "cs_lost", payment_intent_id="pi_lost", amount_cents=2_500, account_id=bob, created=at(11))
        card_lot(s, bob, "cs_ghost", credits=500, cost_cents=500, credited=at(12))
    with unit_of_work(card.engine) as s:
        return reconcile_card(s, period_start=PERIOD_START, period_end=PERIOD_END, cutoff=LATER, now=LATER).id


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/finance/exceptions"),
        ("get", "/v1/finance/reconciliations"),
        ("post", "/v1/finance/reconciliations"),
        ("get", "/v1/finance/trial-balance?at=2026-11-11T00:00:00Z"),
        ("get", "/v1/finance/reports?rail=all&period_start=2026-11-10T00:00:00Z&period_end=2026-11-11T00:00:00Z"),
    ],
)
def test_only_finance_and_admin_keys_get_in(card: Card, method: str, path: str) -> None:
    customer = card.customer()
    body = {"json": {"rail": "card", **QUERY}} if method == "post" else {}
    response = getattr(card.client, method)(path, headers=customer.headers, **body)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert getattr(card.client, method)(path, **body).status_code == 401


def test_the_queue_is_listed_paged_and_resolved(card: Card) -> None:
    _discrepancies(card)
    finance = card.key("finance")
    first = card.client.get("/v1/finance/exceptions?status=open&limit=1", headers=finance)
    assert first.status_code == 200
    page = first.json()
    assert len(page["data"]) == 1
    assert page["has_more"] is True
    assert page["next_cursor"] == str(page["data"][0]["id"])
    rest = card.client.get(f"/v1/finance/exceptions?status=open&cursor={page['next_cursor']}", headers=finance)
    assert (rest.json()["has_more"], rest.json()["next_cursor"]) == (False, None)
    everything = [*page["data"], *rest.json()["data"]]
    by_kind = {e["kind"]: e for e in everything}
    assert set(by_kind) == {"reconciliation_missing_in_ledger", "reconciliation_missing_externally"}

    lost = by_kind["reconciliation_missing_in_ledger"]
    resolved = card.client.post(
        f"/v1/finance/exceptions/{lost['id']}/resolve",
        json={"action": "mint", "reason": "webhook never arrived"},
        headers=finance,
    )
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert (body["status"], body["action"]) == ("resolved", "mint")
    assert body["resolved_by"].startswith("api_key:")
    assert body["transaction_id"] is not None
    again = card.client.post(
        f"/v1/finance/exceptions/{lost['id']}/resolve", json={"action": "mint", "reason": "again"}, headers=finance
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "finance_exception_closed"
    with unit_of_work(card.engine) as s:
        assert s.execute(select(func.count()).where(lots.c.external_ref == "cs_lost")).scalar_one() == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"action": "burn", "reason": "x"}, 422, "invalid_request"),
        ({"action": "ignore"}, 422, "invalid_request"),
        ({"action": "clawback", "reason": "x", "amount_credits": 0}, 422, "invalid_request"),
        ({"action": "clawback", "reason": "x", "amount_credits": 2**63}, 422, "invalid_request"),
        ({"action": "mint", "reason": "wrong action for this one"}, 409, "finance_action_not_applicable"),
    ],
)
def test_bad_resolutions_are_refused_and_change_nothing(
    card: Card, body: dict[str, object], status: int, code: str
) -> None:
    _discrepancies(card)
    finance = card.key("finance")
    ghost = next(
        e
        for e in card.client.get("/v1/finance/exceptions", headers=finance).json()["data"]
        if e["kind"] == "reconciliation_missing_externally"
    )
    before = card.snapshot()
    response = card.client.post(f"/v1/finance/exceptions/{ghost['id']}/resolve", json=body, headers=finance)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert card.snapshot() == before


def test_unknown_ids_are_404(card: Card) -> None:
    finance = card.key("finance")
    assert card.client.get("/v1/finance/exceptions/999999", headers=finance).status_code == 404
    response = card.client.get("/v1/finance/reconciliations/999999/items", headers=finance)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "reconciliation_run_not_found"


def test_run_items_as_json_and_csv(card: Card) -> None:
    run_id = _discrepancies(card)
    finance = card.key("finance")
    runs = card.client.get("/v1/finance/reconciliations?rail=card", headers=finance).json()["data"]
    assert [(r["id"], r["matched"], r["missing_in_ledger"], r["missing_externally"]) for r in runs] == [
        (run_id, 1, 1, 1)
    ]
    page = card.client.get(f"/v1/finance/reconciliations/{run_id}/items?category=matched", headers=finance).json()
    assert [item["external_ref"] for item in page["data"]] == ["txn_ok"]
    response = card.client.get(f"/v1/finance/reconciliations/{run_id}/items?format=csv", headers=finance)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(row["category"] for row in rows) == ["matched", "missing_externally", "missing_in_ledger"]
    assert {row["external_ref"] for row in rows} >= {"txn_ok", "txn_lost"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            {"rail": "card", "period_start": "2026-11-10T00:00:00", "period_end": "2026-11-11T00:00:00Z"},
            "invalid_request",
        ),
        (
            {"rail": "card", "period_start": "2026-11-11T00:00:00Z", "period_end": "2026-11-10T00:00:00Z"},
            "invalid_request",
        ),
        (
            {"rail": "card", "period_start": "2026-01-01T00:00:00Z", "period_end": "2026-11-10T00:00:00Z"},
            "invalid_request",
        ),
        ({"rail": "bitcoin", **QUERY}, "invalid_request"),
        ({"rail": "usdc", **QUERY}, "rail_not_configured"),
    ],
)
def test_bad_reconciliation_requests_are_refused(card: Card, body: dict[str, str], code: str) -> None:
    response = card.client.post("/v1/finance/reconciliations", json=body, headers=card.key("finance"))
    assert response.status_code in (409, 422), response.text
    assert response.json()["error"]["code"] == code
    with unit_of_work(card.engine) as s:
        assert s.execute(select(func.count()).select_from(lots)).scalar_one() == 0


def test_reports_and_trial_balance_as_json_and_csv(card: Card) -> None:
    _discrepancies(card)
    finance = card.key("finance")
    report = card.client.get("/v1/finance/reports", params={"rail": "card", **QUERY}, headers=finance)
    assert report.status_code == 200, report.text
    assert report.json()["rail"] == "card"
    as_csv = card.client.get("/v1/finance/reports", params={"rail": "card", "format": "csv", **QUERY}, headers=finance)
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert "card" in as_csv.text
    balance = card.client.get("/v1/finance/trial-balance", params={"at": LATER.isoformat()}, headers=finance)
    assert balance.status_code == 200, balance.text
    tb_csv = card.client.get(
        "/v1/finance/trial-balance", params={"at": LATER.isoformat(), "format": "csv"}, headers=finance
    )
    assert tb_csv.status_code == 200
    assert len(tb_csv.text.splitlines()) > 1
    naive = card.client.get("/v1/finance/trial-balance", params={"at": "2026-11-11T00:00:00"}, headers=finance)
    assert naive.status_code == 422
