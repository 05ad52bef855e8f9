"""The wallets' errors. Each has a stable code and its HTTP status."""

from __future__ import annotations

from services.core.errors import Conflict, CreditrailError, NotFound


class InvalidWalletAddress(CreditrailError):
    code = "invalid_wallet_address"
    status_code = 400


class WalletUnknown(NotFound):
    """A wallet that acts for no account yet (until its first purchase or sign-in)."""

    code = "wallet_unknown"


class WalletNotLinked(NotFound):
    code = "wallet_not_linked"


class WalletAlreadyLinked(Conflict):
    code = "wallet_already_linked"
