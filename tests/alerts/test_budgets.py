"""Budget thresholds: 50, 80 and 100 % of a budget's limit used in its current period, each told once per period;
told again in a new period, or after the limit was raised and the usage crosses again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from services.core.clock import utcnow
from tests.alerts.conftest import Alerts, Customer


def _budget(alerts: Alerts, customer: Customer, limit_credits: int, period: str = "month") -> dict[str, Any]:
    body = {"name": "tools", "scope": "project", "scope_ref": "p", "period": period, "limit_credits": limit_credits}
    response = alerts.client.post("/v1/budgets", json=body, headers=customer.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def _percents(alerts: Alerts) -> list[int]:
    return [event.data["percent"] for event in alerts.events("budget.threshold")]


def test_each_threshold_fires_once_per_period_and_again_in_the_next(alerts: Alerts) -> None:
    customer = alerts.customer(credits=10_000)
    budget = _budget(alerts, customer, 1_000)
    alerts.spend(customer, 499, "s0", project="p")
    assert alerts.evaluate() == 0
    alerts.spend(customer, 1, "s1", project="p")  # 500: 50 %
    alerts.evaluate()
    alerts.evaluate()
    assert _percents(alerts) == [50]
    alerts.spend(customer, 300, "s2", project="p")  # 800: 80 %
    alerts.evaluate()
    alerts.spend(customer, 100, "s3", project="p")  # 900
    alerts.evaluate()
    assert _percents(alerts) == [50, 80]
    alerts.spend(customer, 100, "s4", project="p")  # 1,000: 100 %
    alerts.evaluate()
    alerts.evaluate()
    assert _percents(alerts) == [50, 80, 100]
    assert alerts.alerts(customer)["armed"]["budget_threshold"] is False
    events = alerts.events("budget.threshold")
    start = events[0].data["budget"]["period_start"]
    assert events[2].data == {
        "account_id": customer.account_id,
        "kind": "budget_threshold",
        "budget": {
            "id": budget["id"],
            "name": "tools",
            "period": "month",
            "period_start": start,
            "limit_credits": 1_000,
            "used_credits": 1_000,
        },
        "percent": 100,
        "crossing": 3,
    }

    # The next month: a new period, armed; its own 50 % is told.
    later = utcnow().replace(day=1) + timedelta(days=40)
    alerts.evaluate(later)
    assert _percents(alerts) == [50, 80, 100]
    alerts.spend(customer, 600, "n1", project="p", now=later)
    alerts.evaluate(later)
    alerts.evaluate(later)
    assert _percents(alerts) == [50, 80, 100, 50]
    assert alerts.events("budget.threshold")[3].data["budget"]["period_start"] != start

    emails = alerts.emails("alert_budget_threshold")
    assert [email.subject for email in emails] == [
        "Budget 'tools' is 50% used",
        "Budget 'tools' is 80% used",
        "Budget 'tools' is used up",
        "Budget 'tools' is 50% used",
    ]
    assert alerts.deliver(later) == 4  # the last one written at the later date
    assert "Used:             1,000 of 1,000 credits" in str(
        alerts.smtp.received[2].message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    )


def test_raising_the_limit_arms_the_thresholds_left_behind(alerts: Alerts) -> None:
    customer = alerts.customer(credits=10_000)
    budget = _budget(alerts, customer, 1_000)
    alerts.spend(customer, 1_000, "s1", project="p")
    alerts.evaluate()
    # Several thresholds crossed at once are told once, by the highest.
    assert _percents(alerts) == [100]
    raised = alerts.client.patch(f"/v1/budgets/{budget['id']}", json={"limit_credits": 2_000}, headers=customer.headers)
    assert raised.status_code == 200
    alerts.evaluate()  # 1,000 of 2,000: 50 % still held; 80 and 100 armed again
    assert alerts.alerts(customer)["armed"]["budget_threshold"] is True
    alerts.evaluate()
    assert _percents(alerts) == [100]
    alerts.spend(customer, 600, "s2", project="p")  # 1,600: 80 %
    alerts.evaluate()
    alerts.evaluate()
    assert _percents(alerts) == [100, 80]
    assert [event.data["crossing"] for event in alerts.events("budget.threshold")] == [1, 2]


def test_budgets_of_other_periods_and_without_a_limit_are_evaluated_too(alerts: Alerts) -> None:
    customer = alerts.customer(credits=10_000)
    _budget(alerts, customer, 100, period="day")
    blocked = {"name": "none", "scope": "project", "scope_ref": "q", "period": "total", "limit_credits": 0}
    assert alerts.client.post("/v1/budgets", json=blocked, headers=customer.headers).status_code == 201
    alerts.spend(customer, 80, "s1", project="p")
    alerts.evaluate()
    # A budget whose limit is zero allows nothing and is never "reached".
    assert _percents(alerts) == [80]
