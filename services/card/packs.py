"""What can be bought by card: four packs, or a custom amount in 500-credit steps within configured bounds.

One rate for all: 100 credits = $1.00, converted by services.core.money.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.card.errors import InvalidCustomAmount, UnknownPack
from services.core.errors import InvalidRequest
from services.core.money import credits_to_cents, format_usd
from services.core.settings import Settings

CUSTOM = "custom"
CUSTOM_STEP_CREDITS = 500


@dataclass(frozen=True, slots=True)
class Pack:
    code: str
    name: str
    amount_credits: int

    @property
    def amount_cents(self) -> int:
        return credits_to_cents(self.amount_credits)

    @property
    def description(self) -> str:
        return f"{self.name}: {self.amount_credits:,} credits for {format_usd(self.amount_cents)}"


PACKS: dict[str, Pack] = {
    pack.code: pack
    for pack in (
        Pack("starter", "Starter", 500),
        Pack("standard", "Standard", 1_000),
        Pack("pro", "Pro", 2_500),
        Pack("business", "Business", 5_000),
    )
}


def get_pack(code: str) -> Pack:
    """One of the fixed packs (auto-recharge buys only these)."""
    pack = PACKS.get(code)
    if pack is None:
        raise UnknownPack(f"unknown pack {code!r}; choose one of {', '.join(PACKS)}", field="pack", pack=code)
    return pack


def custom_pack(amount_credits: int, settings: Settings) -> Pack:
    low, high = settings.card_custom_min_credits, settings.card_custom_max_credits
    if isinstance(amount_credits, bool) or not isinstance(amount_credits, int):
        raise InvalidCustomAmount("amount_credits must be a whole number of credits", field="amount_credits")
    if amount_credits % CUSTOM_STEP_CREDITS or not low <= amount_credits <= high:
        raise InvalidCustomAmount(
            f"a custom amount is a multiple of {CUSTOM_STEP_CREDITS} credits between {low:,} and {high:,}",
            field="amount_credits",
            amount_credits=amount_credits,
            min_credits=low,
            max_credits=high,
            step_credits=CUSTOM_STEP_CREDITS,
        )
    return Pack(CUSTOM, "Custom", amount_credits)


def resolve_pack(pack: str | None, amount_credits: int | None, settings: Settings) -> Pack:
    """The pack a purchase request names: a fixed pack by code, or a custom amount (``pack`` absent or "custom")."""
    if pack is not None and pack != CUSTOM:
        if amount_credits is not None and amount_credits != get_pack(pack).amount_credits:
            raise InvalidRequest("give a pack or a custom amount_credits, not both", field="amount_credits")
        return get_pack(pack)
    if amount_credits is None:
        raise InvalidRequest("name a pack or give amount_credits for a custom amount", field="pack")
    return custom_pack(amount_credits, settings)
