"""The worker's commands, for the ``creditrail`` group: ``worker`` (run the scheduler) and ``jobs`` (job health)."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from datetime import datetime

import click
from sqlalchemy.engine import Engine

from services.app.jobs import default_jobs, enabled_jobs
from services.core.cli_support import scrub, silence_migration_logs
from services.core.db import unit_of_work
from services.core.migrate import ready_engine
from services.core.settings import Settings, get_settings
from services.ops.metrics_server import start_metrics_server
from services.usdc.errors import TokenDecimalsMismatch
from services.usdc.tasks import preflight
from services.worker.health import list_job_health
from services.worker.logs import configure_worker_logging
from services.worker.models import RunOutcome
from services.worker.runner import run_job_once
from services.worker.scheduler import create_worker
from services.worker.schemas import JobHealthOut

logger = logging.getLogger("creditrail.worker")


def _engine(settings: Settings) -> Engine:
    silence_migration_logs()
    return ready_engine(settings)


class _WithoutRunLines(logging.Filter):
    """Drops the runner's ``job_run`` line: ``run-job`` prints that result itself, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "job_run"


@click.command()
def worker() -> None:
    """Run the worker: every scheduled job, until SIGTERM or SIGINT (the running batches finish first)."""
    settings = get_settings()
    configure_worker_logging(settings)
    _check_chains(settings)
    engine = _engine(settings)
    metrics = start_metrics_server(engine, settings)
    try:
        create_worker(engine, settings, jobs=enabled_jobs(settings)).run_forever()
    finally:
        if metrics is not None:
            metrics.close()
        engine.dispose()


def _check_chains(settings: Settings) -> None:
    """Refuse to start on a USDC token without the decimals the rail assumes (one line); warn when a node is down."""
    try:
        for warning in preflight(settings):
            logger.warning(warning)
    except TokenDecimalsMismatch as exc:
        raise click.ClickException(exc.message) from None


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _table(views: list[JobHealthOut]) -> str:
    header = ("JOB", "STATUS", "LAST START", "LAST SUCCESS", "LAST ERROR AT", "ITEMS", "TOTAL", "FAILS", "LAST ERROR")
    rows = [
        (
            v.job,
            v.status,
            _when(v.last_started_at),
            _when(v.last_succeeded_at),
            _when(v.last_failed_at),
            str(v.last_items),
            str(v.total_items),
            str(v.consecutive_failures),
            (v.last_error or "-")[:80],
        )
        for v in views
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    head = "  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()
    return "\n".join([head, *lines])


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def jobs(as_json: bool) -> None:
    """Show every job's health: last start, last success, last error, items processed."""
    settings = get_settings()
    engine = _engine(settings)
    try:
        with unit_of_work(engine) as session:
            views = list_job_health(session, default_jobs(settings))
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps([view.model_dump() for view in views], default=str, indent=2))
    else:
        click.echo(_table(views))


@click.command("run-job")
@click.argument("name")
def run_job(name: str) -> None:
    """Run one job now, once (all its due work, in batches), and print how it went."""
    settings = get_settings()
    specs = {spec.name: spec for spec in default_jobs(settings)}
    if name not in specs:
        raise click.BadParameter(f"no job named {name!r}; jobs: {', '.join(specs)}", param_hint="NAME")
    engine = _engine(settings)
    configure_worker_logging(settings)  # the job's own log lines, on stderr
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WithoutRunLines())
    try:
        run = run_job_once(engine, specs[name])
    finally:
        engine.dispose()
    result = asdict(run)
    if run.error:
        result["error"] = scrub(run.error, settings)
    click.echo(json.dumps(result, default=str))
    if run.outcome == RunOutcome.ERROR:
        sys.exit(1)
