"""The webhook's door: signatures (missing, malformed, wrong, stale, from the future, replayed, rotated), the
inbox storing each event once, and event types we do not act on."""

from __future__ import annotations

import json
import time

from tests.card.conftest import OLD_WEBHOOK_SECRET, Card
from tests.card.stripe_fake import sign


def _checkout_event(card: Card) -> dict[str, object]:
    purchase = card.bought(card.customer())
    return card.stripe.event("checkout.session.completed", card.stripe.pay(purchase["checkout_session_id"]))


def _refused(card: Card, status: int, code: str, *, content: bytes, header: str | None) -> None:
    before = card.snapshot()
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    response = card.client.post("/v1/stripe/webhook", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert card.snapshot() == before


def test_a_signed_event_is_stored_once_and_acknowledged(card: Card) -> None:
    event = _checkout_event(card)
    ack = card.deliver_ok(event)
    assert ack == {
        "received": True,
        "event_id": event["id"],
        "event_type": "checkout.session.completed",
        "status": "pending",
        "duplicate": False,
    }
    stored = card.inbox_event(str(event["id"]))
    assert stored.status == "processed"
    assert stored.outcome == "minted"
    assert stored.source == "webhook"
    assert json.loads(stored.payload) == event


def test_a_missing_signature_is_refused(card: Card) -> None:
    payload = json.dumps(_checkout_event(card)).encode()
    _refused(card, 400, "missing_signature", content=payload, header=None)
    _refused(card, 400, "missing_signature", content=payload, header="  ")


MALFORMED_HEADERS = ["garbage", "t=notanumber,v1=abc", "v1=abc", "t=1700000000", "t=1700000000,v0=abc", "t=,v1="]


def test_a_malformed_signature_is_refused(card: Card) -> None:
    payload = json.dumps(_checkout_event(card)).encode()
    for header in MALFORMED_HEADERS:
        _refused(card, 400, "invalid_signature", content=payload, header=header)


def test_a_signature_made_with_another_secret_is_refused(card: Card) -> None:
    payload = json.dumps(_checkout_event(card))
    _refused(card, 400, "invalid_signature", content=payload.encode(), header=sign(payload, "whsec_someone_else"))


def test_a_tampered_body_is_refused(card: Card) -> None:
    event = _checkout_event(card)
    header = sign(json.dumps(event), "whsec_test_current")
    event["data"]["object"]["amount_total"] = 1  # type: ignore[index]
    _refused(card, 400, "invalid_signature", content=json.dumps(event).encode(), header=header)


def test_a_stale_signature_is_refused(card: Card) -> None:
    payload = json.dumps(_checkout_event(card))
    old = int(time.time()) - card.settings.stripe_webhook_tolerance_seconds - 60
    _refused(card, 400, "stale_signature", content=payload.encode(), header=sign(payload, "whsec_test_current", old))


def test_a_signature_from_the_future_is_refused(card: Card) -> None:
    payload = json.dumps(_checkout_event(card))
    ahead = int(time.time()) + card.settings.stripe_webhook_future_tolerance_seconds + 120
    _refused(card, 400, "stale_signature", content=payload.encode(), header=sign(payload, "whsec_test_current", ahead))


def test_a_replayed_delivery_is_acknowledged_and_stored_once(card: Card) -> None:
    event = _checkout_event(card)
    payload = json.dumps(event)
    header = sign(payload, "whsec_test_current")
    first = card.client.post("/v1/stripe/webhook", content=payload.encode(), headers={"Stripe-Signature": header})
    card.settle()
    before = card.snapshot()
    again = card.client.post("/v1/stripe/webhook", content=payload.encode(), headers={"Stripe-Signature": header})
    assert first.status_code == again.status_code == 200
    assert first.json()["duplicate"] is False
    assert again.json()["duplicate"] is True
    assert again.json()["status"] == "processed"
    assert card.snapshot() == before
    assert card.count("stripe_webhook_events") == 1


def test_a_replay_after_the_tolerance_is_refused(card: Card) -> None:
    payload = json.dumps(_checkout_event(card))
    old = int(time.time()) - 3_600
    _refused(card, 400, "stale_signature", content=payload.encode(), header=sign(payload, "whsec_test_current", old))


def test_the_previous_secret_is_accepted_during_a_rotation(card: Card) -> None:
    event = _checkout_event(card)
    response = card.deliver(event, secret=OLD_WEBHOOK_SECRET)
    assert response.status_code == 200
    assert response.json()["duplicate"] is False


def test_a_header_with_several_signatures_verifies_if_one_matches(card: Card) -> None:
    event = _checkout_event(card)
    payload = json.dumps(event)
    good = sign(payload, "whsec_test_current")
    header = f"{good},v1={'0' * 64}"
    assert card.deliver(event, header=header).status_code == 200


NOT_EVENTS = [
    b"not json",
    b"[1, 2]",
    b'{"id": "evt_1", "object": "event"}',
    b'{"id": "evt_1", "type": "charge.refunded", "created": 1, "data": {"object": "x"}}',
    b'{"id": "evt_1", "object": "charge", "type": "x", "created": 1, "data": {"object": {}}}',
]


def test_a_signed_body_that_is_not_an_event_is_refused(card: Card) -> None:
    for content in NOT_EVENTS:
        _refused(card, 400, "malformed_event", content=content, header=sign(content.decode(), "whsec_test_current"))


def test_a_body_that_is_not_utf8_is_refused(card: Card) -> None:
    _refused(card, 400, "malformed_event", content=b"\xff\xfe{}", header=sign("x", "whsec_test_current"))


def test_a_body_too_large_is_refused(card: Card) -> None:
    content = b"{" + b" " * (600 * 1024) + b"}"
    _refused(card, 413, "payload_too_large", content=content, header=sign(content.decode(), "whsec_test_current"))


def test_unknown_event_types_are_acknowledged_recorded_and_ignored(card: Card) -> None:
    event = card.stripe.event("customer.created", {"id": "cus_1", "object": "customer"})
    before = card.snapshot()
    ack = card.deliver_ok(event)
    assert ack["status"] == "ignored"
    assert ack["duplicate"] is False
    stored = card.inbox_event(str(event["id"]))
    assert stored.status == "ignored"
    assert stored.outcome == "unhandled_event_type"
    assert stored.processed_at
    after = card.snapshot()
    assert after.pop("stripe_webhook_events") == before.pop("stripe_webhook_events") + 1
    assert after == before


def test_the_webhook_needs_no_api_key_and_ignores_one(card: Card) -> None:
    event = _checkout_event(card)
    payload = json.dumps(event)
    response = card.client.post(
        "/v1/stripe/webhook",
        content=payload.encode(),
        headers={"Stripe-Signature": sign(payload, "whsec_test_current"), "Authorization": "Bearer nonsense"},
    )
    assert response.status_code == 200
    card.settle()
    assert card.inbox_event(str(event["id"])).outcome == "minted"
