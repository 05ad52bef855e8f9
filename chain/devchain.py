"""Development-chain helpers: a wallet sending locally signed raw transactions with explicit nonces, the TestUSDC
token (deploy, mint, transfer), and anvil's mining and reorganisation calls.

For local chains and tests only; the service itself never signs anything.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from chain.abi import load_test_usdc_artifact
from chain.addresses import checksum, normalize_address
from chain.errors import ChainResponseError
from chain.node import ANVIL_DEV_MNEMONIC
from chain.rpc import ChainRpc

PRIORITY_FEE_WEI = 1_000_000_000


def dev_account(index: int = 0, mnemonic: str = ANVIL_DEV_MNEMONIC) -> LocalAccount:
    """Account ``index`` of anvil's development mnemonic (funded with test ether on every anvil)."""
    Account.enable_unaudited_hdwallet_features()
    return cast(LocalAccount, Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{index}"))


def calldata(signature: str, types: Sequence[str], args: Sequence[Any]) -> str:
    """ABI-encoded call: the 4-byte selector of ``signature`` followed by the encoded ``args``."""
    return "0x" + (keccak(text=signature)[:4] + abi_encode(list(types), list(args))).hex()


@dataclass(frozen=True)
class SignedTx:
    """A signed transaction: ``raw`` (0x hex) as ``eth_sendRawTransaction`` and ``anvil_reorg`` take it."""

    raw: str
    tx_hash: str
    nonce: int


class DevWallet:
    """Signs and sends transactions for one account, numbering nonces itself (a burst of transactions without
    explicit nonces is refused by anvil as "replacement transaction underpriced").
    """

    def __init__(self, rpc: ChainRpc, account: LocalAccount) -> None:
        self.rpc = rpc
        self.account = account
        self.address = normalize_address(account.address)
        self._nonce: int | None = None

    def sync_nonce(self) -> int:
        """Re-read the next nonce from the node (after a reorganisation or a restart)."""
        self._nonce = int(self.rpc.request("eth_getTransactionCount", [self.address, "pending"]), 16)
        return self._nonce

    def _fees(self) -> tuple[int, int]:
        header = self.rpc.block_header("latest")
        base_fee = int(header["baseFeePerGas"], 16) if header and header.get("baseFeePerGas") else 1_000_000_000
        return 2 * base_fee + PRIORITY_FEE_WEI, PRIORITY_FEE_WEI

    def estimate_gas(self, to: str | None, data: str, value_wei: int = 0) -> int:
        call: dict[str, Any] = {"from": self.address, "data": data, "value": hex(value_wei)}
        if to is not None:
            call["to"] = to
        return int(self.rpc.request("eth_estimateGas", [call]), 16)

    def sign(
        self,
        to: str | None,
        data: str,
        *,
        gas: int | None = None,
        value_wei: int = 0,
        nonce: int | None = None,
    ) -> SignedTx:
        """Sign a transaction with the next nonce (or ``nonce``) without sending it. Without ``gas``, the gas is
        estimated (a call that would revert raises here, before a nonce is used).
        """
        if gas is None:
            gas = self.estimate_gas(to, data, value_wei) * 6 // 5
        if nonce is None:
            if self._nonce is None:
                self.sync_nonce()
            assert self._nonce is not None
            nonce = self._nonce
            self._nonce += 1
        max_fee, priority_fee = self._fees()
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.rpc.chain_id(),
            "nonce": nonce,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": priority_fee,
            "value": value_wei,
            "data": data,
        }
        if to is not None:
            tx["to"] = checksum(to)
        signed = self.account.sign_transaction(tx)
        return SignedTx(raw=signed.raw_transaction.to_0x_hex(), tx_hash=signed.hash.to_0x_hex().lower(), nonce=nonce)

    def send_signed(self, signed: SignedTx) -> str:
        return str(self.rpc.request("eth_sendRawTransaction", [signed.raw])).lower()

    def send(self, to: str | None, data: str, *, gas: int | None = None, value_wei: int = 0) -> str:
        """Sign and send; returns the transaction hash."""
        return self.send_signed(self.sign(to, data, gas=gas, value_wei=value_wei))

    def wait(self, tx_hash: str, timeout_seconds: float = 30.0) -> dict[str, Any]:
        """The receipt of ``tx_hash`` once mined (polled until ``timeout_seconds``); raises if it reverted."""
        return wait_for_receipt(self.rpc, tx_hash, timeout_seconds)

    def transact(self, to: str | None, data: str, *, gas: int | None = None) -> dict[str, Any]:
        return self.wait(self.send(to, data, gas=gas))


def wait_for_receipt(rpc: ChainRpc, tx_hash: str, timeout_seconds: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_seconds
    delay = 0.005
    while True:
        receipt = rpc.request("eth_getTransactionReceipt", [tx_hash])
        if isinstance(receipt, dict):
            if receipt.get("status") != "0x1":
                raise ChainResponseError(f"transaction {tx_hash} reverted", method="eth_getTransactionReceipt")
            return cast(dict[str, Any], receipt)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"transaction {tx_hash} not mined within {timeout_seconds:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class LocalToken:
    """The TestUSDC contract at ``address``, driven by a :class:`DevWallet`."""

    def __init__(self, wallet: DevWallet, address: str) -> None:
        self.wallet = wallet
        self.address = normalize_address(address)

    @classmethod
    def deploy(cls, wallet: DevWallet) -> LocalToken:
        """Deploy a new TestUSDC owned by ``wallet``'s account."""
        receipt = wallet.transact(None, load_test_usdc_artifact().bytecode)
        return cls(wallet, str(receipt["contractAddress"]))

    def _call(self, signature: str, types: Sequence[str], args: Sequence[Any]) -> str:
        return str(
            self.wallet.rpc.request(
                "eth_call", [{"to": self.address, "data": calldata(signature, types, args)}, "latest"]
            )
        )

    def balance_units(self, holder: str) -> int:
        return int(self._call("balanceOf(address)", ["address"], [normalize_address(holder)]), 16)

    def decimals(self) -> int:
        return int(self._call("decimals()", [], []), 16)

    def mint_data(self, to: str, value_units: int) -> str:
        return calldata("mint(address,uint256)", ["address", "uint256"], [normalize_address(to), value_units])

    def transfer_data(self, to: str, value_units: int) -> str:
        return calldata("transfer(address,uint256)", ["address", "uint256"], [normalize_address(to), value_units])

    def transfer_many_data(self, recipients: Sequence[str], value_units: int, rounds: int = 1) -> str:
        return calldata(
            "transferMany(address[],uint256,uint256)",
            ["address[]", "uint256", "uint256"],
            [[normalize_address(r) for r in recipients], value_units, rounds],
        )

    def mint(self, to: str, value_units: int) -> dict[str, Any]:
        """Mint ``value_units`` to ``to`` (the wallet must own the token); returns the receipt."""
        return self.wallet.transact(self.address, self.mint_data(to, value_units))

    def transfer(self, to: str, value_units: int) -> dict[str, Any]:
        return self.wallet.transact(self.address, self.transfer_data(to, value_units))

    def transfer_many(self, recipients: Sequence[str], value_units: int, rounds: int = 1) -> dict[str, Any]:
        """One transaction emitting ``len(recipients) * rounds`` Transfer logs."""
        return self.wallet.transact(self.address, self.transfer_many_data(recipients, value_units, rounds))


def has_code(rpc: ChainRpc, address: str) -> bool:
    """Whether a contract is deployed at ``address``."""
    return str(rpc.request("eth_getCode", [normalize_address(address), "latest"])) not in ("0x", "0x0")


def open_dev_token(rpc: ChainRpc, known_address: str | None, mint_units: int) -> LocalToken:
    """The TestUSDC at ``known_address`` if the chain still has it (a chain restored from its state file), else a
    new one deployed by development account 0 with ``mint_units`` minted to it."""
    wallet = DevWallet(rpc, dev_account(0))
    if known_address and has_code(rpc, known_address):
        return LocalToken(wallet, known_address)
    token = LocalToken.deploy(wallet)
    if mint_units:
        token.mint(wallet.address, mint_units)
    return token


def mine(rpc: ChainRpc, blocks: int = 1) -> None:
    """Mine ``blocks`` empty blocks at once (anvil)."""
    rpc.request("anvil_mine", [hex(blocks)])


def reorg(rpc: ChainRpc, depth: int, transactions: Sequence[tuple[SignedTx, int]] = ()) -> None:
    """Replace the last ``depth`` blocks (anvil); each ``(tx, offset)`` is included in replaced block ``offset``
    (0 = the first replaced block). Transactions of the replaced blocks not listed disappear.
    """
    rpc.request("anvil_reorg", [depth, [[tx.raw, offset] for tx, offset in transactions]])


def set_code(rpc: ChainRpc, address: str, code_hex: str) -> None:
    """Put ``code_hex`` (runtime bytecode, 0x hex) at ``address`` (anvil's ``anvil_setCode``)."""
    rpc.request("anvil_setCode", [normalize_address(address), code_hex])
