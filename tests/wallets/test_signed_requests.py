"""Signed requests through the API, with real EIP-191 signatures: a good one acts as the wallet's account does with a
customer key; everything else is refused with a code and changes nothing."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.wallets.errors import WalletNonceReused
from services.wallets.repository import request_nonces
from services.wallets.service import account_for_wallet, authenticate_signed_request
from services.wallets.signed_requests import read_wallet_headers
from tests.wallets.conftest import Agent, Api
from tests.wallets.test_identity import wait_until_blocked


def _body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def _post(api: Api, agent: Agent, path: str, body: bytes, **extra: str) -> Any:
    headers = {**agent.headers("POST", path, body), "Content-Type": "application/json", **extra}
    return api.client.post(path, content=body, headers=headers)


def _used_nonces(api: Api) -> int:
    with api.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(request_nonces)).scalar_one())


def test_a_signed_request_reads_the_wallets_balance_lots_and_history(api: Api, agent: Agent) -> None:
    account_id = agent.join(api, credits=700)

    balance = api.client.get("/v1/balance", headers=agent.headers("GET", "/v1/balance"))
    assert balance.status_code == 200, balance.text
    assert (balance.json()["account_id"], balance.json()["available_credits"]) == (account_id, 700)
    lots = api.client.get("/v1/lots", headers=agent.headers("GET", "/v1/lots"))
    assert lots.status_code == 200, lots.text
    assert [lot["remaining_credits"] for lot in lots.json()["data"]] == [700]
    history = api.client.get("/v1/transactions?limit=5", headers=agent.headers("GET", "/v1/transactions?limit=5"))
    assert history.status_code == 200, history.text
    assert len(history.json()["data"]) == 1
    assert _used_nonces(api) == 3


def test_a_signed_request_places_a_hold_and_captures_it(api: Api, agent: Agent) -> None:
    agent.join(api, credits=700)

    held = _post(api, agent, "/v1/holds", _body(amount_credits=40, ttl_seconds=60), **{"Idempotency-Key": "call-1"})
    assert held.status_code == 201, held.text
    hold_id = held.json()["id"]
    captured = _post(api, agent, f"/v1/holds/{hold_id}/capture", _body(amount_credits=25))
    assert captured.status_code == 200, captured.text
    assert (captured.json()["status"], captured.json()["captured_credits"]) == ("captured", 25)
    charged = _post(api, agent, "/v1/charges", _body(amount_credits=5), **{"Idempotency-Key": "call-2"})
    assert charged.status_code == 201, charged.text

    balance = api.client.get("/v1/balance", headers=agent.headers("GET", "/v1/balance"))
    assert balance.json()["available_credits"] == 670


def test_a_signature_by_another_key_is_refused(api: Api, agent: Agent) -> None:
    agent.join(api, credits=700)
    before = api.snapshot()

    forged = agent.headers("GET", "/v1/balance", signer=Account.create())
    response = api.client.get("/v1/balance", headers=forged)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_wallet_signature"
    assert api.snapshot() == before


def test_a_replayed_request_is_refused(api: Api, agent: Agent) -> None:
    agent.join(api, credits=700)
    body = _body(amount_credits=40)
    headers = {
        **agent.headers("POST", "/v1/charges", body),
        "Idempotency-Key": "once",
        "Content-Type": "application/json",
    }

    first = api.client.post("/v1/charges", content=body, headers=headers)
    assert first.status_code == 201, first.text
    before = api.snapshot()
    again = api.client.post("/v1/charges", content=body, headers={**headers, "Idempotency-Key": "twice"})

    assert again.status_code == 401
    assert again.json()["error"]["code"] == "wallet_nonce_reused"
    assert api.snapshot() == before


def test_the_same_nonce_is_a_new_one_for_another_wallet(api: Api, agent: Agent, other_agent: Agent) -> None:
    agent.join(api)
    other_agent.join(api)
    for wallet in (agent, other_agent):
        response = api.client.get("/v1/balance", headers=wallet.headers("GET", "/v1/balance", nonce="shared-nonce"))
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("offset_seconds", [-301, 301])
def test_a_timestamp_outside_the_window_is_refused(api: Api, agent: Agent, offset_seconds: int) -> None:
    agent.join(api, credits=700)
    before = api.snapshot()

    headers = agent.headers("GET", "/v1/balance", timestamp=int(time.time()) + offset_seconds)
    response = api.client.get("/v1/balance", headers=headers)

    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["details"]["window_seconds"]) == ("wallet_timestamp_out_of_window", 300)
    assert api.snapshot() == before


def test_a_body_altered_after_signing_is_refused(api: Api, agent: Agent) -> None:
    agent.join(api, credits=700)
    signed = agent.headers("POST", "/v1/charges", _body(amount_credits=1))
    before = api.snapshot()

    response = api.client.post(
        "/v1/charges",
        content=_body(amount_credits=500),
        headers={**signed, "Content-Type": "application/json", "Idempotency-Key": "altered"},
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_wallet_signature"
    assert api.snapshot() == before


def test_a_query_altered_after_signing_is_refused(api: Api, agent: Agent) -> None:
    agent.join(api)
    response = api.client.get("/v1/transactions?limit=50", headers=agent.headers("GET", "/v1/transactions?limit=1"))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_wallet_signature"


def test_another_accounts_hold_is_not_found_for_a_wallet(api: Api, agent: Agent) -> None:
    owner = api.customer("owner")
    held = api.client.post(
        "/v1/holds", json={"amount_credits": 40}, headers={**owner.headers, "Idempotency-Key": "owner-hold"}
    )
    assert held.status_code == 201, held.text
    hold_id = held.json()["id"]
    agent.join(api, credits=700)

    read = api.client.get(f"/v1/holds/{hold_id}", headers=agent.headers("GET", f"/v1/holds/{hold_id}"))
    captured = _post(api, agent, f"/v1/holds/{hold_id}/capture", _body(amount_credits=40))

    assert (read.status_code, read.json()["error"]["code"]) == (404, "hold_not_found")
    assert (captured.status_code, captured.json()["error"]["code"]) == (404, "hold_not_found")
    owners_view = api.client.get(f"/v1/holds/{hold_id}", headers=owner.headers)
    assert owners_view.json()["status"] == "active"


def test_a_wallet_without_an_account_is_told_so_and_nothing_is_written(api: Api, agent: Agent) -> None:
    before = api.snapshot()

    response = api.client.get("/v1/balance", headers=agent.headers("GET", "/v1/balance"))

    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["code"], error["details"]["wallet_address"]) == ("wallet_unknown", agent.address)
    assert api.snapshot() == before


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Wallet-Address", "0x1234"),
        ("X-Wallet-Signature", "0xabc"),
        ("X-Wallet-Timestamp", "yesterday"),
        ("X-Wallet-Timestamp", "99999999999"),
        ("X-Wallet-Nonce", "short"),
        ("X-Wallet-Nonce", ""),
    ],
)
def test_misshapen_wallet_headers_are_refused_before_the_body_is_read(
    api: Api, agent: Agent, header: str, value: str
) -> None:
    agent.join(api, credits=700)
    body = _body(amount_credits=1)
    headers = {**agent.headers("POST", "/v1/charges", body), header: value, "Idempotency-Key": "misshapen"}

    response = api.client.post("/v1/charges", content=body, headers=headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "malformed_wallet_headers"


def test_a_signature_that_recovers_nothing_is_refused(api: Api, agent: Agent) -> None:
    agent.join(api)
    headers = {**agent.headers("GET", "/v1/balance"), "X-Wallet-Signature": "0x" + "00" * 65}
    response = api.client.get("/v1/balance", headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (401, "invalid_wallet_signature")


def test_a_wallet_may_not_use_admin_endpoints(api: Api, agent: Agent) -> None:
    agent.join(api)
    response = api.client.get("/v1/admin/accounts", headers=agent.headers("GET", "/v1/admin/accounts"))
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")


def test_the_openapi_document_tells_the_signed_request_format(api: Api) -> None:
    scheme = api.client.get("/openapi.json").json()["components"]["securitySchemes"]["WalletSignature"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-Wallet-Signature")
    for line in ("creditrail-signed-request-v1", "<METHOD in upper case>", "<address in lower case>"):
        assert line in scheme["description"]


def test_one_nonce_sent_twice_at_once_is_accepted_once(pg_engine: Engine) -> None:
    """The first request spent the nonce and has not committed yet; the second waits on the unique (address,
    nonce), then is refused."""
    agent = Agent()
    with unit_of_work(pg_engine) as session:
        account_for_wallet(session, agent.address, now=utcnow(), create=True)
    signed = read_wallet_headers({name.lower(): value for name, value in agent.headers("GET", "/v1/balance").items()})
    first_spent = threading.Event()
    release_first = threading.Event()
    outcomes: dict[str, str] = {}

    def attempt(name: str, hold_open: bool) -> None:
        try:
            with unit_of_work(pg_engine) as session:
                authenticate_signed_request(session, signed, now=utcnow())
                if hold_open:
                    first_spent.set()
                    assert release_first.wait(30)
            outcomes[name] = "accepted"
        except WalletNonceReused:
            outcomes[name] = "wallet_nonce_reused"
        finally:
            first_spent.set()

    first = threading.Thread(target=attempt, args=("first", True))
    first.start()
    assert first_spent.wait(30)
    second = threading.Thread(target=attempt, args=("second", False))
    second.start()
    wait_until_blocked(pg_engine)
    release_first.set()
    first.join(30)
    second.join(30)

    assert outcomes == {"first": "accepted", "second": "wallet_nonce_reused"}


def test_a_signed_body_over_the_cap_is_refused_before_its_signature_is_checked(api: Api, agent: Agent) -> None:
    agent.join(api, credits=700)
    body = b'{"amount_credits": 1, "description": "' + b"x" * 2_000_000 + b'"}'
    headers = {**agent.headers("POST", "/v1/charges", body), "Content-Type": "application/json"}

    response = api.client.post("/v1/charges", content=body, headers={**headers, "Idempotency-Key": "big"})

    assert (response.status_code, response.json()["error"]["code"]) == (413, "payload_too_large")
    assert _used_nonces(api) == 0


def test_a_retry_signed_anew_with_the_same_idempotency_key_answers_the_first_answer(api: Api, agent: Agent) -> None:
    agent.join(api, credits=700)
    body = _body(amount_credits=30)

    first = _post(api, agent, "/v1/charges", body, **{"Idempotency-Key": "retry-me"})
    retried = _post(api, agent, "/v1/charges", body, **{"Idempotency-Key": "retry-me"})

    assert (first.status_code, retried.status_code) == (201, 201)
    assert retried.json() == {**first.json(), "replayed": True}
    assert retried.headers["Idempotent-Replayed"] == "true"
    balance = api.client.get("/v1/balance", headers=agent.headers("GET", "/v1/balance"))
    assert balance.json()["available_credits"] == 670
