"""The alerts' errors. Each has a stable code and its HTTP status; the API renders them all the same way."""

from __future__ import annotations

from services.core.errors import InvalidRequest


class InvalidThreshold(InvalidRequest):
    """A low-balance threshold outside 1 .. the configured maximum amount."""

    code = "invalid_alert_threshold"
