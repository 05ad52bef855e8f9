"""Finance over HTTP (finance or admin role), under /v1/finance.

- exceptions: the one queue of both rails, filtered and paged; resolving one with an action (mint, clawback,
  ignore, note), which adds to the ledger or writes a note and never edits history;
- reconciliations: run a period on demand (pulls Stripe / re-scans chains, then matches; re-running is
  idempotent), list the runs, page through a run's items (JSON or CSV);
- reports: a rail's figures for a period, and the trial balance at an instant (JSON or CSV).

Reconciling calls the network, so that endpoint authenticates in a unit of work of its own and opens no
transaction while Stripe or a node answers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from services.api.deps import EngineDep, FinanceKey, FinanceOutside, SessionDep, SettingsDep
from services.api.openapi import json_or_csv
from services.api.pages import Cursor, id_cursor, page_of
from services.api.types import Id, Instant, Text
from services.card.deps import get_gateway
from services.core.db import unit_of_work
from services.core.errors import NotFound
from services.finance import actions, reports
from services.finance.flows.reconcile import reconcile_period
from services.finance.matching import ITEM_COLUMNS
from services.finance.runs import get_run, list_items, list_runs
from services.finance.schemas import (
    ExceptionPage,
    ItemOut,
    ItemPage,
    ReconcileIn,
    ResolveIn,
    RunPage,
)
from services.review.schemas import ExceptionOut
from services.review.service import get_exception, list_exceptions

router = APIRouter(prefix="/v1/finance", tags=["finance"])

Format = Literal["json", "csv"]
MAX_PAGE = 1_000


class RunNotFound(NotFound):
    code = "reconciliation_run_not_found"


@router.get("/exceptions")
def exceptions_list(
    session: SessionDep,
    _finance: FinanceKey,
    status: Annotated[Literal["open", "resolved", "ignored"] | None, Query()] = None,
    rail: Annotated[Text | None, Query(max_length=32)] = None,
    kind: Annotated[Text | None, Query(max_length=64)] = None,
    # One reference format per rail: usdc:<chain id>:<tx hash>:<log index>, card:<Stripe object id> (any "#..."
    # qualifier of it included).
    reference: Annotated[Text | None, Query(min_length=1, max_length=255)] = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> ExceptionPage:
    found = list_exceptions(
        session, status, rail=rail, kind=kind, reference=reference, after_id=id_cursor(cursor) or 0, limit=limit + 1
    )
    return page_of(found, limit, lambda exception: exception.id)


@router.get("/exceptions/{exception_id}")
def exception_get(session: SessionDep, _finance: FinanceKey, exception_id: Id) -> ExceptionOut:
    return get_exception(session, exception_id)


@router.post("/exceptions/{exception_id}/resolve")
def exception_resolve(session: SessionDep, finance: FinanceKey, exception_id: Id, body: ResolveIn) -> ExceptionOut:
    return actions.resolve(
        session,
        exception_id,
        action=body.action,
        reason=body.reason,
        resolved_by=f"api_key:{finance.key_id}",
        account_id=body.account_id,
        amount_credits=body.amount_credits,
    )


@router.post("/reconciliations")
async def reconciliation_run(
    request: Request, engine: EngineDep, settings: SettingsDep, _finance: FinanceOutside, body: ReconcileIn
) -> RunPage:
    """Reconcile a period now: one run per rail asked for (the whole list in one page)."""
    gateway = get_gateway(request) if settings.stripe_configured else None
    readers = getattr(request.app.state, "chain_readers", None)
    summaries = await run_in_threadpool(
        reconcile_period,
        engine,
        settings,
        rail=body.rail,
        period_start=body.period_start,
        period_end=body.period_end,
        gateway=gateway,
        readers=readers,
    )
    return RunPage(data=summaries, has_more=False)


@router.get("/reconciliations")
def reconciliation_list(
    session: SessionDep,
    _finance: FinanceKey,
    rail: Annotated[Text | None, Query(max_length=32)] = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RunPage:
    """Reconciliation runs, newest first."""
    runs = list_runs(session, rail=rail, before_id=id_cursor(cursor), limit=limit + 1)
    return page_of(runs, limit, lambda run: run.id)


def _items_csv(engine: Any, run_id: int, category: str | None) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ["id", *[name for name in ITEM_COLUMNS if name != "run_id"]]
    writer.writerow(columns)
    after = 0
    while True:
        with unit_of_work(engine) as session:
            rows = list_items(session, run_id, category=category, after_id=after, limit=MAX_PAGE)
        for row in rows:
            writer.writerow(["" if getattr(row, c) is None else _csv_value(getattr(row, c)) for c in columns])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(rows) < MAX_PAGE:
            return
        after = int(rows[-1].id)


def _csv_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


@router.get("/reconciliations/{run_id}/items", response_model=None, responses=json_or_csv(ItemPage))
def reconciliation_items(
    session: SessionDep,
    engine: EngineDep,
    _finance: FinanceKey,
    run_id: Id,
    category: Annotated[
        Literal["matched", "missing_in_ledger", "missing_externally", "amount_mismatch"] | None, Query()
    ] = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    format: Annotated[Format, Query()] = "json",
) -> ItemPage | StreamingResponse:
    run = get_run(session, run_id)
    if run is None:
        raise RunNotFound(f"reconciliation run {run_id} not found", run_id=run_id)
    if format == "csv":
        return StreamingResponse(
            _items_csv(engine, run_id, category),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="reconciliation-{run_id}.csv"'},
        )
    rows = list_items(session, run_id, category=category, after_id=id_cursor(cursor) or 0, limit=limit + 1)
    items = [ItemOut(**{name: getattr(row, name) for name in ItemOut.model_fields}) for row in rows]
    page = page_of(items, limit, lambda item: item.id)
    return ItemPage(**dict(page), run=run)


@router.get("/reports", response_model=None, responses=json_or_csv())
def report(
    session: SessionDep,
    _finance: FinanceKey,
    rail: Annotated[Text, Query(max_length=32)],
    period_start: Annotated[Instant, Query()],
    period_end: Annotated[Instant, Query()],
    format: Annotated[Format, Query()] = "json",
) -> dict[str, Any] | Response:
    found = reports.period_report(session, rail=rail, period_start=period_start, period_end=period_end)
    if format == "csv":
        return Response(
            reports.period_report_csv(found),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="report-{rail}.csv"'},
        )
    return found.as_dict()


@router.get("/trial-balance", response_model=None, responses=json_or_csv())
def trial_balance(
    session: SessionDep,
    _finance: FinanceKey,
    at: Annotated[Instant, Query()],
    format: Annotated[Format, Query()] = "json",
) -> dict[str, Any] | Response:
    if format == "csv":
        return Response(
            reports.trial_balance_csv(session, at=at),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="trial-balance.csv"'},
        )
    return reports.trial_balance(session, at=at).as_dict()
