"""What a customer session may reach: the endpoints marked for it (services.api.deps ``CustomerOrSession``), and no
other. Every route that authenticates and is not marked refuses a session, before its body is read; a route added
later is refused to sessions too unless it says otherwise."""

from __future__ import annotations

import re

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from services.api.deps import CurrentKey, CustomerKey, CustomerOrSession
from services.api.guard import route_allows_session, route_needs_key
from services.api.routes import api_routes
from tests.apikeys.conftest import Api, Clock, create_session, session_headers

# The scope of a customer's session: read, buy, auto-recharge, budgets and alerts; itself.
SESSION_SCOPE = {
    ("GET", "/v1/balance"),
    ("GET", "/v1/account"),
    ("PATCH", "/v1/account"),
    ("GET", "/v1/account/alerts"),
    ("PATCH", "/v1/account/alerts"),
    ("GET", "/v1/receipts/{receipt_number}"),
    ("GET", "/v1/receipts/{receipt_number}.pdf"),
    ("GET", "/v1/lots"),
    ("GET", "/v1/transactions"),
    ("GET", "/v1/purchases"),
    ("GET", "/v1/budgets"),
    ("POST", "/v1/budgets"),
    ("GET", "/v1/budgets/{budget_id}"),
    ("PATCH", "/v1/budgets/{budget_id}"),
    ("DELETE", "/v1/budgets/{budget_id}"),
    ("GET", "/v1/card/packs"),
    ("POST", "/v1/card/purchases"),
    ("GET", "/v1/card/purchases/{purchase_id}"),
    ("POST", "/v1/card/purchases/{purchase_id}/confirm"),
    ("GET", "/v1/card/auto-recharge"),
    ("PUT", "/v1/card/auto-recharge"),
    ("GET", "/v1/usdc/chains"),
    ("GET", "/v1/usdc/deposit-address"),
    ("GET", "/v1/usdc/deposits"),
    ("GET", "/v1/session"),
    ("POST", "/v1/session/logout"),
}


def _app(api: Api) -> FastAPI:
    app = api.client.app
    assert isinstance(app, FastAPI)
    return app


def test_sessions_reach_exactly_the_customer_scope(api: Api) -> None:
    allowed = {
        (method, entry.path)
        for entry in api_routes(_app(api))
        if route_allows_session(entry.route)
        for method in entry.methods
    }
    assert allowed == SESSION_SCOPE


def test_every_other_authenticated_route_refuses_a_session(api: Api, clock: Clock) -> None:
    customer = api.customer()
    headers = {**session_headers(create_session(api, customer.account_id)["token"]), "Idempotency-Key": "k-1"}
    before = api.snapshot()
    refused = 0
    for entry in api_routes(_app(api)):
        if not route_needs_key(entry.route) or route_allows_session(entry.route):
            continue
        path = re.sub(r"\{[^}]+\}", "1", entry.path)
        for method in entry.methods:
            response = api.client.request(method, path, headers=headers, json={})
            assert response.status_code == 403, (method, entry.path, response.text)
            assert response.json()["error"]["code"] == "forbidden_for_session", (method, entry.path)
            refused += 1
    assert refused >= 30
    assert api.snapshot() == before


class Note(BaseModel):
    text: str


later_router = APIRouter(prefix="/v1/later")


@later_router.post("/key-only")
def key_only(body: Note, _principal: CurrentKey) -> Note:
    return body


@later_router.post("/customer-only")
def customer_only(body: Note, _principal: CustomerKey) -> Note:
    return body


@later_router.post("/people-too")
def people_too(body: Note, _principal: CustomerOrSession) -> Note:
    return body


def test_a_new_endpoint_refuses_sessions_unless_it_says_otherwise(api: Api, clock: Clock) -> None:
    _app(api).include_router(later_router)
    customer = api.customer()
    headers = session_headers(create_session(api, customer.account_id)["token"])
    for path in ("/v1/later/key-only", "/v1/later/customer-only"):
        response = api.client.post(path, json={"text": "hi"}, headers=headers)
        assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden_for_session"), path
        assert api.client.post(path, json={"text": "hi"}, headers=customer.headers).status_code == 200
    allowed = api.client.post("/v1/later/people-too", json={"text": "hi"}, headers=headers)
    assert (allowed.status_code, allowed.json()) == (200, {"text": "hi"})
