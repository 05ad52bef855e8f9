"""ABI JSON shipped in the ``contracts_abi`` package, and the event topics the scanner filters on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, cast

from eth_utils.crypto import keccak

AbiEntry = dict[str, Any]
Abi = list[AbiEntry]

_PACKAGE = "contracts_abi"


def event_topic(signature: str) -> str:
    """topic0 of an event, e.g. ``event_topic("Transfer(address,address,uint256)")``, lowercase ``0x`` hex."""
    return "0x" + keccak(text=signature).hex()


TRANSFER_EVENT_SIGNATURE = "Transfer(address,address,uint256)"
TRANSFER_TOPIC = event_topic(TRANSFER_EVENT_SIGNATURE)
"""topic0 of ERC-20 (and ERC-721) ``Transfer``."""


def _read_json(filename: str) -> Any:
    text = resources.files(_PACKAGE).joinpath(filename).read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _load_abi_cached(filename: str) -> str:
    return json.dumps(_read_json(filename))


def load_abi(filename: str) -> Abi:
    """The ABI in ``contracts_abi/<filename>`` (a fresh copy each call, so callers may mutate it)."""
    return cast(Abi, json.loads(_load_abi_cached(filename)))


def usdc_abi() -> Abi:
    """ERC-20 with EIP-2612 ``permit`` and EIP-3009 authorisations, as USDC exposes them."""
    return load_abi("usdc.json")


@dataclass(frozen=True)
class ContractArtifact:
    """A compiled contract checked into ``contracts_abi``: ABI and creation bytecode."""

    contract_name: str
    abi: Abi
    bytecode: str
    deployed_bytecode: str
    source_path: str
    source_sha256: str
    compiler_version: str


def load_artifact(contract_name: str) -> ContractArtifact:
    """The artifact ``contracts_abi/<contract_name>.bytecode.json`` written by ``scripts/compile_token.js``."""
    raw = _read_json(f"{contract_name}.bytecode.json")
    return ContractArtifact(
        contract_name=str(raw["contractName"]),
        abi=cast(Abi, raw["abi"]),
        bytecode=str(raw["bytecode"]),
        deployed_bytecode=str(raw["deployedBytecode"]),
        source_path=str(raw["sourcePath"]),
        source_sha256=str(raw["sourceSha256"]),
        compiler_version=str(raw["compiler"]["version"]),
    )


def load_test_usdc_artifact() -> ContractArtifact:
    """The compiled ``contracts/TestUSDC.sol``."""
    return load_artifact("TestUSDC")


def abi_signature(entry: AbiEntry) -> str:
    """``name(type,...)`` of a function, event or error entry (tuples expanded), e.g. ``transfer(address,uint256)``."""
    return f"{entry['name']}({','.join(_canonical_type(item) for item in entry.get('inputs', []))})"


def _canonical_type(item: AbiEntry) -> str:
    kind = str(item["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(component) for component in item.get("components", []))
        return f"({inner}){kind[len('tuple') :]}"
    return kind
