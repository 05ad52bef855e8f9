"""The review queue's table.

``finance_exceptions``: one queue of what a person must look at, from both rails: a payment the ledger cannot match
(an event for an unknown purchase, an amount that does not match, a deep chain reorganisation ...). Each item is
raised once per (rail, kind, reference), carries what is known about it, and is worked from ``open`` to ``resolved``
or ``ignored`` with who did it and the action taken (a new ledger transaction, or a note).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from services.core.db import BigIntPK, UTCDateTime


class ExceptionStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    IGNORED = "ignored"


class FinanceException(SQLModel, table=True):
    __tablename__ = "finance_exceptions"

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    # "card" or "usdc".
    rail: str = Field(max_length=16)
    # What went wrong, e.g. "unknown_purchase", "amount_mismatch", "deep_reorg".
    kind: str = Field(max_length=64)
    # The external item it is about, in one format per rail whoever raised it (services.review.service):
    # "usdc:<chain id>:<tx hash>:<log index>" or "card:<Stripe object id>", "#<qualifier>" for repeated ones.
    reference: str = Field(max_length=255)
    account_id: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    # The amounts at stake, where known, each in its own unit.
    amount_cents: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    amount_usdc_units: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    amount_credits: int | None = Field(default=None, sa_type=BigInteger, nullable=True)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, nullable=False)
    status: str = Field(default=ExceptionStatus.OPEN, max_length=16)
    created_at: datetime = Field(sa_type=UTCDateTime)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    resolved_by: str | None = Field(default=None, max_length=200)
    # The action taken (free text), written when the item leaves ``open``.
    resolution: str | None = Field(default=None, max_length=2000)
    # What closing it did: "mint", "clawback", "ignore", "note" or "rematched" (a later reconciliation matched it),
    # and the ledger transaction it made, when it made one.
    action: str | None = Field(default=None, max_length=32)
    transaction_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, ForeignKey("ledger_transactions.id"), nullable=True)
    )

    __table_args__ = (
        UniqueConstraint("rail", "kind", "reference", name="uq_finance_exceptions_rail_kind_reference"),
        Index("ix_finance_exceptions_status_created", "status", "created_at"),
    )
