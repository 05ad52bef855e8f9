"""The wallets' errors. Each has a stable code and its HTTP status."""

from __future__ import annotations

from services.core.errors import Conflict, CreditrailError, Forbidden, NotFound, Unauthenticated


class InvalidWalletAddress(CreditrailError):
    code = "invalid_wallet_address"
    status_code = 400


class WalletUnknown(Forbidden):
    """A wallet that proved itself but acts for no account yet (until its first purchase or sign-in)."""

    code = "wallet_unknown"


class WalletNotLinked(NotFound):
    code = "wallet_not_linked"


class WalletAlreadyLinked(Conflict):
    code = "wallet_already_linked"


class WalletNonceReused(Unauthenticated):
    code = "wallet_nonce_reused"
