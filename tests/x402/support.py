"""The official x402 client, unmodified (its httpx transport and eth-account signer), allowed to pay the test
token, and hand-made payments for the refusal tests."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from x402 import x402Client
from x402.http.clients.httpx import x402_httpx_transport
from x402.http.utils import decode_payment_required_header
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.exact import ExactEvmClientScheme, register_exact_evm_client
from x402.schemas import PaymentPayload, PaymentRequirements


def official_client(account: LocalAccount, *, network: str, asset: str, cap_units: int = 10**9) -> x402Client:
    """The x402 client as an agent sets it up: its exact EVM scheme with an eth-account signer, and spend controls
    that allow our token (the client pays only assets it knows, up to $1, out of the box)."""
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(account))
    client.set_spend_controls(
        {"allowed_assets": [{"network": network, "asset": asset, "max_amount_per_payment": str(cap_units)}]}
    )
    return client


async def _post(client: x402Client, url: str, body: dict[str, Any], params: dict[str, Any] | None) -> httpx.Response:
    transport = x402_httpx_transport(client, httpx.AsyncHTTPTransport())
    async with httpx.AsyncClient(transport=transport, timeout=60) as http:
        response = await http.post(url, json=body, params=params)
        await response.aread()
        return response


def buy_with_official_client(
    client: x402Client, url: str, body: dict[str, Any], params: dict[str, Any] | None = None
) -> httpx.Response:
    return asyncio.run(_post(client, url, body, params))


def offered_requirement(response: httpx.Response) -> PaymentRequirements:
    required = decode_payment_required_header(response.headers["PAYMENT-REQUIRED"])
    requirement = required.accepts[0]
    assert isinstance(requirement, PaymentRequirements)
    return requirement


def sign_payment(
    account: LocalAccount,
    requirement: PaymentRequirements,
    *,
    extensions: dict[str, Any] | None = None,
    **changes: Any,
) -> str:
    """A ``PAYMENT-SIGNATURE`` header value: the client's exact scheme signing ``requirement`` with ``changes``
    made to it first (another amount, payTo, asset, network, a short timeout ...)."""
    signed_for = requirement.model_copy(update=changes)
    inner = ExactEvmClientScheme(EthAccountSigner(account)).create_payment_payload(signed_for)
    payload = PaymentPayload(x402_version=2, payload=inner, accepted=signed_for, extensions=extensions)
    return base64.b64encode(payload.model_dump_json(by_alias=True, exclude_none=True).encode()).decode()


def with_identifier(identifier: str) -> dict[str, Any]:
    return {"payment-identifier": {"info": {"required": False, "id": identifier}}}


def decode(value: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.b64decode(value))
    return decoded
