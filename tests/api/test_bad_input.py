"""Bad input gets a clear error with a machine-readable code, and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api, Customer

BAD_AMOUNTS: list[Any] = [-1, 0, 2**63, 2**64, 1.5, 100.0, "100", None, True, [1]]


def _refused(api: Api, method: str, url: str, expected_status: int, expected_code: str, **kwargs: Any) -> None:
    before = api.snapshot()
    response = api.client.request(method, url, **kwargs)
    assert response.status_code == expected_status, response.text
    assert response.json()["error"]["code"] == expected_code, response.text
    assert api.snapshot() == before


def _idem(customer: Customer, key: str = "k1") -> dict[str, str]:
    return {**customer.headers, "Idempotency-Key": key}


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_bad_charge_amounts_are_refused(api: Api, amount: Any) -> None:
    customer = api.customer()
    _refused(
        api, "POST", "/v1/charges", 422, "invalid_request", json={"amount_credits": amount}, headers=_idem(customer)
    )


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_bad_hold_amounts_are_refused(api: Api, amount: Any) -> None:
    customer = api.customer()
    _refused(api, "POST", "/v1/holds", 422, "invalid_request", json={"amount_credits": amount}, headers=_idem(customer))


def test_amount_above_configured_maximum_is_refused(api: Api) -> None:
    customer = api.customer()
    _refused(
        api, "POST", "/v1/charges", 422, "invalid_amount", json={"amount_credits": 10**13}, headers=_idem(customer)
    )


def test_malformed_json_is_refused(api: Api) -> None:
    customer = api.customer()
    _refused(
        api,
        "POST",
        "/v1/charges",
        422,
        "malformed_json",
        content=b'{"amount_credits": ',
        headers={**_idem(customer), "Content-Type": "application/json"},
    )


def test_unknown_fields_are_refused(api: Api) -> None:
    customer = api.customer()
    _refused(
        api,
        "POST",
        "/v1/charges",
        422,
        "invalid_request",
        json={"amount_credits": 1, "account_id": 1},
        headers=_idem(customer),
    )


def test_missing_idempotency_key_is_refused(api: Api) -> None:
    customer = api.customer()
    _refused(
        api, "POST", "/v1/holds", 422, "idempotency_key_required", json={"amount_credits": 1}, headers=customer.headers
    )


def test_insufficient_credits(api: Api) -> None:
    customer = api.customer(credits=100)
    _refused(
        api, "POST", "/v1/charges", 402, "insufficient_credits", json={"amount_credits": 101}, headers=_idem(customer)
    )


def test_reused_idempotency_key_with_another_payload_conflicts(api: Api) -> None:
    customer = api.customer()
    assert api.client.post("/v1/charges", json={"amount_credits": 5}, headers=_idem(customer)).status_code == 201
    _refused(
        api, "POST", "/v1/charges", 409, "idempotency_key_reused", json={"amount_credits": 6}, headers=_idem(customer)
    )
    assert api.client.post("/v1/holds", json={"amount_credits": 5}, headers=_idem(customer, "h")).status_code == 201
    _refused(
        api,
        "POST",
        "/v1/holds",
        409,
        "idempotency_key_reused",
        json={"amount_credits": 7},
        headers=_idem(customer, "h"),
    )


def test_unknown_and_foreign_holds_are_not_found(api: Api) -> None:
    owner = api.customer("owner")
    stranger = api.customer("stranger")
    hold = api.client.post("/v1/holds", json={"amount_credits": 50}, headers=_idem(owner)).json()
    _refused(api, "GET", "/v1/holds/999999", 404, "hold_not_found", headers=stranger.headers)
    _refused(api, "GET", f"/v1/holds/{hold['id']}", 404, "hold_not_found", headers=stranger.headers)
    _refused(
        api,
        "POST",
        f"/v1/holds/{hold['id']}/capture",
        404,
        "hold_not_found",
        json={"amount_credits": 1},
        headers=stranger.headers,
    )
    _refused(api, "POST", f"/v1/holds/{hold['id']}/release", 404, "hold_not_found", headers=stranger.headers)
    _refused(api, "GET", "/v1/holds/not-a-number", 422, "invalid_request", headers=owner.headers)


def test_capture_above_hold_and_of_resolved_hold_conflict(api: Api) -> None:
    customer = api.customer()
    hold = api.client.post("/v1/holds", json={"amount_credits": 50}, headers=_idem(customer)).json()
    _refused(
        api,
        "POST",
        f"/v1/holds/{hold['id']}/capture",
        409,
        "capture_exceeds_hold",
        json={"amount_credits": 51},
        headers=customer.headers,
    )
    assert (
        api.client.post(
            f"/v1/holds/{hold['id']}/capture", json={"amount_credits": 50}, headers=customer.headers
        ).status_code
        == 200
    )
    _refused(
        api,
        "POST",
        f"/v1/holds/{hold['id']}/capture",
        409,
        "hold_not_active",
        json={"amount_credits": 1},
        headers=customer.headers,
    )
    _refused(api, "POST", f"/v1/holds/{hold['id']}/release", 409, "hold_not_active", headers=customer.headers)


def test_unknown_budget_and_account(api: Api) -> None:
    customer = api.customer()
    _refused(
        api, "PATCH", "/v1/budgets/424242", 404, "budget_not_found", json={"limit_credits": 1}, headers=customer.headers
    )
    _refused(
        api,
        "POST",
        "/v1/admin/accounts/424242/grants",
        404,
        "account_not_found",
        json={"amount_credits": 1},
        headers={**api.admin, "Idempotency-Key": "g"},
    )
    _refused(
        api,
        "POST",
        "/v1/admin/accounts/3/grants",
        422,
        "not_a_customer_account",
        json={"amount_credits": 1},
        headers={**api.admin, "Idempotency-Key": "g"},
    )


def test_bad_budget_input(api: Api) -> None:
    customer = api.customer()
    for body in (
        {"name": "x", "scope": "galaxy", "scope_ref": "a", "period": "day", "limit_credits": 1},
        {"name": "x", "scope": "project", "scope_ref": "a", "period": "year", "limit_credits": 1},
        {"name": "x", "scope": "project", "scope_ref": "a", "period": "day", "limit_credits": -1},
    ):
        _refused(api, "POST", "/v1/budgets", 422, "invalid_request", json=body, headers=customer.headers)
    _refused(
        api,
        "POST",
        "/v1/budgets",
        422,
        "invalid_request",
        json={"name": "x", "scope": "api_key", "scope_ref": "999", "period": "day", "limit_credits": 1},
        headers=customer.headers,
    )


def test_bad_query_parameters(api: Api) -> None:
    customer = api.customer()
    _refused(api, "GET", "/v1/transactions?limit=0", 422, "invalid_request", headers=customer.headers)
    _refused(api, "GET", "/v1/transactions?since=yesterday", 422, "invalid_request", headers=customer.headers)
    _refused(api, "GET", "/v1/transactions?since=2026-01-01T00:00:00", 422, "invalid_request", headers=customer.headers)


def test_unknown_route_and_method(api: Api) -> None:
    customer = api.customer()
    _refused(api, "GET", "/v1/nope", 404, "not_found", headers=customer.headers)
    _refused(api, "DELETE", "/v1/balance", 405, "method_not_allowed", headers=customer.headers)
