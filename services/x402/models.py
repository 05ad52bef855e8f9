"""The x402 rail's one table: ``x402_payments``, every signed payment we accepted to settle.

A payment is keyed twice, each key a unique constraint: by its EIP-3009 authorization, (chain id, payer, nonce),
which the token itself lets be used once; and by the x402 ``payment-identifier`` the client may send, with a
fingerprint of the request it paid for (the same identifier for another request is refused). It is written as
``settling`` in a unit of work of its own before anything is broadcast, and moves to ``settled`` (its transaction,
the deposit it made and the lot minted) or ``failed`` (with a code), never back.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from services.core.db import BigIntPK, UTCDateTime


class PaymentStatus(StrEnum):
    SETTLING = "settling"
    SETTLED = "settled"
    FAILED = "failed"


class X402Payment(SQLModel, table=True):
    __tablename__ = "x402_payments"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    chain_id: int = Field(sa_type=BigInteger)
    # Lowercase 0x hex: the payer (the authorization's ``from``), the token, the deposit address paid.
    payer: str = Field(max_length=42)
    # The EIP-3009 nonce, 0x and 64 lowercase hex digits.
    auth_nonce: str = Field(max_length=66)
    asset: str = Field(max_length=42)
    pay_to: str = Field(max_length=42)
    amount_usdc_units: int = Field(sa_type=BigInteger)
    credits: int = Field(sa_type=BigInteger)
    # The beneficiary account (the owner of pay_to).
    account_id: int = Field(sa_type=BigInteger)
    valid_before: int = Field(sa_type=BigInteger)
    # The x402 payment-identifier the client sent, if any.
    payment_identifier: str | None = Field(default=None, max_length=128, nullable=True)
    # SHA-256 (hex) of the request paid for: credits, wallet, beneficiary.
    request_fingerprint: str = Field(max_length=64)
    x402_version: int = Field(sa_type=BigInteger)
    # The network as the payment named it (CAIP-2, or a v1 legacy name), for the answer's PAYMENT-RESPONSE.
    network: str = Field(max_length=64)
    status: str = Field(default=PaymentStatus.SETTLING, max_length=16)
    failure_code: str | None = Field(default=None, max_length=64, nullable=True)
    failure_message: str | None = Field(default=None, max_length=500, nullable=True)
    tx_hash: str | None = Field(default=None, max_length=66, nullable=True)
    deposit_id: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    lot_id: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    settled_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)

    __table_args__ = (
        UniqueConstraint("chain_id", "payer", "auth_nonce", name="uq_x402_payments_authorization"),
        UniqueConstraint("payment_identifier", name="uq_x402_payments_identifier"),
        CheckConstraint("amount_usdc_units > 0", name="ck_x402_payments_amount_positive"),
        CheckConstraint("status IN ('settling', 'settled', 'failed')", name="ck_x402_payments_status"),
        Index("ix_x402_payments_status_created", "status", "created_at"),
        Index("ix_x402_payments_account", "account_id", "created_at"),
    )
