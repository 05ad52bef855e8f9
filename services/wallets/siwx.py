"""Sign-In-With-X for EVM wallets: the EIP-4361 (CAIP-122) message, written out and read back.

The message is a fixed line format (EIP-4361's ABNF); only what creditrail issues and checks is read: the domain,
the address, an optional statement, URI, Version (1), Chain ID, Nonce, Issued At, and optionally Expiration Time,
Not Before, Request ID and Resources. Anything else, or the lines out of order, is not a message. The signature is
EIP-191 personal-sign over the message's exact text, recovered with eth-account; a smart-contract wallet (EIP-1271)
cannot sign in this way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eth_utils.address import to_checksum_address

from services.core.errors import CreditrailError

HEADER_SUFFIX = " wants you to sign in with your Ethereum account:"
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_NONCE = re.compile(r"[A-Za-z0-9]{8,64}")
_DOMAIN = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?")
_CHAIN_ID = re.compile(r"[1-9][0-9]{0,18}")
MAX_MESSAGE_LENGTH = 4_096


class SiwxMessageInvalid(CreditrailError):
    code = "siwx_message_invalid"
    status_code = 400


@dataclass(frozen=True, slots=True)
class SiwxMessage:
    domain: str
    address: str  # as written (EIP-55 checksum)
    uri: str
    chain_id: int
    nonce: str
    issued_at: datetime
    statement: str | None = None
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = field(default_factory=tuple)
    version: str = "1"


def timestamp_text(moment: datetime) -> str:
    """An RFC 3339 instant in UTC, to the second, as the message writes it (``2026-12-07T12:00:00Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_message(message: SiwxMessage) -> str:
    """The EIP-4361 text of ``message`` (the address written with its EIP-55 checksum)."""
    lines = [f"{message.domain}{HEADER_SUFFIX}", to_checksum_address(message.address), ""]
    if message.statement is not None:
        lines.append(message.statement)
    lines += [
        "",
        f"URI: {message.uri}",
        f"Version: {message.version}",
        f"Chain ID: {message.chain_id}",
        f"Nonce: {message.nonce}",
        f"Issued At: {timestamp_text(message.issued_at)}",
    ]
    if message.expiration_time is not None:
        lines.append(f"Expiration Time: {timestamp_text(message.expiration_time)}")
    if message.not_before is not None:
        lines.append(f"Not Before: {timestamp_text(message.not_before)}")
    if message.request_id is not None:
        lines.append(f"Request ID: {message.request_id}")
    if message.resources:
        lines.append("Resources:")
        lines += [f"- {resource}" for resource in message.resources]
    return "\n".join(lines)


def _instant(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise SiwxMessageInvalid(f"{name} needs its offset (Z for UTC)", field=name)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise SiwxMessageInvalid(f"{name} is not an RFC 3339 date and time", field=name) from None


def _take(lines: list[str], index: int, tag: str) -> str | None:
    if index < len(lines) and lines[index].startswith(f"{tag}: "):
        return lines[index][len(tag) + 2 :]
    return None


def parse_message(text: str) -> SiwxMessage:
    """Read an EIP-4361 message; anything that is not one: 400 ``siwx_message_invalid``."""
    if len(text) > MAX_MESSAGE_LENGTH or not all(c.isprintable() or c == "\n" for c in text):
        raise SiwxMessageInvalid("the message is too long or carries control characters")
    lines = text.split("\n")
    if len(lines) < 9 or not lines[0].endswith(HEADER_SUFFIX):
        raise SiwxMessageInvalid(f"the message must begin '<domain>{HEADER_SUFFIX}'")
    domain = lines[0].removesuffix(HEADER_SUFFIX)
    if not _DOMAIN.fullmatch(domain):
        raise SiwxMessageInvalid("the message's domain is not a host (and port)", field="domain")
    address = lines[1]
    if not _ADDRESS.fullmatch(address):
        raise SiwxMessageInvalid("the second line must be the wallet's address", field="address")
    if lines[2] != "":
        raise SiwxMessageInvalid("an empty line must follow the address")
    index = 3
    statement = None
    if lines[index] != "":
        statement = lines[index]
        index += 1
    if lines[index] != "":
        raise SiwxMessageInvalid("an empty line must come before 'URI:'")
    index += 1
    values: dict[str, str] = {}
    for tag in ("URI", "Version", "Chain ID", "Nonce", "Issued At"):
        value = _take(lines, index, tag)
        if value is None:
            raise SiwxMessageInvalid(f"the message needs its '{tag}:' line here", field=tag)
        values[tag] = value
        index += 1
    optional: dict[str, str] = {}
    for tag in ("Expiration Time", "Not Before", "Request ID"):
        value = _take(lines, index, tag)
        if value is not None:
            optional[tag] = value
            index += 1
    resources: list[str] = []
    if index < len(lines) and lines[index] == "Resources:":
        index += 1
        while index < len(lines) and lines[index].startswith("- "):
            resources.append(lines[index][2:])
            index += 1
    if index != len(lines):
        raise SiwxMessageInvalid(f"unexpected line {index + 1} in the message")
    if values["Version"] != "1":
        raise SiwxMessageInvalid("the message's Version must be 1", field="Version")
    if not _CHAIN_ID.fullmatch(values["Chain ID"]):
        raise SiwxMessageInvalid("the message's Chain ID must be a positive whole number", field="Chain ID")
    if not _NONCE.fullmatch(values["Nonce"]):
        raise SiwxMessageInvalid("the message's Nonce must be 8 or more letters and digits", field="Nonce")
    return SiwxMessage(
        domain=domain,
        address=address,
        uri=values["URI"],
        chain_id=int(values["Chain ID"]),
        nonce=values["Nonce"],
        issued_at=_instant(values["Issued At"], "Issued At"),
        statement=statement,
        expiration_time=_instant(optional["Expiration Time"], "Expiration Time")
        if "Expiration Time" in optional
        else None,
        not_before=_instant(optional["Not Before"], "Not Before") if "Not Before" in optional else None,
        request_id=optional.get("Request ID"),
        resources=tuple(resources),
    )
