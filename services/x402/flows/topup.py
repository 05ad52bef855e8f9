"""Paying for a hold or a charge the account cannot cover, over x402, in the same request.

A hold or charge refused for lack of credits (402 ``insufficient_credits``) carries an offer for the smallest pack
that covers the shortfall, paid to the account's own deposit address (:func:`topup_offer`). The x402 client sends the
same request again with the payment; before the operation runs, :func:`pay_for_operation` settles it and mints the
pack through the purchase flow (the same keys, so a payment sent again gets its first answer and mints once), and
the operation then runs as it would have, under its own Idempotency-Key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import Engine

from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.money import credits_to_usdc_units
from services.ledger.balance import get_balance
from services.x402 import repository as repo
from services.x402 import service
from services.x402.flows.purchase import OfferAnswer, PaidAnswer, X402Rail, offers_to, purchase
from services.x402.offers import decode_payment


def topup_offer(
    engine: Engine, rail: X402Rail, account_id: int, shortfall_credits: int, *, resource: str, now: datetime
) -> OfferAnswer | None:
    """The offer for the smallest pack covering ``shortfall_credits``, paid to the account's deposit address (made
    on first sight); None when no pack sold covers it."""
    credits = service.pack_covering(rail.settings, shortfall_credits)
    if credits is None:
        return None
    with unit_of_work(engine) as session:
        pay_to = service.deposit_address(session, rail.settings, account_id, now=now)
    amount_usdc_units = credits_to_usdc_units(credits)
    return OfferAnswer(account_id, credits, amount_usdc_units, offers_to(rail, pay_to, amount_usdc_units), resource)


def pay_for_operation(
    engine: Engine,
    rail: X402Rail,
    account_id: int,
    amount_credits: int,
    *,
    payment_header: tuple[str, str],
    resource: str,
    clock: Callable[[], datetime] = utcnow,
) -> OfferAnswer | PaidAnswer | None:
    """Settle the payment sent with a hold or charge of ``amount_credits`` and mint its pack for the account, before
    the operation runs.

    A payment already known is answered as the first time (its pack, whatever the balance is now). A new one must pay
    exactly the pack that covers what the account lacks now (else a 402 ``wrong_amount`` with the right offer); when
    the account lacks nothing (or more than the largest pack), nothing is settled and None is returned: the
    operation runs as if no payment had been sent."""
    now = clock()
    payment = decode_payment(payment_header[1], header=payment_header[0])
    credits: int | None = None
    with unit_of_work(engine) as session:
        if payment.chain_id is not None:
            existing = repo.find_duplicate(
                session,
                chain_id=payment.chain_id,
                payer=payment.authorization.from_address,
                auth_nonce=payment.authorization.nonce,
                payment_identifier=payment.payment_identifier,
            )
            if existing is not None:
                credits = int(existing.credits)
        if credits is None:
            available = get_balance(session, account_id, now).available_credits
            credits = service.pack_covering(rail.settings, amount_credits - available)
    if credits is None:
        return None
    request = service.PurchaseRequest(
        credits=credits, wallet_address=payment.authorization.from_address, beneficiary_account_id=account_id
    )
    return purchase(engine, rail, request, payment_header=payment_header, resource=resource, clock=clock)
