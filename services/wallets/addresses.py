"""A wallet's address, in the one spelling we keep: ``0x`` and 40 hex digits, lowercased."""

from __future__ import annotations

import re

from services.wallets.errors import InvalidWalletAddress

_ADDRESS = re.compile(r"0x[0-9a-f]{40}")


def normalize_wallet_address(text: str) -> str:
    """``text`` as a wallet address: ``0x`` and 40 hex digits, lowercased. Anything else: 400
    ``invalid_wallet_address``. (Mixed case is accepted without checking it as an EIP-55 checksum: the signature
    that comes with the address proves it.)"""
    candidate = text.strip().lower() if isinstance(text, str) else ""
    if not _ADDRESS.fullmatch(candidate):
        raise InvalidWalletAddress("a wallet address is 0x followed by 40 hexadecimal digits", field="wallet_address")
    return candidate
