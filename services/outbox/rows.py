"""The outbox's row shapes (see ``services.core.rows``): SQLAlchemy's rows as they come, typed by a Protocol."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from services.core.rows import RowShape


class MessageRow(RowShape, Protocol):
    """A row of ``outbox_messages``."""

    id: int
    dedupe_key: str
    channel: str
    kind: str
    account_id: int
    lot_id: int | None
    recipient: str
    subject: str
    body_text: str
    body_html: str
    message_id: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
