"""Wallets as identity: the EVM addresses that act for a customer account.

- ``wallets``: one row per address (lowercased, unique), the account it belongs to and how it came to: ``purchase``
  (first seen paying), ``sign_in`` (first Sign-In-With-X), ``admin`` (bound by a platform or an admin) or ``link``
  (added by the account itself, with the wallet's signature).
- ``wallet_request_nonces``: the nonces of signed requests already used, unique per (address, nonce), so a signed
  request is accepted once; kept while the request's timestamp is inside the window, then purged by a job.
- ``wallet_challenges``: the nonces we issue for a Sign-In-With-X message or a link proof, each used once, before it
  expires.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from services.core.db import BigIntPK, UTCDateTime

ADDRESS_LENGTH = 42


class LinkedVia(StrEnum):
    PURCHASE = "purchase"
    SIGN_IN = "sign_in"
    ADMIN = "admin"
    LINK = "link"


class ChallengePurpose(StrEnum):
    SIGN_IN = "sign_in"
    LINK = "link"


class Wallet(SQLModel, table=True):
    __tablename__ = "wallets"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    # Lowercase 0x and 40 hex digits.
    address: str = Field(max_length=ADDRESS_LENGTH)
    account_id: int = Field(sa_column=Column(BigInteger, ForeignKey("accounts.id"), nullable=False, index=True))
    linked_via: str = Field(max_length=16)
    created_at: datetime = Field(sa_type=UTCDateTime)

    __table_args__ = (
        UniqueConstraint("address", name="uq_wallets_address"),
        CheckConstraint("linked_via IN ('purchase', 'sign_in', 'admin', 'link')", name="ck_wallets_linked_via"),
    )


class WalletRequestNonce(SQLModel, table=True):
    __tablename__ = "wallet_request_nonces"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    address: str = Field(max_length=ADDRESS_LENGTH)
    nonce: str = Field(max_length=128)
    # The timestamp the request was signed with; the row can go once it is outside the window.
    signed_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime = Field(sa_type=UTCDateTime)

    __table_args__ = (
        UniqueConstraint("address", "nonce", name="uq_wallet_request_nonces_address_nonce"),
        Index("ix_wallet_request_nonces_signed_at", "signed_at"),
    )


class WalletChallenge(SQLModel, table=True):
    __tablename__ = "wallet_challenges"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    nonce: str = Field(max_length=64)
    purpose: str = Field(max_length=16)
    # A link challenge names the account the wallet is to join.
    account_id: int | None = Field(default=None, sa_column=Column(BigInteger, ForeignKey("accounts.id"), nullable=True))
    issued_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)

    __table_args__ = (
        UniqueConstraint("nonce", name="uq_wallet_challenges_nonce"),
        CheckConstraint("purpose IN ('sign_in', 'link')", name="ck_wallet_challenges_purpose"),
        CheckConstraint(
            "(purpose = 'link') = (account_id IS NOT NULL)", name="ck_wallet_challenges_link_names_account"
        ),
    )
