"""Reconciliation's matching: the external records in finance's mirror against the ledger's lots and clawbacks.

One run per (rail, period) sorts every item into matched, missing in the ledger, missing externally or amount
mismatch, and marks those paid in one period and credited in another as late. Items are written set-based
(``INSERT ... SELECT`` over joins), so a run over millions of records keeps the database doing the work and the
process's memory flat. Re-running a period replaces its items in the same transaction (they are derived data; the
ledger itself is never touched here), so a re-run is idempotent and a failed one leaves the last good run in place.

Every item that is not matched raises a finance exception (once per reference, whatever is re-run); an open one
whose item a later run matches (a late credit, a mirror filled in) is closed as ``rematched``.

Matching by references only, never by the code paths that minted:
- card payments: a ``charge`` / ``payment`` balance transaction -> its PaymentIntent -> the Checkout Session with
  that PaymentIntent (mirror) -> the card lot whose external reference is that session (or the PaymentIntent, for
  an off-session charge). Expected credits: the gross amount, converted by services.core.money.
- card refunds and disputes: per charge, everything refunded or disputed (net of dispute reversals) against the
  credits the ledger clawed back from the charge's lot (net of reinstatements), both up to the same cut-off.
- USDC deposits: a re-scanned Transfer log -> the USDC lot whose external reference is ``<chain>:<tx>:<log>``.
  Credits are whole USDC amounts at 100 per USDC, with the sub-credit remainder and deposits under the minimum
  carried to the account's next deposit, so a lot may hold up to (carry limit - 1) base units more than its own
  transfer; transfers too small to mint alone match with the note "carried".

Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    and_,
    case,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from services.core.db import table_of
from services.core.money import USDC_UNITS_PER_CREDIT, cents_to_credits_sql, share_of_credits, usdc_units_to_credits_sql
from services.finance.models import (
    ChainTransferRecord,
    ItemCategory,
    ItemKind,
    StripeBalanceTransaction,
    StripeCheckoutSessionRecord,
)
from services.finance.rows import BalanceTransactionRow, ItemRow
from services.finance.runs import (
    CARD_RAIL,
    EXCEPTION_KIND_PREFIX,
    complete_run,
    get_run,
    items,
    start_run,
    usdc_rail,
)
from services.finance.schemas import RunOut
from services.ledger.models import TransactionKind
from services.ledger.repository import accounts, entries, lots, transactions
from services.ledger.rows import LotRow
from services.ledger.system_accounts import SystemAccount
from services.review.models import ExceptionStatus
from services.review.service import card_reference, exceptions_table, raise_exception, usdc_reference
from services.usdc.models import DepositAddress

balance_txns = table_of(StripeBalanceTransaction)
sessions = table_of(StripeCheckoutSessionRecord)
transfers = table_of(ChainTransferRecord)
addresses = table_of(DepositAddress)


def _outside(column: ColumnElement[Any], period_start: datetime, period_end: datetime) -> ColumnElement[bool]:
    return or_(column < period_start, column >= period_end)


# Balance transactions that are a payment (gross received), and those that give money back on a charge.
PAYMENT_TYPES = ("charge", "payment")
REVERSAL_CATEGORIES = ("refund", "refund_failure", "dispute", "dispute_reversal")
DISPUTE_CATEGORIES = ("dispute", "dispute_reversal")


def _within(column: ColumnElement[Any], period_start: datetime, period_end: datetime) -> ColumnElement[bool]:
    return and_(column >= period_start, column < period_end)


ITEM_COLUMNS = (
    "run_id",
    "kind",
    "category",
    "late",
    "external_ref",
    "lot_ref",
    "lot_id",
    "account_id",
    "external_amount_cents",
    "external_amount_usdc_units",
    "expected_credits",
    "ledger_credits",
    "external_at",
    "ledger_at",
    "note",
)


def _insert_items(session: Session, source: Select[Any]) -> None:
    session.execute(insert(items).from_select(list(ITEM_COLUMNS), source))


# --- card ------------------------------------------------------------------------------------------------------


def _category(*whens: tuple[ColumnElement[bool], ItemCategory]) -> ColumnElement[str]:
    """The first category whose condition holds, else matched."""
    return case(*((when, literal(category.value)) for when, category in whens), else_=literal(ItemCategory.MATCHED))


def _card_amount_differs(lot: Any, payment: Any) -> ColumnElement[bool]:
    """A card lot that is not what its payment bought: other credits, or another cost basis."""
    return or_(
        lot.c.credits != cents_to_credits_sql(payment.c.amount_cents),
        lot.c.cost_basis_cents.is_distinct_from(payment.c.amount_cents),
    )


def _card_payment_items(session: Session, run_id: int, period_start: datetime, period_end: datetime) -> None:
    """Every payment balance transaction of the period against the lot it should have minted."""
    b, s = balance_txns, sessions
    lot = lots.alias("lot")
    lot_ref = func.coalesce(s.c.stripe_id, b.c.payment_intent_id)
    expected = cents_to_credits_sql(b.c.amount_cents)
    category = _category(
        (lot.c.id.is_(None), ItemCategory.MISSING_IN_LEDGER),
        (_card_amount_differs(lot, b), ItemCategory.AMOUNT_MISMATCH),
    )
    source = (
        select(
            literal(run_id),
            literal(ItemKind.PAYMENT.value),
            category,
            case((lot.c.id.is_(None), false()), else_=_outside(lot.c.credited_at, period_start, period_end)),
            b.c.stripe_id,
            lot_ref,
            lot.c.id,
            lot.c.account_id,
            b.c.amount_cents,
            null(),
            expected,
            lot.c.credits,
            b.c.stripe_created_at,
            lot.c.credited_at,
            null(),
        )
        .select_from(
            b.outerjoin(s, s.c.payment_intent_id == b.c.payment_intent_id).outerjoin(
                lot, and_(lot.c.rail == CARD_RAIL, lot.c.external_ref == lot_ref)
            )
        )
        .where(b.c.type.in_(PAYMENT_TYPES), _within(b.c.stripe_created_at, period_start, period_end))
    )
    _insert_items(session, source)


def _card_lot_items(session: Session, run_id: int, period_start: datetime, period_end: datetime) -> None:
    """The period's card lots whose payment is not among the period's: paid in another period (late), or with no
    payment at all in the mirror (missing externally)."""
    b, s = balance_txns, sessions
    intent = func.coalesce(s.c.payment_intent_id, lots.c.external_ref)
    expected = cents_to_credits_sql(b.c.amount_cents)
    category = _category(
        (b.c.id.is_(None), ItemCategory.MISSING_EXTERNALLY),
        (_card_amount_differs(lots, b), ItemCategory.AMOUNT_MISMATCH),
    )
    source = (
        select(
            literal(run_id),
            literal(ItemKind.PAYMENT.value),
            category,
            case((b.c.id.is_(None), false()), else_=true()),
            b.c.stripe_id,
            lots.c.external_ref,
            lots.c.id,
            lots.c.account_id,
            b.c.amount_cents,
            null(),
            expected,
            lots.c.credits,
            b.c.stripe_created_at,
            lots.c.credited_at,
            null(),
        )
        .select_from(
            lots.outerjoin(s, s.c.stripe_id == lots.c.external_ref).outerjoin(
                b, and_(b.c.type.in_(PAYMENT_TYPES), b.c.payment_intent_id == intent)
            )
        )
        .where(
            lots.c.rail == CARD_RAIL,
            _within(lots.c.credited_at, period_start, period_end),
            or_(b.c.id.is_(None), _outside(b.c.stripe_created_at, period_start, period_end)),
        )
    )
    _insert_items(session, source)


@dataclass(slots=True)
class _ChargeReversals:
    charge_id: str
    external_cents_at_end: int = 0
    external_cents_at_cutoff: int = 0
    disputed: bool = False
    last_external_ref: str | None = None
    last_external_at: datetime | None = None


def _lot_for_charge(session: Session, charge_id: str) -> tuple[BalanceTransactionRow, LotRow | None] | None:
    """The charge's payment balance transaction and the card lot it minted (None for either when unknown)."""
    b, s = balance_txns, sessions
    payment = session.execute(
        select(b).where(b.c.charge_id == charge_id, b.c.type.in_(PAYMENT_TYPES)).order_by(b.c.id).limit(1)
    ).first()
    if payment is None:
        return None
    session_id = session.execute(
        select(s.c.stripe_id).where(s.c.payment_intent_id == payment.payment_intent_id).limit(1)
    ).scalar()
    ref = session_id or payment.payment_intent_id
    lot = session.execute(select(lots).where(lots.c.rail == CARD_RAIL, lots.c.external_ref == ref)).first()
    return payment, lot


def _clawed_back_credits(session: Session, lot: LotRow, until: datetime) -> int:
    """Credits clawed back from ``lot`` net of reinstatements, by journal transactions created before ``until``:
    what each moved into (or out of) the clawbacks account."""
    t, e = transactions, entries
    rows = session.execute(
        select(t.c.kind, t.c.details, e.c.amount_credits)
        .join(e, and_(e.c.transaction_id == t.c.id, e.c.account_id == SystemAccount.CLAWBACKS))
        .where(
            t.c.account_id == lot.account_id,
            t.c.kind.in_((TransactionKind.CLAWBACK, TransactionKind.REINSTATEMENT)),
            t.c.created_at < until,
        )
    ).all()
    return sum(int(amount) for _, details, amount in rows if int((details or {}).get("lot_id", -1)) == lot.id)


def _charges_with_ledger_clawbacks(session: Session, period_start: datetime, period_end: datetime) -> set[str]:
    """The charges of card lots clawed back or reinstated in the period (to find clawbacks with no refund)."""
    t = transactions
    rows = session.execute(
        select(t.c.details).where(
            t.c.kind.in_((TransactionKind.CLAWBACK, TransactionKind.REINSTATEMENT)),
            _within(t.c.created_at, period_start, period_end),
        )
    ).all()
    lot_ids = {int(details["lot_id"]) for (details,) in rows if details and "lot_id" in details}
    charges: set[str] = set()
    for chunk in _chunks(sorted(lot_ids), 500):
        card_lots = session.execute(
            select(lots.c.external_ref).where(lots.c.id.in_(chunk), lots.c.rail == CARD_RAIL)
        ).all()
        for (ref,) in card_lots:
            intent = session.execute(select(sessions.c.payment_intent_id).where(sessions.c.stripe_id == ref)).scalar()
            charge = session.execute(
                select(balance_txns.c.charge_id).where(
                    balance_txns.c.payment_intent_id == (intent or ref), balance_txns.c.type.in_(PAYMENT_TYPES)
                )
            ).scalar()
            charges.add(charge if charge else f"lot:{ref}")
    return charges


def _chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _card_reversal_items(
    session: Session, run_id: int, period_start: datetime, period_end: datetime, cutoff: datetime
) -> int:
    """Per charge refunded or disputed in the period (or whose lot was clawed back in it): the money given back
    against the credits taken back, both up to ``cutoff`` (late ones count, and are marked late)."""
    b = balance_txns
    in_period = session.execute(
        select(b.c.charge_id)
        .where(
            b.c.reporting_category.in_(REVERSAL_CATEGORIES), _within(b.c.stripe_created_at, period_start, period_end)
        )
        .distinct()
    ).all()
    charges = {charge for (charge,) in in_period if charge} | _charges_with_ledger_clawbacks(
        session, period_start, period_end
    )
    written = 0
    for charge_id in sorted(charges):
        row = _reversal_item(session, charge_id, period_end, cutoff)
        if row is not None:
            session.execute(insert(items).values(run_id=run_id, **row))
            written += 1
    return written


def _reversal_item(session: Session, charge_id: str, period_end: datetime, cutoff: datetime) -> dict[str, Any] | None:
    b = balance_txns
    if charge_id.startswith("lot:"):
        # A card lot clawed back whose payment is not in the mirror at all.
        unpaid: LotRow | None = session.execute(
            select(lots).where(lots.c.rail == CARD_RAIL, lots.c.external_ref == charge_id.removeprefix("lot:"))
        ).first()
        if unpaid is None:
            return None
        clawed = _clawed_back_credits(session, unpaid, cutoff)
        return _reversal_row(ItemKind.REFUND, ItemCategory.MISSING_EXTERNALLY, False, None, unpaid, 0, 0, clawed, None)
    reversals = _ChargeReversals(charge_id)
    for rec in session.execute(
        select(b.c.stripe_id, b.c.reporting_category, b.c.amount_cents, b.c.stripe_created_at)
        .where(
            b.c.charge_id == charge_id, b.c.reporting_category.in_(REVERSAL_CATEGORIES), b.c.stripe_created_at < cutoff
        )
        .order_by(b.c.stripe_created_at, b.c.id)
    ).all():
        given_back = -int(rec.amount_cents)
        reversals.external_cents_at_cutoff += given_back
        if rec.stripe_created_at < period_end:
            reversals.external_cents_at_end += given_back
            reversals.last_external_ref, reversals.last_external_at = rec.stripe_id, rec.stripe_created_at
        reversals.disputed = reversals.disputed or rec.reporting_category in DISPUTE_CATEGORIES
    kind = ItemKind.DISPUTE if reversals.disputed else ItemKind.REFUND
    found = _lot_for_charge(session, charge_id)
    payment, lot = found if found is not None else (None, None)
    if payment is None or lot is None:
        return _reversal_row(
            kind,
            ItemCategory.MISSING_IN_LEDGER,
            False,
            charge_id,
            lot,
            reversals.external_cents_at_cutoff,
            None,
            None,
            reversals.last_external_at,
        )
    gross = int(payment.amount_cents)

    def expected(given_back_cents: int) -> int:
        return share_of_credits(int(lot.credits), max(0, min(given_back_cents, gross)), gross)

    at_cutoff = _clawed_back_credits(session, lot, cutoff)
    if expected(reversals.external_cents_at_cutoff) != at_cutoff:
        if at_cutoff == 0:
            category = ItemCategory.MISSING_IN_LEDGER
        elif reversals.external_cents_at_cutoff == 0:
            category = ItemCategory.MISSING_EXTERNALLY
        else:
            category = ItemCategory.AMOUNT_MISMATCH
        late = False
    else:
        category = ItemCategory.MATCHED
        at_end = _clawed_back_credits(session, lot, period_end)
        late = expected(reversals.external_cents_at_end) != at_end
    return _reversal_row(
        kind,
        category,
        late,
        charge_id,
        lot,
        reversals.external_cents_at_cutoff,
        expected(reversals.external_cents_at_cutoff),
        at_cutoff,
        reversals.last_external_at,
    )


def _reversal_row(
    kind: ItemKind,
    category: ItemCategory,
    late: bool,
    charge_id: str | None,
    lot: LotRow | None,
    external_cents: int,
    expected_credits: int | None,
    ledger_credits: int | None,
    external_at: datetime | None,
) -> dict[str, Any]:
    return {
        "kind": kind.value,
        "category": category.value,
        "late": late,
        "external_ref": charge_id,
        "lot_ref": lot.external_ref if lot is not None else None,
        "lot_id": lot.id if lot is not None else None,
        "account_id": lot.account_id if lot is not None else None,
        "external_amount_cents": external_cents,
        "expected_credits": expected_credits,
        "ledger_credits": ledger_credits,
        "external_at": external_at,
        "ledger_at": None,
    }


# --- USDC ------------------------------------------------------------------------------------------------------


def carry_limit_usdc_units(min_deposit_usdc_units: int) -> int:
    """The most an account's carry can hold: below the minimum deposit, and below one credit after a mint."""
    return max(min_deposit_usdc_units, USDC_UNITS_PER_CREDIT)


def _usdc_amount_differs(lot: Any, transfer: Any, min_deposit_usdc_units: int) -> ColumnElement[bool]:
    """A USDC lot holding fewer credits than its transfer alone is worth, or more than its transfer and the most
    the account's carry can have added."""
    limit = carry_limit_usdc_units(min_deposit_usdc_units)
    ceiling = usdc_units_to_credits_sql(transfer.c.amount_usdc_units + literal(limit - 1, Integer))
    return or_(lot.c.credits < usdc_units_to_credits_sql(transfer.c.amount_usdc_units), lot.c.credits > ceiling)


def _deposit_items(
    session: Session,
    run_id: int,
    chain_id: int,
    blocks: tuple[int, int] | None,
    period_start: datetime,
    period_end: datetime,
    min_deposit_usdc_units: int,
) -> None:
    """Every re-scanned Transfer in the period's blocks against the lot it should have minted."""
    first, last = blocks if blocks is not None else (1, 0)
    r, da = transfers, addresses
    lot = lots.alias("lot")
    # Too small to mint on its own: carried to the account's next deposit, no lot of its own expected.
    carried = and_(lot.c.id.is_(None), r.c.amount_usdc_units < carry_limit_usdc_units(min_deposit_usdc_units))
    floor_credits = usdc_units_to_credits_sql(r.c.amount_usdc_units)
    category = _category(
        (carried, ItemCategory.MATCHED),
        (lot.c.id.is_(None), ItemCategory.MISSING_IN_LEDGER),
        (_usdc_amount_differs(lot, r, min_deposit_usdc_units), ItemCategory.AMOUNT_MISMATCH),
    )
    note = case((carried, literal("carried")), else_=null())
    source = (
        select(
            literal(run_id),
            literal(ItemKind.DEPOSIT.value),
            category,
            case((lot.c.id.is_(None), false()), else_=_outside(lot.c.credited_at, period_start, period_end)),
            r.c.reference,
            r.c.reference,
            lot.c.id,
            func.coalesce(lot.c.account_id, da.c.account_id),
            null(),
            r.c.amount_usdc_units,
            floor_credits,
            lot.c.credits,
            null(),
            lot.c.credited_at,
            note,
        )
        .select_from(
            r.outerjoin(lot, and_(lot.c.rail == "usdc", lot.c.external_ref == r.c.reference)).outerjoin(
                da, and_(da.c.chain_id == r.c.chain_id, da.c.address == r.c.to_address)
            )
        )
        .where(r.c.chain_id == chain_id, r.c.block_number >= first, r.c.block_number <= last)
    )
    _insert_items(session, source)


def _usdc_lot_items(
    session: Session,
    run_id: int,
    chain_id: int,
    blocks: tuple[int, int] | None,
    period_start: datetime,
    period_end: datetime,
    min_deposit_usdc_units: int,
) -> None:
    """The period's USDC lots of the chain whose Transfer is not among the period's blocks: sent in another period
    (late), or not on the chain at all any more: missing externally, unless already clawed back in full (matched,
    noted "clawed_back")."""
    first, last = blocks if blocks is not None else (1, 0)
    r = transfers
    floor_credits = usdc_units_to_credits_sql(r.c.amount_usdc_units)
    # Gone from the chain and already clawed back in full (a deep reorg the listener caught): the ledger nets to
    # nothing, as the chain does.
    clawed_back = and_(r.c.id.is_(None), lots.c.clawed_back_credits >= lots.c.credits)
    category = _category(
        (clawed_back, ItemCategory.MATCHED),
        (r.c.id.is_(None), ItemCategory.MISSING_EXTERNALLY),
        (_usdc_amount_differs(lots, r, min_deposit_usdc_units), ItemCategory.AMOUNT_MISMATCH),
    )
    note = case((clawed_back, literal("clawed_back")), else_=null())
    source = (
        select(
            literal(run_id),
            literal(ItemKind.DEPOSIT.value),
            category,
            case((r.c.id.is_(None), false()), else_=true()),
            r.c.reference,
            lots.c.external_ref,
            lots.c.id,
            lots.c.account_id,
            null(),
            r.c.amount_usdc_units,
            floor_credits,
            lots.c.credits,
            null(),
            lots.c.credited_at,
            note,
        )
        .select_from(lots.outerjoin(r, r.c.reference == lots.c.external_ref))
        .where(
            lots.c.rail == "usdc",
            _within(lots.c.credited_at, period_start, period_end),
            lots.c.external_ref.startswith(f"{chain_id}:", autoescape=True),
            or_(r.c.id.is_(None), r.c.block_number < first, r.c.block_number > last),
        )
    )
    _insert_items(session, source)


# --- runs ------------------------------------------------------------------------------------------------------


def reconcile_card(
    session: Session, *, period_start: datetime, period_end: datetime, cutoff: datetime, now: datetime
) -> RunOut:
    """Reconcile the card rail over [period_start, period_end) from the mirror as it stands; ``cutoff`` bounds the
    late records (refunds and clawbacks) looked at after the period."""
    run_id = start_run(session, CARD_RAIL, period_start, period_end, now)
    _card_payment_items(session, run_id, period_start, period_end)
    _card_lot_items(session, run_id, period_start, period_end)
    _card_reversal_items(session, run_id, period_start, period_end, cutoff)
    external = session.execute(
        select(func.count()).where(_within(balance_txns.c.stripe_created_at, period_start, period_end))
    ).scalar_one()
    ledger = session.execute(
        select(func.count()).where(lots.c.rail == CARD_RAIL, _within(lots.c.credited_at, period_start, period_end))
    ).scalar_one()
    return _finish_run(session, run_id, "card", external_records=int(external), ledger_records=int(ledger), now=now)


def reconcile_usdc(
    session: Session,
    *,
    chain_id: int,
    blocks: tuple[int, int] | None,
    period_start: datetime,
    period_end: datetime,
    min_deposit_usdc_units: int,
    now: datetime,
) -> RunOut:
    """Reconcile one chain's deposits over [period_start, period_end), whose blocks are ``blocks`` (first, last;
    None when the period holds no block), from the re-scanned transfers in the mirror."""
    run_id = start_run(session, usdc_rail(chain_id), period_start, period_end, now)
    args = (session, run_id, chain_id, blocks, period_start, period_end, min_deposit_usdc_units)
    _deposit_items(*args)
    _usdc_lot_items(*args)
    first, last = blocks if blocks is not None else (1, 0)
    external = session.execute(
        select(func.count()).where(
            transfers.c.chain_id == chain_id, transfers.c.block_number >= first, transfers.c.block_number <= last
        )
    ).scalar_one()
    ledger = session.execute(
        select(func.count()).where(
            lots.c.rail == "usdc",
            _within(lots.c.credited_at, period_start, period_end),
            lots.c.external_ref.startswith(f"{chain_id}:", autoescape=True),
        )
    ).scalar_one()
    return _finish_run(session, run_id, "usdc", external_records=int(external), ledger_records=int(ledger), now=now)


def _finish_run(
    session: Session, run_id: int, exception_rail: str, *, external_records: int, ledger_records: int, now: datetime
) -> RunOut:
    """Complete the run with its counts, then raise an exception for each unmatched item and close those matched."""
    complete_run(session, run_id, external_records=external_records, ledger_records=ledger_records, now=now)
    _raise_exceptions(session, run_id, exception_rail, now)
    _close_rematched(session, run_id, exception_rail, now)
    summary = get_run(session, run_id)
    assert summary is not None
    return summary


def exception_reference(kind: str, external_ref: str | None, lot_ref: str | None, lot_id: int | None) -> str:
    """One finance exception per item, whatever run finds it, in the references every raiser of its rail uses
    (services.review.service): by the item's external record, else the reference its lot carries, else its lot's
    id. A USDC item is its transfer (``usdc:<chain>:<tx>:<log>``); a card item its Stripe object (``card:<id>``),
    with ``#refund`` / ``#dispute`` for what was given back on a charge (the payment itself has no suffix)."""
    reference = external_ref or lot_ref
    if kind == ItemKind.DEPOSIT:
        if reference:
            chain_id, tx_hash, log_index = reference.split(":")
            return usdc_reference(int(chain_id), tx_hash, int(log_index))
        return f"usdc:lot:{lot_id}"
    qualifier: int | str = 1 if kind == ItemKind.PAYMENT else kind
    return card_reference(reference or f"lot:{lot_id}", occurrence=qualifier)


def _reference_key(reference: str) -> str:
    """What an item's exception reference names (its external record, lot reference or ``lot:<id>``), without the
    rail's prefix or the qualifier."""
    return reference.split(":", 1)[-1].split("#", 1)[0]


def _raise_exceptions(session: Session, run_id: int, rail: str, now: datetime) -> None:
    run = get_run(session, run_id)
    assert run is not None
    after = 0
    while True:
        batch = session.execute(
            select(items)
            .where(items.c.run_id == run_id, items.c.category != ItemCategory.MATCHED, items.c.id > after)
            .order_by(items.c.id)
            .limit(1_000)
        ).all()
        if not batch:
            return
        for item in batch:
            raise_exception(
                session,
                rail=rail,
                kind=f"{EXCEPTION_KIND_PREFIX}{item.category}",
                reference=exception_reference(item.kind, item.external_ref, item.lot_ref, item.lot_id),
                account_id=item.account_id if item.account_id is not None else _account_named(session, item),
                amount_cents=item.external_amount_cents,
                amount_usdc_units=item.external_amount_usdc_units,
                amount_credits=item.expected_credits if item.expected_credits is not None else item.ledger_credits,
                details={
                    "run_id": run_id,
                    "reconciliation_rail": run.rail,
                    "period_start": run.period_start.isoformat(),
                    "period_end": run.period_end.isoformat(),
                    "item_kind": item.kind,
                    "external_ref": item.external_ref,
                    "lot_ref": item.lot_ref,
                    "lot_id": item.lot_id,
                    "expected_credits": item.expected_credits,
                    "ledger_credits": item.ledger_credits,
                },
                now=now,
            )
        after = int(batch[-1].id)


def _account_named(session: Session, item: ItemRow) -> int | None:
    """For a card payment the ledger never credited: the account its Checkout Session was bought for, when that
    names an existing account."""
    if item.kind != ItemKind.PAYMENT or not item.lot_ref:
        return None
    named = session.execute(select(sessions.c.account_ref).where(sessions.c.stripe_id == item.lot_ref)).scalar()
    if not named or not str(named).isdigit():
        return None
    found = session.execute(select(accounts.c.id).where(accounts.c.id == int(named))).scalar()
    return int(found) if found is not None else None


def _close_rematched(session: Session, run_id: int, rail: str, now: datetime) -> None:
    """Open reconciliation exceptions of this rail whose item this run matched: closed as ``rematched``."""
    x = exceptions_table
    open_rows = session.execute(
        select(x.c.id, x.c.reference).where(
            x.c.rail == rail,
            x.c.status == ExceptionStatus.OPEN,
            x.c.kind.startswith(EXCEPTION_KIND_PREFIX, autoescape=True),
        )
    ).all()
    if not open_rows:
        return
    matched_refs: set[str] = set()
    for chunk in _chunks(open_rows, 500):
        keys = {_reference_key(ref) for _, ref in chunk}
        by_name = [key for key in keys if not key.startswith("lot:")]
        by_lot = [int(key.removeprefix("lot:")) for key in keys if key.startswith("lot:") and key[4:].isdigit()]
        found = session.execute(
            select(items.c.kind, items.c.external_ref, items.c.lot_ref, items.c.lot_id).where(
                items.c.run_id == run_id,
                items.c.category == ItemCategory.MATCHED,
                or_(items.c.external_ref.in_(by_name), items.c.lot_ref.in_(by_name), items.c.lot_id.in_(by_lot)),
            )
        ).all()
        for kind, external_ref, lot_ref, lot_id in found:
            # The item may have been raised by its external record or by its lot (whichever it had then).
            if external_ref:
                matched_refs.add(exception_reference(kind, external_ref, None, lot_id))
            if lot_ref:
                matched_refs.add(exception_reference(kind, None, lot_ref, lot_id))
            matched_refs.add(exception_reference(kind, None, None, lot_id))
    closing = [exception_id for exception_id, ref in open_rows if ref in matched_refs]
    for chunk_ids in _chunks(closing, 500):
        session.execute(
            update(x)
            .where(x.c.id.in_(chunk_ids), x.c.status == ExceptionStatus.OPEN)
            .values(
                status=ExceptionStatus.RESOLVED,
                action="rematched",
                resolved_by="reconciliation",
                resolution=f"matched by reconciliation run {run_id}",
                resolved_at=now,
            )
        )
