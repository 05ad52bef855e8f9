"""Buying credits over x402, end to end: offer, verify, settle, mint, each network call between short units of work.

1. A unit of work finds (or creates) the beneficiary's account and deposit address; the offer lists one requirement
   per chain whose token supports EIP-3009 (its EIP-712 domain read from the chain once).
2. A payment is decoded and matched against that offer (chain, token, payTo, exact amount, time bounds); a payment
   already known (same authorization, or same payment identifier) gets the first one's answer, waiting on a deadline
   while the first is still settling; the same identifier for another request is a 409.
3. The facilitator verifies the signature and simulates the transfer; a refusal writes nothing.
4. The payment is recorded as ``settling`` in a unit of work of its own (a unique key per authorization and per
   identifier: a concurrent duplicate loses the insert and waits), then settled; the built-in facilitator records
   the transaction's hash before it sends it. An outcome not known (a timeout after the broadcast) is resolved by the
   receipt, or ``authorizationState`` and the ``AuthorizationUsed`` log, before anything is answered; a payment a
   crash left settling is resolved the same way by a job (:func:`resolve_left_settling`).
5. The transfer is observed as any deposit (services.usdc.flows.observe) and credited now: the listener and the
   settlement mint once between them under one external reference, and a reorg is handled as for any deposit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from x402.schemas import PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo, SettleResponse
from x402.schemas.v1 import PaymentRequiredV1

from chain.addresses import checksum
from chain.errors import ChainRpcError
from chain.rpc import ChainRpc
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import ChainSettings, Settings
from services.usdc.chains import rpc_for
from services.usdc.flows.observe import observe_transaction
from services.x402 import repository as repo
from services.x402 import service
from services.x402.errors import PaymentIdentifierReused, PaymentRefused, PaymentStillSettling, X402Off
from services.x402.facilitators import BuiltinFacilitator, ExternalFacilitator, Facilitator, Outcome, failure_code
from services.x402.models import PaymentStatus
from services.x402.offers import (
    Authorization,
    Offer,
    ReceivedPayment,
    build_offer,
    declare_payment_identifier,
    decode_payment,
    match_offer,
    to_facilitator_payload,
    token_domain,
)
from services.x402.token import authorization_used, authorization_used_tx, balance_of

log = logging.getLogger("creditrail.x402")

_POLL_SECONDS = 0.01
# How often a duplicate waiting for a broadcast payment asks the chain itself.
_CHAIN_LOOK_SECONDS = 1.0


@dataclass
class X402Rail:
    """What a process needs to sell over x402: its settings, a facilitator and each chain's RPC client."""

    settings: Settings
    facilitator: Facilitator
    rpcs: dict[int, ChainRpc]

    def chain(self, chain_id: int) -> ChainSettings:
        return next(c for c in self.settings.usdc_chains if c.chain_id == chain_id)


def build_rail(settings: Settings) -> X402Rail | None:
    """The rail from settings: an external facilitator by URL, else the built-in relayer; None when x402 is off
    (no facilitator, or the USDC rail itself is off)."""
    if not settings.usdc_xpub or not settings.usdc_chains:
        return None
    rpcs = {chain.chain_id: rpc_for(chain) for chain in settings.usdc_chains}
    facilitator: Facilitator
    if settings.x402_facilitator_url:
        facilitator = ExternalFacilitator(
            settings.x402_facilitator_url, timeout_seconds=settings.x402_facilitator_timeout_seconds
        )
    elif settings.x402_relayer_key.get_secret_value():
        facilitator = BuiltinFacilitator(
            rpcs,
            settings.x402_relayer_key.get_secret_value(),
            gas_limit=settings.x402_relayer_gas_limit,
            receipt_timeout_seconds=settings.x402_settle_wait_seconds,
        )
    else:
        return None
    return X402Rail(settings, facilitator, rpcs)


@dataclass
class OfferAnswer:
    """A 402: what we offer for the request, and why a payment sent with it was refused (if one was)."""

    account_id: int
    credits: int
    amount_usdc_units: int
    offers: list[Offer]
    resource: str
    refused: PaymentRefused | None = None

    @property
    def description(self) -> str:
        return f"{self.credits:,} creditrail credits"

    def payment_required(self) -> PaymentRequired:
        return PaymentRequired(
            x402_version=2,
            error=None if self.refused is None else self.refused.reason,
            resource=ResourceInfo(url=self.resource, description=self.description, mime_type="application/json"),
            accepts=[o.requirement for o in self.offers],
            extensions=declare_payment_identifier(),
        )

    def v1_body(self) -> dict[str, Any]:
        """The v1 402 body (only the chains that have a legacy name), with our code and what was asked."""
        accepts = [r for r in (o.v1(self.resource, self.description) for o in self.offers) if r is not None]
        body = PaymentRequiredV1(
            error=self.refused.message if self.refused is not None else "payment required", accepts=accepts
        ).model_dump(by_alias=True, exclude_none=True)
        body["code"] = self.refused.reason if self.refused is not None else "payment_required"
        if self.refused is not None:
            body["details"] = self.refused.details
        body.update(account_id=self.account_id, credits=self.credits, amount_usdc_units=self.amount_usdc_units)
        return body


@dataclass
class PaidAnswer:
    """A 200: the settlement response (for the PAYMENT-RESPONSE header) and the body."""

    version: int
    settle_response: SettleResponse
    body: dict[str, Any] = field(default_factory=dict)


def offer_for(
    engine: Engine,
    rail: X402Rail,
    request: service.PurchaseRequest,
    *,
    resource: str,
    now: datetime,
    payment: ReceivedPayment | None = None,
) -> tuple[service.PurchaseRequest, OfferAnswer, Any]:
    """The normalised request, its offer (the beneficiary's account and address created on first sight) and, for a
    ``payment``, the payment already recorded with its authorization or identifier (None if there is none)."""
    amount_usdc_units = service.check_credits(rail.settings, request.credits)
    request = service.normalized(request)
    existing = None
    with unit_of_work(engine) as session:
        account_id, pay_to = service.beneficiary(session, rail.settings, request, now=now)
        if payment is not None and payment.chain_id is not None:
            existing = repo.find_duplicate(session, **_Key(payment.chain_id, payment).lookup)
    offers = offers_to(rail, pay_to, amount_usdc_units)
    answer = OfferAnswer(account_id, request.credits, amount_usdc_units, offers, resource)
    return request, answer, existing


def offers_to(rail: X402Rail, pay_to: str, amount_usdc_units: int) -> list[Offer]:
    """One requirement per configured chain whose token supports EIP-3009 (its domain read from the chain once)."""
    offers = []
    for chain in rail.settings.usdc_chains:
        domain = token_domain(chain, rail.rpcs[chain.chain_id])
        if domain is not None:
            offers.append(build_offer(rail.settings, chain, domain, pay_to=pay_to, amount_usdc_units=amount_usdc_units))
    if not offers:
        raise X402Off("no configured chain has a token that supports EIP-3009")
    return offers


def purchase(
    engine: Engine,
    rail: X402Rail,
    request: service.PurchaseRequest,
    *,
    payment_header: tuple[str, str] | None,
    resource: str,
    clock: Callable[[], datetime] = utcnow,
) -> OfferAnswer | PaidAnswer:
    """``POST /v1/x402/credits``: a 402 offer without a payment; with one, the first answer to that payment."""
    now = clock()
    payment = None if payment_header is None else decode_payment(payment_header[1], header=payment_header[0])
    request, offer_answer, existing = offer_for(engine, rail, request, resource=resource, now=now, payment=payment)
    if payment is None:
        return offer_answer
    fingerprint = service.fingerprint(request)
    if existing is not None:
        # The same payment again: the first one's answer (a retry of a settled payment no longer matches the time
        # bounds, and its authorization is used: it is answered before anything is checked again).
        return _answer_for_existing(engine, rail, existing, fingerprint, payment.version, offer_answer, clock)
    try:
        offer = match_offer(payment, offer_answer.offers, now_unix=int(now.timestamp()), settings=rail.settings)
    except PaymentRefused as refused:
        offer_answer.refused = refused
        return offer_answer
    key = _Key(offer.chain.chain_id, payment)

    payload = to_facilitator_payload(payment, offer)
    verdict = _verify(rail, payload, offer.requirement)
    relayed_by_another: str | None = None
    if verdict is not None:
        # A duplicate that started after the first one checked for it sees the authorization used: the first's
        # answer is its answer.
        with unit_of_work(engine) as session:
            existing = repo.find_duplicate(session, **key.lookup)
        if existing is not None:
            return _answer_for_existing(engine, rail, existing, fingerprint, payment.version, offer_answer, clock)
        refusal = _refusal(rail, offer, payment.authorization, verdict[0], verdict[1], now)
        relayed_by_another = _settled_elsewhere(rail, offer.chain, payment.authorization, refusal.reason)
        if relayed_by_another is None:
            offer_answer.refused = refusal
            return offer_answer

    with unit_of_work(engine) as session:
        payment_id = repo.insert_settling(
            session,
            {
                "chain_id": offer.chain.chain_id,
                "payer": payment.authorization.from_address,
                "auth_nonce": payment.authorization.nonce,
                "asset": offer.chain.usdc_address,
                "pay_to": payment.authorization.to,
                "amount_usdc_units": payment.authorization.value,
                "credits": request.credits,
                "account_id": offer_answer.account_id,
                "valid_before": payment.authorization.valid_before,
                "payment_identifier": payment.payment_identifier,
                "request_fingerprint": fingerprint,
                "x402_version": payment.version,
                "network": payment.network[:64],
                "created_at": now,
                "updated_at": now,
            },
        )
        existing = None if payment_id is not None else repo.find_duplicate(session, **key.lookup)
    if payment_id is None:
        return _answer_for_existing(engine, rail, existing, fingerprint, payment.version, offer_answer, clock)

    def on_broadcast(sent: str) -> None:
        with unit_of_work(engine) as session:
            repo.record_broadcast(session, payment_id, sent, clock())

    tx_hash: str | None
    code: str | None
    message: str | None
    if relayed_by_another is not None:
        # Someone relayed the payer's authorization before us (it is public once sent): the transfer to the deposit
        # address happened; it is this payment's.
        outcome, tx_hash, code, message = Outcome.SETTLED, relayed_by_another, None, None
        on_broadcast(relayed_by_another)
    else:
        settlement = rail.facilitator.settle(payload, offer.requirement, on_broadcast=on_broadcast)
        outcome, tx_hash, code, message = settlement.outcome, settlement.tx_hash, settlement.code, settlement.message
    if outcome is Outcome.UNKNOWN:
        deadline = time.monotonic() + rail.settings.x402_settle_wait_seconds
        outcome, tx_hash, code = resolve_outcome(rail, offer.chain, payment.authorization, tx_hash, deadline=deadline)
    elif outcome is Outcome.FAILED:
        code = _refine(rail, offer.chain, payment.authorization, code or "payment_invalid", clock())
        elsewhere = _settled_elsewhere(rail, offer.chain, payment.authorization, code)
        if elsewhere is not None:
            outcome, tx_hash, code = Outcome.SETTLED, elsewhere, None
    try:
        finish_payment(
            engine,
            rail,
            _Paid(payment_id, offer_answer.account_id, payment.authorization.value),
            offer.chain,
            outcome,
            tx_hash,
            code,
            message,
            now=clock(),
        )
    except ChainRpcError as exc:
        # Settled, but the node did not answer while the transfer was observed: the payment stays settling, and a
        # retry (or the resolving job) finishes it.
        log.warning("x402: payment %s settled in %s, not observed yet: %s", payment_id, tx_hash, exc)
    return _answer_for_payment(engine, payment_id, payment.version, offer_answer, clock)


@dataclass(frozen=True)
class _Key:
    chain_id: int
    payment: ReceivedPayment

    @property
    def lookup(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "payer": self.payment.authorization.from_address,
            "auth_nonce": self.payment.authorization.nonce,
            "payment_identifier": self.payment.payment_identifier,
        }


def _verify(rail: X402Rail, payload: PaymentPayload, requirement: PaymentRequirements) -> tuple[str, str] | None:
    """None when the facilitator finds the payment valid, else (our code, its message)."""
    try:
        response = rail.facilitator.verify(payload, requirement)
    except ChainRpcError as exc:
        return "facilitator_unavailable", str(exc)[:300]
    if response.is_valid:
        return None
    if response.invalid_reason == "facilitator_unavailable":
        return "facilitator_unavailable", response.invalid_message or ""
    return failure_code(response.invalid_reason), response.invalid_message or response.invalid_reason or ""


_MESSAGES = {
    "authorization_used": "the authorization was used already",
    "authorization_expired": "the authorization has expired",
    "authorization_not_yet_valid": "the authorization is not valid yet",
    "insufficient_balance": "the payer's balance does not cover the payment",
    "invalid_signature": "the authorization's signature is not the payer's",
    "transaction_reverted": "the settlement transaction reverted",
    "facilitator_unavailable": "the facilitator could not be reached; pay again later",
}


def _refusal(
    rail: X402Rail, offer: Offer, auth: Authorization, code: str, message: str, now: datetime
) -> PaymentRefused:
    code = _refine(rail, offer.chain, auth, code, now)
    return PaymentRefused(code, _MESSAGES.get(code, "the payment is not valid"), detail=message[:300])


def _refine(rail: X402Rail, chain: ChainSettings, auth: Authorization, code: str, now: datetime) -> str:
    """A vague failure (a simulation or a transaction that reverted) named precisely from the chain: the
    authorization used, expired, or the payer's balance short."""
    if code not in ("payment_invalid", "transaction_reverted"):
        return code
    rpc = rail.rpcs[chain.chain_id]
    try:
        if authorization_used(rpc, chain.usdc_address, auth.from_address, auth.nonce):
            return "authorization_used"
        block = rpc.block_header("latest")
        chain_time = int(block["timestamp"], 16) if block else 0
        if auth.valid_before <= max(int(now.timestamp()), chain_time):
            return "authorization_expired"
        if balance_of(rpc, chain.usdc_address, auth.from_address) < auth.value:
            return "insufficient_balance"
    except (ChainRpcError, ValueError):
        return code
    return code


def _settled_elsewhere(rail: X402Rail, chain: ChainSettings, auth: Authorization, code: str) -> str | None:
    """For an authorization found used: the transaction that used it successfully (its transfer went where the
    signature says, the deposit address), or None (canceled, or not found)."""
    if code != "authorization_used":
        return None
    outcome, tx_hash, _ = resolve_outcome(rail, chain, auth, None, deadline=time.monotonic())
    return tx_hash if outcome is Outcome.SETTLED else None


def resolve_outcome(
    rail: X402Rail, chain: ChainSettings, auth: Authorization, tx_hash: str | None, *, deadline: float
) -> tuple[Outcome, str | None, str | None]:
    """What became of a settlement whose outcome was not known: (settled, the transaction) when a transaction
    that used the authorization was mined successfully; (failed, code) when ours reverted and nothing else used it,
    or when it can no longer be used (``validBefore`` passed, unused); else, at the deadline, (unknown, ...)."""
    rpc = rail.rpcs[chain.chain_id]
    token = chain.usdc_address
    while True:
        try:
            if tx_hash is not None:
                receipt = rpc.request("eth_getTransactionReceipt", [tx_hash])
                if isinstance(receipt, dict) and receipt.get("blockNumber"):
                    if receipt.get("status") == "0x1":
                        return Outcome.SETTLED, tx_hash, None
                    other = _used_by(rail, chain, auth)
                    if other is not None and other != tx_hash:
                        tx_hash = other  # someone else's transaction used the authorization: the money moved there
                        continue
                    return Outcome.FAILED, tx_hash, _refine(rail, chain, auth, "transaction_reverted", utcnow())
            if authorization_used(rpc, token, auth.from_address, auth.nonce):
                used_by = _used_by(rail, chain, auth)
                if used_by is not None and used_by != tx_hash:
                    tx_hash = used_by
                    continue
            else:
                block = rpc.block_header("latest")
                block_time = int(block["timestamp"], 16) if block else int(time.time())
                if block_time >= auth.valid_before:
                    return Outcome.FAILED, tx_hash, "authorization_expired"
        except ChainRpcError as exc:
            log.warning("x402: resolving a settlement on chain %s: %s", chain.chain_id, exc)
        if time.monotonic() >= deadline:
            return Outcome.UNKNOWN, tx_hash, None
        time.sleep(_POLL_SECONDS * 5)


def _used_by(rail: X402Rail, chain: ChainSettings, auth: Authorization) -> str | None:
    return authorization_used_tx(
        rail.rpcs[chain.chain_id],
        chain.usdc_address,
        auth.from_address,
        auth.nonce,
        lookback_blocks=rail.settings.x402_lookback_blocks,
    )


@dataclass(frozen=True)
class _Paid:
    payment_id: int
    account_id: int
    amount_usdc_units: int


def finish_payment(
    engine: Engine,
    rail: X402Rail,
    paid: _Paid,
    chain: ChainSettings,
    outcome: Outcome,
    tx_hash: str | None,
    code: str | None,
    message: str | None,
    *,
    now: datetime,
) -> None:
    """Record a settlement's outcome: settled -> the transfer observed and credited now, then the payment marked
    settled with its deposit and lot; failed -> marked failed with its code (nothing minted); unknown -> left
    settling (a retry, or the resolving job, finds out)."""
    payment_id = paid.payment_id
    if outcome is Outcome.SETTLED and tx_hash is not None:
        observed = observe_transaction(engine, chain, rail.rpcs[chain.chain_id], tx_hash, now=now, credit_now=True)
        deposit = next(
            (
                d
                for d in observed.deposits
                if int(d.account_id) == paid.account_id and int(d.amount_usdc_units) == paid.amount_usdc_units
            ),
            None,
        )
        if observed.status != "included" or deposit is None:
            # Mined, but not (or no longer) a transfer to the deposit address: nothing to mint.
            with unit_of_work(engine) as session:
                repo.mark_failed(
                    session,
                    payment_id,
                    code="transaction_reverted",
                    message=f"transaction {tx_hash} made no transfer to the deposit address ({observed.status})",
                    now=now,
                )
            return
        with unit_of_work(engine) as session:
            repo.mark_settled(
                session, payment_id, tx_hash=tx_hash, deposit_id=int(deposit.deposit_id), lot_id=deposit.lot_id, now=now
            )
        return
    if outcome is Outcome.FAILED:
        with unit_of_work(engine) as session:
            repo.mark_failed(session, payment_id, code=code or "payment_invalid", message=message, now=now)


def _answer_for_existing(
    engine: Engine,
    rail: X402Rail,
    row: Any,
    fingerprint: str,
    version: int,
    offer_answer: OfferAnswer,
    clock: Callable[[], datetime],
) -> OfferAnswer | PaidAnswer:
    """The answer to a payment already known: the first one's, waiting (on a deadline) while it is settling."""
    if row.request_fingerprint != fingerprint:
        raise PaymentIdentifierReused(
            "this payment (its identifier or its authorization) was used for another request",
            payment_id=int(row.id),
        )
    deadline = time.monotonic() + rail.settings.x402_settle_wait_seconds
    look_at_chain = time.monotonic() + _CHAIN_LOOK_SECONDS
    while row.status == PaymentStatus.SETTLING and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
        if row.tx_hash is not None and time.monotonic() >= look_at_chain:
            # Broadcast a while ago and still settling (the first request may have died): what the chain says
            # finishes it, as the resolving job would (finishing twice is harmless: observing credits once, and a
            # payment leaves settling once).
            look_at_chain = time.monotonic() + _CHAIN_LOOK_SECONDS
            _finish_from_chain(engine, rail, row, now=clock())
        with unit_of_work(engine) as session:
            row = repo.get(session, int(row.id))
    return _answer_for_row(engine, row, version, offer_answer, clock)


def _finish_from_chain(engine: Engine, rail: X402Rail, row: Any, *, now: datetime) -> bool:
    """Resolve a settling payment from the chain (one look) and finish it; whether it was finished."""
    chain = next((c for c in rail.settings.usdc_chains if c.chain_id == int(row.chain_id)), None)
    if chain is None:
        return False
    auth = Authorization(
        from_address=row.payer,
        to=row.pay_to,
        value=int(row.amount_usdc_units),
        valid_after=0,
        valid_before=int(row.valid_before),
        nonce=row.auth_nonce,
    )
    outcome, tx_hash, code = resolve_outcome(rail, chain, auth, row.tx_hash, deadline=time.monotonic())
    if outcome is Outcome.UNKNOWN:
        return False
    paid = _Paid(int(row.id), int(row.account_id), int(row.amount_usdc_units))
    try:
        finish_payment(engine, rail, paid, chain, outcome, tx_hash, code, None, now=now)
    except ChainRpcError as exc:
        log.warning("x402: payment %s not finished yet: %s", row.id, exc)
        return False
    return True


def _answer_for_payment(
    engine: Engine, payment_id: int, version: int, offer_answer: OfferAnswer, clock: Callable[[], datetime]
) -> OfferAnswer | PaidAnswer:
    """The answer to a payment as it stands, read (with the lot and balance) in one unit of work."""
    with unit_of_work(engine) as session:
        row = repo.get(session, payment_id)
        body = service.paid_body(session, row, now=clock()) if row.status == PaymentStatus.SETTLED else None
    return _answer_for_row(engine, row, version, offer_answer, clock, body=body)


def _answer_for_row(
    engine: Engine,
    row: Any,
    version: int,
    offer_answer: OfferAnswer,
    clock: Callable[[], datetime],
    *,
    body: dict[str, Any] | None = None,
) -> OfferAnswer | PaidAnswer:
    if row.status == PaymentStatus.SETTLING:
        raise PaymentStillSettling(
            "this payment is still being settled; send it again in a moment for its outcome",
            payment_id=int(row.id),
            transaction=row.tx_hash,
        )
    if row.status == PaymentStatus.FAILED:
        code = row.failure_code or "payment_invalid"
        offer_answer.refused = PaymentRefused(
            code, _MESSAGES.get(code, "the payment could not be settled"), payment_id=int(row.id)
        )
        return offer_answer
    if body is None:
        with unit_of_work(engine) as session:
            body = service.paid_body(session, row, now=clock())
    settle = SettleResponse(
        success=True,
        transaction=row.tx_hash,
        network=row.network,
        payer=checksum(row.payer),
        amount=str(int(row.amount_usdc_units)),
    )
    return PaidAnswer(version=version, settle_response=settle, body=body)


def resolve_left_settling(engine: Engine, rail: X402Rail, *, now: datetime, batch_size: int) -> int:
    """The resolving job's step: payments left settling (a crash between broadcast and record, or an outcome not
    known in time) resolved from the chain and finished. Returns how many it finished (those still unknown wait for
    the next run)."""
    before = now - timedelta(seconds=rail.settings.x402_resolve_after_seconds)
    with unit_of_work(engine) as session:
        rows = repo.left_settling(session, before=before, limit=batch_size)
    return sum(1 for row in rows if _finish_from_chain(engine, rail, row, now=now))
