"""Deposit addresses derived from an extended public key, and EIP-681 payment URIs.

The service holds only an xpub, never the keys that control deposits. Addresses follow the usual Ethereum path
``m/44'/60'/0'/0/i`` (BIP-44, as eth-account, MetaMask and hardware wallets derive them):

- an account-level xpub (depth 3, ``m/44'/60'/0'``, what wallets export) derives ``0/i``;
- an external-chain xpub (depth 4, ``m/44'/60'/0'/0``) derives ``i``.
"""

from __future__ import annotations

from urllib.parse import urlencode

from bip32 import BIP32
from coincurve import PublicKey
from eth_utils.crypto import keccak

from chain.addresses import checksum, normalize_address

MAX_INDEX = 2**31 - 1
"""The highest non-hardened child index."""
_PRIVATE_PREFIXES = ("xprv", "tprv", "yprv", "zprv", "uprv", "vprv")


class XpubError(ValueError):
    """The extended public key is malformed, private, or at an unexpected depth."""


def public_key_to_address(public_key: bytes) -> str:
    """The Ethereum address (lowercase hex) of a secp256k1 public key (compressed or not)."""
    uncompressed = PublicKey(public_key).format(compressed=False)
    return "0x" + keccak(uncompressed[1:])[-20:].hex()


class DepositAddressDeriver:
    """Derives deposit addresses from one xpub; create once and reuse (the external-chain key is cached)."""

    def __init__(self, xpub: str) -> None:
        text = xpub.strip()
        if text.startswith(_PRIVATE_PREFIXES):
            raise XpubError("this is an extended private key: give the extended public key (xpub) only")
        try:
            node = BIP32.from_xpub(text)
        except Exception as exc:  # the bip32 package raises several unrelated types on bad input
            raise XpubError(f"not a valid extended public key: {exc}") from exc
        if node.privkey is not None:
            raise XpubError("this is an extended private key: give the extended public key (xpub) only")
        if node.depth == 3:
            chaincode, pubkey = node.get_extended_pubkey_from_path([0])
            node = BIP32(chaincode=chaincode, pubkey=pubkey, depth=4, network=node.network)
        elif node.depth != 4:
            raise XpubError(f"xpub at depth {node.depth}: expected depth 3 (m/44'/60'/0') or 4 (m/44'/60'/0'/0)")
        self._external_chain = node

    def address(self, index: int) -> str:
        """The deposit address (lowercase hex) at ``index``: ``m/44'/60'/0'/0/index``."""
        if not 0 <= index <= MAX_INDEX:
            raise ValueError(f"index must be within 0..{MAX_INDEX}, got {index}")
        return public_key_to_address(self._external_chain.get_pubkey_from_path([index]))

    def addresses(self, start: int, count: int) -> list[str]:
        return [self.address(index) for index in range(start, start + count)]


def derive_deposit_address(xpub: str, index: int) -> str:
    """One-off form of :meth:`DepositAddressDeriver.address`."""
    return DepositAddressDeriver(xpub).address(index)


def eip681_transfer_uri(*, token: str, chain_id: int, to: str, value_units: int) -> str:
    """An EIP-681 URI asking a wallet to send ``value_units`` of ``token`` to ``to`` on ``chain_id``:
    ``ethereum:<token>@<chainId>/transfer?address=<to>&uint256=<units>`` (checksummed addresses).
    """
    if chain_id < 1:
        raise ValueError("chain_id must be positive")
    if value_units < 0:
        raise ValueError("value_units must not be negative")
    query = urlencode({"address": checksum(normalize_address(to)), "uint256": str(value_units)})
    return f"ethereum:{checksum(token)}@{chain_id}/transfer?{query}"
