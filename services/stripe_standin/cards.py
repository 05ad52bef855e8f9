"""The test cards the stand-in knows, and what paying with each does (the numbers are Stripe's test cards)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Behaviour(StrEnum):
    PAYS = "pays"
    DECLINED = "declined"
    # 3D Secure: the checkout page asks the customer to confirm; off-session, the charge fails.
    AUTHENTICATION = "authentication"


@dataclass(frozen=True, slots=True)
class TestCard:
    number: str
    brand: str
    behaviour: Behaviour
    decline_code: str | None = None
    description: str = ""

    @property
    def last4(self) -> str:
        return self.number[-4:]


TEST_CARDS = {
    card.number: card
    for card in (
        TestCard("4242424242424242", "visa", Behaviour.PAYS, description="pays"),
        TestCard("5555555555554444", "mastercard", Behaviour.PAYS, description="pays"),
        TestCard("4000000000000002", "visa", Behaviour.DECLINED, "generic_decline", "is declined"),
        TestCard("4000000000009995", "visa", Behaviour.DECLINED, "insufficient_funds", "is declined (no funds)"),
        TestCard("4000000000003220", "visa", Behaviour.AUTHENTICATION, description="needs authentication"),
    )
}

# Stripe's test PaymentMethods, usable off-session without a checkout first.
TEST_PAYMENT_METHODS = {
    "pm_card_visa": "4242424242424242",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_authenticationRequired": "4000000000003220",
}

DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
}


def normalise_number(text: str) -> str:
    return "".join(ch for ch in text if not ch.isspace() and ch != "-")


def luhn_valid(number: str) -> bool:
    if not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def parse_expiry(text: str, *, year_now: int, month_now: int) -> tuple[int, int] | None:
    """(month, four-digit year) of an expiry written "MM/YY", "MM / YY" or "MM/YYYY", when it is not past."""
    parts = [part.strip() for part in text.replace(" ", "").split("/")]
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        return None
    month, year = int(parts[0]), int(parts[1])
    if len(parts[1]) == 2:
        year += 2000
    if not 1 <= month <= 12 or len(parts[1]) not in (2, 4) or (year, month) < (year_now, month_now):
        return None
    return month, year


def cvc_valid(text: str) -> bool:
    stripped = text.strip()
    return stripped.isdigit() and len(stripped) in (3, 4)
