"""API keys: shown once, stored as a SHA-256 digest (they are 256-bit random secrets), revocable, with a role."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, ForeignKey
from sqlmodel import Field, SQLModel

from services.core.db import BigIntPK, UTCDateTime


class Role(StrEnum):
    CUSTOMER = "customer"
    FINANCE = "finance"
    ADMIN = "admin"


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
