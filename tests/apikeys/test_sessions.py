"""Customer sessions over HTTP, on both databases: created by an admin or platform key, used as a bearer token by a
person's browser, renewed as they are used (at most one write a minute, never past the absolute maximum), expired,
revoked both ways, and confined to their account and to the endpoints a customer's session may use."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import select, text

from services.apikeys.sessions import check_return_url, customer_sessions
from services.core.db import utc
from services.core.errors import InvalidRequest
from services.core.settings import Settings
from tests.apikeys.conftest import Api, Clock, create_session, session_headers


def _stored(api: Api, session_id: int) -> tuple[datetime, datetime]:
    """The session's stored (expires_at, renewed_at)."""
    with api.engine.connect() as conn:
        row = conn.execute(
            select(customer_sessions.c.expires_at, customer_sessions.c.renewed_at).where(
                customer_sessions.c.id == session_id
            )
        ).one()
    return utc(row.expires_at), utc(row.renewed_at)


def test_admin_creates_a_session_shown_once_with_the_token_in_the_url_fragment(api: Api, clock: Clock) -> None:
    customer = api.customer()
    created = create_session(api, customer.account_id, return_url="https://platform.example/app")
    token = created["token"]
    assert token.startswith("crs_")
    assert created["account_id"] == customer.account_id
    assert created["url"] == f"http://127.0.0.1:8000/credits#session={token}"
    assert datetime.fromisoformat(created["expires_at"]) == clock.now + timedelta(seconds=1_800)
    with api.engine.connect() as conn:
        stored = conn.execute(text("SELECT prefix, token_sha256 FROM customer_sessions")).one()
    assert token not in (stored.prefix, stored.token_sha256)
    assert token.split("_")[1] == stored.prefix
    balance = api.client.get("/v1/balance", headers=session_headers(token))
    assert balance.status_code == 200
    assert balance.json()["available_credits"] == 10_000


def test_session_reads_buys_and_sets_what_a_customer_may(api: Api, clock: Clock) -> None:
    customer = api.customer()
    headers = session_headers(create_session(api, customer.account_id)["token"])
    for path in (
        "/v1/balance",
        "/v1/lots",
        "/v1/transactions",
        "/v1/purchases",
        "/v1/budgets",
        "/v1/usdc/chains",
        "/v1/usdc/deposits",
        "/v1/card/packs",
        "/v1/card/auto-recharge",
        "/v1/session",
    ):
        response = api.client.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text)
    budget = api.client.post(
        "/v1/budgets",
        json={"name": "monthly", "scope": "project", "scope_ref": "web", "period": "month", "limit_credits": 500},
        headers=headers,
    )
    assert budget.status_code == 201, budget.text
    assert api.client.get(f"/v1/budgets/{budget.json()['id']}", headers=headers).status_code == 200
    assert api.client.get("/v1/session", headers=headers).json()["account_id"] == customer.account_id


def test_session_renews_by_sliding_at_most_one_write_a_minute(api: Api, clock: Clock) -> None:
    customer = api.customer()
    created_at = clock.now
    created = create_session(api, customer.account_id, lifetime_seconds=600)
    headers = session_headers(created["token"])
    first_expiry = created_at + timedelta(seconds=600)
    assert _stored(api, created["id"]) == (first_expiry, created_at)

    clock.advance(59)
    assert api.client.get("/v1/balance", headers=headers).status_code == 200
    assert _stored(api, created["id"]) == (first_expiry, created_at)  # within the minute: nothing written

    used_at = clock.advance(1)
    assert api.client.get("/v1/balance", headers=headers).status_code == 200
    assert _stored(api, created["id"]) == (used_at + timedelta(seconds=600), used_at)

    # Past the first expiry, kept alive by the renewal.
    clock.advance(590)
    assert clock.now > first_expiry
    assert api.client.get("/v1/balance", headers=headers).status_code == 200
    expires_at = api.client.get("/v1/session", headers=headers).json()["expires_at"]
    assert datetime.fromisoformat(expires_at) == clock.now + timedelta(seconds=600)


def test_session_never_renews_past_its_absolute_maximum(api: Api, clock: Clock) -> None:
    customer = api.customer()
    created_at = clock.now
    created = create_session(api, customer.account_id, lifetime_seconds=3_600)
    headers = session_headers(created["token"])
    maximum = created_at + timedelta(hours=12)
    while clock.now + timedelta(seconds=3_000) < maximum:
        clock.advance(3_000)
        assert api.client.get("/v1/balance", headers=headers).status_code == 200
    assert _stored(api, created["id"])[0] == maximum
    clock.now = maximum - timedelta(seconds=1)
    assert api.client.get("/v1/balance", headers=headers).status_code == 200
    assert _stored(api, created["id"])[0] == maximum
    clock.now = maximum
    expired = api.client.get("/v1/balance", headers=headers)
    assert (expired.status_code, expired.json()["error"]["code"]) == (401, "session_expired")


def test_unused_session_expires_with_the_return_url_in_its_error(api: Api, clock: Clock) -> None:
    customer = api.customer()
    created = create_session(api, customer.account_id, return_url="https://platform.example/home")
    headers = session_headers(created["token"])
    clock.advance(1_799)
    assert api.client.get("/v1/lots", headers=headers).status_code == 200  # renewed to 1,799 + 1,800
    clock.advance(1_800)
    response = api.client.get("/v1/lots", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "session_expired"
    assert error["details"]["return_url"] == "https://platform.example/home"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_platform_revokes_a_session_at_once(api: Api, clock: Clock) -> None:
    customer = api.customer()
    created = create_session(api, customer.account_id)
    headers = session_headers(created["token"])
    assert api.client.get("/v1/balance", headers=headers).status_code == 200
    revoked = api.client.delete(f"/v1/admin/customer-sessions/{created['id']}", headers=api.admin)
    assert revoked.status_code == 204
    response = api.client.get("/v1/balance", headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (401, "session_revoked")
    again = api.client.delete(f"/v1/admin/customer-sessions/{created['id']}", headers=api.admin)
    assert again.status_code == 204
    missing = api.client.delete("/v1/admin/customer-sessions/999999", headers=api.admin)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "customer_session_not_found")


def test_session_logs_itself_out(api: Api, clock: Clock) -> None:
    customer = api.customer()
    headers = session_headers(create_session(api, customer.account_id)["token"])
    other = session_headers(create_session(api, customer.account_id)["token"])
    assert api.client.post("/v1/session/logout", headers=headers).status_code == 204
    response = api.client.get("/v1/balance", headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (401, "session_revoked")
    assert api.client.get("/v1/balance", headers=other).status_code == 200  # another session lives on
    key_logout = api.client.post("/v1/session/logout", headers=customer.headers)
    assert key_logout.status_code == 403


def test_unknown_and_malformed_session_tokens_are_unauthenticated(api: Api, clock: Clock) -> None:
    customer = api.customer()
    token = create_session(api, customer.account_id)["token"]
    for bad in (token[:-2] + "xx", "crs_000000000000_secret", "crs_nonsense", "crs_" + "a" * 300):
        response = api.client.get("/v1/balance", headers=session_headers(bad))
        assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthenticated"), bad


def test_session_sees_only_its_own_accounts_resources(api: Api, clock: Clock) -> None:
    mine = api.customer("mine", credits=100)
    theirs = api.customer("theirs", credits=7_000)
    budget = api.client.post(
        "/v1/budgets",
        json={"name": "theirs", "scope": "project", "scope_ref": "web", "period": "day", "limit_credits": 5},
        headers=theirs.headers,
    ).json()
    headers = session_headers(create_session(api, mine.account_id)["token"])
    assert api.client.get("/v1/balance", headers=headers).json()["available_credits"] == 100
    for method, path in (
        ("GET", f"/v1/budgets/{budget['id']}"),
        ("DELETE", f"/v1/budgets/{budget['id']}"),
        ("GET", "/v1/card/purchases/1"),
    ):
        response = api.client.request(method, path, headers=headers)
        assert response.status_code == 404, (method, path, response.text)
    assert api.client.get(f"/v1/budgets/{budget['id']}", headers=theirs.headers).status_code == 200


def test_session_is_refused_on_admin_and_finance_endpoints(api: Api, clock: Clock) -> None:
    customer = api.customer()
    headers = session_headers(create_session(api, customer.account_id)["token"])
    before = api.snapshot()
    for method, path, body in (
        ("GET", "/v1/admin/accounts", None),
        ("POST", "/v1/admin/accounts", {"name": "x"}),
        ("GET", f"/v1/admin/accounts/{customer.account_id}/balance", None),
        ("POST", "/v1/admin/customer-sessions", {"account_id": customer.account_id}),
        ("GET", "/v1/finance/exceptions", None),
        ("GET", "/v1/admin/jobs", None),
    ):
        response = api.client.request(method, path, json=body, headers=headers)
        assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden_for_session"), path
    assert api.snapshot() == before


def test_session_cannot_charge_nor_hold(api: Api, clock: Clock) -> None:
    customer = api.customer()
    hold = api.client.post(
        "/v1/holds", json={"amount_credits": 10}, headers={**customer.headers, "Idempotency-Key": "program-hold"}
    ).json()
    headers = {**session_headers(create_session(api, customer.account_id)["token"]), "Idempotency-Key": "k-1"}
    before = api.snapshot()
    for method, path, body in (
        ("POST", "/v1/charges", {"amount_credits": 10}),
        ("POST", "/v1/holds", {"amount_credits": 10}),
        ("GET", f"/v1/holds/{hold['id']}", None),
        ("POST", f"/v1/holds/{hold['id']}/capture", {"amount_credits": 5}),
        ("POST", f"/v1/holds/{hold['id']}/release", None),
    ):
        response = api.client.request(method, path, json=body, headers=headers)
        assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden_for_session"), path
    assert api.snapshot() == before


def test_a_bad_session_is_refused_before_the_body_is_read(api: Api, clock: Clock) -> None:
    customer = api.customer()
    created = create_session(api, customer.account_id)
    deep = b'{"pack": ' + b"[" * 1_000 + b"]" * 1_000 + b"}"
    json_headers = {"Content-Type": "application/json", "Idempotency-Key": "k-1"}
    unknown = api.client.post(
        "/v1/card/purchases", content=deep, headers={**json_headers, **session_headers("crs_000000000000_x")}
    )
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (401, "unauthenticated")
    # A live session on an endpoint it may not use: 403 before the body (deep as it is) is looked at.
    refused = api.client.post(
        "/v1/charges", content=deep, headers={**json_headers, **session_headers(created["token"])}
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden_for_session")
    api.client.delete(f"/v1/admin/customer-sessions/{created['id']}", headers=api.admin)
    revoked = api.client.post(
        "/v1/card/purchases", content=deep, headers={**json_headers, **session_headers(created["token"])}
    )
    assert (revoked.status_code, revoked.json()["error"]["code"]) == (401, "session_revoked")


def test_platform_key_creates_and_revokes_sessions_and_nothing_else(api: Api, clock: Clock) -> None:
    customer = api.customer()
    issued = api.client.post("/v1/admin/api-keys", json={"role": "platform"}, headers=api.admin)
    assert issued.status_code == 201, issued.text
    platform = {"Authorization": f"Bearer {issued.json()['key']}"}
    created = api.client.post("/v1/admin/customer-sessions", json={"account_id": customer.account_id}, headers=platform)
    assert created.status_code == 201
    for method, path in (
        ("GET", "/v1/admin/accounts"),
        ("GET", "/v1/admin/api-keys"),
        ("GET", "/v1/finance/exceptions"),
        ("GET", "/v1/balance"),
        ("GET", "/v1/admin/jobs"),
    ):
        response = api.client.request(method, path, headers=platform)
        assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden"), path
    assert api.client.delete(f"/v1/admin/customer-sessions/{created.json()['id']}", headers=platform).status_code == 204
    refused = api.client.post(
        "/v1/admin/customer-sessions", json={"account_id": customer.account_id}, headers=customer.headers
    )
    assert refused.status_code == 403


def test_session_requests_are_checked_and_write_nothing_when_refused(api: Api, clock: Clock) -> None:
    customer = api.customer()
    before = api.snapshot()
    for body, code in (
        ({"account_id": customer.account_id, "lifetime_seconds": 59}, "invalid_request"),
        ({"account_id": customer.account_id, "lifetime_seconds": 86_401}, "invalid_request"),
        ({"account_id": customer.account_id, "lifetime_seconds": "600"}, "invalid_request"),
        ({"account_id": customer.account_id, "return_url": "javascript:alert(1)"}, "invalid_request"),
        ({"account_id": customer.account_id, "return_url": "ftp://platform.example/"}, "invalid_request"),
        ({"account_id": customer.account_id, "return_url": "https://user:pw@platform.example/"}, "invalid_request"),
        ({"account_id": customer.account_id, "extra": 1}, "invalid_request"),
    ):
        response = api.client.post("/v1/admin/customer-sessions", json=body, headers=api.admin)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] == code, body
    missing = api.client.post("/v1/admin/customer-sessions", json={"account_id": 999_999}, headers=api.admin)
    assert missing.status_code == 404
    assert api.snapshot() == before


def test_a_refused_request_does_not_renew_the_session(api: Api, clock: Clock) -> None:
    customer = api.customer()
    created_at = clock.now
    created = create_session(api, customer.account_id, lifetime_seconds=600)
    headers = {**session_headers(created["token"]), "Idempotency-Key": "k-1"}
    clock.advance(300)
    refused = api.client.post("/v1/charges", json={"amount_credits": 1}, headers=headers)
    assert refused.status_code == 403
    assert _stored(api, created["id"]) == (created_at + timedelta(seconds=600), created_at)


def test_return_url_must_be_https_in_production() -> None:
    production = Settings(
        environment="production",
        public_base_url="https://credits.example.com",
        receipt_link_secret=SecretStr("receipt-links-0123456789abcdef-0123456789"),
    )
    development = Settings(environment="development")
    assert check_return_url(production, "https://platform.example/app") == "https://platform.example/app"
    assert check_return_url(development, "http://localhost:3000/app") == "http://localhost:3000/app"
    with pytest.raises(InvalidRequest) as refused:
        check_return_url(production, "http://platform.example/app")
    assert refused.value.details["field"] == "return_url"
