"""The ``creditrail`` command: run the API, migrate, manage accounts and keys, grant credits, check invariants;
the worker's commands (services.app.worker_cli) and finance's (services.finance.cli) are added to it."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import datetime
from typing import Any, NoReturn

import click
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from chain.errors import ChainRpcError
from services.core.cli_support import chain_error_line, database_error_line, scrub, silence_migration_logs
from services.core.db import make_engine, unit_of_work
from services.core.errors import CreditrailError
from services.core.logs import IdleRunsQuiet, configure_logging
from services.core.migrate import ready_engine, upgrade
from services.core.settings import InvalidSettings, Settings, get_settings

# uvicorn logs through the process's configuration (services.core.logs), and each request has one line of ours.
UVICORN_LOGGING: dict[str, Any] = {"log_config": None, "access_log": False}


def _engine() -> Engine:
    return ready_engine(get_settings())


def _print(data: Any) -> None:
    click.echo(json.dumps(data, default=str, indent=2))


def _fail(line: str) -> NoReturn:
    click.echo(f"error: {line}", err=True)
    sys.exit(2)


class _Group(click.Group):
    """Whatever stops a command (a bad setting, a domain error, a database or chain node out of reach) becomes one
    line on stderr, naming the setting, database or chain but no secret, and exit status 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InvalidSettings as exc:
            _fail(exc.message)
        except CreditrailError as exc:
            _fail(f"{exc.code}: {scrub(exc.message, get_settings())}")
        except (OperationalError, InterfaceError) as exc:
            _fail(database_error_line(exc, get_settings()))
        except ChainRpcError as exc:
            _fail(chain_error_line(exc, get_settings()))


@click.group(cls=_Group)
def main() -> None:
    """creditrail: prepaid usage credits over card and USDC, kept in one ledger."""
    silence_migration_logs()


def _served(settings: Settings, host: str | None, port: int | None) -> Settings:
    """The settings of an API served on ``host``/``port`` when given: the development base URL follows them."""
    update: dict[str, Any] = {"api_host": host, "api_port": port}
    return settings.model_copy(update={key: value for key, value in update.items() if value is not None})


PORT = click.IntRange(1, 65535)


@main.command()
@click.option("--host", default=None, help="Interface to bind (default from settings).")
@click.option("--port", type=PORT, default=None, help="Port (default from settings).")
def run(host: str | None, port: int | None) -> None:
    """Run the HTTP API."""
    import uvicorn

    from services.app.app import create_app
    from services.outbox.service import configure as configure_receipts

    settings = _served(get_settings(), host, port)
    configure_logging(settings)
    configure_receipts(settings)  # receipts' links follow --port in development
    ready_engine(settings).dispose()  # an unreachable database or a schema behind stops here, in one line
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, **UVICORN_LOGGING)


@main.command()
@click.option("--host", default=None, help="Interface to bind (default from settings).")
@click.option("--port", type=PORT, default=None, help="Port (default from settings).")
@click.option("--no-chain", is_flag=True, help="Do not start the local chain (the USDC rail stays off).")
def dev(host: str | None, port: int | None, no_chain: bool) -> None:
    """Run the API and the worker together, with a local chain, on the configured (default: SQLite) database."""
    from pathlib import Path

    import uvicorn

    from services.app.app import create_app
    from services.app.jobs import enabled_jobs
    from services.core.urls import credits_page_url, public_base_url, public_url
    from services.dev import (
        anvil_available,
        bootstrap_demo,
        demo_session_url,
        dev_receipt_link_secret,
        dev_x402_relayer,
        dev_xpub,
        send_demo_deposit,
        start_dev_chain,
        start_dev_mail,
        start_dev_stripe,
    )
    from services.outbox.service import configure as configure_receipts
    from services.widget.endpoints import WIDGET_DEMO_PATH
    from services.worker.scheduler import create_worker

    settings = _served(get_settings(), host, port)
    configure_logging(settings).addFilter(IdleRunsQuiet())
    engine = ready_engine(settings)
    run_dir = Path(".run")
    settings, standin = start_dev_stripe(
        settings, api_host=settings.api_host, api_port=settings.api_port, run_dir=run_dir
    )
    if standin is not None:
        click.echo(f"stripe       local stand-in at {standin.url} (not Stripe: pay with test card 4242 4242 4242 4242)")
    devchain = None
    if not no_chain and not settings.usdc_chains and anvil_available():
        devchain = start_dev_chain(run_dir)
        settings = settings.model_copy(update={"usdc_xpub": dev_xpub(), "usdc_chains": [devchain.chain]})
        settings = dev_x402_relayer(settings)
        click.echo(
            f"local chain  {devchain.node.url} (chain id {devchain.chain.chain_id}), "
            f"test USDC at {devchain.token.address}"
        )
        click.echo("x402         POST /v1/x402/credits, settled by the built-in facilitator (local relayer account)")
    settings = dev_receipt_link_secret(settings, run_dir)
    settings, mail = start_dev_mail(settings, run_dir)
    if mail is not None:
        click.echo(
            f"mail         local SMTP server at {mail.host}:{mail.port}, every message kept in {mail.directory}/"
        )
    configure_receipts(settings)
    demo = bootstrap_demo(engine, run_dir)
    if demo is not None:
        click.echo(f"admin key    {demo.admin_key}")
        click.echo(f"customer key {demo.customer_key}  (demo account {demo.account_id}, 1,000 welcome credits)")
        click.echo(f"             shown once; kept in {run_dir / 'dev-keys.json'}")
    # Alerts evaluated every few seconds, so a crossing shows in .run/mail/ soon after it happens.
    settings = settings.model_copy(update={"alerts_interval_seconds": min(settings.alerts_interval_seconds, 5.0)})
    worker = create_worker(engine, settings, jobs=enabled_jobs(settings))
    worker.start()
    try:
        if devchain is not None and demo is not None:
            address = send_demo_deposit(engine, settings, devchain, demo.account_id)
            click.echo(
                f"sent 25 test USDC to the demo deposit address {address}; it is credited after "
                f"{devchain.chain.confirmations} confirmations (see /v1/usdc/deposits and /v1/balance)"
            )
        click.echo(f"API          {public_base_url(settings)}/docs")
        demo_link = demo_session_url(engine, settings, run_dir)
        click.echo(f"credits page {demo_link or credits_page_url(settings)}")
        if demo_link:
            click.echo("             the demo customer's session (12 hours; a fresh link on every start)")
            session_fragment = demo_link.split("#", 1)[1]
            click.echo(f"widget demo  {public_url(settings, WIDGET_DEMO_PATH)}#{session_fragment}")
            click.echo("             the widget in a platform's top bar, signed in with the same session")
        uvicorn.run(
            create_app(settings, engine=engine), host=settings.api_host, port=settings.api_port, **UVICORN_LOGGING
        )
    finally:
        worker.shutdown(wait=True)
        if devchain is not None:
            devchain.close()
        if standin is not None:
            standin.stop()
        if mail is not None:
            mail.stop()


@main.command()
def migrate() -> None:
    """Bring the database schema up to date (safe to run from several processes at once: they take a lock)."""
    engine = make_engine(get_settings().database_url)
    try:
        result = upgrade(engine)
    finally:
        engine.dispose()
    click.echo(result.summary())


@main.group()
def accounts() -> None:
    """Customer accounts."""


@accounts.command("create")
@click.argument("name")
def accounts_create(name: str) -> None:
    """Create a customer account."""
    from services.ledger.accounts import create_customer_account

    with unit_of_work(_engine()) as session:
        account_id = create_customer_account(session, name=name)
    _print({"id": account_id, "name": name})


@accounts.command("list")
def accounts_list() -> None:
    """List customer accounts."""
    from services.ledger.balance import list_accounts

    with unit_of_work(_engine()) as session:
        rows = list_accounts(session, 0, 1000)
    _print([{"id": r.id, "name": r.name, "debt_credits": r.debt_credits, "created_at": r.created_at} for r in rows])


@accounts.command("balance")
@click.argument("account_id", type=int)
def accounts_balance(account_id: int) -> None:
    """Show an account's balance."""
    from services.ledger.balance import get_balance

    with unit_of_work(_engine()) as session:
        _print(asdict(get_balance(session, account_id)))


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--role", type=click.Choice(["customer", "finance", "admin", "platform"]), required=True)
@click.option("--account", "account_id", type=int, default=None, help="The account of a customer key.")
@click.option("--name", default="")
def keys_create(role: str, account_id: int | None, name: str) -> None:
    """Issue an API key; its secret is printed this once."""
    from services.apikeys.service import issue_key

    with unit_of_work(_engine()) as session:
        issued = issue_key(session, role=role, account_id=account_id, name=name)
    _print(asdict(issued))


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id: int) -> None:
    """Revoke an API key."""
    from services.apikeys.service import revoke_key

    with unit_of_work(_engine()) as session:
        revoke_key(session, key_id)
    click.echo(f"key {key_id} revoked")


@main.command()
@click.argument("account_id", type=int)
@click.argument("amount_credits", type=int)
@click.option("--key", "idempotency_key", required=True, help="Idempotency key: the same key grants once.")
@click.option(
    "--expires-at",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Expiry (UTC); default: the standard lot validity.",
)
@click.option("--reason", default=None)
def grant(
    account_id: int, amount_credits: int, idempotency_key: str, expires_at: datetime | None, reason: str | None
) -> None:
    """Grant promotional credits to an account."""
    from datetime import UTC

    from services.ledger.minting import grant as grant_credits

    with unit_of_work(_engine()) as session:
        result = grant_credits(
            session,
            account_id=account_id,
            amount_credits=amount_credits,
            idempotency_key=idempotency_key,
            expires_at=expires_at.replace(tzinfo=UTC) if expires_at else None,
            reason=reason,
        )
    _print(asdict(result))


@main.command()
def check() -> None:
    """Check the ledger's invariants; exits 1 when any is violated."""
    from services.core.progress import on_terminal
    from services.ledger.invariants import check_invariants

    with unit_of_work(_engine()) as session, on_terminal():
        violations = check_invariants(session)
    _print({"ok": not violations, "violations": [asdict(v) for v in violations]})
    if violations:
        sys.exit(1)


def _add_domain_commands() -> None:
    from services.app.worker_cli import jobs, run_job, worker
    from services.finance.cli import finance
    from services.usdc.cli import usdc

    for command in (worker, jobs, run_job, finance, usdc):
        main.add_command(command)


_add_domain_commands()

if __name__ == "__main__":
    main()
