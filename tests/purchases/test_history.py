"""Purchase history: every purchase with rail, amount paid, credits, status, times and the lot it minted."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.card.conftest import Card


def test_history_lists_every_purchase_newest_first_in_the_rail_neutral_shape(card: Card) -> None:
    customer = card.customer()
    first = card.bought(customer, "a", pack="starter")
    card.complete(first)
    second = card.bought(customer, "b", pack="business")
    card.stripe.fail("POST", "/v1/checkout/sessions", "500", times=2)
    third_id = card.buy(customer, "c", amount_credits=1_500).json()["error"]["details"]["purchase_id"]
    card.bought(card.customer("other"), "a")

    response = card.client.get("/v1/purchases", headers=customer.headers)
    assert response.status_code == 200
    items = response.json()["data"]
    assert [item["id"] for item in items] == [third_id, second["id"], first["id"]]
    done = items[2]
    lot_id = card.purchase(first["id"]).lot_id
    assert done == {
        "rail": "card",
        "id": first["id"],
        "reference": first["checkout_session_id"],
        "amount_cents": 500,
        "amount_usdc_units": None,
        "credits": 500,
        "status": "completed",
        "created_at": done["created_at"],
        "completed_at": done["completed_at"],
        "lot_id": lot_id,
        "refunded_cents": 0,
        "failure_code": None,
        "failure_message": None,
        "details": {
            "kind": "checkout",
            "pack": "starter",
            "card_brand": "visa",
            "card_last4": "4242",
            "card_label": "Visa ending 4242",
        },
        "receipt_url": done["receipt_url"],
    }
    assert done["completed_at"] is not None
    receipt_link = urlsplit(done["receipt_url"])
    assert receipt_link.path.endswith(f"-{lot_id:08d}")
    assert receipt_link.query.startswith("sig=")  # signed: it opens from a new tab or a mail
    assert items[0]["receipt_url"] is None
    assert (items[1]["status"], items[1]["lot_id"], items[1]["credits"]) == ("open", None, 5_000)
    assert (items[0]["status"], items[0]["reference"], items[0]["credits"]) == ("pending", None, 1_500)


def test_history_pages_backwards(card: Card) -> None:
    customer = card.customer()
    ids = [card.bought(customer, f"k{i}", pack="starter")["id"] for i in range(5)]
    seen: list[int] = []
    params: dict[str, object] = {"limit": 2}
    while True:
        page = card.client.get("/v1/purchases", params=params, headers=customer.headers).json()
        seen += [item["id"] for item in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        params = {"limit": 2, "cursor": page["next_cursor"]}
    assert seen == list(reversed(ids))


def test_history_needs_a_customer_key(card: Card) -> None:
    assert card.client.get("/v1/purchases").status_code == 401
    assert card.client.get("/v1/purchases", headers=card.admin).status_code == 403
