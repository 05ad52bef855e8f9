"""The ledger's errors. Each has a stable code and its HTTP status."""

from __future__ import annotations

from services.core.errors import Conflict, CreditrailError, InvalidRequest, NotFound


class InsufficientCredits(CreditrailError):
    code = "insufficient_credits"
    status_code = 402


class BudgetExceeded(CreditrailError):
    code = "budget_exceeded"
    status_code = 402


class AccountNotFound(NotFound):
    code = "account_not_found"


class LotNotFound(NotFound):
    code = "lot_not_found"


class HoldNotFound(NotFound):
    code = "hold_not_found"


class BudgetNotFound(NotFound):
    code = "budget_not_found"


class HoldNotActive(Conflict):
    code = "hold_not_active"


class HoldExpired(Conflict):
    code = "hold_expired"


class CaptureExceedsHold(Conflict):
    code = "capture_exceeds_hold"


class BudgetNameTaken(Conflict):
    code = "budget_name_taken"


class ReinstatementExceedsClawback(Conflict):
    code = "reinstatement_exceeds_clawback"


class InvalidAmount(InvalidRequest):
    code = "invalid_amount"


class NotACustomerAccount(InvalidRequest):
    code = "not_a_customer_account"


class InvalidEmail(InvalidRequest):
    code = "invalid_email"
