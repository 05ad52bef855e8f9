"""The USDC rail's errors."""

from __future__ import annotations

from services.core.errors import CreditrailError, NotFound


class UsdcRailOff(CreditrailError):
    code = "usdc_rail_off"
    status_code = 409


class ChainNotConfigured(NotFound):
    code = "chain_not_configured"
