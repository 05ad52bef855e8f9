"""Stripe's form encoding of nested parameters, decoded as the SDK encodes them."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from services.stripe_standin.forms import FormError, decode


def test_nested_dicts_and_lists_decode_as_the_sdk_sends_them() -> None:
    body = urlencode(
        [
            ("mode", "payment"),
            ("metadata[creditrail_account_id]", "3"),
            ("line_items[0][quantity]", "1"),
            ("line_items[0][price_data][currency]", "usd"),
            ("line_items[0][price_data][product_data][name]", "Standard"),
            ("line_items[1][quantity]", "2"),
            ("expand[0]", "data.source"),
            ("types[]", "a"),
            ("types[]", "b"),
            ("created[gte]", "10"),
        ]
    )

    assert decode(body) == {
        "mode": "payment",
        "metadata": {"creditrail_account_id": "3"},
        "line_items": [
            {"quantity": "1", "price_data": {"currency": "usd", "product_data": {"name": "Standard"}}},
            {"quantity": "2"},
        ],
        "expand": ["data.source"],
        "types": ["a", "b"],
        "created": {"gte": "10"},
    }


def test_list_items_keep_their_index_order_beyond_nine() -> None:
    pairs = [(f"types[{i}]", str(i)) for i in (10, 2, 0, 1, 3, 4, 5, 6, 7, 8, 9)]
    assert decode(urlencode(pairs))["types"] == [str(i) for i in range(11)]


def test_a_value_and_nested_fields_under_one_name_are_refused() -> None:
    with pytest.raises(FormError):
        decode(urlencode([("metadata[a]", "1"), ("metadata", "x"), ("metadata[b]", "2")]))
    with pytest.raises(FormError):
        decode("a]b=1")
