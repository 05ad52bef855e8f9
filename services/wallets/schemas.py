"""API shapes for wallets as identity."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from services.api.pages import Page
from services.api.types import MAX_BIGINT

# Checked and lowercased by the service (400 invalid_wallet_address), so that every spelling gets the same answer.
WalletAddress = Annotated[
    str, Field(min_length=1, max_length=100, examples=["0x52908400098527886e0f7030069857d2e4169ee7"])
]
Signature = Annotated[str, Field(min_length=1, max_length=200, description="0x and 130 hex digits (65 bytes)")]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiwxNonceIn(Request):
    wallet_address: WalletAddress | None = Field(
        default=None, description="The wallet that will sign in: the answer then carries the exact message to sign"
    )
    chain_id: Annotated[int, Field(strict=True, ge=1, le=MAX_BIGINT)] | None = Field(
        default=None, description="The EIP-155 chain id the message names (default: the first configured chain's)"
    )


class SiwxNonceOut(BaseModel):
    domain: str
    uri: str
    version: str
    chain_id: int
    nonce: str
    issued_at: datetime
    expiration_time: datetime
    statement: str
    message: str | None


class SiwxIn(Request):
    message: Annotated[str, Field(min_length=1, max_length=4096)]
    signature: Signature


class SiwxSessionOut(BaseModel):
    session_id: int
    token: str
    expires_at: datetime
    account_id: int
    wallet_address: str
    created_account: bool


class WalletOut(BaseModel):
    id: int
    address: str
    account_id: int
    linked_via: str
    created_at: datetime


WalletPage = Page[WalletOut]


class LinkChallengeIn(Request):
    wallet_address: WalletAddress


class LinkChallengeOut(BaseModel):
    nonce: str
    account_id: int
    wallet_address: str
    expires_at: datetime
    message: str


class LinkIn(Request):
    wallet_address: WalletAddress
    nonce: Annotated[str, Field(min_length=1, max_length=64)]
    signature: Signature


class BindIn(Request):
    wallet_address: WalletAddress
