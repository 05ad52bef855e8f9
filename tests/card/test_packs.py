"""Packs, custom amounts and their prices (100 credits = $1.00), and purchase requests that are refused."""

from __future__ import annotations

from typing import Any

import pytest

from services.card.packs import PACKS, custom_pack, get_pack, resolve_pack
from services.core.errors import InvalidRequest
from services.core.money import share_of_credits
from services.core.settings import Settings
from tests.card.conftest import Card


def test_the_four_packs_and_their_prices() -> None:
    assert [(p.code, p.amount_credits, p.amount_cents) for p in PACKS.values()] == [
        ("starter", 500, 500),
        ("standard", 1_000, 1_000),
        ("pro", 2_500, 2_500),
        ("business", 5_000, 5_000),
    ]
    assert get_pack("pro").description == "Pro: 2,500 credits for $25.00"


def test_custom_amounts_are_500_credit_steps_within_the_configured_bounds() -> None:
    settings = Settings(card_custom_min_credits=1_000, card_custom_max_credits=20_000)
    assert custom_pack(1_000, settings).amount_cents == 1_000
    assert custom_pack(19_500, settings).amount_cents == 19_500
    for bad in (500, 1_250, 20_500, 0, -500):
        with pytest.raises(InvalidRequest) as refused:
            custom_pack(bad, settings)
        assert refused.value.code == "invalid_custom_amount"


def test_a_request_names_a_pack_or_a_custom_amount() -> None:
    settings = Settings()
    assert resolve_pack("business", None, settings).amount_credits == 5_000
    assert resolve_pack("business", 5_000, settings).code == "business"
    assert resolve_pack(None, 3_000, settings).code == "custom"
    assert resolve_pack("custom", 3_000, settings).amount_credits == 3_000
    for pack, amount, code in [
        ("gold", None, "unknown_pack"),
        (None, None, "invalid_request"),
        ("starter", 1_000, "invalid_request"),
    ]:
        with pytest.raises(InvalidRequest) as refused:
            resolve_pack(pack, amount, settings)
        assert refused.value.code == code


def test_a_refunds_share_of_credits_rounds_down_and_a_full_refund_is_exact() -> None:
    assert share_of_credits(1_000, 1_000, 1_000) == 1_000
    assert share_of_credits(1_000, 333, 1_000) == 333
    assert share_of_credits(1_000, 1, 3) == 333
    assert share_of_credits(1_000, 0, 1_000) == 0
    for part, whole in ((1_001, 1_000), (-1, 1_000), (1, 0)):
        with pytest.raises(ValueError, match="payment"):
            share_of_credits(1_000, part, whole)


def test_the_packs_endpoint_lists_packs_and_custom_bounds(card: Card) -> None:
    response = card.client.get("/v1/card/packs", headers=card.customer().headers)
    assert response.status_code == 200
    body = response.json()
    assert [p["code"] for p in body["packs"]] == ["starter", "standard", "pro", "business"]
    assert body["custom"] == {"min_credits": 500, "max_credits": 100_000, "step_credits": 500}
    assert body["credits_per_usd"] == 100


BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"pack": "gold"}, "unknown_pack"),
    ({"amount_credits": 700}, "invalid_custom_amount"),
    ({"amount_credits": 100_500}, "invalid_custom_amount"),
    ({"amount_credits": 1_000.0}, "invalid_request"),
    ({"amount_credits": "1000"}, "invalid_request"),
    ({"amount_credits": True}, "invalid_request"),
    ({"amount_credits": -500}, "invalid_request"),
    ({}, "invalid_request"),
    ({"pack": "starter", "amount_credits": 1_000}, "invalid_request"),
    ({"pack": "starter", "account_id": 1}, "invalid_request"),
    ({"pack": "starter", "save_card": "yes please"}, "invalid_request"),
]


def test_bad_purchase_requests_are_refused_and_change_nothing(card: Card) -> None:
    customer = card.customer()
    before = card.snapshot()
    for body, code in BAD_REQUESTS:
        response = card.client.post(
            "/v1/card/purchases", json=body, headers={**customer.headers, "Idempotency-Key": "k"}
        )
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] == code, body
        assert card.snapshot() == before
    assert card.stripe.requests == []


def test_a_purchase_needs_an_idempotency_key_and_a_customer_key(card: Card) -> None:
    customer = card.customer()
    before = card.snapshot()
    missing = card.client.post("/v1/card/purchases", json={"pack": "pro"}, headers=customer.headers)
    assert missing.status_code == 422
    assert missing.json()["error"]["code"] == "idempotency_key_required"
    anonymous = card.client.post("/v1/card/purchases", json={"pack": "pro"}, headers={"Idempotency-Key": "k"})
    assert anonymous.status_code == 401
    admin = card.client.post("/v1/card/purchases", json={"pack": "pro"}, headers={**card.admin, "Idempotency-Key": "k"})
    assert admin.status_code == 403
    assert card.snapshot() == before
