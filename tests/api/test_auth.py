from __future__ import annotations

from tests.api.conftest import Api


def test_missing_key_is_unauthenticated(api: Api) -> None:
    response = api.client.get("/v1/balance")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_wrong_and_malformed_keys_are_unauthenticated(api: Api) -> None:
    customer = api.customer()
    good = customer.headers["Authorization"]
    for bad in (good[:-2] + "xx", "Bearer nonsense", "Bearer cr_000000000000_secret"):
        response = api.client.get("/v1/balance", headers={"Authorization": bad})
        assert response.status_code == 401, bad
        assert response.json()["error"]["code"] == "unauthenticated"


def test_revoked_key_stops_working(api: Api) -> None:
    customer = api.customer()
    assert api.client.get("/v1/balance", headers=customer.headers).status_code == 200
    assert api.client.post(f"/v1/admin/api-keys/{customer.key_id}/revoke", headers=api.admin).status_code == 204
    response = api.client.get("/v1/balance", headers=customer.headers)
    assert response.status_code == 401


def test_customer_key_cannot_use_admin_endpoints(api: Api) -> None:
    customer = api.customer()
    response = api.client.post("/v1/admin/accounts", json={"name": "x"}, headers=customer.headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_admin_key_is_not_a_customer(api: Api) -> None:
    response = api.client.get("/v1/balance", headers=api.admin)
    assert response.status_code == 403


def test_key_is_shown_once_and_stored_hashed(api: Api) -> None:
    created = api.client.post("/v1/admin/accounts", json={"name": "beta"}, headers=api.admin)
    assert created.status_code == 201
    account_id = created.json()["id"]
    issued = api.client.post(
        "/v1/admin/api-keys", json={"role": "customer", "account_id": account_id}, headers=api.admin
    )
    assert issued.status_code == 201
    secret = issued.json()["key"]
    listed = api.client.get("/v1/admin/api-keys", headers=api.admin).json()["data"]
    assert all("key" not in row for row in listed)
    assert secret not in str(api.snapshot())
    from sqlalchemy import text

    with api.engine.connect() as conn:
        stored = [row[0] for row in conn.execute(text("SELECT secret_sha256 FROM api_keys"))]
    assert secret not in stored
    assert api.client.get("/v1/balance", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
