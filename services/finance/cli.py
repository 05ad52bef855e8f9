"""``creditrail finance``: reconcile a period, print reports and the trial balance (JSON or CSV), work the
exceptions queue, from the command line (the same functions the finance API calls)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from services.core import progress
from services.core.db import unit_of_work
from services.core.migrate import ready_engine
from services.core.settings import get_settings

WHEN = click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"])


def _utc(value: datetime) -> datetime:
    """Dates and times on the command line are UTC unless they say otherwise."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _print(data: Any) -> None:
    click.echo(json.dumps(data, default=str, indent=2))


@click.group()
def finance() -> None:
    """Reconciliation, reports and the exceptions queue."""


@finance.command("reconcile")
@click.option("--rail", default="all", show_default=True, help="card, usdc, usdc:<chain id> or all.")
@click.option("--from", "start", type=WHEN, required=True, help="Period start (UTC), e.g. 2026-11-01.")
@click.option("--to", "end", type=WHEN, required=True, help="Period end, exclusive (UTC), e.g. 2026-11-02.")
def reconcile(rail: str, start: datetime, end: datetime) -> None:
    """Reconcile a period: gather Stripe's and the chains' records, match them with the ledger (idempotent)."""
    from services.finance.flows.reconcile import reconcile_period

    settings = get_settings()
    engine = ready_engine(settings)
    with progress.on_terminal():  # on stderr, and only when it is a terminal
        runs = reconcile_period(engine, settings, rail=rail, period_start=_utc(start), period_end=_utc(end))
    _print([run.model_dump() for run in runs])
    if any(run.missing_in_ledger or run.missing_externally or run.amount_mismatch for run in runs):
        sys.exit(1)


@finance.command("report")
@click.option("--rail", default="all", show_default=True, help="all, card, usdc, usdc:<chain id>, grant, adjustment.")
@click.option("--from", "start", type=WHEN, required=True, help="Period start (UTC).")
@click.option("--to", "end", type=WHEN, required=True, help="Period end, exclusive (UTC).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of JSON.")
def report(rail: str, start: datetime, end: datetime, as_csv: bool) -> None:
    """A rail's figures for a period: gross, fees, net, credits minted, spent, expired, clawed back, liability."""
    from services.finance.reports import period_report, period_report_csv

    with unit_of_work(ready_engine(get_settings())) as session:
        found = period_report(session, rail=rail, period_start=_utc(start), period_end=_utc(end))
    if as_csv:
        click.echo(period_report_csv(found), nl=False)
    else:
        _print(found.as_dict())


@finance.command("trial-balance")
@click.option("--at", "at", type=WHEN, required=True, help="The instant (UTC).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV (every account) instead of JSON (totals and system accounts).")
def trial_balance(at: datetime, as_csv: bool) -> None:
    """Every ledger account's balance at an instant; the total is zero."""
    from services.finance.reports import trial_balance as balances_at
    from services.finance.reports import write_trial_balance_csv

    with unit_of_work(ready_engine(get_settings())) as session:
        if as_csv:
            write_trial_balance_csv(sys.stdout, session, at=_utc(at))
            return
        _print(balances_at(session, at=_utc(at)).as_dict())


@finance.command("exceptions")
@click.option("--status", type=click.Choice(["open", "resolved", "ignored"]), default="open", show_default=True)
@click.option("--rail", default=None, help="Only this rail (card or usdc).")
@click.option(
    "--reference",
    default=None,
    help="Only those about this item: usdc:<chain id>:<tx hash>:<log index> or card:<Stripe object id>.",
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
def exceptions(status: str, rail: str | None, reference: str | None, limit: int) -> None:
    """The exceptions queue."""
    from services.review.service import list_exceptions

    with unit_of_work(ready_engine(get_settings())) as session:
        found = list_exceptions(session, status, rail=rail, reference=reference, limit=limit)
    _print([view.model_dump() for view in found])


@finance.command("resolve")
@click.argument("exception_id", type=int)
@click.option("--action", type=click.Choice(["mint", "clawback", "ignore", "note"]), required=True)
@click.option("--reason", required=True, help="Why, and what was done (kept with the exception).")
@click.option("--by", "resolved_by", required=True, help="Who resolves it.")
@click.option("--account-id", type=int, default=None, help="For a mint: the account to credit.")
@click.option("--credits", "amount_credits", type=int, default=None, help="For a mint or clawback: the credits.")
def resolve(
    exception_id: int, action: str, reason: str, resolved_by: str, account_id: int | None, amount_credits: int | None
) -> None:
    """Close an exception with an action: a new ledger transaction (mint, clawback) or a note (ignore, note)."""
    from services.finance.actions import resolve as resolve_exception

    with unit_of_work(ready_engine(get_settings())) as session:
        closed = resolve_exception(
            session,
            exception_id,
            action=action,
            reason=reason,
            resolved_by=resolved_by,
            account_id=account_id,
            amount_credits=amount_credits,
        )
    _print(closed.model_dump())
