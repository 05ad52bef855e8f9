"""What every ledger operation decides, in pure code, once for both stores.

An operation reads as: validate the request, lock the account and read its state (``store.LedgerStore.lock_…``),
decide (a function here: replay or refuse, which lots, which budgets, which rows), then write the plan
(``store.LedgerStore.write_…``). This module holds the three kinds of values that pass between those steps:

- requests: what the caller asked, already validated (``DrawRequest``, ``HoldRequest``, ``MintRequest``);
- states: what the store read under the account's lock (``AccountState``, ``LockedHold``, ``DueLots``);
- plans: every row an operation inserts or changes, with its idempotency keys, legs and details: ``Writes``
  (journal transactions as ``Posting``s, lot changes, movements, budget usage, a new lot, a debt), alone or with
  what else the operation writes (``DrawPlan``, ``HoldPlan``, ``SettlePlan``, ``MintPlan``, ``ClawbackPlan``).

A store only writes what a plan says: no key, leg, counter-account or detail is spelled anywhere else, so the
Core store and the PostgreSQL store cannot drift apart on what a movement means.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from services.core.clock import period_start
from services.core.errors import IdempotencyKeyReused
from services.ledger.errors import AccountNotFound, BudgetExceeded, InsufficientCredits, NotACustomerAccount
from services.ledger.models import AccountKind, MovementKind, TransactionKind
from services.ledger.system_accounts import SystemAccount

# (lot id, credits), in draw-down order.
Draws = list[tuple[int, int]]

EXPIRY_KEY_PREFIX = "expiry:lots:"


# --- requests ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrawRequest:
    """Debit ``amount_credits`` from the account's lots into ``counter_account_id``: a spend or a debit adjustment,
    counted against the budgets of ``api_key_id`` and ``project`` (none when both are None)."""

    account_id: int
    amount_credits: int
    idempotency_key: str
    request_hash: str
    kind: str
    movement_kind: str
    counter_account_id: int
    now: datetime
    description: str | None
    details: dict[str, Any] | None
    api_key_id: int | None = None
    project: str | None = None


@dataclass(frozen=True, slots=True)
class HoldRequest:
    """Reserve ``amount_credits`` on the account's lots until ``expires_at``, counted against the budgets that
    apply. The idempotency key is the caller's own, unique within the account."""

    account_id: int
    amount_credits: int
    idempotency_key: str
    request_hash: str
    now: datetime
    expires_at: datetime
    api_key_id: int | None
    project: str | None
    description: str | None


@dataclass(frozen=True, slots=True)
class MintRequest:
    """Create a lot of ``amount_credits`` funded by ``funding_account_id``, repaying the account's debt first."""

    account_id: int
    amount_credits: int
    idempotency_key: str
    request_hash: str
    kind: str
    funding_account_id: int
    rail: str
    external_ref: str
    cost_basis_cents: int | None
    cost_basis_usdc_units: int | None
    promotional: bool
    credited_at: datetime
    expires_at: datetime
    description: str | None
    details: dict[str, Any] | None


# --- states read under the lock ------------------------------------------------------------------------------


class BudgetUse(NamedTuple):
    """A budget that applies, with what already counts against it in its current period."""

    id: int
    name: str
    period: str
    limit_credits: int
    used_credits: int


class Existing(NamedTuple):
    """What was done before under the request's idempotency key: its request's fingerprint, and the journal
    transaction (a draw or mint) or the hold it made."""

    request_hash: str | None
    transaction_id: int | None = None
    hold: HoldRow | None = None


class AccountState(NamedTuple):
    """The account under its lock: its kind (None: no such account), its debt, what the request's idempotency key
    did before, and, for a new draw or hold, the lots that cover it with the budgets that apply."""

    kind: str | None
    debt_credits: int
    existing: Existing | None = None
    # (lot id, unreserved credits) in draw-down order: as many as cover the amount plus the debt, or all.
    candidates: list[tuple[int, int]] = []
    budgets: list[BudgetUse] = []


class HoldRow(NamedTuple):
    """A hold's row as the ledger shows it (timestamps in UTC)."""

    id: int
    account_id: int
    amount_credits: int
    captured_credits: int
    status: str
    project: str | None
    description: str | None
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None
    capture_transaction_id: int | None


class LockedHold(NamedTuple):
    """A hold read under its account's lock (with the account's kind), its allocations: (lot id, credits, lot's
    expiry) in reserved order, and the (budget id, period start) it counted against."""

    kind: str | None
    row: HoldRow
    allocations: list[tuple[int, int, datetime]]
    budget_charges: list[tuple[int, datetime]]


class DueLot(NamedTuple):
    """A lot due to expire, read under its account's lock: what expires is its unreserved remainder."""

    id: int
    account_id: int
    amount_credits: int
    reserved_credits: int


class DueLots(NamedTuple):
    """An expiry batch, read under its accounts' locks: ``taken``, the ids of the lots it took from the expiry queue
    (every lot picked of the accounts locked, in id order), and of those the ``lots`` due, with an unreserved
    remainder to expire; ``examined`` counts every lot picked, those of accounts passed over included."""

    examined: int
    lots: list[DueLot]
    taken: list[int] = []


# --- plans -------------------------------------------------------------------------------------------------


class Posting(NamedTuple):
    """A journal transaction to write, its entries being ``legs``: (account id, signed credits) in order, summing
    to zero."""

    kind: str
    idempotency_key: str
    request_hash: str | None
    account_id: int | None
    description: str | None
    details: dict[str, Any]
    legs: tuple[tuple[int, int], ...]
    # A key of ``details`` that takes the id of the plan's first transaction (written before this one).
    first_transaction_detail: str | None = None


class Movement(NamedTuple):
    """A lot movement to write: ``posting`` is the index of its transaction in the plan's postings; ``lot_id`` None
    is the lot the plan creates."""

    lot_id: int | None
    posting: int
    kind: str
    amount_credits: int
    hold_id: int | None = None


class LotChange(NamedTuple):
    """Signed changes to one lot's counters."""

    lot_id: int
    remaining_credits: int = 0
    reserved_credits: int = 0
    expired_credits: int = 0
    clawed_back_credits: int = 0


@dataclass(frozen=True, slots=True)
class Writes:
    """Every row an operation writes, in the order each table gets its new rows: the journal transactions, a new
    lot (a mint's, with its entry in the expiry queue), changes to lots (at most one per lot), lot movements
    (``lot_id`` None: the new lot), budget usage counted or given back (budget id, period start, signed credits),
    and an account's new debt."""

    now: datetime
    postings: list[Posting] = field(default_factory=list)
    lots: list[LotChange] = field(default_factory=list)
    movements: list[Movement] = field(default_factory=list)
    budgets: list[tuple[int, datetime, int]] = field(default_factory=list)
    new_lot: dict[str, Any] | None = None
    # (account id, its debt after the operation), when it changes.
    debt: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class DrawPlan:
    writes: Writes
    # (lot id, credits) drawn, in draw-down order.
    draws: Draws


@dataclass(frozen=True, slots=True)
class HoldPlan:
    """The hold's row, its allocations (reserved order) and budget charges; ``writes`` reserve and count."""

    request: HoldRequest
    reservations: Draws
    budget_charges: list[tuple[int, datetime]]
    writes: Writes


@dataclass(frozen=True, slots=True)
class SettlePlan:
    """A locked, active hold resolved: everything un-reserved, the capture drawn, what it frees on lots whose time
    has come expired at once, unused budget given back; then the hold's new status."""

    hold_id: int
    status: str
    capture_credits: int
    # Index in the postings of the capture's transaction, if there is one.
    capture_posting: int | None
    writes: Writes


@dataclass(frozen=True, slots=True)
class ExpiryPlan:
    """An expiry batch: the lots it took leave the expiry queue (``dequeued``, lot ids), and ``writes`` expire the
    unreserved remainder of those due (nothing when none is)."""

    writes: Writes
    dequeued: list[int]


@dataclass(frozen=True, slots=True)
class MintPlan:
    repaid_credits: int
    writes: Writes


class ClawbackSplit(NamedTuple):
    """Where a clawback's credits come from (or where a reinstatement's go)."""

    from_lot_credits: int
    from_breakage_credits: int
    debt_credits: int


@dataclass(frozen=True, slots=True)
class ClawbackPlan:
    writes: Writes
    split: ClawbackSplit


class Replay(NamedTuple):
    """The request was made before with the same idempotency key: its transaction."""

    transaction_id: int


# --- rules -------------------------------------------------------------------------------------------------


def require_customer(account_id: int, kind: str | None) -> None:
    """Refuse an account that does not exist (``kind`` None) or is not a customer's."""
    if kind is None:
        raise AccountNotFound(f"account {account_id} does not exist", account_id=account_id)
    if kind != AccountKind.CUSTOMER:
        raise NotACustomerAccount(f"account {account_id} is not a customer account", account_id=account_id)


def check_same_request(used_request_hash: str | None, request_hash: str, idempotency_key: str) -> None:
    """Refuse an idempotency key already used by a different request (a retry of the same request replays)."""
    if used_request_hash != request_hash:
        raise IdempotencyKeyReused(
            "this idempotency key was already used with a different request", idempotency_key=idempotency_key
        )


def replay_of(existing: Existing | None, request_hash: str, idempotency_key: str) -> Existing | None:
    """What to replay: None when the key is new; raises when it was used by a different request."""
    if existing is not None:
        check_same_request(existing.request_hash, request_hash, idempotency_key)
    return existing


def debt_repaid(debt_credits: int, amount_credits: int) -> int:
    """What a mint of ``amount_credits`` repays of the account's debt: the debt comes first."""
    return min(debt_credits, amount_credits)


def plan_draws(candidates: Sequence[tuple[int, int]], amount_credits: int, debt_credits: int) -> Draws:
    """Which of ``candidates`` give ``amount_credits``: (lot id, credits) in draw-down order.

    ``candidates`` are (lot id, unreserved credits) of the account's live lots in draw-down order (soonest expiry,
    then oldest credited, then lowest id), as many as cover ``amount_credits`` plus the debt, or all of them when
    the account holds less. The debt must stay covered, so a customer in debt can only spend what exceeds it."""
    needed = amount_credits + debt_credits
    free = sum(credits for _, credits in candidates)
    if free < needed:
        raise InsufficientCredits(
            f"{amount_credits} credits requested, {max(0, free - debt_credits)} available",
            requested_credits=amount_credits,
            available_credits=max(0, free - debt_credits),
            shortfall_credits=amount_credits - max(0, free - debt_credits),
        )
    plan: Draws = []
    left = amount_credits
    for lot_id, credits in candidates:
        if left == 0:
            break
        take = min(credits, left)
        plan.append((lot_id, take))
        left -= take
    return plan


def split_reservation(
    allocations: Iterable[tuple[int, int, datetime]], capture_credits: int, now: datetime
) -> tuple[Draws, Draws]:
    """How a hold resolves: ``allocations`` are its (lot id, reserved credits, lot's expiry) in reserved order.

    Returns (draws, expiring): ``capture_credits`` drawn from the lots in that order, and what the hold frees on
    lots whose time has come, which expires at once."""
    draws: Draws = []
    expiring: Draws = []
    left = capture_credits
    for lot_id, reserved, expires_at in allocations:
        take = min(reserved, left)
        left -= take
        if take:
            draws.append((lot_id, take))
        freed = reserved - take
        if freed and expires_at <= now:
            expiring.append((lot_id, freed))
    return draws, expiring


def budget_charges(budgets: Sequence[BudgetUse], amount_credits: int, now: datetime) -> list[tuple[int, datetime]]:
    """The (budget id, period start) pairs ``amount_credits`` counts against, or raise if it would take any of
    ``budgets`` (those that apply, in id order, with what counts against each this period) over its limit."""
    charged: list[tuple[int, datetime]] = []
    for budget in budgets:
        if budget.used_credits + amount_credits > budget.limit_credits:
            raise BudgetExceeded(
                f"budget {budget.name!r} allows {budget.limit_credits - budget.used_credits} more credits this "
                f"{budget.period}",
                budget_id=budget.id,
                budget=budget.name,
                limit_credits=budget.limit_credits,
                used_credits=budget.used_credits,
                requested_credits=amount_credits,
            )
        charged.append((budget.id, period_start(now, budget.period)))
    return charged


def _transfer(debited: int, credited: int, amount_credits: int) -> tuple[tuple[int, int], ...]:
    return ((debited, -amount_credits), (credited, amount_credits))


def _posting(req: DrawRequest | MintRequest, legs: tuple[tuple[int, int], ...]) -> Posting:
    return Posting(
        req.kind, req.idempotency_key, req.request_hash, req.account_id, req.description, req.details or {}, legs
    )


# --- plans of the operations ---------------------------------------------------------------------------------


def plan_draw(req: DrawRequest, state: AccountState) -> DrawPlan:
    """A spend or debit adjustment: one transaction, drawn from lots in draw-down order, counted in budgets."""
    draws = plan_draws(state.candidates, req.amount_credits, state.debt_credits)
    charges = budget_charges(state.budgets, req.amount_credits, req.now)
    writes = Writes(
        req.now,
        postings=[_posting(req, _transfer(req.account_id, req.counter_account_id, req.amount_credits))],
        lots=[LotChange(lot_id, remaining_credits=-credits) for lot_id, credits in draws],
        movements=[Movement(lot_id, 0, req.movement_kind, -credits) for lot_id, credits in draws],
        budgets=[(budget_id, start, req.amount_credits) for budget_id, start in charges],
    )
    return DrawPlan(writes, draws)


def plan_hold(req: HoldRequest, state: AccountState) -> HoldPlan:
    """A hold: credits reserved on lots in draw-down order, counted in budgets in full until it resolves."""
    reservations = plan_draws(state.candidates, req.amount_credits, state.debt_credits)
    charges = budget_charges(state.budgets, req.amount_credits, req.now)
    writes = Writes(
        req.now,
        lots=[LotChange(lot_id, reserved_credits=credits) for lot_id, credits in reservations],
        budgets=[(budget_id, start, req.amount_credits) for budget_id, start in charges],
    )
    return HoldPlan(req, reservations, charges, writes)


def plan_mint(req: MintRequest, debt_credits: int) -> MintPlan:
    """A new lot, its transaction and movements; the account's debt is repaid from it first."""
    repaid = debt_repaid(debt_credits, req.amount_credits)
    movements = [Movement(None, 0, MovementKind.MINT, req.amount_credits)]
    if repaid:
        movements.append(Movement(None, 0, MovementKind.DEBT_REPAYMENT, -repaid))
    writes = Writes(
        req.credited_at,
        postings=[_posting(req, _transfer(req.funding_account_id, req.account_id, req.amount_credits))],
        movements=movements,
        new_lot={
            "account_id": req.account_id,
            "rail": req.rail,
            "external_ref": req.external_ref,
            "cost_basis_cents": req.cost_basis_cents,
            "cost_basis_usdc_units": req.cost_basis_usdc_units,
            "promotional": req.promotional,
            "credits": req.amount_credits,
            "remaining_credits": req.amount_credits - repaid,
            "reserved_credits": 0,
            "expired_credits": 0,
            "clawed_back_credits": 0,
            "credited_at": req.credited_at,
            "expires_at": req.expires_at,
            "details": req.details or {},
        },
        debt=(req.account_id, debt_credits - repaid) if repaid else None,
    )
    return MintPlan(repaid, writes)


def capture_key(hold_id: int) -> str:
    return f"capture:{hold_id}"


def hold_expiry_key(hold_id: int) -> str:
    return f"expiry:hold:{hold_id}"


def plan_settle(hold: LockedHold, capture_credits: int, now: datetime, status: str) -> SettlePlan:
    """Resolve a locked, active hold with ``status``, capturing ``capture_credits`` (0: a release or an expiry)."""
    row = hold.row
    captured, expiring = split_reservation(hold.allocations, capture_credits, now)
    postings: list[Posting] = []
    movements: list[Movement] = []
    capture_posting: int | None = None
    if capture_credits:
        capture_posting = len(postings)
        postings.append(
            Posting(
                TransactionKind.CAPTURE,
                capture_key(row.id),
                None,
                row.account_id,
                row.description,
                {"hold_id": row.id, "project": row.project},
                _transfer(row.account_id, SystemAccount.REVENUE_USAGE, capture_credits),
            )
        )
        movements += [
            Movement(lot_id, capture_posting, MovementKind.CAPTURE, -take, row.id) for lot_id, take in captured
        ]
    if expiring:
        movements += [
            Movement(lot_id, len(postings), MovementKind.EXPIRY, -credits, row.id) for lot_id, credits in expiring
        ]
        postings.append(
            Posting(
                TransactionKind.EXPIRY,
                hold_expiry_key(row.id),
                None,
                row.account_id,
                None,
                {"hold_id": row.id, "lots": [lot_id for lot_id, _ in expiring]},
                _transfer(row.account_id, SystemAccount.BREAKAGE, sum(credits for _, credits in expiring)),
            )
        )
    drawn, expired = dict(captured), dict(expiring)
    lots = [
        LotChange(
            lot_id,
            remaining_credits=-drawn.get(lot_id, 0) - expired.get(lot_id, 0),
            reserved_credits=-reserved,
            expired_credits=expired.get(lot_id, 0),
        )
        for lot_id, reserved, _ in hold.allocations
    ]
    unused = row.amount_credits - capture_credits
    budgets = [(budget_id, start, -unused) for budget_id, start in hold.budget_charges] if unused > 0 else []
    writes = Writes(now, postings=postings, lots=lots, movements=movements, budgets=budgets)
    return SettlePlan(row.id, status, capture_credits, capture_posting, writes)


def expiry_key(expiring: Iterable[tuple[int, int, int]]) -> str:
    """The idempotency key of the expiry of (lot id, credits expiring, reserved credits)."""
    state = ",".join(map("%d:%d:%d".__mod__, sorted(expiring)))
    return EXPIRY_KEY_PREFIX + hashlib.sha256(state.encode()).hexdigest()[:32]


def plan_expiry(due: DueLots, now: datetime) -> ExpiryPlan:
    """The lots taken leave the expiry queue; for those due (in lot id order), one transaction: an entry per account
    (what its lots lost), one to breakage (the total), and per lot its remainder moved to expired with a
    movement."""
    dequeued = list(due.taken)
    if not due.lots:
        return ExpiryPlan(Writes(now), dequeued)
    lot_ids, account_ids, amounts, reserved = zip(*due.lots, strict=True)
    per_account: dict[int, int] = defaultdict(int)
    for account_id, credits in zip(account_ids, amounts, strict=True):
        per_account[account_id] += credits
    legs = tuple((account_id, -credits) for account_id, credits in sorted(per_account.items()))
    posting = Posting(
        TransactionKind.EXPIRY,
        expiry_key(zip(lot_ids, amounts, reserved, strict=True)),
        None,
        None,
        None,
        {},
        (*legs, (SystemAccount.BREAKAGE, sum(per_account.values()))),
    )
    expiry = MovementKind.EXPIRY
    writes = Writes(
        now,
        postings=[posting],
        lots=[LotChange(lot_id, -credits, 0, credits) for lot_id, credits in zip(lot_ids, amounts, strict=True)],
        movements=[Movement(lot_id, 0, expiry, -credits) for lot_id, credits in zip(lot_ids, amounts, strict=True)],
    )
    return ExpiryPlan(writes, dequeued)


def clawback_key(idempotency_key: str) -> str:
    return f"clawback:{idempotency_key}"


def reinstatement_key(idempotency_key: str) -> str:
    return f"reinstatement:{idempotency_key}"


def plan_clawback(
    lot: Any, amount_credits: int, key: str, request_hash: str, reason: str, debt_credits: int, now: datetime
) -> ClawbackPlan:
    """Take ``amount_credits`` back from ``lot`` (its row, read under the lock): from what is left unreserved,
    then from what expired (reversing that breakage), the rest into debt."""
    from_lot = min(amount_credits, lot.remaining_credits - lot.reserved_credits)
    from_breakage = min(amount_credits - from_lot, lot.expired_credits)
    into_debt = amount_credits - from_lot - from_breakage
    legs = [(lot.account_id, -(from_lot + into_debt)), (SystemAccount.CLAWBACKS, amount_credits)]
    if from_breakage:
        legs.append((SystemAccount.BREAKAGE, -from_breakage))
    split = ClawbackSplit(from_lot, from_breakage, into_debt)
    posting = Posting(
        TransactionKind.CLAWBACK,
        key,
        request_hash,
        lot.account_id,
        reason,
        {"lot_id": lot.id, "reason": reason, **split._asdict()},
        tuple((account, amount) for account, amount in legs if amount),
    )
    writes = Writes(
        now,
        postings=[posting],
        lots=[LotChange(lot.id, -from_lot, 0, -from_breakage, amount_credits)],
        movements=[Movement(lot.id, 0, MovementKind.CLAWBACK, -from_lot)] if from_lot else [],
        debt=(lot.account_id, debt_credits + into_debt) if into_debt else None,
    )
    return ClawbackPlan(writes, split)


def plan_reinstatement(
    lot: Any, amount_credits: int, key: str, request_hash: str, reason: str, debt_credits: int, now: datetime
) -> ClawbackPlan:
    """Give back clawed-back credits: first cancelling the debt, the rest back onto the lot, expiring at once in
    a transaction of its own when the lot's time has passed (so the expiry job takes a lot's remainder once)."""
    debt_cancelled = min(debt_credits, amount_credits)
    to_lot = amount_credits - debt_cancelled
    postings = [
        Posting(
            TransactionKind.REINSTATEMENT,
            key,
            request_hash,
            lot.account_id,
            reason,
            {"lot_id": lot.id, "reason": reason, "from_lot_credits": to_lot, "debt_credits": debt_cancelled},
            _transfer(SystemAccount.CLAWBACKS, lot.account_id, amount_credits),
        )
    ]
    movements: list[Movement] = []
    expired = 0
    if to_lot:
        movements.append(Movement(lot.id, 0, MovementKind.REINSTATEMENT, to_lot))
        if lot.expires_at <= now:
            expired = to_lot
            postings.append(
                Posting(
                    TransactionKind.EXPIRY,
                    f"expiry:{key}",
                    None,
                    lot.account_id,
                    None,
                    {"lot_id": lot.id},
                    _transfer(lot.account_id, SystemAccount.BREAKAGE, to_lot),
                    first_transaction_detail="reinstatement_transaction_id",
                )
            )
            movements.append(Movement(lot.id, 1, MovementKind.EXPIRY, -to_lot))
    writes = Writes(
        now,
        postings=postings,
        lots=[LotChange(lot.id, to_lot - expired, 0, expired, -amount_credits)],
        movements=movements,
        debt=(lot.account_id, debt_credits - debt_cancelled) if debt_cancelled else None,
    )
    return ClawbackPlan(writes, ClawbackSplit(to_lot, 0, debt_cancelled))
