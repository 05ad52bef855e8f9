"""API keys: shown once, stored as a SHA-256 digest (they are 256-bit random secrets), revocable, with a role."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Column, ForeignKey
from sqlmodel import Field, SQLModel

from services.core.db import BigIntPK, UTCDateTime


class Role(StrEnum):
    CUSTOMER = "customer"
    FINANCE = "finance"
    ADMIN = "admin"
    # The platform's backend: customer sessions, webhook endpoints and events, nothing else.
    PLATFORM = "platform"


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    # The public part of the key, printed in logs and listings.
    prefix: str = Field(max_length=32, unique=True)
    secret_sha256: str = Field(max_length=64)
    role: str = Field(max_length=16)
    # The customer account a customer key acts for (none for finance and admin keys).
    account_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("accounts.id"), nullable=True, index=True)
    )
    name: str = Field(default="", max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class CustomerSession(SQLModel, table=True):
    """A customer's browser session, asked for by the platform that signed the customer in: its token reads
    ``crs_<prefix>_<secret>``, shown once and stored as a digest, like an API key. It expires ``lifetime_seconds``
    after its last renewal, slides forward on use (``renewed_at`` at most once a minute), never past
    ``max_expires_at``."""

    __tablename__ = "customer_sessions"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    prefix: str = Field(max_length=32, unique=True)
    token_sha256: str = Field(max_length=64)
    account_id: int = Field(sa_column=Column(BigInteger, ForeignKey("accounts.id"), nullable=False, index=True))
    # The key (admin or platform) that created it; or, for a wallet's sign-in (Sign-In-With-X), the wallet.
    created_by_key_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("api_keys.id"), nullable=True)
    )
    wallet_id: int | None = Field(default=None, sa_column=Column(BigInteger, ForeignKey("wallets.id"), nullable=True))
    return_url: str | None = Field(default=None, max_length=2048, nullable=True)
    lifetime_seconds: int
    created_at: datetime = Field(sa_type=UTCDateTime)
    renewed_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    max_expires_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)

    __table_args__ = (
        CheckConstraint("(created_by_key_id IS NULL) <> (wallet_id IS NULL)", name="ck_customer_sessions_one_creator"),
    )
