"""The USDC rail's errors."""

from __future__ import annotations

from services.core.errors import Conflict, CreditrailError, InvalidRequest, NotFound


class UsdcRailOff(CreditrailError):
    code = "usdc_rail_off"
    status_code = 409


class ChainNotConfigured(NotFound):
    code = "chain_not_configured"


class DepositNotCreditable(CreditrailError):
    """A confirmed deposit that crediting refuses for good (its amount, ...): it is set aside for finance."""

    code = "deposit_not_creditable"
    status_code = 409

    def __init__(self, message: str, *, reason: str, **details: object) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class TokenDecimalsMismatch(CreditrailError):
    """The contract configured as a chain's USDC does not have the 6 decimals every conversion assumes."""

    code = "usdc_token_decimals_mismatch"
    status_code = 409


class DepositAmountOutOfBounds(InvalidRequest):
    """A payment request for less than the chain's minimum deposit (it would not be credited, only carried) or for
    more than one mint may be (it would be set aside)."""

    code = "amount_out_of_bounds"


class InvalidTransactionHash(CreditrailError):
    """Not a transaction hash: 0x and 64 hex digits."""

    code = "invalid_tx_hash"
    status_code = 400


class UnknownChain(InvalidRequest):
    """A chain id that is not one of the configured USDC chains (or the USDC rail is off)."""

    code = "unknown_chain"


class TransactionNotFound(NotFound):
    """The chain's node knows no mined transaction of that hash (unknown, or not mined yet)."""

    code = "transaction_not_found"


class TransactionReverted(InvalidRequest):
    """The transaction was mined but failed: it moved no tokens."""

    code = "transaction_reverted"


class NotADeposit(InvalidRequest):
    """The transaction carries no transfer of the chain's USDC to one of our deposit addresses."""

    code = "not_a_deposit"


class AlreadyCredited(Conflict):
    """Every deposit of the transaction was credited before (the details name their lots)."""

    code = "already_credited"
