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
        {"name": "x", "scope": "project", "period": "day", "limit_credits": 1},
        {"name": "x", "scope": "account", "scope_ref": "search", "period": "month", "limit_credits": 1},
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


TOO_BIG = "9223372036854775808"  # 2^63: one above what a 64-bit column stores


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (f"/v1/holds/{TOO_BIG}", "invalid_request"),
        (f"/v1/budgets/{TOO_BIG}", "invalid_request"),
        (f"/v1/card/purchases/{TOO_BIG}", "invalid_request"),
        (f"/v1/transactions?cursor={TOO_BIG}", "invalid_cursor"),
        (f"/v1/lots?cursor={TOO_BIG}", "invalid_cursor"),
        ("/v1/lots?cursor=%C2%B2", "invalid_cursor"),
        (f"/v1/purchases?cursor=2026-01-01T00:00:00%2B00:00~card~{TOO_BIG}", "invalid_cursor"),
        ("/v1/purchases?cursor=0001-01-01T00:00:00%2B14:00~card~1", "invalid_cursor"),
        (f"/v1/usdc/deposit-address?chain_id={TOO_BIG}", "invalid_request"),
    ],
)
def test_integers_beyond_64_bits_are_refused_as_input(api: Api, path: str, code: str) -> None:
    customer = api.customer()
    _refused(api, "GET", path, 422, code, headers=customer.headers)


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/admin/accounts/{TOO_BIG}/balance",
        f"/v1/admin/api-keys?account_id={TOO_BIG}",
        f"/v1/finance/exceptions/{TOO_BIG}",
        f"/v1/finance/reconciliations/{TOO_BIG}/items",
    ],
)
def test_admin_and_finance_ids_beyond_64_bits_are_refused(api: Api, path: str) -> None:
    _refused(api, "GET", path, 422, "invalid_request", headers=api.admin)


def test_nul_characters_and_lone_surrogates_are_refused_everywhere(api: Api) -> None:
    customer = api.customer()
    json_headers = {**_idem(customer), "Content-Type": "application/json"}
    for content in (
        b'{"amount_credits": 1, "project": "p\\u0000"}',
        b'{"amount_credits": 1, "description": "\\ud800"}',
    ):
        _refused(api, "POST", "/v1/charges", 422, "invalid_request", content=content, headers=json_headers)
    _refused(api, "POST", "/v1/admin/accounts", 422, "invalid_request", json={"name": "a\x00b"}, headers=api.admin)
    _refused(
        api,
        "POST",
        "/v1/budgets",
        422,
        "invalid_request",
        json={"name": "n\x00", "scope": "project", "scope_ref": "p", "period": "day", "limit_credits": 1},
        headers=customer.headers,
    )
    adjustment = {"amount_credits": 5, "reason": "oops\x00"}
    _refused(
        api,
        "POST",
        f"/v1/admin/accounts/{customer.account_id}/adjustments",
        422,
        "invalid_request",
        json=adjustment,
        headers={**api.admin, "Idempotency-Key": "a"},
    )
    _refused(api, "GET", "/v1/transactions?kind=spend%00", 422, "invalid_request", headers=customer.headers)
    _refused(api, "GET", "/v1/finance/exceptions?rail=card%00", 422, "invalid_request", headers=api.admin)
    _refused(
        api,
        "POST",
        "/v1/charges",
        422,
        "idempotency_key_required",
        json={"amount_credits": 1},
        headers={**customer.headers, "Idempotency-Key": "k\x00"},
    )
    _refused(api, "GET", "/v1/balance", 401, "unauthenticated", headers={"Authorization": "Bearer cr_\x00_secret"})
    _refused(api, "GET", "/v1/balance", 401, "unauthenticated", headers={"X-Api-Key": "cr_ab\x00cd_secret"})


@pytest.mark.parametrize(
    "query",
    [
        "since=0001-01-01T00:00:00%2B14:00",
        "until=9999-12-31T23:59:59-14:00",
        "until=0.5",
        "since=1700000000",
        "since=2026-01-01",
    ],
)
def test_dates_are_iso_strings_within_range(api: Api, query: str) -> None:
    customer = api.customer()
    _refused(api, "GET", f"/v1/transactions?{query}", 422, "invalid_request", headers=customer.headers)


def test_dates_out_of_range_in_bodies_and_finance_queries_are_refused(api: Api) -> None:
    customer = api.customer()
    for expires_at in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", 1893456000):
        _refused(
            api,
            "POST",
            f"/v1/admin/accounts/{customer.account_id}/grants",
            422,
            "invalid_request",
            json={"amount_credits": 5, "expires_at": expires_at},
            headers={**api.admin, "Idempotency-Key": "g"},
        )
    _refused(
        api,
        "GET",
        "/v1/finance/trial-balance?at=0001-01-01T00:00:00%2B14:00",
        422,
        "invalid_request",
        headers=api.admin,
    )
    query = "rail=card&period_start=0001-01-01T00:00:00%2B01:00&period_end=2026-01-01T00:00:00Z"
    _refused(api, "GET", f"/v1/finance/reports?{query}", 422, "invalid_request", headers=api.admin)


@pytest.mark.parametrize("scope_ref", ["99999999999999999999", TOO_BIG, "\u00b2", "12a", "-1"])
def test_api_key_budgets_need_an_api_key_id(api: Api, scope_ref: str) -> None:
    customer = api.customer()
    body = {"name": "x", "scope": "api_key", "scope_ref": scope_ref, "period": "day", "limit_credits": 1}
    _refused(api, "POST", "/v1/budgets", 422, "invalid_request", json=body, headers=customer.headers)


@pytest.mark.parametrize(
    "content",
    [b'{"amount_credits": "\xff"}', b"\xfe\xff\x00{", b"1" * 5_000, b"[" * 65 + b"]" * 65],
)
def test_bodies_that_are_not_json_this_api_reads_are_malformed(api: Api, content: bytes) -> None:
    customer = api.customer()
    expected = "json_too_deep" if content.startswith(b"[[") else "malformed_json"
    _refused(
        api,
        "POST",
        "/v1/charges",
        422,
        expected,
        content=content,
        headers={**_idem(customer), "Content-Type": "application/json"},
    )


def test_json_nested_within_the_bound_is_judged_on_its_merits(api: Api) -> None:
    customer = api.customer()
    nested = b'{"amount_credits": ' + b"[" * 60 + b"]" * 60 + b"}"
    headers = {**_idem(customer), "Content-Type": "application/json"}
    _refused(api, "POST", "/v1/charges", 422, "invalid_request", content=nested, headers=headers)


def test_a_405_lists_every_method_of_the_path(api: Api) -> None:
    customer = api.customer()
    response = api.client.put("/v1/budgets/1", json={}, headers=customer.headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD, PATCH"
    response = api.client.delete("/v1/budgets", headers=customer.headers)
    assert response.headers["allow"] == "GET, HEAD, POST"


def test_the_last_admin_key_cannot_be_revoked(api: Api) -> None:
    listed = api.client.get("/v1/admin/api-keys", headers=api.admin).json()["data"]
    (own,) = [key["id"] for key in listed if key["role"] == "admin"]
    _refused(api, "POST", f"/v1/admin/api-keys/{own}/revoke", 409, "last_admin_key", headers=api.admin)
    second = api.client.post("/v1/admin/api-keys", json={"role": "admin"}, headers=api.admin).json()
    assert api.client.post(f"/v1/admin/api-keys/{own}/revoke", headers=api.admin).status_code == 204
    assert api.client.get("/v1/admin/api-keys", headers=api.admin).status_code == 401
    other = {"Authorization": f"Bearer {second['key']}"}
    _refused(api, "POST", f"/v1/admin/api-keys/{second['id']}/revoke", 409, "last_admin_key", headers=other)


def test_a_replay_answers_what_the_first_answered(api: Api) -> None:
    customer = api.customer()
    calls = [
        ("/v1/charges", {"amount_credits": 5}, customer.headers),
        ("/v1/holds", {"amount_credits": 5}, customer.headers),
        (f"/v1/admin/accounts/{customer.account_id}/grants", {"amount_credits": 5}, api.admin),
        (f"/v1/admin/accounts/{customer.account_id}/adjustments", {"amount_credits": 5, "reason": "r"}, api.admin),
        (f"/v1/admin/accounts/{customer.account_id}/adjustments", {"amount_credits": -5, "reason": "r"}, api.admin),
    ]
    for index, (path, body, headers) in enumerate(calls):
        sent = {**headers, "Idempotency-Key": f"replay-{index}"}
        first = api.client.post(path, json=body, headers=sent)
        again = api.client.post(path, json=body, headers=sent)
        assert first.status_code == again.status_code == 201, path
        assert "Idempotent-Replayed" not in first.headers
        assert again.headers["Idempotent-Replayed"] == "true", path


def test_an_idempotency_key_reused_with_another_admin_request_conflicts(api: Api) -> None:
    customer = api.customer()
    path = f"/v1/admin/accounts/{customer.account_id}"
    headers = {**api.admin, "Idempotency-Key": "ticket-13"}
    assert api.client.post(
        f"{path}/adjustments", json={"amount_credits": 13, "reason": "r"}, headers=headers
    ).is_success
    for body in ({"amount_credits": -13, "reason": "r"}, {"amount_credits": 13, "reason": "another"}):
        _refused(api, "POST", f"{path}/adjustments", 409, "idempotency_key_reused", json=body, headers=headers)
    grant = {"amount_credits": 5, "reason": "welcome", "expires_at": "2030-01-01T00:00:00Z"}
    assert api.client.post(f"{path}/grants", json=grant, headers=headers).is_success
    for changed in ({"reason": "other"}, {"expires_at": "2030-02-01T00:00:00Z"}):
        body = {**grant, **changed}
        _refused(api, "POST", f"{path}/grants", 409, "idempotency_key_reused", json=body, headers=headers)
