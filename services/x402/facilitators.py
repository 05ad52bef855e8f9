"""Facilitators: who verifies a payment's signature and settles it on chain, behind one small interface.

- :class:`BuiltinFacilitator` runs the official x402 package's EVM ``exact`` facilitator
  (``x402.mechanisms.evm.exact.ExactEvmScheme``) over our own RPC client, and relays ``transferWithAuthorization``
  from a relayer key that holds gas only: the transfer goes from the payer to the beneficiary's deposit address, never
  through the relayer. The transaction is signed here, so its hash is known, and handed to ``on_broadcast``, before
  it is sent.
- :class:`ExternalFacilitator` calls a facilitator by URL over the x402 ``/verify``, ``/settle`` and ``/supported``
  API, with the package's HTTP facilitator client.

Neither opens a unit of work; the caller (services.x402.flows) records what they report.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import httpx
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from x402.http import FacilitatorConfig, HTTPFacilitatorClientSync
from x402.mechanisms.evm import constants as evm
from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme
from x402.mechanisms.evm.types import TransactionReceipt, TypedDataDomain, TypedDataField
from x402.schemas import (
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
)

from chain.addresses import checksum, normalize_address
from chain.errors import ChainResponseError, ChainRpcError
from chain.rpc import ChainRpc
from services.x402.token import balance_of

OnBroadcast = Callable[[str], None]


class Outcome(StrEnum):
    SETTLED = "settled"
    FAILED = "failed"
    # Broadcast (or perhaps broadcast) and not known yet: resolved by the receipt or authorizationState.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Settlement:
    outcome: Outcome
    tx_hash: str | None = None
    # Our code for a failure (services.x402.facilitators.failure_code), with the facilitator's message.
    code: str | None = None
    message: str | None = None


# The x402 package's reasons, as our codes.
_CODES = {
    evm.ERR_NONCE_ALREADY_USED: "authorization_used",
    evm.ERR_VALID_BEFORE_EXPIRED: "authorization_expired",
    evm.ERR_VALID_AFTER_FUTURE: "authorization_not_yet_valid",
    evm.ERR_INSUFFICIENT_BALANCE: "insufficient_balance",
    evm.ERR_INVALID_SIGNATURE: "invalid_signature",
    evm.ERR_FAILED_TO_VERIFY_SIGNATURE: "invalid_signature",
    evm.ERR_UNDEPLOYED_SMART_WALLET: "invalid_signature",
    evm.ERR_FACTORY_NOT_ALLOWED: "invalid_signature",
    evm.ERR_RECIPIENT_MISMATCH: "wrong_pay_to",
    evm.ERR_AUTHORIZATION_VALUE_MISMATCH: "wrong_amount",
    evm.ERR_NETWORK_MISMATCH: "wrong_chain",
    evm.ERR_UNSUPPORTED_SCHEME: "unsupported_scheme",
    evm.ERR_TOKEN_NAME_MISMATCH: "invalid_signature",
    evm.ERR_TOKEN_VERSION_MISMATCH: "invalid_signature",
    evm.ERR_EIP3009_NOT_SUPPORTED: "wrong_token",
    evm.ERR_ASSET_NOT_DEPLOYED_CONTRACT: "wrong_token",
    evm.ERR_TRANSACTION_FAILED: "transaction_reverted",
    evm.ERR_TRANSFER_EVENT_MISMATCH: "transaction_reverted",
    evm.ERR_TRANSACTION_SIMULATION_FAILED: "payment_invalid",
}


def failure_code(reason: str | None) -> str:
    return _CODES.get(reason or "", "payment_invalid")


class Facilitator(Protocol):
    name: str

    def verify(self, payload: PaymentPayload, requirement: PaymentRequirements) -> VerifyResponse: ...

    def settle(
        self, payload: PaymentPayload, requirement: PaymentRequirements, *, on_broadcast: OnBroadcast
    ) -> Settlement: ...


# EIP-3009 tokens revert with custom errors (selectors) or with strings; the x402 package reads reasons from the
# message text, so a custom error is named the way it understands.
_CUSTOM_ERRORS = {
    "0x" + keccak(text=signature)[:4].hex(): phrase
    for signature, phrase in (
        ("Expired()", "authorization is expired"),
        ("NotYetValid()", "authorization is not yet valid"),
        ("AuthorizationAlreadyUsed()", "authorization is used"),
        ("InsufficientBalance()", "transfer amount exceeds balance"),
        ("InvalidSignature()", "invalid signature"),
    )
}


# The node refused a transaction for its nonce (used already, or taken by another transaction waiting).
_NONCE_TAKEN = re.compile(r"nonce too low|already known|replacement transaction|nonce.*(used|taken|low)", re.I)
_NONCE_ATTEMPTS = 4


class ContractReverted(Exception):
    """An ``eth_call`` that reverted, its reason named as the x402 package reads it."""


def _reverted(exc: ChainResponseError) -> ContractReverted:
    data = exc.data if isinstance(exc.data, str) else ""
    phrase = _CUSTOM_ERRORS.get(data[:10].lower(), "")
    return ContractReverted(f"execution reverted: {phrase or str(exc)}")


@dataclass
class _Relayer:
    """One chain's relayer: the key, and the next nonce (kept here, re-read from the node after any doubt)."""

    rpc: ChainRpc
    account: LocalAccount
    gas_limit: int
    receipt_timeout_seconds: float
    lock: threading.Lock
    next_nonce: int | None = None
    base_fee: int | None = None
    base_fee_read_at: float = 0.0


def _abi_type(item: dict[str, Any]) -> str:
    """An ABI parameter's canonical type (a tuple spelled out as its components)."""
    kind = str(item["type"])
    if kind.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item.get("components", [])) + ")" + kind[len("tuple") :]
    return kind


def _encode_call(abi: list[dict[str, Any]], function_name: str, args: tuple[Any, ...]) -> tuple[str, tuple[str, ...]]:
    """The call data of ``function_name(*args)`` (the overload of as many inputs as there are ``args``), and its
    output types."""
    for entry in abi:
        if entry.get("type") == "function" and entry.get("name") == function_name:
            inputs = tuple(_abi_type(i) for i in entry.get("inputs", []))
            if len(inputs) == len(args):
                outputs = tuple(_abi_type(o) for o in entry.get("outputs", []))
                selector = keccak(text=f"{function_name}({','.join(inputs)})")[:4]
                return "0x" + (selector + abi_encode(list(inputs), list(args))).hex(), outputs
    raise ValueError(f"no function {function_name} of {len(args)} inputs in the ABI")


class _RelayerSigner:
    """The x402 package's ``FacilitatorEvmSigner`` over our RPC client and the relayer key, for one settlement
    (``on_broadcast`` is told each transaction's hash before it is sent)."""

    def __init__(self, relayer: _Relayer, on_broadcast: OnBroadcast | None = None) -> None:
        self._relayer = relayer
        self._rpc = relayer.rpc
        self._on_broadcast = on_broadcast

    def get_addresses(self) -> list[str]:
        return [self._relayer.account.address]

    def get_chain_id(self) -> int:
        return self._rpc.chain_id()

    def read_contract(self, address: str, abi: list[dict[str, Any]], function_name: str, *args: Any) -> Any:
        data, outputs = _encode_call(abi, function_name, args)
        try:
            call = {"to": normalize_address(address), "data": data, "from": self._relayer_address}
            raw = str(self._rpc.request("eth_call", [call, "latest"]))
        except ChainResponseError as exc:
            raise _reverted(exc) from exc
        if not outputs:
            return None
        values = abi_decode(list(outputs), bytes.fromhex(raw.removeprefix("0x")))
        return values[0] if len(values) == 1 else list(values)

    @property
    def _relayer_address(self) -> str:
        return normalize_address(self._relayer.account.address)

    def verify_typed_data(
        self,
        address: str,
        domain: TypedDataDomain,
        types: dict[str, list[TypedDataField]],
        primary_type: str,
        message: dict[str, Any],
        signature: bytes,
    ) -> bool:
        domain_dict: dict[str, Any] = {
            "name": domain.name,
            "version": domain.version,
            "chainId": domain.chain_id,
            "verifyingContract": domain.verifying_contract,
        }
        full_types = {name: [{"name": f.name, "type": f.type} for f in fields] for name, fields in types.items()}
        signable = encode_typed_data(domain_dict, full_types, message)
        try:
            return bool(Account.recover_message(signable, signature=signature).lower() == address.lower())
        except ValueError:
            return False

    def write_contract(
        self,
        address: str,
        abi: list[dict[str, Any]],
        function_name: str,
        *args: Any,
        data_suffix: str | None = None,
    ) -> str:
        data, _ = _encode_call(abi, function_name, args)
        if data_suffix:
            data += data_suffix.removeprefix("0x")
        return self._send(address, data)

    def send_transaction(self, to: str, data: bytes) -> str:
        return self._send(to, "0x" + data.hex())

    def _send(self, to: str, data: str) -> str:
        """Sign with the next nonce (handed out in order under the relayer's lock), tell ``on_broadcast`` the hash,
        then send; settlements record and send side by side. A nonce the node refuses (another process relaying
        from the same key took it) is read again from the node and the transaction signed again (its new hash
        recorded before it is sent); after any other failure the nonce is read again next time, so a gap left
        behind is filled by the next transaction."""
        relayer = self._relayer
        for attempt in range(_NONCE_ATTEMPTS):
            with relayer.lock:
                if relayer.next_nonce is None:
                    relayer.next_nonce = int(
                        self._rpc.request("eth_getTransactionCount", [self._relayer_address, "pending"]), 16
                    )
                nonce = relayer.next_nonce
                relayer.next_nonce += 1
                max_fee, tip = self._fees()
            tx: dict[str, Any] = {
                "type": 2,
                "chainId": self._rpc.chain_id(),
                "nonce": nonce,
                "gas": relayer.gas_limit,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": tip,
                "value": 0,
                "to": checksum(to),
                "data": data,
            }
            signed = relayer.account.sign_transaction(tx)
            tx_hash = signed.hash.to_0x_hex().lower()
            try:
                if self._on_broadcast is not None:
                    self._on_broadcast(tx_hash)
                self._rpc.request("eth_sendRawTransaction", [signed.raw_transaction.to_0x_hex()], retry_timeouts=False)
            except ChainResponseError as exc:
                with relayer.lock:
                    relayer.next_nonce = None
                if _NONCE_TAKEN.search(str(exc)) and attempt + 1 < _NONCE_ATTEMPTS:
                    continue
                raise
            except BaseException:
                # Not recorded, or perhaps sent: the nonce is read again from the node next time.
                with relayer.lock:
                    relayer.next_nonce = None
                raise
            return tx_hash
        raise AssertionError("unreachable")  # pragma: no cover

    def _fees(self) -> tuple[int, int]:
        """(max fee, tip) per gas: twice the latest base fee and a 1 gwei tip, the base fee read at most once a
        second (called under the relayer's lock)."""
        relayer = self._relayer
        now = time.monotonic()
        if relayer.base_fee is None or now - relayer.base_fee_read_at > 1.0:
            header = self._rpc.block_header("latest")
            relayer.base_fee = int(header["baseFeePerGas"], 16) if header and header.get("baseFeePerGas") else 10**9
            relayer.base_fee_read_at = now
        tip = 10**9
        return 2 * relayer.base_fee + tip, tip

    def wait_for_transaction_receipt(self, tx_hash: str) -> TransactionReceipt:
        receipt = wait_receipt(self._rpc, tx_hash, self._relayer.receipt_timeout_seconds)
        if receipt is None:
            raise TimeoutError(f"no receipt for {tx_hash} yet")
        return TransactionReceipt(
            status=int(receipt["status"], 16),
            block_number=int(receipt["blockNumber"], 16),
            tx_hash=tx_hash,
            logs=list(receipt.get("logs") or []),
        )

    def get_balance(self, address: str, token_address: str) -> int:
        return balance_of(self._rpc, normalize_address(token_address), normalize_address(address))

    def get_code(self, address: str) -> bytes:
        code = str(self._rpc.request("eth_getCode", [normalize_address(address), "latest"]))
        return bytes.fromhex(code.removeprefix("0x"))


def wait_receipt(rpc: ChainRpc, tx_hash: str, timeout_seconds: float) -> dict[str, Any] | None:
    """The transaction's receipt once mined, polled until ``timeout_seconds``; None if there is none by then."""
    deadline = time.monotonic() + timeout_seconds
    delay = 0.002
    while True:
        try:
            receipt = rpc.request("eth_getTransactionReceipt", [tx_hash])
        except ChainRpcError:
            receipt = None
        if isinstance(receipt, dict) and receipt.get("blockNumber"):
            return receipt
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.1)


class BuiltinFacilitator:
    """Verifies with the x402 package's exact EVM scheme and relays ``transferWithAuthorization`` itself."""

    name = "builtin"

    def __init__(
        self,
        rpcs: dict[int, ChainRpc],
        relayer_key: str,
        *,
        gas_limit: int = 150_000,
        receipt_timeout_seconds: float = 30.0,
    ) -> None:
        account: LocalAccount = Account.from_key(relayer_key)
        self.address = normalize_address(account.address)
        self._relayers = {
            chain_id: _Relayer(rpc, account, gas_limit, receipt_timeout_seconds, threading.Lock())
            for chain_id, rpc in rpcs.items()
        }

    def _scheme(
        self, requirement: PaymentRequirements, on_broadcast: OnBroadcast | None = None
    ) -> ExactEvmFacilitatorScheme:
        chain_id = int(str(requirement.network).removeprefix("eip155:"))
        return ExactEvmFacilitatorScheme(_RelayerSigner(self._relayers[chain_id], on_broadcast))

    def supported(self) -> SupportedResponse:
        kinds = [SupportedKind(x402_version=2, scheme="exact", network=f"eip155:{cid}") for cid in self._relayers]
        return SupportedResponse(kinds=kinds, signers={"eip155:*": [checksum(self.address)]})

    def verify(self, payload: PaymentPayload, requirement: PaymentRequirements) -> VerifyResponse:
        return self._scheme(requirement).verify(payload, requirement)

    def settle(
        self, payload: PaymentPayload, requirement: PaymentRequirements, *, on_broadcast: OnBroadcast
    ) -> Settlement:
        sent: list[str] = []

        def record(tx_hash: str) -> None:
            on_broadcast(tx_hash)
            sent.append(tx_hash)

        response = self._scheme(requirement, record).settle(payload, requirement)
        tx_hash = (response.transaction or "").lower() or (sent[-1] if sent else None)
        if response.success:
            return Settlement(Outcome.SETTLED, tx_hash)
        if sent or response.error_reason == evm.ERR_SETTLEMENT_PENDING:
            # A transaction went out (or may have): its receipt says what happened, not the error on the way.
            return Settlement(Outcome.UNKNOWN, tx_hash, message=response.error_message)
        return Settlement(
            Outcome.FAILED, None, code=failure_code(response.error_reason), message=response.error_message
        )

    def raw_settle(self, payload: PaymentPayload, requirement: PaymentRequirements) -> SettleResponse:
        """The x402 package's settle response as it is, for serving this facilitator over the x402 HTTP API."""
        return self._scheme(requirement).settle(payload, requirement)


class ExternalFacilitator:
    """A facilitator by URL, through the x402 package's HTTP client."""

    name = "external"

    def __init__(self, url: str, *, timeout_seconds: float = 30.0) -> None:
        self._client = HTTPFacilitatorClientSync(FacilitatorConfig(url=url, timeout=timeout_seconds))

    def supported(self) -> SupportedResponse:
        return self._client.get_supported()

    def verify(self, payload: PaymentPayload, requirement: PaymentRequirements) -> VerifyResponse:
        try:
            return self._client.verify(payload, requirement)
        except (httpx.HTTPError, ValueError) as exc:
            return VerifyResponse(is_valid=False, invalid_reason="facilitator_unavailable", invalid_message=str(exc))

    def settle(
        self, payload: PaymentPayload, requirement: PaymentRequirements, *, on_broadcast: OnBroadcast
    ) -> Settlement:
        try:
            response = self._client.settle(payload, requirement)
        except (httpx.HTTPError, ValueError) as exc:
            # The facilitator may have broadcast before the answer was lost: authorizationState will say.
            return Settlement(Outcome.UNKNOWN, None, message=str(exc)[:300])
        tx_hash = (response.transaction or "").lower() or None
        if tx_hash:
            on_broadcast(tx_hash)
        if response.success:
            return Settlement(Outcome.SETTLED, tx_hash)
        if tx_hash or response.error_reason == evm.ERR_SETTLEMENT_PENDING:
            return Settlement(Outcome.UNKNOWN, tx_hash, message=response.error_message)
        return Settlement(
            Outcome.FAILED, None, code=failure_code(response.error_reason), message=response.error_message
        )

    def close(self) -> None:
        self._client.close()
