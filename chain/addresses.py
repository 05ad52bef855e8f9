"""Address and hash normalisation.

Internally every address, hash and topic is lowercase ``0x``-prefixed hex; checksummed addresses (EIP-55) are for
display only.
"""

from __future__ import annotations

import re

from eth_utils.address import to_checksum_address

_ADDRESS_RE = re.compile(r"^0x[0-9a-f]{40}$")
_CANONICAL_ADDRESS_RE = re.compile(r"0x[0-9a-f]{40}")
_HASH_RE = re.compile(r"^0x[0-9a-f]{64}$")
_TOPIC_PAD = "0x" + "0" * 24


def normalize_address(address: str) -> str:
    """``address`` as lowercase ``0x`` hex; raises ``ValueError`` if it is not 20 bytes of hex.

    A mixed-case address must carry a valid EIP-55 checksum, so a mistyped address is refused rather than used.
    """
    if _CANONICAL_ADDRESS_RE.fullmatch(address):
        return address  # already lowercase 0x hex (the scanner normalises its watched addresses on every scan)
    text = address.strip()
    if not text.startswith(("0x", "0X")):
        text = "0x" + text
    lowered = "0x" + text[2:].lower()
    if not _ADDRESS_RE.match(lowered):
        raise ValueError(f"not an address: {address!r}")
    body = text[2:]
    if body != body.lower() and body != body.upper() and to_checksum_address(lowered) != text:
        raise ValueError(f"bad EIP-55 checksum: {address!r}")
    return lowered


def normalize_hash(value: str) -> str:
    """A 32-byte hash (block, transaction, topic) as lowercase ``0x`` hex."""
    lowered = value.strip().lower()
    if not lowered.startswith("0x"):
        lowered = "0x" + lowered
    if not _HASH_RE.match(lowered):
        raise ValueError(f"not a 32-byte hash: {value!r}")
    return lowered


def checksum(address: str) -> str:
    """The EIP-55 checksummed form of ``address``, for display."""
    return str(to_checksum_address(normalize_address(address)))


def address_topic(address: str) -> str:
    """``address`` left-padded to a 32-byte log topic, as indexed address arguments are stored."""
    return _TOPIC_PAD + normalize_address(address)[2:]
