"""ERC-20 ``Transfer`` logs decoded straight from the node's JSON (topics and data), without web3's event machinery.

``Transfer(address indexed from, address indexed to, uint256 value)`` puts ``from`` in topics[1], ``to`` in
topics[2] (each an address left-padded to 32 bytes) and ``value`` in data. Addresses and hashes stay lowercase hex.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chain.abi import TRANSFER_TOPIC
from chain.addresses import checksum

_ADDRESS_TOPIC_PREFIX = "0x000000000000000000000000"


class NotAnErc20TransferError(ValueError):
    """The log is not a well-formed ERC-20 ``Transfer`` (another event, an ERC-721 transfer, malformed data)."""


@dataclass(frozen=True, slots=True)
class TransferLog:
    """One ERC-20 ``Transfer`` log. Addresses and hashes are lowercase ``0x`` hex; ``value_units`` is in the token's
    base units (USDC: 6 decimals). A log is identified by ``(chain_id, tx_hash, log_index)``.
    """

    chain_id: int
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int
    token: str
    from_address: str
    to_address: str
    value_units: int

    @property
    def key(self) -> tuple[int, str, int]:
        """The log's identity on its chain: ``(chain_id, tx_hash, log_index)``."""
        return (self.chain_id, self.tx_hash, self.log_index)

    @property
    def is_zero_value(self) -> bool:
        """A transfer of nothing (address-poisoning spam, for instance): no deposit."""
        return self.value_units == 0

    def is_from_token(self, token: str) -> bool:
        """Whether the log was emitted by ``token`` (lowercase hex expected, as everywhere inside ``chain``)."""
        return self.token == token

    def display(self) -> dict[str, Any]:
        """The log with checksummed addresses, for people."""
        return {
            "chain_id": self.chain_id,
            "block_number": self.block_number,
            "block_hash": self.block_hash,
            "tx_hash": self.tx_hash,
            "log_index": self.log_index,
            "token": checksum(self.token),
            "from_address": checksum(self.from_address),
            "to_address": checksum(self.to_address),
            "value_units": self.value_units,
        }


def decode_transfer_log(raw: Mapping[str, Any], chain_id: int) -> TransferLog:
    """Decode one raw ``eth_getLogs`` item; raises :class:`NotAnErc20TransferError` if it is not an ERC-20
    ``Transfer``, and ``KeyError``/``ValueError`` if the node's JSON is malformed.
    """
    topics = raw["topics"]
    data: str = raw["data"]
    if len(topics) != 3 or len(data) != 66 or topics[0].lower() != TRANSFER_TOPIC:
        raise NotAnErc20TransferError(f"not an ERC-20 Transfer: {len(topics)} topics, {len(data)} data chars")
    from_topic: str = topics[1].lower()
    to_topic: str = topics[2].lower()
    if not (from_topic.startswith(_ADDRESS_TOPIC_PREFIX) and to_topic.startswith(_ADDRESS_TOPIC_PREFIX)):
        raise NotAnErc20TransferError("address topics are not zero-padded")
    return TransferLog(
        chain_id,
        int(raw["blockNumber"], 16),
        raw["blockHash"].lower(),
        raw["transactionHash"].lower(),
        int(raw["logIndex"], 16),
        raw["address"].lower(),
        "0x" + from_topic[26:],
        "0x" + to_topic[26:],
        int(data, 16),
    )


@dataclass(frozen=True, slots=True)
class DecodedLogs:
    """Decoded transfers, plus how many raw logs were left out and why."""

    transfers: list[TransferLog]
    not_erc20_count: int
    removed_count: int


def decode_transfer_logs(raws: Iterable[Mapping[str, Any]], chain_id: int) -> DecodedLogs:
    """Decode many raw logs, skipping (and counting) the ones that are not ERC-20 ``Transfer`` logs and the ones a
    node flagged ``removed`` (dropped by a reorganisation).
    """
    transfers: list[TransferLog] = []
    append = transfers.append
    not_erc20 = 0
    removed = 0
    for raw in raws:
        if raw.get("removed"):
            removed += 1
            continue
        try:
            append(decode_transfer_log(raw, chain_id))
        except NotAnErc20TransferError:
            not_erc20 += 1
    return DecodedLogs(transfers, not_erc20, removed)
