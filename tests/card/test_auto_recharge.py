"""Auto-recharge: a saved card, a threshold and a pack; one off-session charge per crossing; declines and
authentication recorded and shown; off after three failures in a row; exactly one mint per PaymentIntent."""

from __future__ import annotations

from typing import Any

from services.card.flows import auto_recharge
from services.card.tasks import auto_recharge_batch
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.ledger.minting import grant
from services.worker.jobs import JobSpec
from services.worker.runner import run_job_once
from tests.card.conftest import Card, Customer


def _with_saved_card(card: Card, name: str = "acme") -> Customer:
    """A customer who bought the Standard pack and saved the card (1,000 credits)."""
    customer = card.customer(name)
    purchase = card.bought(customer, save_card=True)
    session = card.complete(purchase)
    intent = card.stripe.intents[session["payment_intent"]]
    card.deliver_ok(card.stripe.event("payment_intent.succeeded", intent))
    return customer


def _configure(card: Card, customer: Customer, **body: Any) -> Any:
    payload = {"enabled": True, "threshold_credits": 500, "pack": "starter"} | body
    return card.client.put("/v1/card/auto-recharge", json=payload, headers=customer.headers)


def _spend(card: Card, customer: Customer, credits: int, key: str) -> None:
    response = card.client.post(
        "/v1/charges", json={"amount_credits": credits}, headers={**customer.headers, "Idempotency-Key": key}
    )
    assert response.status_code == 201, response.text


def _top_up(card: Card, customer: Customer, credits: int, key: str) -> None:
    with unit_of_work(card.engine) as session:
        grant(session, account_id=customer.account_id, amount_credits=credits, idempotency_key=key)


def _run(card: Card) -> int:
    return auto_recharge.run(card.engine, card.gateway, utcnow(), 50)


def _state(card: Card, customer: Customer) -> dict[str, Any]:
    response = card.client.get("/v1/card/auto-recharge", headers=customer.headers)
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def test_turning_it_on_needs_a_saved_card(card: Card) -> None:
    customer = card.customer()
    before = card.snapshot()
    response = _configure(card, customer)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_saved_card"
    assert card.snapshot() == before
    off = _configure(card, customer, enabled=False)
    assert off.status_code == 200
    assert off.json()["enabled"] is False


def test_bad_settings_are_refused(card: Card) -> None:
    customer = _with_saved_card(card)
    before = card.snapshot()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"pack": "gold"}, "unknown_pack"),
        ({"threshold_credits": -1}, "invalid_request"),
        ({"threshold_credits": 1.5}, "invalid_request"),
        ({"extra": 1}, "invalid_request"),
    ]
    for body, code in cases:
        response = _configure(card, customer, **body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == code
    assert card.snapshot() == before


def test_a_card_saved_at_checkout_is_kept_for_off_session_charges(card: Card) -> None:
    customer = _with_saved_card(card)
    state = _state(card, customer)
    assert state["has_saved_card"] is True
    assert state["enabled"] is False
    on = _configure(card, customer)
    assert on.status_code == 200
    assert on.json()["enabled"] is True
    assert on.json()["amount_cents"] == 500


def test_falling_below_the_threshold_charges_the_saved_card_once_per_crossing(card: Card) -> None:
    customer = _with_saved_card(card)
    assert _configure(card, customer, threshold_credits=300).status_code == 200
    assert _run(card) == 0  # 1,000 credits: above the threshold
    _spend(card, customer, 800, "s1")
    assert _run(card) == 1
    [sent] = card.stripe.sent("POST", "/v1/payment_intents")
    params = sent.params
    assert sent.idempotency_key == f"auto-recharge:{customer.account_id}:1"
    assert (params["amount"], params["currency"], params["off_session"], params["confirm"]) == (
        "500",
        "usd",
        "true",
        "true",
    )
    assert params["customer"].startswith("cus_")
    assert params["payment_method"] == "pm_card_visa"
    assert params["expand"] == ["latest_charge"]  # the charge, and so the card that paid, in the same answer
    assert params["metadata[kind]"] == "auto_recharge"
    assert params["metadata[amount_credits]"] == "500"
    assert card.available(customer.account_id) == 700

    # Still the same crossing (700 is above 300, so it re-arms; nothing is charged).
    assert _run(card) == 0
    assert len(card.stripe.sent("POST", "/v1/payment_intents")) == 1
    # The payment_intent.succeeded webhook for it mints nothing more.
    intent = next(iter(i for i in card.stripe.intents.values() if i["metadata"].get("kind") == "auto_recharge"))
    card.deliver_ok(card.stripe.event("payment_intent.succeeded", intent))
    assert card.available(customer.account_id) == 700

    # A second crossing is a second charge, with its own key.
    _spend(card, customer, 500, "s2")
    assert _run(card) == 1
    keys = [r.idempotency_key for r in card.stripe.sent("POST", "/v1/payment_intents")]
    assert keys == [f"auto-recharge:{customer.account_id}:1", f"auto-recharge:{customer.account_id}:2"]
    assert card.available(customer.account_id) == 700
    history = card.client.get("/v1/purchases", headers=customer.headers).json()["data"]
    assert [(h["details"]["kind"], h["status"]) for h in history[:2]] == [("auto_recharge", "completed")] * 2
    assert [h["details"]["card_label"] for h in history[:2]] == ["Visa ending 4242"] * 2


def test_a_recharge_too_small_to_lift_the_balance_is_not_repeated_for_the_same_crossing(card: Card) -> None:
    customer = _with_saved_card(card)
    _configure(card, customer, threshold_credits=900)
    _spend(card, customer, 1_000, "s1")
    assert _run(card) == 1
    assert card.available(customer.account_id) == 500
    assert _run(card) == 0
    assert _run(card) == 0
    assert len(card.stripe.sent("POST", "/v1/payment_intents")) == 1


def test_a_decline_is_recorded_and_shown_and_three_in_a_row_turn_it_off(card: Card) -> None:
    customer = _with_saved_card(card)
    _configure(card, customer, threshold_credits=500)
    card.stripe.off_session = "decline"
    for crossing in (1, 2, 3):
        _spend(card, customer, 600, f"s{crossing}")
        assert _run(card) == 1
        state = _state(card, customer)
        assert state["consecutive_failures"] == crossing
        assert state["last_failure_code"] == "insufficient_funds"
        assert "insufficient funds" in state["last_failure_message"]
        _top_up(card, customer, 600, f"t{crossing}")
        assert _run(card) == 0  # re-armed
    state = _state(card, customer)
    assert state["enabled"] is False
    assert state["disabled_reason"] == "too_many_failures"
    _spend(card, customer, 600, "s4")
    assert _run(card) == 0
    assert len(card.stripe.sent("POST", "/v1/payment_intents")) == 3
    failed = [
        h for h in card.client.get("/v1/purchases", headers=customer.headers).json()["data"] if h["status"] == "failed"
    ]
    assert len(failed) == 3
    assert failed[0]["failure_code"] == "insufficient_funds"
    # Turning it on again clears the count.
    card.stripe.off_session = "succeed"
    again = _configure(card, customer, threshold_credits=500).json()
    assert again["enabled"] is True
    assert again["consecutive_failures"] == 0
    assert again["disabled_reason"] is None
    assert _run(card) == 1
    assert card.available(customer.account_id) == 400 + 500


def test_a_success_between_failures_resets_the_count(card: Card) -> None:
    customer = _with_saved_card(card)
    _configure(card, customer, threshold_credits=500)
    card.stripe.off_session = "decline"
    _spend(card, customer, 600, "s1")
    _run(card)
    _top_up(card, customer, 600, "t1")
    _run(card)
    card.stripe.off_session = "succeed"
    _spend(card, customer, 600, "s2")
    _run(card)
    assert _state(card, customer)["consecutive_failures"] == 0


def test_a_bank_asking_for_authentication_is_told_to_the_customer(card: Card) -> None:
    customer = _with_saved_card(card)
    _configure(card, customer, threshold_credits=500)
    card.stripe.off_session = "authentication_required"
    _spend(card, customer, 600, "s1")
    assert _run(card) == 1
    state = _state(card, customer)
    assert state["last_failure_code"] == "authentication_required"
    assert "confirm" in state["last_failure_message"]
    assert state["enabled"] is True
    assert card.available(customer.account_id) == 400


def test_a_charge_whose_answer_was_lost_mints_once_from_the_webhook_and_is_not_charged_again(card: Card) -> None:
    customer = _with_saved_card(card)
    _configure(card, customer, threshold_credits=500)
    _spend(card, customer, 600, "s1")
    card.stripe.fail("POST", "/v1/payment_intents", "timeout_after", times=2)
    assert _run(card) == 1
    assert card.available(customer.account_id) == 400
    # Stripe charged the card: its webhook arrives and mints.
    [intent] = [i for i in card.stripe.intents.values() if i["metadata"].get("kind") == "auto_recharge"]
    card.deliver_ok(card.stripe.event("payment_intent.succeeded", intent))
    assert card.available(customer.account_id) == 900
    # The event names the charge only: the card that paid was asked for before minting.
    assert card.stripe.sent("GET", f"/v1/payment_intents/{intent['id']}")[-1].params["expand"] == ["latest_charge"]
    latest = card.client.get("/v1/purchases", headers=customer.headers).json()["data"][0]
    assert (latest["details"]["kind"], latest["details"]["card_label"]) == ("auto_recharge", "Visa ending 4242")
    # The worker still has the purchase pending: it asks again with the same key and gets the same PaymentIntent.
    assert _run(card) == 0
    assert card.available(customer.account_id) == 900
    keys = {r.idempotency_key for r in card.stripe.sent("POST", "/v1/payment_intents")}
    assert keys == {f"auto-recharge:{customer.account_id}:1"}
    assert len([i for i in card.stripe.intents.values() if i["metadata"].get("kind") == "auto_recharge"]) == 1


def test_a_charge_stripe_never_saw_is_retried_with_the_same_key(card: Card) -> None:
    customer = _with_saved_card(card)
    _configure(card, customer, threshold_credits=500)
    _spend(card, customer, 600, "s1")
    card.stripe.fail("POST", "/v1/payment_intents", "500", times=2)
    assert _run(card) == 1
    assert card.available(customer.account_id) == 400
    assert _run(card) == 1
    assert card.available(customer.account_id) == 900
    keys = {r.idempotency_key for r in card.stripe.sent("POST", "/v1/payment_intents")}
    assert keys == {f"auto-recharge:{customer.account_id}:1"}
    assert _state(card, customer)["consecutive_failures"] == 0


def test_a_processing_charge_mints_when_its_webhook_says_succeeded(card: Card) -> None:
    customer = _with_saved_card(card)
    _configure(card, customer, threshold_credits=500)
    card.stripe.off_session = "processing"
    _spend(card, customer, 600, "s1")
    assert _run(card) == 1
    [intent] = [i for i in card.stripe.intents.values() if i["metadata"].get("kind") == "auto_recharge"]
    assert card.available(customer.account_id) == 400
    intent |= {"status": "succeeded", "amount_received": intent["amount"]}
    card.deliver_ok(card.stripe.event("payment_intent.succeeded", intent))
    card.deliver_ok(card.stripe.event("payment_intent.succeeded", intent))
    assert card.available(customer.account_id) == 900


def test_a_failed_payment_webhook_counts_once(card: Card) -> None:
    customer = _with_saved_card(card)
    _configure(card, customer, threshold_credits=500)
    card.stripe.off_session = "processing"
    _spend(card, customer, 600, "s1")
    _run(card)
    [intent] = [i for i in card.stripe.intents.values() if i["metadata"].get("kind") == "auto_recharge"]
    intent |= {
        "status": "requires_payment_method",
        "last_payment_error": {"code": "card_declined", "decline_code": "expired_card", "message": "x"},
    }
    for _ in range(2):
        card.deliver_ok(card.stripe.event("payment_intent.payment_failed", intent))
    state = _state(card, customer)
    assert state["consecutive_failures"] == 1
    assert state["last_failure_code"] == "expired_card"


def test_the_auto_recharge_job_runs_in_the_worker(card: Card) -> None:
    customer = _with_saved_card(card)
    _configure(card, customer, threshold_credits=500)
    _spend(card, customer, 600, "s1")
    spec = JobSpec(
        name="card.auto_recharge",
        batch=None,
        step=auto_recharge_batch(card.settings, card.gateway),
        interval_seconds=60,
        batch_size=10,
    )
    run = run_job_once(card.engine, spec)
    assert str(run.outcome) == "success"
    assert run.items == 1
    assert card.available(customer.account_id) == 900
