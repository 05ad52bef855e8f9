"""Reads of an EIP-3009 token the x402 rail needs: its EIP-712 domain, whether an authorization was used (and by
which transaction), a holder's balance. Plain ``eth_call`` / ``eth_getLogs`` over the chain's RPC client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from chain.abi import event_topic
from chain.rpc import ChainRpc

AUTHORIZATION_USED_TOPIC = event_topic("AuthorizationUsed(address,bytes32)")
ZERO_ADDRESS = "0x" + "00" * 20


def calldata(signature: str, types: Sequence[str], args: Sequence[Any]) -> str:
    """ABI-encoded call: the 4-byte selector of ``signature`` and the encoded ``args``."""
    return "0x" + (keccak(text=signature)[:4] + abi_encode(list(types), list(args))).hex()


def _call(rpc: ChainRpc, token: str, data: str, block: str = "latest") -> bytes:
    raw = str(rpc.request("eth_call", [{"to": token, "data": data}, block]))
    return bytes.fromhex(raw.removeprefix("0x"))


def read_string(rpc: ChainRpc, token: str, signature: str) -> str:
    (value,) = abi_decode(["string"], _call(rpc, token, calldata(signature, [], [])))
    return str(value)


def authorization_used(rpc: ChainRpc, token: str, authorizer: str, nonce: str) -> bool:
    """``authorizationState(authorizer, nonce)``: whether the authorization was used (or canceled)."""
    data = calldata(
        "authorizationState(address,bytes32)", ["address", "bytes32"], [authorizer, bytes.fromhex(nonce[2:])]
    )
    (used,) = abi_decode(["bool"], _call(rpc, token, data))
    return bool(used)


def balance_of(rpc: ChainRpc, token: str, holder: str) -> int:
    (value,) = abi_decode(["uint256"], _call(rpc, token, calldata("balanceOf(address)", ["address"], [holder])))
    return int(value)


def authorization_used_tx(
    rpc: ChainRpc, token: str, authorizer: str, nonce: str, *, lookback_blocks: int
) -> str | None:
    """The transaction that used the authorization (its ``AuthorizationUsed`` log), searched over the last
    ``lookback_blocks`` blocks; None if there is none there."""
    head = rpc.block_number()
    logs = rpc.request(
        "eth_getLogs",
        [
            {
                "address": token,
                "fromBlock": hex(max(0, head - lookback_blocks)),
                "toBlock": hex(head),
                "topics": [AUTHORIZATION_USED_TOPIC, "0x" + "00" * 12 + authorizer[2:], nonce],
            }
        ],
    )
    for log in logs or []:
        if not log.get("removed"):
            return str(log["transactionHash"]).lower()
    return None
