"""The outbox's errors."""

from __future__ import annotations

from services.core.errors import NotFound


class ReceiptNotFound(NotFound):
    code = "receipt_not_found"
