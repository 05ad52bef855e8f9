"""What handling a Stripe object did, in a short code kept on the inbox event (and returned to the success page)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outcome:
    # e.g. "minted", "already_fulfilled", "awaiting_payment", "expired", "exception:amount_mismatch".
    code: str
    purchase_id: int | None = None
    lot_id: int | None = None

    @property
    def minted(self) -> bool:
        return self.code == "minted"


def exception_outcome(kind: str, purchase_id: int | None = None) -> Outcome:
    return Outcome(f"exception:{kind}", purchase_id)
