"""The card rail's external records for finance: Stripe's balance transactions and Checkout Sessions, pulled through
the Stripe API into a local mirror, independently of the webhook path that minted.

For a window [start, end) one call pulls two sources, each one pull in ``finance_pulls``:

- ``stripe:balance_transactions``: every balance transaction created in the window (charges, refunds, dispute
  withdrawals and reversals, with Stripe's fee and the net), each listed with its source expanded, so the row knows
  the charge and the PaymentIntent the money belongs to;
- ``stripe:checkout_sessions``: the Checkout Sessions created in [start - 2 days, end), since a session is created
  before it is paid.

Each page is fetched with no transaction open, then stored (upserted by Stripe id: the latest JSON wins, nothing is
stored twice) and the pull's cursor advanced in one unit of work. A Stripe failure part way leaves the pages already
stored and the pull ``failed`` with the error and its cursor, and raises; the next call resumes after the cursor. A
pull finished after its window ended is complete and not fetched again; one finished earlier is fetched again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.card import stripe_json
from services.card.stripe_client import Page, StripeGateway
from services.card.stripe_objects import ACCOUNT_ID_KEY, CheckoutSessionData
from services.core import progress
from services.core.clock import utcnow
from services.core.db import insert_for, table_of, unit_of_work
from services.core.errors import CreditrailError, InvalidRequest, UpstreamUnavailable
from services.finance.models import StripeBalanceTransaction, StripeCheckoutSessionRecord
from services.finance.pulls import advance_pull, begin_pull, fail_pull, finish_pull

log = logging.getLogger("creditrail.finance")

BALANCE_TRANSACTIONS_SOURCE = "stripe:balance_transactions"
CHECKOUT_SESSIONS_SOURCE = "stripe:checkout_sessions"
# How long before a window its payments' Checkout Sessions may have been created.
SESSION_LEAD = timedelta(days=2)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)

balance_transactions_table = table_of(StripeBalanceTransaction)
checkout_sessions_table = table_of(StripeCheckoutSessionRecord)


class MalformedStripeRecord(UpstreamUnavailable):
    """Stripe answered with a record the mirror cannot hold (a field it must have is missing or of another type)."""

    code = "stripe_malformed_record"


@dataclass(frozen=True, slots=True)
class SourcePullResult:
    """What one call did for one source. ``pages`` and ``records`` count this call's work; the totals are the
    pull's since it (last) started from the beginning."""

    source: str
    pull_id: int
    # Complete before this call: nothing was fetched.
    skipped: bool
    # Went on from where an earlier call stopped (``resumed_after``, a Stripe id) rather than from the start.
    resumed: bool
    resumed_after: str | None
    # Read to the end of the list (False only when stopped by ``max_pages``).
    finished: bool
    pages: int
    records: int
    total_pages: int
    total_records: int


@dataclass(frozen=True, slots=True)
class StripePullResult:
    window_start: datetime
    window_end: datetime
    balance_transactions: SourcePullResult
    checkout_sessions: SourcePullResult

    @property
    def pages(self) -> int:
        return self.balance_transactions.pages + self.checkout_sessions.pages

    @property
    def records(self) -> int:
        return self.balance_transactions.records + self.checkout_sessions.records

    @property
    def resumed(self) -> bool:
        return self.balance_transactions.resumed or self.checkout_sessions.resumed

    @property
    def finished(self) -> bool:
        return self.balance_transactions.finished and self.checkout_sessions.finished


def pull_stripe(
    engine: Engine,
    gateway: StripeGateway,
    *,
    window_start: datetime,
    window_end: datetime,
    now: datetime | None = None,
    max_pages: int | None = None,
) -> StripePullResult:
    """Mirror Stripe's balance transactions created in [window_start, window_end) and the Checkout Sessions created
    from two days before it, resuming a pull that stopped part way and skipping one already complete.

    ``now`` fixes the time the pulls are stamped with (by default the clock, read at each step); ``max_pages``
    bounds the pages fetched per source in this call (the rest is fetched by the next call). Raises the card rail's
    Stripe errors (:class:`StripeUnavailable`, :class:`StripeTimeout`, :class:`StripeRejected`) or
    :class:`MalformedStripeRecord`, after recording the failure on the pull.
    """
    for name, moment in (("window_start", window_start), ("window_end", window_end)):
        if moment.tzinfo is None:
            raise InvalidRequest(f"{name} must be timezone-aware", field=name)
    if window_end <= window_start:
        raise InvalidRequest("the window must end after it starts", field="window_end")
    if max_pages is not None and max_pages < 1:
        raise InvalidRequest("max_pages must be at least 1", field="max_pages")
    window_start, window_end = window_start.astimezone(UTC), window_end.astimezone(UTC)

    def clock() -> datetime:
        return now if now is not None else utcnow()

    created_gte, created_lt = _unix_ceil(window_start), _unix_ceil(window_end)
    sessions_gte = _unix_ceil(window_start - SESSION_LEAD)
    transactions = _pull_source(
        engine,
        BALANCE_TRANSACTIONS_SOURCE,
        window_start,
        window_end,
        fetch=lambda after: gateway.list_balance_transactions(
            created_gte=created_gte, created_lt=created_lt, starting_after=after
        ),
        store=store_balance_transactions,
        details={"created_gte": created_gte, "created_lt": created_lt},
        clock=clock,
        max_pages=max_pages,
    )
    sessions = _pull_source(
        engine,
        CHECKOUT_SESSIONS_SOURCE,
        window_start,
        window_end,
        fetch=lambda after: gateway.list_checkout_sessions(
            created_gte=sessions_gte, created_lt=created_lt, starting_after=after
        ),
        store=store_checkout_sessions,
        details={"created_gte": sessions_gte, "created_lt": created_lt},
        clock=clock,
        max_pages=max_pages,
    )
    return StripePullResult(window_start, window_end, transactions, sessions)


def _pull_source(
    engine: Engine,
    source: str,
    window_start: datetime,
    window_end: datetime,
    *,
    fetch: Callable[[str | None], Page],
    store: Callable[[Session, list[dict[str, Any]], datetime], int],
    details: dict[str, Any],
    clock: Callable[[], datetime],
    max_pages: int | None,
) -> SourcePullResult:
    with unit_of_work(engine) as session:
        state = begin_pull(session, source, window_start, window_end, now=clock(), details=details)
    if state.complete:
        return SourcePullResult(
            source=source,
            pull_id=state.id,
            skipped=True,
            resumed=False,
            resumed_after=None,
            finished=True,
            pages=0,
            records=0,
            total_pages=state.pages,
            total_records=state.records,
        )
    resumed_after = cursor = state.cursor
    total_pages, total_records = state.pages, state.records
    pages = records = 0
    finished = False
    while max_pages is None or pages < max_pages:
        try:
            page = fetch(cursor)
            if page.has_more and not page.data:
                raise MalformedStripeRecord("Stripe listed an empty page with more to follow", source=source)
            with unit_of_work(engine) as session:
                stored = store(session, page.data, clock())
                cursor = str(page.data[-1]["id"]) if page.data else cursor
                advance_pull(session, state.id, cursor=cursor, records=stored, now=clock())
                if not page.has_more:
                    finish_pull(session, state.id, now=clock())
        except Exception as exc:
            _record_failure(engine, state.id, exc, clock())
            raise
        pages, records = pages + 1, records + stored
        total_pages, total_records = total_pages + 1, total_records + stored
        progress.report(f"pulling {source} from Stripe (records)", total_records)
        if not page.has_more:
            finished = True
            break
    return SourcePullResult(
        source=source,
        pull_id=state.id,
        skipped=False,
        resumed=resumed_after is not None,
        resumed_after=resumed_after,
        finished=finished,
        pages=pages,
        records=records,
        total_pages=total_pages,
        total_records=total_records,
    )


def _record_failure(engine: Engine, pull_id: int, exc: BaseException, now: datetime) -> None:
    """Mark the pull failed with ``exc`` in a unit of work of its own; the error being raised stays the one the
    caller sees even when the database cannot take the record."""
    error = f"{exc.code}: {exc.message}" if isinstance(exc, CreditrailError) else f"{type(exc).__name__}: {exc}"
    try:
        with unit_of_work(engine) as session:
            fail_pull(session, pull_id, error=error, now=now)
    except Exception:
        log.exception("could not record the failure of finance pull %s", pull_id)


# --- the mirror -------------------------------------------------------------------------------------------------


def store_balance_transactions(session: Session, objects: list[dict[str, Any]], fetched_at: datetime) -> int:
    """Upsert balance transactions (as Stripe lists them, sources expanded or not); returns how many."""
    return _upsert(session, balance_transactions_table, [balance_transaction_values(o, fetched_at) for o in objects])


def store_checkout_sessions(session: Session, objects: list[dict[str, Any]], fetched_at: datetime) -> int:
    """Upsert Checkout Sessions; returns how many."""
    return _upsert(session, checkout_sessions_table, [checkout_session_values(o, fetched_at) for o in objects])


def _upsert(session: Session, table: Table, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    # One row per Stripe id (the last listed wins), as one statement may not touch a row twice.
    unique = list({row["stripe_id"]: row for row in rows}.values())
    statement = insert_for(session, table).values(unique)
    changing = [name for name in unique[0] if name != "stripe_id"]
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["stripe_id"], set_={name: statement.excluded[name] for name in changing}
        )
    )
    return len(unique)


def balance_transaction_values(obj: Mapping[str, Any], fetched_at: datetime) -> dict[str, Any]:
    """A mirror row for a balance transaction. The charge is the source itself for a charge, and the source's
    charge for a refund or a dispute; the PaymentIntent comes from the expanded source (or its expanded charge)."""
    stripe_id = _required_str(obj, "id", "balance transaction")
    what = f"balance transaction {stripe_id}"
    source = obj.get("source")
    source_id = _id(source)
    expanded: Mapping[str, Any] = source if isinstance(source, Mapping) else {}
    if expanded.get("object") == "charge" or (not expanded and source_id and source_id.startswith(("ch_", "py_"))):
        charge_id = source_id
        charge: Mapping[str, Any] = expanded
    else:
        charge_ref = expanded.get("charge")
        charge_id = _id(charge_ref)
        charge = charge_ref if isinstance(charge_ref, Mapping) else {}
    payment_intent_id = _id(expanded.get("payment_intent")) or _id(charge.get("payment_intent"))
    return {
        "stripe_id": stripe_id,
        "type": _required_str(obj, "type", what),
        "reporting_category": _required_str(obj, "reporting_category", what),
        "source_id": source_id,
        "charge_id": charge_id,
        "payment_intent_id": payment_intent_id,
        "amount_cents": _required_int(obj, "amount", what),
        "fee_cents": _required_int(obj, "fee", what),
        "net_cents": _required_int(obj, "net", what),
        "currency": _required_str(obj, "currency", what).lower(),
        "status": _required_str(obj, "status", what),
        "stripe_created_at": _unix_to_datetime(_required_int(obj, "created", what)),
        "raw": _raw(obj),
        "fetched_at": fetched_at,
    }


def checkout_session_values(obj: Mapping[str, Any], fetched_at: datetime) -> dict[str, Any]:
    """A mirror row for a Checkout Session; ``account_ref`` is the account our metadata names on it."""
    try:
        data = CheckoutSessionData.parse(obj)
    except ValueError as exc:
        raise MalformedStripeRecord(str(exc)) from exc
    if data.created is None:
        raise MalformedStripeRecord(f"Checkout Session {data.id} has no created time", stripe_id=data.id)
    account_ref = data.metadata.get(ACCOUNT_ID_KEY) or None
    return {
        "stripe_id": data.id,
        "payment_intent_id": data.payment_intent,
        "amount_total_cents": data.amount_total,
        "currency": data.currency,
        "status": data.status,
        "payment_status": data.payment_status,
        "account_ref": account_ref[:64] if account_ref else None,
        "stripe_created_at": _unix_to_datetime(data.created),
        "raw": _raw(obj),
        "fetched_at": fetched_at,
    }


def _id(value: Any) -> str | None:
    """An object's id, whether Stripe gave the id or the expanded object."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping):
        return _id(value.get("id"))
    return None


def _required_str(obj: Mapping[str, Any], name: str, what: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedStripeRecord(f"{what} has no {name}", field=name)
    return value


def _required_int(obj: Mapping[str, Any], name: str, what: str) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedStripeRecord(f"{what} has no integer {name}", field=name)
    return value


def _raw(obj: Mapping[str, Any]) -> str:
    """The record's JSON as Stripe listed it, every number to its last digit (services.card.stripe_json)."""
    return stripe_json.dumps(obj, sort_keys=True)


def _unix_to_datetime(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def _unix_ceil(moment: datetime) -> int:
    """The first whole Unix second at or after ``moment`` (Stripe's ``created`` is in whole seconds)."""
    return -((_EPOCH - moment) // _SECOND)
