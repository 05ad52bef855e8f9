"""The test token behaves like USDC: 6 decimals, owner-only mint, EIP-2612 permit, EIP-3009 authorisations."""

import secrets
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain.devchain import DevWallet, LocalToken, calldata, dev_account
from chain.errors import ChainResponseError

AUTH_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]
AUTH_ARGS = ["address", "address", "uint256", "uint256", "uint256", "bytes32", "uint8", "bytes32", "bytes32"]
FAR_FUTURE = 2**40


def domain(token: LocalToken) -> dict[str, Any]:
    return {"name": "Test USD Coin", "version": "2", "chainId": 31337, "verifyingContract": token.address}


def sign_authorization(
    payer: LocalAccount,
    token: LocalToken,
    primary_type: str,
    to: str,
    value_units: int,
    *,
    valid_before: int = FAR_FUTURE,
    nonce: bytes | None = None,
) -> tuple[bytes, list[Any]]:
    nonce = nonce or secrets.token_bytes(32)
    message = {
        "from": payer.address,
        "to": to,
        "value": value_units,
        "validAfter": 0,
        "validBefore": valid_before,
        "nonce": nonce,
    }
    signed = Account.sign_typed_data(payer.key, domain(token), {primary_type: AUTH_FIELDS}, message)
    args = [
        payer.address,
        to,
        value_units,
        0,
        valid_before,
        nonce,
        signed.v,
        signed.r.to_bytes(32, "big"),
        signed.s.to_bytes(32, "big"),
    ]
    return nonce, args


def auth_state(token: LocalToken, authorizer: str, nonce: bytes) -> bool:
    data = calldata("authorizationState(address,bytes32)", ["address", "bytes32"], [authorizer, nonce])
    return int(token.wallet.rpc.request("eth_call", [{"to": token.address, "data": data}, "latest"]), 16) == 1


def test_six_decimals_and_only_the_owner_mints(rpc, token):
    assert token.decimals() == 6
    stranger = DevWallet(rpc, dev_account(5))
    with pytest.raises(ChainResponseError):
        stranger.sign(token.address, token.mint_data(stranger.address, 1))


def test_transfer_with_authorization_moves_funds_once(rpc, wallet, token):
    payer = Account.create()
    payee = Account.create().address.lower()
    token.transfer(payer.address, 5_000_000)
    nonce, args = sign_authorization(payer, token, "TransferWithAuthorization", payee, 1_250_000)
    data = calldata(
        "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
        AUTH_ARGS,
        args,
    )

    receipt = wallet.transact(token.address, data)  # relayed by someone else: the payer needs no ether

    assert token.balance_units(payee) == 1_250_000
    assert token.balance_units(payer.address) == 3_750_000
    assert auth_state(token, payer.address, nonce)
    assert len(receipt["logs"]) == 2  # AuthorizationUsed and Transfer
    with pytest.raises(ChainResponseError):
        wallet.sign(token.address, data)  # a replay reverts
    altered = list(args)
    altered[2] = 2_000_000
    altered[5] = secrets.token_bytes(32)
    with pytest.raises(ChainResponseError):
        wallet.sign(
            token.address,
            calldata(
                "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
                AUTH_ARGS,
                altered,
            ),
        )


def test_expired_authorization_and_receive_by_someone_else_revert(rpc, wallet, token):
    payer = Account.create()
    token.transfer(payer.address, 1_000_000)
    _, expired = sign_authorization(payer, token, "TransferWithAuthorization", wallet.address, 1, valid_before=1)
    with pytest.raises(ChainResponseError):
        wallet.sign(
            token.address,
            calldata(
                "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
                AUTH_ARGS,
                expired,
            ),
        )
    other = Account.create().address
    _, receive = sign_authorization(payer, token, "ReceiveWithAuthorization", other, 1)
    receive_data = calldata(
        "receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
        AUTH_ARGS,
        receive,
    )
    with pytest.raises(ChainResponseError):
        wallet.sign(token.address, receive_data)  # the caller must be the payee


def test_permit_sets_an_allowance_from_a_signature(rpc, wallet, token):
    holder = Account.create()
    token.transfer(holder.address, 3_000_000)
    message = {
        "owner": holder.address,
        "spender": wallet.address,
        "value": 2_000_000,
        "nonce": 0,
        "deadline": FAR_FUTURE,
    }
    permit_fields = [
        {"name": n, "type": t}
        for n, t in [
            ("owner", "address"),
            ("spender", "address"),
            ("value", "uint256"),
            ("nonce", "uint256"),
            ("deadline", "uint256"),
        ]
    ]
    signed = Account.sign_typed_data(holder.key, domain(token), {"Permit": permit_fields}, message)
    wallet.transact(
        token.address,
        calldata(
            "permit(address,address,uint256,uint256,uint8,bytes32,bytes32)",
            ["address", "address", "uint256", "uint256", "uint8", "bytes32", "bytes32"],
            [
                holder.address,
                wallet.address,
                2_000_000,
                FAR_FUTURE,
                signed.v,
                signed.r.to_bytes(32, "big"),
                signed.s.to_bytes(32, "big"),
            ],
        ),
    )
    receiver = Account.create().address
    wallet.transact(
        token.address,
        calldata(
            "transferFrom(address,address,uint256)",
            ["address", "address", "uint256"],
            [holder.address, receiver, 2_000_000],
        ),
    )
    assert token.balance_units(receiver) == 2_000_000
    assert token.balance_units(holder.address) == 1_000_000
