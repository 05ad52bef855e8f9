"""Low balance: fires once when the available balance falls below the customer's threshold, not again while it stays
below, armed again once the balance is back past the threshold and its margin, and fires again on the next fall;
mailed through a real SMTP server and recorded as events with the figures."""

from __future__ import annotations

from services.core.db import unit_of_work
from services.ledger.holds import create_hold, release_hold
from tests.alerts.conftest import Alerts


def test_a_low_balance_fires_once_per_crossing_and_again_after_recovery(alerts: Alerts) -> None:
    customer = alerts.customer(credits=1_000)
    alerts.configure(customer, low_balance_threshold_credits=500)
    assert alerts.evaluate() == 0
    assert alerts.events("credits.low") == []

    alerts.spend(customer, 600, "s1")  # 400 available
    assert alerts.evaluate() == 1
    for n in range(3):
        alerts.evaluate()
        alerts.spend(customer, 50, f"more{n}")  # still below: nothing more
    alerts.evaluate()
    [first] = alerts.events("credits.low")
    assert first.account_id == customer.account_id
    assert first.data == {
        "account_id": customer.account_id,
        "kind": "low_balance",
        "threshold_credits": 500,
        "available_credits": 400,
        "balance_credits": 400,
        "reserved_credits": 0,
        "crossing": 1,
    }
    assert alerts.alerts(customer)["armed"]["low_balance"] is False

    # 250 + 270 = 520: at the threshold but inside its 10 % margin: not armed again yet.
    alerts.grant(customer, 270, "g1")
    alerts.evaluate()
    assert alerts.alerts(customer)["armed"]["low_balance"] is False
    # Past the margin (550): armed; no message for a recovery.
    alerts.grant(customer, 1_000, "g2")
    assert alerts.evaluate() == 1
    assert alerts.alerts(customer)["armed"]["low_balance"] is True
    assert len(alerts.events("credits.low")) == 1

    alerts.spend(customer, 1_200, "s2")  # 320 available
    alerts.evaluate()
    alerts.evaluate()
    lows = alerts.events("credits.low")
    assert [event.data["crossing"] for event in lows] == [1, 2]
    assert lows[1].data["available_credits"] == 320

    emails = alerts.emails("alert_low_balance")
    assert len(emails) == 2
    assert alerts.deliver() == 2
    received = alerts.smtp.received
    assert [mail.recipients for mail in received] == [["owner@example.test"], ["owner@example.test"]]
    assert [mail.message["Subject"] for mail in received] == [
        "Your credits are running low: 400 left",
        "Your credits are running low: 320 left",
    ]
    body = received[0].message.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    assert "400 credits ($4.00)" in text
    assert "500 credits ($5.00)" in text
    assert "help@creditrail.test" in text
    html = received[0].message.get_body(preferencelist=("html",))
    assert html is not None
    assert "<th>Alert threshold</th><td>500 credits ($5.00)</td>" in html.get_content()


def test_credits_reserved_by_a_hold_are_not_available(alerts: Alerts) -> None:
    customer = alerts.customer(credits=1_000)
    alerts.configure(customer, low_balance_threshold_credits=500)
    with unit_of_work(alerts.engine) as session:
        hold = create_hold(session, account_id=customer.account_id, amount_credits=700, idempotency_key="h1")
    alerts.evaluate()
    [low] = alerts.events("credits.low")
    assert (low.data["available_credits"], low.data["reserved_credits"], low.data["balance_credits"]) == (
        300,
        700,
        1_000,
    )
    with unit_of_work(alerts.engine) as session:
        release_hold(session, account_id=customer.account_id, hold_id=hold.id)
    alerts.evaluate()
    assert alerts.alerts(customer)["armed"]["low_balance"] is True


def test_a_new_threshold_tells_a_balance_already_below_it_once(alerts: Alerts) -> None:
    customer = alerts.customer(credits=300)
    alerts.configure(customer, low_balance_threshold_credits=500)
    alerts.evaluate()
    assert len(alerts.events("credits.low")) == 1
    # A lower threshold the balance is still below: told again, once, with the new threshold.
    alerts.configure(customer, low_balance_threshold_credits=400)
    alerts.evaluate()
    alerts.evaluate()
    assert [event.data["threshold_credits"] for event in alerts.events("credits.low")] == [500, 400]
    # Off: nothing more, whatever the balance does.
    alerts.configure(customer, low_balance_threshold_credits=None)
    alerts.spend(customer, 100, "s1")
    alerts.evaluate()
    assert len(alerts.events("credits.low")) == 2


def test_emails_off_or_no_address_still_record_the_event(alerts: Alerts) -> None:
    quiet = alerts.customer("quiet", credits=100)
    alerts.configure(quiet, low_balance_threshold_credits=500, email_enabled=False)
    nobody = alerts.customer("nobody", email=None, credits=100)
    alerts.configure(nobody, low_balance_threshold_credits=500)
    alerts.evaluate()
    assert {event.account_id for event in alerts.events("credits.low")} == {quiet.account_id, nobody.account_id}
    assert alerts.emails() == []
