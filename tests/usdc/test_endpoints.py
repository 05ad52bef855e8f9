"""The USDC rail over HTTP: chains, the deposit address (as chain.hd derives it, with an EIP-681 URI) and deposits
with their confirmations so far."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from xml.etree import ElementTree

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from chain.addresses import checksum
from chain.devchain import LocalToken, mine
from chain.hd import DepositAddressDeriver, eip681_transfer_uri
from chain.rpc import ChainRpc
from services.apikeys.service import issue_key
from services.app.app import create_app
from services.core.db import unit_of_work
from services.core.settings import Settings
from services.ledger.accounts import create_customer_account
from services.usdc import repository as usdc_repo
from services.usdc.qr import qr_svg

from .conftest import CHAIN_ID, Rail, chain_settings_for, rail_settings
from .support import send_transfer


@dataclass
class UsdcApi:
    client: TestClient
    rail: Rail
    account_id: int
    headers: dict[str, str]


def customer_with_key(engine: Engine, name: str = "acme") -> tuple[int, dict[str, str]]:
    with unit_of_work(engine) as session:
        account_id = create_customer_account(session, name=name)
        issued = issue_key(session, role="customer", account_id=account_id)
    return account_id, {"Authorization": f"Bearer {issued.key}"}


def client_for(settings: Settings, engine: Engine) -> TestClient:
    return TestClient(create_app(settings, engine=engine), raise_server_exceptions=False)


@pytest.fixture
def api(engine: Engine, rpc: ChainRpc, token: LocalToken) -> Iterator[UsdcApi]:
    mine(rpc, 8)
    rail = Rail(engine, rail_settings(engine, chain_settings_for(rpc, token, confirmations=3)))
    account_id, headers = customer_with_key(engine)
    with client_for(rail.settings, engine) as client:
        yield UsdcApi(client, rail, account_id, headers)


def test_the_deposit_address_is_the_xpub_address_at_the_account_index_with_an_eip681_uri(
    api: UsdcApi, token: LocalToken
) -> None:
    response = api.client.get("/v1/usdc/deposit-address", params={"chain_id": CHAIN_ID}, headers=api.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = DepositAddressDeriver(api.rail.settings.usdc_xpub).address(api.account_id)
    assert body["address"] == checksum(expected)
    assert body["account_id"] == api.account_id
    assert body["chain_id"] == CHAIN_ID
    assert body["usdc_address"] == checksum(token.address)
    assert body["payment_uri"] == eip681_transfer_uri(
        token=token.address, chain_id=CHAIN_ID, to=expected, value_units=0
    )
    assert body["payment_uri"].startswith(f"ethereum:{checksum(token.address)}@{CHAIN_ID}/transfer?address=")
    assert (body["confirmations"], body["min_deposit_usdc_units"], body["carry_usdc_units"]) == (3, 1_000_000, 0)

    priced = api.client.get(
        "/v1/usdc/deposit-address",
        params={"chain_id": CHAIN_ID, "amount_usdc_units": 25_000_000},
        headers=api.headers,
    ).json()
    assert priced["address"] == body["address"]
    assert priced["payment_uri"] == eip681_transfer_uri(
        token=token.address, chain_id=CHAIN_ID, to=expected, value_units=25_000_000
    )
    with unit_of_work(api.rail.engine) as session:
        count = session.execute(select(func.count()).select_from(usdc_repo.addresses)).scalar_one()
        assert count == 1, "asked twice, created once"


def test_chains_and_refusals(api: UsdcApi, engine: Engine, token: LocalToken) -> None:
    chains = api.client.get("/v1/usdc/chains", headers=api.headers)
    assert chains.status_code == 200
    assert chains.json()["data"] == [
        {
            "chain_id": CHAIN_ID,
            "name": "anvil",
            "usdc_address": checksum(token.address),
            "confirmations": 3,
            "use_finalized": False,
            "min_deposit_usdc_units": 1_000_000,
        }
    ]
    unknown = api.client.get("/v1/usdc/deposit-address", params={"chain_id": 999}, headers=api.headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "chain_not_configured"
    bad = api.client.get("/v1/usdc/deposit-address", params={"chain_id": 0}, headers=api.headers)
    assert bad.status_code == 422
    assert api.client.get("/v1/usdc/deposit-address", params={"chain_id": CHAIN_ID}).status_code == 401

    off = Settings(environment="test", database_url=str(engine.url))
    with client_for(off, engine) as client:
        refused = client.get("/v1/usdc/deposit-address", params={"chain_id": CHAIN_ID}, headers=api.headers)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "usdc_rail_off"
        assert client.get("/v1/usdc/chains", headers=api.headers).json()["data"] == []


def test_deposits_show_their_confirmations_while_pending_and_then_credited(
    api: UsdcApi, rpc: ChainRpc, token: LocalToken
) -> None:
    address = api.client.get("/v1/usdc/deposit-address", params={"chain_id": CHAIN_ID}, headers=api.headers).json()[
        "address"
    ]
    _, block = send_transfer(token, address, 2_500_000)
    rail = api.rail

    def listed() -> dict[str, object]:
        response = api.client.get("/v1/usdc/deposits", headers=api.headers)
        assert response.status_code == 200, response.text
        [deposit] = response.json()["data"]
        return dict(deposit)

    assert api.client.get("/v1/usdc/deposits", headers=api.headers).json()["data"] == []
    rail.settle(rpc)
    first = listed()
    assert (first["status"], first["confirmations"], first["confirmations_required"]) == ("observed", 0, 3)
    assert (first["amount_usdc_units"], first["block_number"], first["credits_minted"]) == (2_500_000, block, None)

    mine(rpc, 2)
    rail.settle(rpc)
    assert (listed()["status"], listed()["confirmations"]) == ("observed", 2)

    mine(rpc, 1)
    rail.settle(rpc)
    done = listed()
    assert (done["status"], done["confirmations"], done["credits_minted"]) == ("credited", 3, 250)
    assert done["credited_at"] is not None
    assert done["lot_id"] is not None
    balance = api.client.get("/v1/balance", headers=api.headers)
    assert balance.status_code == 200
    assert balance.json()["total_credits"] == 250

    _other_id, other_headers = customer_with_key(rail.engine, "other")
    assert api.client.get("/v1/usdc/deposits", headers=other_headers).json()["data"] == [], "one's own deposits only"
    rail.assert_invariants()


def test_purchase_history_shows_deposits_pending_then_credited_beside_card_purchases(
    api: UsdcApi, rpc: ChainRpc, token: LocalToken
) -> None:
    address = api.client.get("/v1/usdc/deposit-address", params={"chain_id": CHAIN_ID}, headers=api.headers).json()[
        "address"
    ]
    send_transfer(token, address, 7_500_000)
    api.rail.settle(rpc)
    [pending] = api.client.get("/v1/purchases", headers=api.headers).json()["data"]
    assert (pending["rail"], pending["status"], pending["amount_usdc_units"], pending["credits"]) == (
        "usdc",
        "pending",
        7_500_000,
        750,
    )
    assert pending["details"]["confirmations"] == 0
    assert pending["completed_at"] is None

    mine(rpc, 3)
    api.rail.settle(rpc)
    [credited] = api.client.get("/v1/purchases", headers=api.headers).json()["data"]
    assert (credited["status"], credited["credits"], credited["details"]["confirmations"]) == ("credited", 750, 3)
    assert credited["lot_id"] is not None
    assert credited["reference"].startswith(f"{CHAIN_ID}:0x")


def test_a_deposit_set_aside_is_listed_with_its_reason_and_the_exact_amount(
    api: UsdcApi, rpc: ChainRpc, token: LocalToken
) -> None:
    address = api.client.get("/v1/usdc/deposit-address", params={"chain_id": CHAIN_ID}, headers=api.headers).json()[
        "address"
    ]
    huge = 2**64 + 1
    token.mint(token.wallet.address, huge)
    send_transfer(token, address, huge)
    mine(rpc, 3)
    api.rail.settle(rpc)

    [deposit] = api.client.get("/v1/usdc/deposits", headers=api.headers).json()["data"]
    assert (deposit["status"], deposit["set_aside_reason"]) == ("set_aside", "amount_too_large")
    assert deposit["amount_usdc_units"] == huge
    assert deposit["credits_minted"] is None


def test_the_payment_uri_is_the_exact_eip681_string_and_its_qr_code_an_svg(api: UsdcApi, token: LocalToken) -> None:
    address = DepositAddressDeriver(api.rail.settings.usdc_xpub).address(api.account_id)
    response = api.client.get(
        "/v1/usdc/deposit-address",
        params={"chain_id": CHAIN_ID, "amount_usdc_units": 12_500_000},
        headers=api.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["payment_uri"] == (
        f"ethereum:{checksum(token.address)}@{CHAIN_ID}/transfer?address={checksum(address)}&uint256=12500000"
    )
    svg = ElementTree.fromstring(body["qr_svg"])  # noqa: S314 - the server's own document, under test
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert svg.get("viewBox"), "sized by the page, not by the document"
    title = svg.find("{http://www.w3.org/2000/svg}title")
    assert title is not None
    assert title.text == "Pay USDC on anvil"
    assert svg.findall(".//{http://www.w3.org/2000/svg}path"), "the modules are drawn"
    # The QR code is the URI's: another amount draws another code.
    other = api.client.get(
        "/v1/usdc/deposit-address", params={"chain_id": CHAIN_ID, "amount_usdc_units": 1_000_000}, headers=api.headers
    ).json()
    assert other["qr_svg"] != body["qr_svg"]
    assert other["qr_svg"] == qr_svg(other["payment_uri"], title="Pay USDC on anvil")


def test_a_fixed_known_address_gives_a_known_uri() -> None:
    uri = eip681_transfer_uri(
        token="0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
        chain_id=1,
        to="0x00000000219ab540356cbb839cbe05303d7705fa",
        value_units=25_000_000,
    )
    assert uri == (
        "ethereum:0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48@1/transfer"
        "?address=0x00000000219ab540356cBB839Cbe05303d7705Fa&uint256=25000000"
    )


@pytest.mark.parametrize(
    ("amount", "status", "code"),
    [
        ("999999", 422, "amount_out_of_bounds"),  # below the chain's 1 USDC minimum
        ("1", 422, "amount_out_of_bounds"),
        (str(10**12 * 10_000 + 1), 422, "amount_out_of_bounds"),  # above what one mint may be
        ("-1", 422, "invalid_request"),
        ("2.5", 422, "invalid_request"),
        ("lots", 422, "invalid_request"),
        (str(2**63), 422, "invalid_request"),
    ],
)
def test_a_payment_amount_out_of_bounds_is_refused_and_writes_nothing(
    api: UsdcApi, amount: str, status: int, code: str
) -> None:
    response = api.client.get(
        "/v1/usdc/deposit-address", params={"chain_id": CHAIN_ID, "amount_usdc_units": amount}, headers=api.headers
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    with unit_of_work(api.rail.engine) as session:
        count = session.execute(select(func.count()).select_from(usdc_repo.addresses)).scalar_one()
    assert count == 0, "a refused request creates no deposit address"


def test_the_bounds_of_a_payment_amount_are_inclusive(api: UsdcApi) -> None:
    for amount in (0, 1_000_000, 10**12 * 10_000):
        response = api.client.get(
            "/v1/usdc/deposit-address", params={"chain_id": CHAIN_ID, "amount_usdc_units": amount}, headers=api.headers
        )
        assert response.status_code == 200, (amount, response.text)
        assert response.json()["payment_uri"].endswith(f"&uint256={amount}")
