from __future__ import annotations

from tests.api.conftest import Api


def test_balance_lots_and_transactions(api: Api) -> None:
    customer = api.customer(credits=2_500)
    balance = api.client.get("/v1/balance", headers=customer.headers).json()
    assert balance["available_credits"] == 2_500
    assert balance["total_credits"] == 2_500
    assert balance["next_expiry_credits"] == 2_500
    lots = api.client.get("/v1/lots", headers=customer.headers).json()["data"]
    assert [lot["remaining_credits"] for lot in lots] == [2_500]
    assert lots[0]["expires_at"] > lots[0]["credited_at"]

    for index in range(3):
        response = api.client.post(
            "/v1/charges", json={"amount_credits": 100}, headers={**customer.headers, "Idempotency-Key": f"c{index}"}
        )
        assert response.status_code == 201
    first = api.client.get("/v1/transactions?limit=2", headers=customer.headers).json()
    assert [t["amount_credits"] for t in first["data"]] == [-100, -100]
    rest = api.client.get(f"/v1/transactions?limit=2&cursor={first['next_cursor']}", headers=customer.headers).json()
    assert [t["kind"] for t in rest["data"]] == ["spend", "mint"]
    spends = api.client.get("/v1/transactions?kind=spend", headers=customer.headers).json()["data"]
    assert len(spends) == 3
    assert api.client.get("/v1/balance", headers=customer.headers).json()["available_credits"] == 2_200


def test_charge_replay_returns_the_same_charge(api: Api) -> None:
    customer = api.customer()
    headers = {**customer.headers, "Idempotency-Key": "same"}
    first = api.client.post("/v1/charges", json={"amount_credits": 250}, headers=headers)
    again = api.client.post("/v1/charges", json={"amount_credits": 250}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["transaction_id"] == first.json()["transaction_id"]
    assert api.client.get("/v1/balance", headers=customer.headers).json()["available_credits"] == 9_750


def test_hold_capture_lifecycle(api: Api) -> None:
    customer = api.customer(credits=1_000)
    created = api.client.post(
        "/v1/holds",
        json={"amount_credits": 600, "ttl_seconds": 60},
        headers={**customer.headers, "Idempotency-Key": "h1"},
    )
    assert created.status_code == 201
    hold = created.json()
    balance = api.client.get("/v1/balance", headers=customer.headers).json()
    assert (balance["available_credits"], balance["reserved_credits"]) == (400, 600)
    captured = api.client.post(
        f"/v1/holds/{hold['id']}/capture", json={"amount_credits": 250}, headers=customer.headers
    )
    assert captured.status_code == 200
    assert captured.json()["status"] == "captured"
    assert captured.json()["captured_credits"] == 250
    balance = api.client.get("/v1/balance", headers=customer.headers).json()
    assert (balance["available_credits"], balance["reserved_credits"]) == (750, 0)
    assert api.client.get(f"/v1/holds/{hold['id']}", headers=customer.headers).json()["status"] == "captured"


def test_hold_release_charges_nothing(api: Api) -> None:
    customer = api.customer(credits=1_000)
    hold = api.client.post(
        "/v1/holds", json={"amount_credits": 600}, headers={**customer.headers, "Idempotency-Key": "h1"}
    ).json()
    released = api.client.post(f"/v1/holds/{hold['id']}/release", headers=customer.headers)
    assert released.json()["status"] == "released"
    assert api.client.get("/v1/balance", headers=customer.headers).json()["available_credits"] == 1_000


def test_budget_crud_and_enforcement(api: Api) -> None:
    customer = api.customer(credits=1_000)
    created = api.client.post(
        "/v1/budgets",
        json={"name": "daily", "scope": "project", "scope_ref": "search", "period": "day", "limit_credits": 300},
        headers=customer.headers,
    )
    assert created.status_code == 201
    budget_id = created.json()["id"]
    ok = api.client.post(
        "/v1/charges",
        json={"amount_credits": 200, "project": "search"},
        headers={**customer.headers, "Idempotency-Key": "b1"},
    )
    assert ok.status_code == 201
    over = api.client.post(
        "/v1/charges",
        json={"amount_credits": 200, "project": "search"},
        headers={**customer.headers, "Idempotency-Key": "b2"},
    )
    assert over.status_code == 402
    assert over.json()["error"]["code"] == "budget_exceeded"
    other_project = api.client.post(
        "/v1/charges",
        json={"amount_credits": 200, "project": "other"},
        headers={**customer.headers, "Idempotency-Key": "b3"},
    )
    assert other_project.status_code == 201
    listed = api.client.get("/v1/budgets", headers=customer.headers).json()["data"]
    assert listed[0]["used_credits"] == 200
    patched = api.client.patch(f"/v1/budgets/{budget_id}", json={"limit_credits": 500}, headers=customer.headers)
    assert patched.json()["limit_credits"] == 500
    assert api.client.delete(f"/v1/budgets/{budget_id}", headers=customer.headers).status_code == 204
    assert api.client.get(f"/v1/budgets/{budget_id}", headers=customer.headers).status_code == 404


def test_an_account_wide_monthly_budget_caps_every_charge(api: Api) -> None:
    customer = api.customer(credits=1_000)
    created = api.client.post(
        "/v1/budgets",
        json={"name": "monthly", "scope": "account", "period": "month", "limit_credits": 300},
        headers=customer.headers,
    )
    assert created.status_code == 201, created.text
    assert (created.json()["scope"], created.json()["scope_ref"]) == ("account", "*")
    for n, project in enumerate(("search", None)):
        body = {"amount_credits": 150, **({"project": project} if project else {})}
        charged = api.client.post("/v1/charges", json=body, headers={**customer.headers, "Idempotency-Key": f"m{n}"})
        assert charged.status_code == 201, charged.text
    over = api.client.post(
        "/v1/charges",
        json={"amount_credits": 1, "project": "other"},
        headers={**customer.headers, "Idempotency-Key": "m-over"},
    )
    assert over.status_code == 402
    assert over.json()["error"]["code"] == "budget_exceeded"
    assert api.client.get("/v1/balance", headers=customer.headers).json()["available_credits"] == 700


def test_admin_grant_and_adjustments(api: Api) -> None:
    customer = api.customer(credits=0)
    path = f"/v1/admin/accounts/{customer.account_id}"
    granted = api.client.post(
        f"{path}/grants",
        json={"amount_credits": 500, "expires_at": "2099-01-01T00:00:00Z", "reason": "welcome"},
        headers={**api.admin, "Idempotency-Key": "g1"},
    )
    assert granted.status_code == 201
    again = api.client.post(
        f"{path}/grants",
        json={"amount_credits": 500, "expires_at": "2099-01-01T00:00:00Z", "reason": "welcome"},
        headers={**api.admin, "Idempotency-Key": "g1"},
    )
    assert again.json()["lot_id"] == granted.json()["lot_id"]
    lots = api.client.get("/v1/lots", headers=customer.headers).json()["data"]
    assert lots[0]["promotional"] is True
    debit = api.client.post(
        f"{path}/adjustments",
        json={"amount_credits": -120, "reason": "duplicate usage"},
        headers={**api.admin, "Idempotency-Key": "a1"},
    )
    assert debit.status_code == 201
    assert debit.json()["amount_credits"] == -120
    credit = api.client.post(
        f"{path}/adjustments",
        json={"amount_credits": 20, "reason": "goodwill"},
        headers={**api.admin, "Idempotency-Key": "a2"},
    )
    assert credit.status_code == 201
    assert api.client.get("/v1/balance", headers=customer.headers).json()["total_credits"] == 400
    report = api.client.get("/v1/admin/invariants", headers=api.admin).json()
    assert report == {"ok": True, "violations": []}


def test_openapi_docs_are_served(api: Api) -> None:
    assert api.client.get("/docs").status_code == 200
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "/v1/holds/{hold_id}/capture" in paths
