"""An account links several wallets (each proving itself by signing a challenge that names the account), lists and
removes them; a platform binds a wallet to an existing account. A wallet of another account: 409."""

from __future__ import annotations

from typing import Any

from eth_account import Account

from tests.apikeys.conftest import create_session, session_headers
from tests.wallets.conftest import Agent, Api, personal_sign


def _challenge(api: Api, headers: dict[str, str], address: str) -> Any:
    return api.client.post("/v1/wallets/challenges", json={"wallet_address": address}, headers=headers)


def _link(api: Api, headers: dict[str, str], agent: Agent, *, signer: Any = None) -> Any:
    challenge = _challenge(api, headers, str(agent.account.address))
    assert challenge.status_code == 201, challenge.text
    found = challenge.json()
    proof = {
        "wallet_address": str(agent.account.address),
        "nonce": found["nonce"],
        "signature": personal_sign(signer or agent.account, found["message"]),
    }
    return api.client.post("/v1/wallets", json=proof, headers=headers)


def test_a_customer_links_two_wallets_lists_them_and_removes_one(api: Api, agent: Agent, other_agent: Agent) -> None:
    customer = api.customer()

    challenge = _challenge(api, customer.headers, agent.address).json()
    assert challenge["message"] == "\n".join(
        [
            "creditrail: link this wallet to an account",
            f"Account: {customer.account_id}",
            f"Wallet: {agent.address}",
            f"Nonce: {challenge['nonce']}",
            f"Expires At: {challenge['expires_at'].replace('+00:00', 'Z')}",
        ]
    )
    for wallet in (agent, other_agent):
        linked = _link(api, customer.headers, wallet)
        assert linked.status_code == 201, linked.text
        assert (linked.json()["account_id"], linked.json()["linked_via"]) == (customer.account_id, "link")
    listed = api.client.get("/v1/wallets", headers=customer.headers).json()["data"]
    assert {w["address"] for w in listed} == {agent.address, other_agent.address}

    # Each wallet now acts for the account.
    balance = api.client.get("/v1/balance", headers=other_agent.headers("GET", "/v1/balance"))
    assert balance.json()["account_id"] == customer.account_id

    removed = api.client.delete(f"/v1/wallets/{other_agent.account.address}", headers=customer.headers)
    assert removed.status_code == 204, removed.text
    after = api.client.get("/v1/balance", headers=other_agent.headers("GET", "/v1/balance"))
    assert (after.status_code, after.json()["error"]["code"]) == (403, "wallet_unknown")
    gone = api.client.delete(f"/v1/wallets/{other_agent.address}", headers=customer.headers)
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "wallet_not_linked")


def test_linking_the_same_wallet_again_changes_nothing(api: Api, agent: Agent) -> None:
    customer = api.customer()
    assert _link(api, customer.headers, agent).status_code == 201
    again = _link(api, customer.headers, agent)
    assert again.status_code == 200, again.text
    assert len(api.client.get("/v1/wallets", headers=customer.headers).json()["data"]) == 1


def test_a_wallet_of_another_account_cannot_be_linked(api: Api, agent: Agent) -> None:
    agent.join(api)
    customer = api.customer()
    before = api.snapshot()

    refused = _challenge(api, customer.headers, agent.address)

    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "wallet_already_linked")
    assert api.snapshot() == before


def test_a_proof_signed_by_another_key_or_for_another_account_is_refused(api: Api, agent: Agent) -> None:
    customer = api.customer("first")
    other = api.customer("second")

    forged = _link(api, customer.headers, agent, signer=Account.create())
    assert (forged.status_code, forged.json()["error"]["code"]) == (401, "invalid_wallet_signature")

    issued_to_other = _challenge(api, other.headers, agent.address).json()
    proof = {
        "wallet_address": agent.address,
        "nonce": issued_to_other["nonce"],
        "signature": personal_sign(agent.account, issued_to_other["message"]),
    }
    stolen = api.client.post("/v1/wallets", json=proof, headers=customer.headers)
    assert (stolen.status_code, stolen.json()["error"]["code"]) == (401, "challenge_invalid")
    assert api.client.get("/v1/wallets", headers=customer.headers).json()["data"] == []


def test_a_challenge_proves_one_link(api: Api, agent: Agent) -> None:
    customer = api.customer()
    challenge = _challenge(api, customer.headers, agent.address).json()
    proof = {
        "wallet_address": agent.address,
        "nonce": challenge["nonce"],
        "signature": personal_sign(agent.account, challenge["message"]),
    }
    assert api.client.post("/v1/wallets", json=proof, headers=customer.headers).status_code == 201
    assert api.client.delete(f"/v1/wallets/{agent.address}", headers=customer.headers).status_code == 204

    replayed = api.client.post("/v1/wallets", json=proof, headers=customer.headers)
    assert (replayed.status_code, replayed.json()["error"]["code"]) == (401, "challenge_invalid")


def test_a_person_session_may_not_manage_wallets(api: Api, agent: Agent) -> None:
    customer = api.customer()
    token = create_session(api, customer.account_id)["token"]
    response = api.client.get("/v1/wallets", headers=session_headers(token))
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden_for_session")


def test_a_platform_binds_a_wallet_to_an_existing_account(api: Api, agent: Agent) -> None:
    customer = api.customer()
    platform = api.client.post("/v1/admin/api-keys", json={"role": "platform"}, headers=api.admin).json()
    platform_headers = {"Authorization": f"Bearer {platform['key']}"}
    path = f"/v1/admin/accounts/{customer.account_id}/wallets"

    bound = api.client.post(path, json={"wallet_address": str(agent.account.address)}, headers=platform_headers)
    assert bound.status_code == 201, bound.text
    assert (bound.json()["address"], bound.json()["linked_via"]) == (agent.address, "admin")
    again = api.client.post(path, json={"wallet_address": agent.address}, headers=api.admin)
    assert again.status_code == 200, again.text
    listed = api.client.get(path, headers=platform_headers).json()["data"]
    assert [w["address"] for w in listed] == [agent.address]
    balance = api.client.get("/v1/balance", headers=agent.headers("GET", "/v1/balance"))
    assert (balance.json()["account_id"], balance.json()["available_credits"]) == (customer.account_id, 10_000)


def test_binding_refuses_a_wallet_of_another_account_a_bad_address_and_customers(api: Api, agent: Agent) -> None:
    agent.join(api)
    customer = api.customer()
    path = f"/v1/admin/accounts/{customer.account_id}/wallets"
    before = api.snapshot()

    taken = api.client.post(path, json={"wallet_address": agent.address}, headers=api.admin)
    bad = api.client.post(path, json={"wallet_address": "0xnot-an-address"}, headers=api.admin)
    by_customer = api.client.post(path, json={"wallet_address": agent.address}, headers=customer.headers)
    unknown = api.client.post(
        "/v1/admin/accounts/999999/wallets", json={"wallet_address": agent.address}, headers=api.admin
    )

    assert (taken.status_code, taken.json()["error"]["code"]) == (409, "wallet_already_linked")
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_wallet_address")
    assert (by_customer.status_code, by_customer.json()["error"]["code"]) == (403, "forbidden")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "account_not_found")
    assert api.snapshot() == before
