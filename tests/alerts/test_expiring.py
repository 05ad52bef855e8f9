"""Credits expiring within 30 days: each lot with credits left is told once; one message and one event per account
and run, listing the lots newly within the window."""

from __future__ import annotations

from datetime import timedelta

from services.core.clock import utcnow
from tests.alerts.conftest import Alerts


def test_each_expiring_lot_is_told_once(alerts: Alerts) -> None:
    now = utcnow()
    customer = alerts.customer()
    soon = alerts.grant(customer, 300, "g1", expires_at=now + timedelta(days=10))
    sooner = alerts.grant(customer, 200, "g2", expires_at=now + timedelta(days=5))
    alerts.grant(customer, 900, "g3", expires_at=now + timedelta(days=60))
    other = alerts.customer("other", email=None)
    other_lot = alerts.grant(other, 50, "o1", expires_at=now + timedelta(days=29))

    alerts.evaluate(now)
    alerts.evaluate(now)
    [event] = alerts.events("credits.expiring", account_id=customer.account_id)
    assert event.data["expiring_credits"] == 500
    assert [(lot["lot_id"], lot["remaining_credits"]) for lot in event.data["lots"]] == [(sooner, 200), (soon, 300)]
    assert [
        lot["lot_id"] for lot in alerts.events("credits.expiring", account_id=other.account_id)[0].data["lots"]
    ] == [other_lot]
    [email] = alerts.emails("alert_credits_expiring")
    assert email.account_id == customer.account_id
    assert email.subject == f"500 credits expire on {(now + timedelta(days=5)).strftime('%Y-%m-%d')}"

    # A lot spent in part is not told again; a lot coming into the window later is told then, alone.
    alerts.spend(customer, 100, "s1")
    later = now + timedelta(days=35)
    alerts.evaluate(later)
    events = alerts.events("credits.expiring", account_id=customer.account_id)
    assert len(events) == 2
    assert [lot["remaining_credits"] for lot in events[1].data["lots"]] == [900]

    assert alerts.deliver(later) == 2
    text = alerts.smtp.received[0].message.get_body(preferencelist=("plain",))
    assert text is not None
    assert f"200 credits (lot {sooner})" in text.get_content()
    assert "Expiring:         500 credits ($5.00)" in text.get_content()
