"""Recording events, inside the caller's transaction (the one that made the change they report).

:func:`record_event` writes the event once per dedupe key and, with it, one pending delivery for every enabled
webhook endpoint that wants its type: the event and its deliveries exist exactly when the change does. Nothing here
commits or sends; the worker delivers.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.events import repository as repo
from services.events.models import ALL_EVENT_TYPES, EventType


def new_public_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def wants(event_types: list[str], event_type: str) -> bool:
    """Whether an endpoint subscribed to ``event_types`` receives an event of ``event_type``."""
    return ALL_EVENT_TYPES in event_types or event_type in event_types


def record_event(
    session: Session,
    *,
    event_type: EventType,
    account_id: int,
    data: Mapping[str, Any],
    dedupe_key: str,
    now: datetime,
) -> bool:
    """Record that ``event_type`` happened to ``account_id`` (``data``: the event's object, JSON-ready, amounts as
    integers), once per ``dedupe_key``; whether it was recorded now (False: a retried change, already recorded)."""
    event_id = repo.insert_event(
        session,
        {
            "public_id": new_public_id("evt"),
            "dedupe_key": dedupe_key,
            "type": str(event_type),
            "account_id": account_id,
            "data": dict(data),
            "created_at": now,
        },
    )
    if event_id is None:
        return False
    targets = [row.id for row in repo.enabled_endpoints(session) if wants(list(row.event_types), event_type)]
    repo.insert_deliveries(session, event_id, targets, now)
    return True
