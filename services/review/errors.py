"""The review queue's errors."""

from __future__ import annotations

from services.core.errors import Conflict, NotFound


class FinanceExceptionNotFound(NotFound):
    code = "finance_exception_not_found"


class FinanceExceptionClosed(Conflict):
    code = "finance_exception_closed"
