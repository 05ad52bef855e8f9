"""ERC-20 ``Transfer`` logs decoded straight from the node's JSON (topics and data), without web3's event machinery.

``Transfer(address indexed from, address indexed to, uint256 value)`` puts ``from`` in topics[1], ``to`` in
topics[2] (each an address left-padded to 32 bytes) and ``value`` in data. Addresses and hashes stay lowercase hex.

Decoding is on the listener's hot path (thousands of logs per ``eth_getLogs`` answer), so :func:`decode_transfer_logs`
does the least per log: what repeats within one answer (block hashes and numbers, the token, the senders' and
recipients' topics) is lowercased or parsed once per answer, and each log is one tuple.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from chain.abi import TRANSFER_TOPIC
from chain.addresses import checksum

_ADDRESS_TOPIC_PREFIX = "0x000000000000000000000000"
_TRANSFER_TOPIC_COUNT = 3
_UINT256_DATA_LENGTH = 66  # "0x" and 64 hex digits


class NotAnErc20TransferError(ValueError):
    """The log is not a well-formed ERC-20 ``Transfer`` (another event, an ERC-721 transfer, malformed data)."""


class TransferLog(NamedTuple):
    """One ERC-20 ``Transfer`` log (immutable). Addresses and hashes are lowercase ``0x`` hex; ``value_units`` is in
    the token's base units (USDC: 6 decimals). A log is identified by ``(chain_id, tx_hash, log_index)``.
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
    if len(topics) != _TRANSFER_TOPIC_COUNT or len(data) != _UINT256_DATA_LENGTH or topics[0].lower() != TRANSFER_TOPIC:
        raise NotAnErc20TransferError(f"not an ERC-20 Transfer: {len(topics)} topics, {len(data)} data chars")
    from_address = _topic_address(topics[1])
    to_address = _topic_address(topics[2])
    if not (from_address and to_address):
        raise NotAnErc20TransferError("address topics are not zero-padded")
    return TransferLog(
        chain_id,
        int(raw["blockNumber"], 16),
        raw["blockHash"].lower(),
        raw["transactionHash"].lower(),
        int(raw["logIndex"], 16),
        raw["address"].lower(),
        from_address,
        to_address,
        int(data, 16),
    )


def _topic_address(topic: str) -> str:
    """The address in a zero-padded 32-byte topic, lowercase; ``""`` if the topic is not a padded address."""
    lowered = topic.lower()
    return "0x" + lowered[len(_ADDRESS_TOPIC_PREFIX) :] if lowered.startswith(_ADDRESS_TOPIC_PREFIX) else ""


@dataclass(frozen=True, slots=True)
class DecodedLogs:
    """Decoded transfers, plus how many raw logs were left out and why."""

    transfers: list[TransferLog]
    not_erc20_count: int
    removed_count: int
    # Well-formed transfers left out by the ``tokens`` / ``recipients`` filters of decode_transfer_logs.
    unwanted_count: int = 0


def decode_transfer_logs(
    raws: Iterable[Mapping[str, Any]],
    chain_id: int,
    *,
    tokens: Collection[str] | None = None,
    recipients: Collection[str] | None = None,
) -> DecodedLogs:
    """Decode many raw logs, skipping (and counting) the ones that are not ERC-20 ``Transfer`` logs and the ones a
    node flagged ``removed`` (dropped by a reorganisation). With ``tokens`` and/or ``recipients`` (lowercase hex),
    only the transfers of those tokens to those recipients are kept (the others counted as unwanted).

    Gives what :func:`decode_transfer_log` gives for each log, in order.
    """
    transfers: list[TransferLog] = []
    append = transfers.append
    make = tuple.__new__
    # Within one answer, block hashes, block numbers, the token and the address topics repeat: each distinct text
    # is lowercased (or parsed) once. Transaction hashes are mostly distinct and are lowercased per log.
    lowered: dict[str, str] = {}
    numbers: dict[str, int] = {}
    addresses: dict[str, str] = {}
    known_lowered, known_number, known_address = lowered.get, numbers.get, addresses.get
    transfer_topic = TRANSFER_TOPIC
    not_erc20 = removed = unwanted = 0
    for raw in raws:
        if raw.get("removed"):
            removed += 1
            continue
        topics = raw["topics"]
        data: str = raw["data"]
        if len(topics) != _TRANSFER_TOPIC_COUNT or len(data) != _UINT256_DATA_LENGTH:
            not_erc20 += 1
            continue
        topic0, from_topic, to_topic = topics
        if topic0 != transfer_topic and topic0.lower() != transfer_topic:
            not_erc20 += 1
            continue
        from_address = known_address(from_topic)
        if from_address is None:
            from_address = addresses[from_topic] = _topic_address(from_topic)
        to_address = known_address(to_topic)
        if to_address is None:
            to_address = addresses[to_topic] = _topic_address(to_topic)
        if not (from_address and to_address):
            not_erc20 += 1
            continue
        raw_token = raw["address"]
        token = known_lowered(raw_token)
        if token is None:
            token = lowered[raw_token] = raw_token.lower()
        raw_block_hash = raw["blockHash"]
        block_hash = known_lowered(raw_block_hash)
        if block_hash is None:
            block_hash = lowered[raw_block_hash] = raw_block_hash.lower()
        raw_number = raw["blockNumber"]
        block_number = known_number(raw_number)
        if block_number is None:
            block_number = numbers[raw_number] = int(raw_number, 16)
        log = make(
            TransferLog,
            (
                chain_id,
                block_number,
                block_hash,
                raw["transactionHash"].lower(),
                int(raw["logIndex"], 16),
                token,
                from_address,
                to_address,
                int(data, 16),
            ),
        )
        if (tokens is not None and token not in tokens) or (recipients is not None and to_address not in recipients):
            unwanted += 1
        else:
            append(log)
    return DecodedLogs(transfers, not_erc20, removed, unwanted)
