"""``creditrail usdc``: where each chain's listener stands (the same view as ``GET /v1/admin/usdc/chains``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime

import click

from services.core.db import unit_of_work
from services.core.logs import secrets_of
from services.core.migrate import ready_engine
from services.core.settings import get_settings
from services.usdc.status import ChainStatus, chain_statuses, read_cursors


@click.group()
def usdc() -> None:
    """The USDC rail: the chains' listeners."""


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _table(views: list[ChainStatus]) -> str:
    header = ("CHAIN", "NAME", "NEXT BLOCK", "HEAD", "LAG", "CONFIRMATIONS", "PENDING", "LAST ERROR AT", "LAST ERROR")
    rows = [
        (
            str(v.chain_id) + ("" if v.configured else " (not configured)"),
            v.name,
            _cell(v.next_block),
            _cell(v.head_block),
            _cell(v.lag_blocks),
            "finalized" if v.use_finalized else _cell(v.confirmations),
            str(v.deposits_pending),
            _cell(v.last_error_at),
            (v.last_error or "-")[:80],
        )
        for v in views
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


@usdc.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(as_json: bool) -> None:
    """Each chain's listener: next block to scan, head seen, lag, confirmations, pending deposits, last error."""
    settings = get_settings()
    engine = ready_engine(settings)
    try:
        with unit_of_work(engine) as session:
            cursors = read_cursors(session)
    finally:
        engine.dispose()
    chains = settings.usdc_chains if settings.usdc_xpub else []
    views = chain_statuses(cursors, chains, secrets_of(settings))
    if as_json:
        click.echo(json.dumps([asdict(view) for view in views], default=str, indent=2))
    else:
        click.echo(_table(views))
