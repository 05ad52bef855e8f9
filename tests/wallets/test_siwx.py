"""Sign-In-With-X through the API: an agent asks for a nonce, writes and signs the EIP-4361 message itself, and gets
a short-lived session acting for its wallet's account (made on its first sign-in). A message for another domain,
expired, or with a nonce used before is refused with a code, and makes no account and no session."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from services.apikeys.sessions import customer_sessions
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import Settings
from services.wallets import tasks
from services.wallets.challenges import ChallengeInvalid, issue_sign_in, sign_in
from services.wallets.repository import challenges, request_nonces, wallets
from tests.wallets.conftest import Agent, Api, personal_sign
from tests.wallets.test_identity import wait_until_blocked


def eip4361(agent: Agent, fields: dict[str, Any], **changes: Any) -> str:
    """The message an agent writes from the nonce's fields (EIP-4361, with a statement)."""
    values = {**fields, **changes}
    return "\n".join(
        [
            f"{values['domain']} wants you to sign in with your Ethereum account:",
            str(agent.account.address),
            "",
            "Sign in to creditrail with this wallet.",
            "",
            f"URI: {values['uri']}",
            "Version: 1",
            f"Chain ID: {values['chain_id']}",
            f"Nonce: {values['nonce']}",
            f"Issued At: {values['issued_at']}",
            f"Expiration Time: {values['expiration_time']}",
        ]
    )


def _nonce(api: Api, **body: Any) -> dict[str, Any]:
    response = api.client.post("/v1/wallets/siwx/nonce", json=body)
    assert response.status_code == 201, response.text
    fields: dict[str, Any] = response.json()
    fields["issued_at"] = fields["issued_at"].replace("+00:00", "Z")
    fields["expiration_time"] = fields["expiration_time"].replace("+00:00", "Z")
    return fields


def _sign_in(api: Api, agent: Agent, message: str) -> Any:
    return api.client.post(
        "/v1/wallets/siwx", json={"message": message, "signature": personal_sign(agent.account, message)}
    )


def _count(api: Api, table: Any) -> int:
    with api.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_first_sign_in_makes_the_account_and_a_session_that_acts_as_a_customer_key(api: Api, agent: Agent) -> None:
    fields = _nonce(api)
    signed_in = _sign_in(api, agent, eip4361(agent, fields))

    assert signed_in.status_code == 201, signed_in.text
    session = signed_in.json()
    assert (session["wallet_address"], session["created_account"]) == (agent.address, True)
    assert session["token"].startswith("crs_")
    bearer = {"Authorization": f"Bearer {session['token']}"}
    balance = api.client.get("/v1/balance", headers=bearer)
    assert balance.status_code == 200, balance.text
    assert balance.json()["account_id"] == session["account_id"]
    # Unlike a person's session, a wallet's session may place holds (with no credits yet: 402).
    hold = api.client.post("/v1/holds", json={"amount_credits": 10}, headers={**bearer, "Idempotency-Key": "h1"})
    assert (hold.status_code, hold.json()["error"]["code"]) == (402, "insufficient_credits")
    mine = api.client.get("/v1/session", headers=bearer)
    assert mine.status_code == 200, mine.text
    wallet_list = api.client.get("/v1/wallets", headers=bearer)
    assert [(w["address"], w["linked_via"]) for w in wallet_list.json()["data"]] == [(agent.address, "sign_in")]

    again = _sign_in(api, agent, eip4361(agent, _nonce(api)))
    assert again.status_code == 201, again.text
    assert (again.json()["account_id"], again.json()["created_account"]) == (session["account_id"], False)


def test_the_nonce_answer_carries_the_exact_message_when_given_the_wallet(api: Api, agent: Agent) -> None:
    fields = _nonce(api, wallet_address=agent.address, chain_id=84532)
    assert fields["chain_id"] == 84532
    assert fields["message"] == eip4361(agent, fields)
    assert _sign_in(api, agent, fields["message"]).status_code == 201


def test_a_signed_in_wallet_can_sign_out(api: Api, agent: Agent) -> None:
    session = _sign_in(api, agent, eip4361(agent, _nonce(api))).json()
    bearer = {"Authorization": f"Bearer {session['token']}"}
    assert api.client.post("/v1/session/logout", headers=bearer).status_code == 204
    after = api.client.get("/v1/balance", headers=bearer)
    assert (after.status_code, after.json()["error"]["code"]) == (401, "session_revoked")


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"domain": "evil.example"}, "siwx_domain_mismatch"),
        ({"uri": "https://evil.example/"}, "siwx_domain_mismatch"),
        ({"expiration_time": "2020-01-01T00:00:00Z"}, "siwx_expired"),
        ({"issued_at": "2999-01-01T00:00:00Z"}, "siwx_expired"),
        ({"nonce": "0123456789abcdef0123456789abcdef"}, "challenge_invalid"),
    ],
)
def test_a_message_not_ours_or_out_of_time_is_refused(
    api: Api, agent: Agent, changes: dict[str, str], code: str
) -> None:
    message = eip4361(agent, _nonce(api), **changes)
    before = api.snapshot()

    response = _sign_in(api, agent, message)

    assert (response.status_code, response.json()["error"]["code"]) == (401, code)
    assert api.snapshot() == before


def test_a_nonce_is_good_for_one_sign_in(api: Api, agent: Agent) -> None:
    message = eip4361(agent, _nonce(api))
    assert _sign_in(api, agent, message).status_code == 201
    before = api.snapshot()

    replayed = _sign_in(api, agent, message)

    assert (replayed.status_code, replayed.json()["error"]["code"]) == (401, "challenge_invalid")
    assert api.snapshot() == before


def test_a_signature_by_another_wallet_is_refused(api: Api, agent: Agent, other_agent: Agent) -> None:
    message = eip4361(agent, _nonce(api))
    response = api.client.post(
        "/v1/wallets/siwx", json={"message": message, "signature": personal_sign(other_agent.account, message)}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (401, "invalid_wallet_signature")
    assert _count(api, wallets) == 0


@pytest.mark.parametrize(
    "message",
    [
        "hello",
        "example.com wants you to sign in with your Ethereum account:\n0x1234\n\n\nURI: x\nVersion: 1\n",
        "127.0.0.1:8000 wants you to sign in with your Ethereum account:\n" + "0x" + "ab" * 20 + "\n\n\n"
        "URI: http://127.0.0.1:8000\nVersion: 2\nChain ID: 1\nNonce: abcdefgh12\nIssued At: 2026-12-07T12:00:00Z",
        "127.0.0.1:8000 wants you to sign in with your Ethereum account:\n" + "0x" + "ab" * 20 + "\n\n\n"
        "URI: http://127.0.0.1:8000\nVersion: 1\nChain ID: 1\nNonce: abcdefgh12\nIssued At: 2026-12-07T12:00:00Z\n"
        "Expiration Time: 9999-12-31T23:59:59-01:00",
    ],
)
def test_a_text_that_is_not_an_eip4361_message_is_refused(api: Api, agent: Agent, message: str) -> None:
    response = _sign_in(api, agent, message)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "siwx_message_invalid")


def test_the_purge_job_forgets_expired_challenges_and_nonces_outside_the_window(api: Api, agent: Agent) -> None:
    agent.join(api)
    assert api.client.get("/v1/balance", headers=agent.headers("GET", "/v1/balance")).status_code == 200
    _nonce(api)
    assert (_count(api, request_nonces), _count(api, challenges)) == (1, 1)

    soon = datetime.now(UTC) + timedelta(seconds=60)
    with unit_of_work(api.engine) as session:
        assert tasks.purge_batch(session, soon, 100, window_seconds=300) == 0
    later = datetime.now(UTC) + timedelta(seconds=600)
    with unit_of_work(api.engine) as session:
        assert tasks.purge_batch(session, later, 1, window_seconds=300) == 1
    with unit_of_work(api.engine) as session:
        assert tasks.purge_batch(session, later, 100, window_seconds=300) == 1
    assert (_count(api, request_nonces), _count(api, challenges)) == (0, 0)
    assert _count(api, customer_sessions) == 0


def test_one_signed_message_sent_twice_at_once_signs_in_once(pg_engine: Engine) -> None:
    """The first sign-in spent the nonce and has not committed yet; the second waits on the challenge's row, then
    finds it used."""
    settings = Settings(environment="test")
    agent = Agent()
    with unit_of_work(pg_engine) as session:
        issued = issue_sign_in(session, settings, now=utcnow(), chain_id=1, wallet_address=agent.address)
    assert issued.message is not None
    message, signature = issued.message, personal_sign(agent.account, issued.message)
    first_spent = threading.Event()
    release_first = threading.Event()
    outcomes: dict[str, str] = {}

    def attempt(name: str, hold_open: bool) -> None:
        try:
            with unit_of_work(pg_engine) as session:
                sign_in(session, settings, message_text=message, signature=signature, now=utcnow())
                if hold_open:
                    first_spent.set()
                    assert release_first.wait(30)
            outcomes[name] = "signed_in"
        except ChallengeInvalid:
            outcomes[name] = "challenge_invalid"
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

    assert outcomes == {"first": "signed_in", "second": "challenge_invalid"}
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customer_sessions)).scalar_one() == 1
