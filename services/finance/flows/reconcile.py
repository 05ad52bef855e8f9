"""Reconciling a period: gather the external records (network, no transaction open), then match them against the
ledger in one unit of work.

For each rail that is on: the card rail pulls Stripe's balance transactions and Checkout Sessions into the mirror
(services.finance.flows.stripe_pull); each USDC chain is re-scanned for transfers to deposit addresses
(services.finance.flows.chain_rescan). Both gather the period widened by ``finance_late_window_seconds`` either side, so
late items (paid in one period, credited in the next) are found and matched. Pulls resume where a failed one
stopped and a complete one is not fetched again, so re-running a period costs little and changes nothing.

A pull that fails records the run as ``failed`` with the error (its previous items, if any, stay) and raises; the
matching itself runs in one transaction, so a run killed half way leaves the last good run in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from chain.errors import ChainRpcError
from chain.rpc import ChainReader
from services.card.stripe_client import StripeGateway, default_gateway
from services.core import progress
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.errors import Conflict, CreditrailError, InvalidRequest
from services.core.settings import ChainSettings, Settings
from services.finance.flows.chain_rescan import (
    ChainRescanFailed,
    RescanReader,
    WindowBlocks,
    chain_source,
    map_window,
    rescan_chain,
    safe_head_block,
)
from services.finance.flows.stripe_pull import pull_stripe
from services.finance.matching import reconcile_card, reconcile_usdc
from services.finance.pulls import advance_pull, begin_pull, finish_pull
from services.finance.runs import CARD_RAIL, record_failure, usdc_rail
from services.finance.schemas import RunOut
from services.usdc.chains import rpc_for

MAX_PERIOD = timedelta(days=92)


class RailNotConfigured(Conflict):
    code = "rail_not_configured"


def validate_period(period_start: datetime, period_end: datetime) -> tuple[datetime, datetime]:
    for name, moment in (("period_start", period_start), ("period_end", period_end)):
        if moment.tzinfo is None:
            raise InvalidRequest(f"{name} must carry a time zone (e.g. 2026-11-01T00:00:00Z)", field=name)
    start, end = period_start.astimezone(UTC), period_end.astimezone(UTC)
    if end <= start:
        raise InvalidRequest("the period must end after it starts", field="period_end")
    if end - start > MAX_PERIOD:
        raise InvalidRequest(f"a period is at most {MAX_PERIOD.days} days", field="period_end")
    return start, end


def rails_for(settings: Settings, rail: str) -> list[str]:
    """The runs ``rail`` names: "card", "usdc" (every configured chain), "usdc:<chain id>" or "all" (every rail
    that is on)."""
    chains = [usdc_rail(chain.chain_id) for chain in settings.usdc_chains] if settings.usdc_xpub else []
    if rail == "all":
        return ([CARD_RAIL] if settings.stripe_configured else []) + chains
    if rail == CARD_RAIL:
        if not settings.stripe_configured:
            raise RailNotConfigured("the card rail is off: no Stripe secret key is configured")
        return [CARD_RAIL]
    if rail == "usdc":
        if not chains:
            raise RailNotConfigured("the USDC rail is off: no xpub or no chains are configured")
        return chains
    if rail in chains:
        return [rail]
    raise InvalidRequest(
        f"rail must be card, usdc, all or one of {', '.join(chains) or '(no chains configured)'}", field="rail"
    )


def _chain(settings: Settings, rail: str) -> ChainSettings:
    chain_id = int(rail.split(":", 1)[1])
    return next(chain for chain in settings.usdc_chains if chain.chain_id == chain_id)


def reconcile_period(
    engine: Engine,
    settings: Settings,
    *,
    rail: str,
    period_start: datetime,
    period_end: datetime,
    gateway: StripeGateway | None = None,
    readers: Mapping[int, ChainReader] | None = None,
    now: datetime | None = None,
) -> list[RunOut]:
    """Reconcile ``rail`` over [period_start, period_end): one run per rail (and chain) it names."""
    start, end = validate_period(period_start, period_end)
    now = now or utcnow()
    late = timedelta(seconds=settings.finance_late_window_seconds)
    summaries: list[RunOut] = []
    names = rails_for(settings, rail)
    for index, name in enumerate(names):
        progress.report(f"reconciling {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} (rails)", index, len(names))
        if name == CARD_RAIL:
            summaries.append(_reconcile_card(engine, settings, start, end, late, gateway, now))
        else:
            chain = _chain(settings, name)
            reader = (readers or {}).get(chain.chain_id)
            summaries.append(_reconcile_chain(engine, chain, start, end, late, reader, now))
    progress.report(f"reconciling {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} (rails)", len(names), len(names))
    return summaries


def _fail(engine: Engine, rail: str, start: datetime, end: datetime, exc: BaseException, now: datetime) -> None:
    error = f"{getattr(exc, 'code', type(exc).__name__)}: {exc}"
    with unit_of_work(engine) as session:
        record_failure(session, rail, start, end, error=error, now=now)


def _reconcile_card(
    engine: Engine,
    settings: Settings,
    start: datetime,
    end: datetime,
    late: timedelta,
    gateway: StripeGateway | None,
    now: datetime,
) -> RunOut:
    try:
        pull_stripe(engine, gateway or default_gateway(settings), window_start=start - late, window_end=end + late)
    except CreditrailError as exc:
        _fail(engine, CARD_RAIL, start, end, exc, now)
        raise
    with unit_of_work(engine) as session:
        return reconcile_card(session, period_start=start, period_end=end, cutoff=min(end + late, now), now=now)


def _reconcile_chain(
    engine: Engine,
    chain: ChainSettings,
    start: datetime,
    end: datetime,
    late: timedelta,
    reader: ChainReader | None,
    now: datetime,
) -> RunOut:
    node: RescanReader = reader if reader is not None else rpc_for(chain)  # type: ignore[assignment]
    try:
        rescan_chain(engine, chain, node, window_start=start - late, window_end=end + late)
        window = map_window(node, start, end, safe_head=safe_head_block(node, chain))
    except CreditrailError as exc:
        _fail(engine, usdc_rail(chain.chain_id), start, end, exc, now)
        raise
    except ChainRpcError as exc:
        failed = ChainRescanFailed(
            f"chain {chain.chain_id}: the node failed while mapping the period to blocks: {exc}",
            chain_id=chain.chain_id,
        )
        _fail(engine, usdc_rail(chain.chain_id), start, end, failed, now)
        raise failed from exc
    with unit_of_work(engine) as session:
        _record_period_blocks(session, chain.chain_id, start, end, window, now)
        return reconcile_usdc(
            session,
            chain_id=chain.chain_id,
            blocks=window.block_range,
            period_start=start,
            period_end=end,
            min_deposit_usdc_units=chain.min_deposit_usdc_units,
            now=now,
        )


def _record_period_blocks(
    session: Session, chain_id: int, start: datetime, end: datetime, window: WindowBlocks, now: datetime
) -> None:
    """Record that the mirror holds the period's own transfers (its blocks were inside the re-scanned, wider
    window), as a pull of the period with its block range: the period's reports read their blocks from it."""
    pull = begin_pull(session, chain_source(chain_id), start, end, now=now)
    if pull.complete:
        return
    details = {
        "from_block": window.first_block,
        "to_block": window.last_block,
        "safe_head": window.safe_head,
        "settled": window.settled,
        "within_rescan": True,
    }
    if window.settled:
        finish_pull(session, pull.id, now=now, details=details)
    else:
        advance_pull(session, pull.id, cursor=None, records=0, now=now, details=details)


def previous_days(now: datetime, days: int) -> list[tuple[datetime, datetime]]:
    """The last ``days`` whole UTC days before ``now``, oldest first."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return [(today - timedelta(days=back), today - timedelta(days=back - 1)) for back in range(days, 0, -1)]
