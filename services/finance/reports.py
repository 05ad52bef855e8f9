"""Finance reports: a rail's figures for a period, and the trial balance of every ledger account at an instant.

Every figure is an integer whose name carries its unit. Each is computed by a handful of grouped queries that
return a few rows (per month, movement kind or category), so memory stays flat however large the ledger is.
Nothing here writes or commits.

Period report (``period_report``), for a period [period_start, period_end) in UTC and a rail:

- ``card``, ``usdc`` (every chain), ``usdc:<chain id>`` (the lots whose reference starts ``<chain id>:``),
  ``grant``, ``adjustment`` or ``all``; the ledger figures count the lots of that rail.
- External, card: the Stripe balance transactions mirrored by finance, created in the period, in USD. Gross is
  reporting category ``charge`` (types charge and payment); refunds are ``refund`` net of ``refund_failure``;
  disputes are ``dispute`` net of ``dispute_reversal``; fees are Stripe's fee on all of those (a dispute's fee
  included); net is their net (gross - refunds - disputes - fees). Other categories (payouts, transfers, fees
  billed on their own) are not payments and are left out. ``complete`` when completed pulls of
  ``stripe:balance_transactions`` whose windows lie within the period cover it entirely.
- External, USDC, per chain: the pulls of ``chain:<chain id>`` whose windows lie within the period give a block
  range each (``details["from_block"]`` to ``details["to_block"]``, both inclusive); the Transfer records in those
  blocks are the period's gross. No refunds, disputes or fees on this rail (fees are 0, net is gross).
  ``complete`` as for the card. The chains of ``usdc`` are those with a pull overlapping the period or a funding
  account credited before its end.
- Ledger, from ``lot_movements`` (a movement's time is its transaction's time):
  minted = mint movements (a lot's full credits, when credited), of which promotional (grants) and debt repaid (the
  part of a mint that went straight to paying a clawback's debt); spent = spend and capture movements;
  expired = expiry movements (gross breakage); debit adjusted = adjustment movements.
  Clawed back = clawbacks minus reinstatements of the rail's lots in the period, each for its full amount (from
  the clawback and reinstatement transactions' entries on the clawbacks account); a clawback splits into what it
  took from the lot's remainder, from breakage (expired credits taken back: net breakage is expired minus this)
  and into debt; a reinstatement into what it gave back to the lot and the debt it cancelled.
- x402 (rails ``usdc``, ``usdc:<chain id>`` and ``all``): the USDC purchases paid over x402 (deposits marked ``via``
  x402) whose lots were credited in the period: how many, the USDC paid and the credits minted (a line of their own;
  the ledger figures count them too).
- Liability: the credits remaining on the rail's lots at the period's start and end, summed from the lots'
  movements before each instant (so a past period's report does not change with later activity). It rolls
  forward: end = start + minted - debt repaid - spent - expired - clawed back from remainder + reinstated to
  remainder - debit adjusted. The expiry schedule splits the end liability by the calendar month (UTC) of its
  lots' expiry; months before the period's end are credits overdue (a hold still reserves them, or the expiry job
  has not reached them yet).

Trial balance (``trial_balance`` and ``trial_balance_page`` / ``iter_trial_balance``): every account's balance as
the sum of its entries created at or before ``at``; totals per account kind and the grand total, which is zero
when the books balance (reported, not asserted).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy import ColumnElement, case, exists, func, literal_column, or_, select
from sqlmodel import Session

from services.core.db import table_of
from services.core.errors import InvalidRequest
from services.finance.models import ChainTransferRecord, StripeBalanceTransaction
from services.finance.pulls import PullState, pulls_table
from services.ledger import repository as repo
from services.ledger.history import VIA_X402
from services.ledger.models import AccountKind, MovementKind, Rail, TransactionKind
from services.ledger.system_accounts import SystemAccount
from services.usdc.models import UsdcDeposit

balance_transactions = table_of(StripeBalanceTransaction)
transfer_records = table_of(ChainTransferRecord)
deposits = table_of(UsdcDeposit)
pulls = pulls_table

RAILS = ("all", "card", "usdc", "grant", "adjustment")
"""The rails a period report is for (and ``usdc:<chain id>``)."""

# The sources finance_pulls records: the Stripe pull's balance transactions, and each chain's re-scan.
STRIPE_BALANCE_SOURCE = "stripe:balance_transactions"
CHAIN_SOURCE_PREFIX = "chain:"
USDC_FUNDING_PREFIX = "funding:usdc:"

GROSS_CATEGORIES = ("charge",)
REFUND_CATEGORIES = ("refund", "refund_failure")
DISPUTE_CATEGORIES = ("dispute", "dispute_reversal")
STRIPE_CURRENCY = "usd"

DEFAULT_PAGE_SIZE = 1_000


# --- report shapes -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CardExternal:
    """What Stripe reports for the period (signs: every figure is positive when money came in or went out as its
    name says; net is signed)."""

    complete: bool
    balance_transactions: int = 0
    gross_cents: int = 0
    refunds_cents: int = 0
    disputes_cents: int = 0
    fees_cents: int = 0
    net_cents: int = 0

    def as_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class ChainExternal:
    """The Transfers to deposit addresses re-scanned on one chain, over the block ranges of the period's pulls."""

    chain_id: int
    complete: bool
    # (first block, last block), both inclusive, merged where the pulls' ranges touch.
    block_ranges: tuple[tuple[int, int], ...] = ()
    transfers: int = 0
    gross_usdc_units: int = 0

    def as_dict(self) -> dict[str, Any]:
        values = _plain(self)
        values["block_ranges"] = [list(r) for r in self.block_ranges]
        return values


@dataclass(frozen=True, slots=True)
class UsdcExternal:
    complete: bool
    transfers: int = 0
    gross_usdc_units: int = 0
    fees_usdc_units: int = 0
    net_usdc_units: int = 0
    chains: tuple[ChainExternal, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        values = _plain(self)
        values["chains"] = [chain.as_dict() for chain in self.chains]
        return values


@dataclass(frozen=True, slots=True)
class LedgerFigures:
    credits_minted: int = 0
    credits_promotional_granted: int = 0
    credits_debt_repaid: int = 0
    credits_spent: int = 0
    credits_expired: int = 0
    credits_clawed_back: int = 0
    credits_clawed_back_gross: int = 0
    credits_clawed_back_from_remaining: int = 0
    credits_clawed_back_from_breakage: int = 0
    credits_clawed_back_into_debt: int = 0
    credits_reinstated: int = 0
    credits_reinstated_to_remaining: int = 0
    credits_reinstated_debt_cancelled: int = 0
    credits_debit_adjusted: int = 0
    liability_at_start_credits: int = 0
    liability_at_end_credits: int = 0

    def as_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class X402Figures:
    """The USDC purchases paid over x402 (their deposits marked ``via`` x402) whose lots were credited in the
    period: a line of their own within the USDC rail's figures (already counted in its minted credits)."""

    purchases: int = 0
    paid_usdc_units: int = 0
    credits_minted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class ExpiryMonth:
    # "YYYY-MM", the calendar month (UTC) the lots expire in.
    month: str
    credits: int


@dataclass(frozen=True, slots=True)
class PeriodReport:
    rail: str
    period_start: datetime
    period_end: datetime
    # Every external source the rail has was pulled for the whole period (True when the rail has none).
    external_complete: bool
    card: CardExternal | None
    usdc: UsdcExternal | None
    ledger: LedgerFigures
    expiry_schedule: tuple[ExpiryMonth, ...] = field(default=())
    # USDC purchases paid over x402 (for the rails that count USDC lots), else None.
    x402: X402Figures | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rail": self.rail,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "external_complete": self.external_complete,
            "external": {
                "card": self.card.as_dict() if self.card is not None else None,
                "usdc": self.usdc.as_dict() if self.usdc is not None else None,
            },
            "ledger": self.ledger.as_dict(),
            "x402": self.x402.as_dict() if self.x402 is not None else None,
            "expiry_schedule": [{"month": m.month, "credits": m.credits} for m in self.expiry_schedule],
        }


def _plain(figures: Any) -> dict[str, Any]:
    return {f.name: getattr(figures, f.name) for f in fields(figures)}


# --- the period report ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Scope:
    rail: str
    lot_filter: tuple[ColumnElement[bool], ...]
    card: bool
    usdc: bool
    # Only this chain (usdc:<chain id>); None: every chain.
    chain_id: int | None


def _scope(rail: str) -> _Scope:
    lots = repo.lots
    if rail == "all":
        return _Scope(rail, (), card=True, usdc=True, chain_id=None)
    if rail in (Rail.CARD, Rail.GRANT, Rail.ADJUSTMENT):
        return _Scope(rail, (lots.c.rail == rail,), card=rail == Rail.CARD, usdc=False, chain_id=None)
    if rail == Rail.USDC:
        return _Scope(rail, (lots.c.rail == Rail.USDC,), card=False, usdc=True, chain_id=None)
    prefix = f"{Rail.USDC}:"
    if rail.startswith(prefix) and rail[len(prefix) :].isdigit():
        chain_id = int(rail[len(prefix) :])
        condition = (lots.c.rail == Rail.USDC, lots.c.external_ref.startswith(f"{chain_id}:", autoescape=True))
        return _Scope(f"{prefix}{chain_id}", condition, card=False, usdc=True, chain_id=chain_id)
    raise InvalidRequest(f"unknown rail {rail!r}: one of {', '.join(RAILS)} or usdc:<chain id>", field="rail")


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise InvalidRequest(f"{name} must carry a time zone", field=name)
    return value.astimezone(UTC)


def period_report(session: Session, *, rail: str, period_start: datetime, period_end: datetime) -> PeriodReport:
    """The rail's external and ledger figures for [period_start, period_end), and its liability at the end."""
    scope = _scope(rail)
    start = _aware(period_start, "period_start")
    end = _aware(period_end, "period_end")
    if end <= start:
        raise InvalidRequest("a period must end after it starts", field="period_end")
    card = _card_external(session, start, end) if scope.card else None
    usdc = _usdc_external(session, start, end, scope.chain_id) if scope.usdc else None
    ledger, schedule = _ledger_figures(session, scope, start, end)
    complete = (card is None or card.complete) and (usdc is None or usdc.complete)
    x402 = _x402_figures(session, scope, start, end) if scope.usdc else None
    return PeriodReport(scope.rail, start, end, complete, card, usdc, ledger, schedule, x402=x402)


def _x402_figures(session: Session, scope: _Scope, start: datetime, end: datetime) -> X402Figures:
    lots = repo.lots
    row = session.execute(
        select(func.count(lots.c.id), func.sum(lots.c.cost_basis_usdc_units), func.sum(lots.c.credits))
        .select_from(lots.join(deposits, deposits.c.lot_id == lots.c.id))
        .where(
            lots.c.rail == Rail.USDC,
            deposits.c.via == VIA_X402,
            lots.c.credited_at >= start,
            lots.c.credited_at < end,
            *scope.lot_filter,
        )
    ).one()
    return X402Figures(purchases=int(row[0] or 0), paid_usdc_units=int(row[1] or 0), credits_minted=int(row[2] or 0))


def _month_of(session: Session, column: Any) -> ColumnElement[str]:
    """The calendar month (UTC) of a timestamp column, as "YYYY-MM". Constants are literals, so the same
    expression can be grouped by."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone(literal_column("'UTC'"), column), literal_column("'YYYY-MM'"))
    return func.strftime(literal_column("'%Y-%m'"), column)


def _ledger_figures(
    session: Session, scope: _Scope, start: datetime, end: datetime
) -> tuple[LedgerFigures, tuple[ExpiryMonth, ...]]:
    m = repo.movements
    lots = repo.lots
    month = _month_of(session, lots.c.expires_at)
    before_start = case((m.c.created_at < start, m.c.amount_credits), else_=0)
    rows = session.execute(
        select(
            month.label("month"),
            m.c.kind,
            lots.c.promotional,
            func.sum(m.c.amount_credits).label("at_end"),
            func.sum(before_start).label("at_start"),
        )
        .select_from(m.join(lots, lots.c.id == m.c.lot_id))
        .where(m.c.created_at < end, *scope.lot_filter)
        .group_by(month, m.c.kind, lots.c.promotional)
    ).all()

    in_period: dict[str, int] = {}
    promotional_minted = 0
    liability_start = 0
    by_month: dict[str, int] = {}
    for row in rows:
        at_end, at_start = int(row.at_end or 0), int(row.at_start or 0)
        in_period[row.kind] = in_period.get(row.kind, 0) + at_end - at_start
        if row.kind == MovementKind.MINT and row.promotional:
            promotional_minted += at_end - at_start
        liability_start += at_start
        by_month[row.month] = by_month.get(row.month, 0) + at_end
    schedule = tuple(ExpiryMonth(month, credits) for month, credits in sorted(by_month.items()) if credits)

    claw = _clawback_entries(session, scope, start, end)
    clawed_gross = claw.get((TransactionKind.CLAWBACK, SystemAccount.CLAWBACKS), 0)
    from_breakage = -claw.get((TransactionKind.CLAWBACK, SystemAccount.BREAKAGE), 0)
    reinstated = -claw.get((TransactionKind.REINSTATEMENT, SystemAccount.CLAWBACKS), 0)
    from_remaining = -in_period.get(MovementKind.CLAWBACK, 0)
    to_remaining = in_period.get(MovementKind.REINSTATEMENT, 0)
    figures = LedgerFigures(
        credits_minted=in_period.get(MovementKind.MINT, 0),
        credits_promotional_granted=promotional_minted,
        credits_debt_repaid=-in_period.get(MovementKind.DEBT_REPAYMENT, 0),
        credits_spent=-(in_period.get(MovementKind.SPEND, 0) + in_period.get(MovementKind.CAPTURE, 0)),
        credits_expired=-in_period.get(MovementKind.EXPIRY, 0),
        credits_clawed_back=clawed_gross - reinstated,
        credits_clawed_back_gross=clawed_gross,
        credits_clawed_back_from_remaining=from_remaining,
        credits_clawed_back_from_breakage=from_breakage,
        credits_clawed_back_into_debt=clawed_gross - from_remaining - from_breakage,
        credits_reinstated=reinstated,
        credits_reinstated_to_remaining=to_remaining,
        credits_reinstated_debt_cancelled=reinstated - to_remaining,
        credits_debit_adjusted=-in_period.get(MovementKind.ADJUSTMENT, 0),
        liability_at_start_credits=liability_start,
        liability_at_end_credits=sum(by_month.values()),
    )
    return figures, schedule


def _clawback_entries(session: Session, scope: _Scope, start: datetime, end: datetime) -> dict[tuple[str, int], int]:
    """{(transaction kind, account id): credits} of the period's clawbacks and reinstatements on the clawbacks and
    breakage accounts, for the scope's lots (a clawback names its lot in its details)."""
    t = repo.transactions
    e = repo.entries
    joined = t.join(e, e.c.transaction_id == t.c.id)
    if scope.lot_filter:
        lots = repo.lots
        joined = joined.join(lots, lots.c.id == t.c.details["lot_id"].as_integer())
    rows = session.execute(
        select(t.c.kind, e.c.account_id, func.sum(e.c.amount_credits).label("credits"))
        .select_from(joined)
        .where(
            t.c.kind.in_([TransactionKind.CLAWBACK, TransactionKind.REINSTATEMENT]),
            t.c.created_at >= start,
            t.c.created_at < end,
            e.c.account_id.in_([SystemAccount.CLAWBACKS, SystemAccount.BREAKAGE]),
            *scope.lot_filter,
        )
        .group_by(t.c.kind, e.c.account_id)
    ).all()
    return {(row.kind, int(row.account_id)): int(row.credits or 0) for row in rows}


# --- external figures ----------------------------------------------------------------------------------------


def _pulls_within(session: Session, source: str, start: datetime, end: datetime) -> list[PullState]:
    rows = session.execute(
        select(pulls)
        .where(pulls.c.source == source, pulls.c.window_start >= start, pulls.c.window_end <= end)
        .order_by(pulls.c.window_start, pulls.c.id)
    ).all()
    return [PullState(**{name: getattr(row, name) for name in PullState.__dataclass_fields__}) for row in rows]


def _pulls_overlapping(session: Session, source: str, start: datetime, end: datetime) -> list[PullState]:
    """Pulls whose windows overlap [start, end): a Stripe pull covers every record created in its window, so a pull
    of a wider window (reconciliation pulls the period and a margin either side) covers the period too."""
    rows = session.execute(
        select(pulls)
        .where(pulls.c.source == source, pulls.c.window_start < end, pulls.c.window_end > start)
        .order_by(pulls.c.window_start, pulls.c.id)
    ).all()
    return [PullState(**{name: getattr(row, name) for name in PullState.__dataclass_fields__}) for row in rows]


def _covered(found: Iterable[PullState], start: datetime, end: datetime) -> bool:
    """Do the complete pulls' windows cover [start, end) without a gap?"""
    reached = start
    for pull in sorted((p for p in found if p.complete), key=lambda p: p.window_start):
        if pull.window_start > reached:
            return False
        reached = max(reached, pull.window_end)
    return reached >= end


def _card_external(session: Session, start: datetime, end: datetime) -> CardExternal:
    b = balance_transactions
    complete = _covered(_pulls_overlapping(session, STRIPE_BALANCE_SOURCE, start, end), start, end)
    rows = session.execute(
        select(
            b.c.reporting_category,
            func.count().label("records"),
            func.sum(b.c.amount_cents).label("amount"),
            func.sum(b.c.fee_cents).label("fee"),
            func.sum(b.c.net_cents).label("net"),
        )
        .where(
            b.c.stripe_created_at >= start,
            b.c.stripe_created_at < end,
            b.c.currency == STRIPE_CURRENCY,
            b.c.reporting_category.in_(GROSS_CATEGORIES + REFUND_CATEGORIES + DISPUTE_CATEGORIES),
        )
        .group_by(b.c.reporting_category)
    ).all()
    amount = {row.reporting_category: int(row.amount or 0) for row in rows}
    return CardExternal(
        complete=complete,
        balance_transactions=sum(int(row.records) for row in rows),
        gross_cents=sum(amount.get(c, 0) for c in GROSS_CATEGORIES),
        refunds_cents=-sum(amount.get(c, 0) for c in REFUND_CATEGORIES),
        disputes_cents=-sum(amount.get(c, 0) for c in DISPUTE_CATEGORIES),
        fees_cents=sum(int(row.fee or 0) for row in rows),
        net_cents=sum(int(row.net or 0) for row in rows),
    )


def _usdc_external(session: Session, start: datetime, end: datetime, chain_id: int | None) -> UsdcExternal:
    chain_ids = [chain_id] if chain_id is not None else _chains_of_period(session, start, end)
    chains = tuple(_chain_external(session, chain, start, end) for chain in chain_ids)
    gross = sum(chain.gross_usdc_units for chain in chains)
    return UsdcExternal(
        complete=all(chain.complete for chain in chains),
        transfers=sum(chain.transfers for chain in chains),
        gross_usdc_units=gross,
        fees_usdc_units=0,
        net_usdc_units=gross,
        chains=chains,
    )


def _chains_of_period(session: Session, start: datetime, end: datetime) -> list[int]:
    """Chains with a pull overlapping the period, or whose funding account was credited before the period ended."""
    found: set[int] = set()
    sources = session.execute(
        select(pulls.c.source)
        .where(
            pulls.c.source.startswith(CHAIN_SOURCE_PREFIX, autoescape=True),
            pulls.c.window_start < end,
            pulls.c.window_end > start,
        )
        .distinct()
    ).scalars()
    for source in sources:
        suffix = str(source)[len(CHAIN_SOURCE_PREFIX) :]
        if suffix.isdigit():
            found.add(int(suffix))
    a = repo.accounts
    e = repo.entries
    credited = exists().where(e.c.account_id == a.c.id, e.c.created_at < end)
    codes = session.execute(
        select(a.c.code).where(
            a.c.kind == AccountKind.SYSTEM, a.c.code.startswith(USDC_FUNDING_PREFIX, autoescape=True), credited
        )
    ).scalars()
    for code in codes:
        suffix = str(code)[len(USDC_FUNDING_PREFIX) :]
        if suffix.isdigit():
            found.add(int(suffix))
    return sorted(found)


def _block_ranges(found: Iterable[PullState]) -> tuple[tuple[int, int], ...]:
    ranges: list[tuple[int, int]] = []
    for pull in found:
        first, last = pull.details.get("from_block"), pull.details.get("to_block")
        if isinstance(first, int) and isinstance(last, int) and first <= last:
            ranges.append((first, last))
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)


def _chain_external(session: Session, chain_id: int, start: datetime, end: datetime) -> ChainExternal:
    found = _pulls_within(session, f"{CHAIN_SOURCE_PREFIX}{chain_id}", start, end)
    ranges = _block_ranges(found)
    complete = _covered(found, start, end)
    if not ranges:
        return ChainExternal(chain_id, complete)
    r = transfer_records
    row = session.execute(
        select(func.count().label("transfers"), func.sum(r.c.amount_usdc_units).label("gross")).where(
            r.c.chain_id == chain_id,
            or_(*(r.c.block_number.between(first, last) for first, last in ranges)),
        )
    ).one()
    return ChainExternal(chain_id, complete, ranges, int(row.transfers or 0), int(row.gross or 0))


# --- the trial balance ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountBalance:
    account_id: int
    code: str | None
    kind: str
    name: str
    balance_credits: int

    def as_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class KindTotal:
    kind: str
    accounts: int
    balance_credits: int

    def as_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class TrialBalance:
    """The totals at ``at``, and the system accounts in full (few); customer accounts come page by page."""

    at: datetime
    totals: tuple[KindTotal, ...]
    total_credits: int
    system_accounts: tuple[AccountBalance, ...]

    @property
    def balanced(self) -> bool:
        return self.total_credits == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "totals": [total.as_dict() for total in self.totals],
            "total_credits": self.total_credits,
            "balanced": self.balanced,
            "system_accounts": [account.as_dict() for account in self.system_accounts],
        }


@dataclass(frozen=True, slots=True)
class TrialBalancePage:
    accounts: tuple[AccountBalance, ...]
    # Pass as ``after_id`` for the next page; None when this page is the last.
    next_after_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"accounts": [a.as_dict() for a in self.accounts], "next_after_id": self.next_after_id}


def _listed(at: datetime) -> ColumnElement[bool]:
    """The accounts a trial balance at ``at`` lists: the system ones, and every other that existed by then (or
    has an entry by then)."""
    a = repo.accounts
    e = repo.entries
    return or_(
        a.c.kind == AccountKind.SYSTEM,
        a.c.created_at <= at,
        exists().where(e.c.account_id == a.c.id, e.c.created_at <= at),
    )


def trial_balance(session: Session, *, at: datetime) -> TrialBalance:
    """Totals per account kind at ``at`` and the grand total (zero when the books balance), with every system
    account's balance."""
    at = _aware(at, "at")
    a = repo.accounts
    e = repo.entries
    balances = {
        row.kind: int(row.credits or 0)
        for row in session.execute(
            select(a.c.kind, func.sum(e.c.amount_credits).label("credits"))
            .select_from(e.join(a, a.c.id == e.c.account_id))
            .where(e.c.created_at <= at)
            .group_by(a.c.kind)
        )
    }
    counts = {
        row.kind: int(row.accounts)
        for row in session.execute(
            select(a.c.kind, func.count().label("accounts")).where(_listed(at)).group_by(a.c.kind)
        )
    }
    kinds = sorted(set(balances) | set(counts))
    totals = tuple(KindTotal(kind, counts.get(kind, 0), balances.get(kind, 0)) for kind in kinds)
    system = tuple(iter_trial_balance(session, at=at, kind=AccountKind.SYSTEM))
    return TrialBalance(at, totals, sum(balances.values()), system)


def trial_balance_page(
    session: Session,
    *,
    at: datetime,
    after_id: int = 0,
    limit: int = DEFAULT_PAGE_SIZE,
    kind: str | None = None,
) -> TrialBalancePage:
    """Up to ``limit`` accounts with ids above ``after_id``, in id order, with their balances at ``at``."""
    at = _aware(at, "at")
    if limit < 1:
        raise InvalidRequest("limit must be at least 1", field="limit")
    a = repo.accounts
    e = repo.entries
    balance = (
        select(func.coalesce(func.sum(e.c.amount_credits), 0))
        .where(e.c.account_id == a.c.id, e.c.created_at <= at)
        .scalar_subquery()
    )
    stmt = select(a.c.id, a.c.code, a.c.kind, a.c.name, balance.label("balance")).where(a.c.id > after_id, _listed(at))
    if kind is not None:
        stmt = stmt.where(a.c.kind == kind)
    rows = session.execute(stmt.order_by(a.c.id).limit(limit)).all()
    accounts = tuple(AccountBalance(int(r.id), r.code, r.kind, r.name, int(r.balance or 0)) for r in rows)
    return TrialBalancePage(accounts, accounts[-1].account_id if len(accounts) == limit else None)


def iter_trial_balance(
    session: Session, *, at: datetime, kind: str | None = None, page_size: int = DEFAULT_PAGE_SIZE
) -> Iterator[AccountBalance]:
    """Every account's balance at ``at``, in id order, one page at a time."""
    after_id = 0
    while True:
        page = trial_balance_page(session, at=at, after_id=after_id, limit=page_size, kind=kind)
        yield from page.accounts
        if page.next_after_id is None:
            return
        after_id = page.next_after_id


# --- CSV -----------------------------------------------------------------------------------------------------

PERIOD_REPORT_COLUMNS = ("section", "name", "value")
TRIAL_BALANCE_COLUMNS = ("row", "account_id", "code", "kind", "name", "accounts", "balance_credits")


def _csv_line(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else _csv_value(v) for v in values])
    return buffer.getvalue()


def _csv_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def period_report_rows(report: PeriodReport) -> Iterator[tuple[str, str, Any]]:
    """The report as (section, name, value) rows: what the CSV holds, one figure a row."""
    yield "report", "rail", report.rail
    yield "report", "period_start", report.period_start.isoformat()
    yield "report", "period_end", report.period_end.isoformat()
    yield "report", "external_complete", report.external_complete
    if report.card is not None:
        for f in fields(report.card):
            yield "external_card", f.name, getattr(report.card, f.name)
    if report.usdc is not None:
        for f in fields(report.usdc):
            if f.name != "chains":
                yield "external_usdc", f.name, getattr(report.usdc, f.name)
        for chain in report.usdc.chains:
            section = f"external_usdc:{chain.chain_id}"
            yield section, "complete", chain.complete
            yield section, "block_ranges", ";".join(f"{first}-{last}" for first, last in chain.block_ranges)
            yield section, "transfers", chain.transfers
            yield section, "gross_usdc_units", chain.gross_usdc_units
    for f in fields(report.ledger):
        yield "ledger", f.name, getattr(report.ledger, f.name)
    if report.x402 is not None:
        for f in fields(report.x402):
            yield "x402", f.name, getattr(report.x402, f.name)
    for month in report.expiry_schedule:
        yield "expiry_schedule_credits", month.month, month.credits


def write_period_report_csv(out: TextIO, report: PeriodReport) -> None:
    out.write(_csv_line(PERIOD_REPORT_COLUMNS))
    for row in period_report_rows(report):
        out.write(_csv_line(row))


def period_report_csv(report: PeriodReport) -> str:
    """The report as CSV: a header, then one ``section,name,value`` row per figure (booleans as true/false)."""
    buffer = io.StringIO()
    write_period_report_csv(buffer, report)
    return buffer.getvalue()


def trial_balance_csv_lines(session: Session, *, at: datetime, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[str]:
    """The trial balance as CSV lines, for streaming: a header, one ``account`` row per account in id order, then a
    ``kind_total`` row per account kind and the ``total`` row (zero when the books balance)."""
    totals = trial_balance(session, at=at)
    yield _csv_line(TRIAL_BALANCE_COLUMNS)
    for account in iter_trial_balance(session, at=totals.at, page_size=page_size):
        yield _csv_line(
            ("account", account.account_id, account.code, account.kind, account.name, None, account.balance_credits)
        )
    for total in totals.totals:
        yield _csv_line(("kind_total", None, None, total.kind, None, total.accounts, total.balance_credits))
    accounts = sum(total.accounts for total in totals.totals)
    yield _csv_line(("total", None, None, None, None, accounts, totals.total_credits))


def write_trial_balance_csv(out: TextIO, session: Session, *, at: datetime, page_size: int = DEFAULT_PAGE_SIZE) -> None:
    for line in trial_balance_csv_lines(session, at=at, page_size=page_size):
        out.write(line)


def trial_balance_csv(session: Session, *, at: datetime, page_size: int = DEFAULT_PAGE_SIZE) -> str:
    buffer = io.StringIO()
    write_trial_balance_csv(buffer, session, at=at, page_size=page_size)
    return buffer.getvalue()
