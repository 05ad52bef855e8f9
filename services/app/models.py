"""Imports every domain's tables so that one metadata object describes the whole schema (for Alembic, and for tests
that create the schema from the models)."""

from __future__ import annotations

from sqlmodel import SQLModel

import services.alerts.models
import services.apikeys.models
import services.card.models
import services.events.models
import services.finance.models
import services.ledger.models
import services.outbox.models
import services.review.models
import services.usdc.models
import services.wallets.models
import services.worker.models  # noqa: F401

metadata = SQLModel.metadata
