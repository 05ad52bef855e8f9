"""Imports every domain's tables so that one metadata object describes the whole schema (for Alembic)."""

from __future__ import annotations

from sqlmodel import SQLModel

import services.apikeys.models
import services.ledger.models  # noqa: F401

metadata = SQLModel.metadata
