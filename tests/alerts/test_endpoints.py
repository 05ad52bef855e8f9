"""The alerts' API contract: GET/PATCH /v1/account/alerts (customer key or customer session) and the admin's
/v1/admin/accounts/{id}/alerts, with bad input refused by a 4xx with a code and nothing written."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from services.alerts.repository import settings_table, states
from services.apikeys.sessions import create_session
from services.core.db import unit_of_work
from tests.alerts.conftest import Alerts

DEFAULTS = {
    "low_balance_threshold_credits": None,
    "email_enabled": True,
    "armed": {"low_balance": True, "credits_expiring": True, "budget_threshold": True, "auto_recharge_failed": True},
}


def _rows(alerts: Alerts) -> tuple[int, int]:
    with unit_of_work(alerts.engine) as session:
        return (
            int(session.execute(select(func.count()).select_from(settings_table)).scalar_one()),
            int(session.execute(select(func.count()).select_from(states)).scalar_one()),
        )


def test_settings_default_and_change(alerts: Alerts) -> None:
    customer = alerts.customer()
    assert alerts.alerts(customer) == DEFAULTS
    changed = alerts.configure(customer, low_balance_threshold_credits=2_500)
    assert changed == DEFAULTS | {"low_balance_threshold_credits": 2_500}
    # A field left out is kept.
    assert alerts.configure(customer, email_enabled=False) == DEFAULTS | {
        "low_balance_threshold_credits": 2_500,
        "email_enabled": False,
    }
    assert alerts.configure(customer, low_balance_threshold_credits=None)["low_balance_threshold_credits"] is None
    assert alerts.alerts(customer)["email_enabled"] is False


def test_a_customer_session_may_read_and_change_its_alerts(alerts: Alerts) -> None:
    customer = alerts.customer()
    with unit_of_work(alerts.engine) as session:
        issued = create_session(session, alerts.settings, account_id=customer.account_id, created_by_key_id=1)
    headers = {"Authorization": f"Bearer {issued.token}"}
    response = alerts.client.patch("/v1/account/alerts", json={"low_balance_threshold_credits": 100}, headers=headers)
    assert response.status_code == 200, response.text
    got = alerts.client.get("/v1/account/alerts", headers=headers)
    assert got.json()["low_balance_threshold_credits"] == 100


def test_bad_input_is_refused_with_a_code_and_nothing_written(alerts: Alerts) -> None:
    customer = alerts.customer()
    cases: list[tuple[Any, str]] = [
        ({"low_balance_threshold_credits": 0}, "invalid_alert_threshold"),
        ({"low_balance_threshold_credits": -5}, "invalid_alert_threshold"),
        ({"low_balance_threshold_credits": 10**12 + 1}, "invalid_alert_threshold"),
        ({"low_balance_threshold_credits": 2**63}, "invalid_request"),
        ({"low_balance_threshold_credits": "100"}, "invalid_request"),
        ({"low_balance_threshold_credits": 1.5}, "invalid_request"),
        ({"email_enabled": "yes"}, "invalid_request"),
        ({"email_enabled": 1}, "invalid_request"),
        ({"armed": {}}, "invalid_request"),
        ([1], "invalid_request"),
    ]
    for body, code in cases:
        response = alerts.client.patch("/v1/account/alerts", json=body, headers=customer.headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] == code, body
    malformed = alerts.client.patch(
        "/v1/account/alerts", content=b"{", headers={**customer.headers, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 422
    assert malformed.json()["error"]["code"] == "malformed_json"
    assert _rows(alerts) == (0, 0)
    assert alerts.client.get("/v1/account/alerts").status_code == 401


def test_the_admin_reads_and_changes_an_accounts_alerts(alerts: Alerts) -> None:
    customer = alerts.customer()
    path = f"/v1/admin/accounts/{customer.account_id}/alerts"
    assert alerts.client.get(path, headers=alerts.admin).json() == DEFAULTS
    changed = alerts.client.patch(path, json={"low_balance_threshold_credits": 700}, headers=alerts.admin)
    assert changed.status_code == 200
    assert alerts.alerts(customer)["low_balance_threshold_credits"] == 700
    # A customer's key is not the admin's; an unknown account is a 404 with nothing written.
    assert alerts.client.get(path, headers=customer.headers).status_code == 403
    missing = alerts.client.patch(
        "/v1/admin/accounts/999999/alerts", json={"low_balance_threshold_credits": 5}, headers=alerts.admin
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "account_not_found"
    assert alerts.client.get("/v1/admin/accounts/1/alerts", headers=alerts.admin).status_code == 404  # a system one
    assert _rows(alerts) == (1, 0)
