"""The ``creditrail`` command against a SQLite file: accounts, keys, grants, balance, invariant check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from chain.errors import ChainUnreachableError
from chain.node import free_port
from chain.rpc import redact_url
from services.cli import _served, main
from services.core.cli_support import chain_error_line
from services.core.db import make_engine
from services.core.migrate import head_revision
from services.core.settings import ChainSettings, Settings, get_settings
from services.core.urls import credits_page_url, public_base_url
from services.dev import dev_xpub


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CREDITRAIL_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, list(args))
        return result.exit_code, result.output

    yield invoke
    get_settings.cache_clear()


def test_accounts_keys_grant_and_check(cli) -> None:
    code, out = cli("accounts", "create", "acme")
    assert code == 0, out
    account_id = json.loads(out)["id"]
    code, out = cli("keys", "create", "--role", "customer", "--account", str(account_id))
    assert code == 0, out
    assert json.loads(out)["key"].startswith("cr_")
    code, out = cli("grant", str(account_id), "750", "--key", "welcome", "--reason", "trial")
    assert code == 0, out
    code, out = cli("grant", str(account_id), "750", "--key", "welcome", "--reason", "trial")
    assert json.loads(out)["replayed"] is True
    code, out = cli("accounts", "balance", str(account_id))
    assert json.loads(out)["available_credits"] == 750
    code, out = cli("check")
    assert code == 0
    assert json.loads(out) == {"ok": True, "violations": []}


def test_check_exits_nonzero_on_a_violation(cli, tmp_path: Path) -> None:
    code, out = cli("accounts", "create", "acme")
    account_id = json.loads(out)["id"]
    cli("grant", str(account_id), "100", "--key", "g")
    engine = make_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE lots SET remaining_credits = remaining_credits + 1"))
    code, out = cli("check")
    assert code == 1
    assert {v["invariant"] for v in json.loads(out)["violations"]} >= {"balance_matches_lots"}


def test_domain_errors_are_one_line_with_a_code(cli) -> None:
    code, out = cli("grant", "424242", "100", "--key", "g")
    assert code == 2
    assert "account_not_found" in out


# --- starting with a bad configuration, or without the database or a chain: one line, no secret --------------


def one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    return lines[0]


def subprocess_env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CREDITRAIL_")}
    return env | values


def creditrail(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=cwd,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["dev", "--no-chain"],
        ["worker"],
        ["migrate"],
        ["accounts", "list"],
        ["jobs"],
        ["run-job", "ledger.expire_holds"],
        ["finance", "exceptions"],
    ],
)
def test_a_bad_setting_stops_any_command_with_one_line_naming_its_variable(
    cli, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("CREDITRAIL_API_PORT", "eighty")
    code, out = cli(*command)
    assert code != 0
    line = one_error_line(out)
    assert line.startswith("error: CREDITRAIL_API_PORT: "), line
    assert "eighty" not in line  # values are never echoed: another one could be a secret


def test_a_list_setting_that_is_not_json_is_one_line_naming_its_variable(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITRAIL_STRIPE_WEBHOOK_SECRETS", '["whsec_abc"')
    code, out = cli("accounts", "list")
    assert code != 0
    line = one_error_line(out)
    assert line.startswith("error: CREDITRAIL_STRIPE_WEBHOOK_SECRETS: not valid JSON"), line
    assert "whsec_abc" not in line


def test_an_empty_variable_counts_as_unset(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRETS", "USDC_XPUB", "USDC_CHAINS", "PUBLIC_BASE_URL"):
        monkeypatch.setenv(f"CREDITRAIL_{name}", "")
    code, out = cli("accounts", "list")
    assert (code, out) == (0, "[]\n")
    settings = get_settings()
    assert (settings.stripe_configured, settings.stripe_webhook_secrets, settings.usdc_chains) == (False, [], [])


def test_production_with_a_placeholder_stripe_key_is_refused_in_one_line(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITRAIL_ENVIRONMENT", "production")
    monkeypatch.setenv("CREDITRAIL_PUBLIC_BASE_URL", "https://credits.example.com")
    monkeypatch.setenv("CREDITRAIL_STRIPE_SECRET_KEY", "sk_live_change-me")
    code, out = cli("migrate")
    assert code != 0
    assert one_error_line(out) == (
        "error: CREDITRAIL_STRIPE_SECRET_KEY: holds a placeholder; set a real secret (or unset it)"
    )


def test_production_without_a_public_https_base_url_is_refused_in_one_line(
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDITRAIL_ENVIRONMENT", "production")
    monkeypatch.setenv("CREDITRAIL_PUBLIC_BASE_URL", "http://credits.example.com")
    code, out = cli("run")
    assert code != 0
    assert one_error_line(out) == "error: CREDITRAIL_PUBLIC_BASE_URL: must be https in production"


def test_production_starts_without_stripe_with_the_card_rail_off(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITRAIL_ENVIRONMENT", "production")
    monkeypatch.setenv("CREDITRAIL_PUBLIC_BASE_URL", "https://credits.example.com")
    monkeypatch.setenv("CREDITRAIL_RECEIPT_LINK_SECRET", "receipt-links-0123456789abcdef-0123456789")
    code, out = cli("migrate")
    assert code == 0, out
    assert get_settings().stripe_configured is False
    code, out = cli("jobs", "--json")
    assert code == 0, out
    assert not [job for job in json.loads(out) if job["job"] in ("card.sync", "card.auto_recharge")]


def test_an_unreachable_database_is_one_line_naming_its_host_never_its_password(
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("CREDITRAIL_DATABASE_URL", f"postgresql://ops:hunter2secret@127.0.0.1:{port}/ledger")
    code, out = cli("accounts", "list")
    assert code != 0
    line = one_error_line(out)
    assert f"database_unavailable: cannot use the database at postgresql://ops@127.0.0.1:{port}/ledger" in line
    assert "hunter2secret" not in line


def test_a_sqlite_file_that_cannot_be_opened_is_one_line(cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    monkeypatch.setenv("CREDITRAIL_DATABASE_URL", f"sqlite:///{missing}")
    code, out = cli("migrate")
    assert code != 0
    assert str(missing) in one_error_line(out)


def test_an_unreachable_chain_is_one_line_naming_the_chain_never_its_rpc_url(
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    rpc_url = f"http://127.0.0.1:{free_port()}/v2/k3y0fTheProvider"
    chain = {"chain_id": 8453, "rpc_url": rpc_url, "usdc_address": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"}
    monkeypatch.setenv("CREDITRAIL_USDC_XPUB", dev_xpub())
    monkeypatch.setenv("CREDITRAIL_USDC_CHAINS", json.dumps([chain]))
    code, out = cli("finance", "reconcile", "--rail", "usdc", "--from", "2026-11-01", "--to", "2026-11-02")
    assert code != 0
    line = one_error_line(out)
    assert "chain 8453" in line
    assert "k3y0fTheProvider" not in line


def test_a_chain_error_reaching_the_command_line_names_the_chain_by_id() -> None:
    rpc_url = "https://base-mainnet.example/v2/k3y0fTheProvider"
    settings = Settings(usdc_chains=[ChainSettings(chain_id=8453, rpc_url=rpc_url, usdc_address="0x" + "1" * 40)])
    error = ChainUnreachableError(
        f"cannot reach the node: Max retries exceeded with url: /v2/k3y0fTheProvider ({rpc_url})",
        method="eth_blockNumber",
        endpoint=redact_url(rpc_url),
    )
    line = chain_error_line(error, settings)
    assert line.startswith("chain_unavailable: the node of chain 8453 failed: cannot reach the node")
    assert "k3y0fTheProvider" not in line


def test_migrate_prints_one_summary_line_and_no_migration_log(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'fresh.db'}"
    first = creditrail("migrate", cwd=tmp_path, CREDITRAIL_DATABASE_URL=database)
    assert (first.returncode, first.stdout, first.stderr) == (
        0,
        f"schema migrated from empty to {head_revision()}\n",
        "",
    )
    again = creditrail("migrate", cwd=tmp_path, CREDITRAIL_DATABASE_URL=database)
    assert (again.returncode, again.stdout, again.stderr) == (0, f"schema is up to date ({head_revision()})\n", "")


def test_run_job_prints_its_result_once_and_no_migration_log(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'fresh.db'}"
    ran = creditrail("run-job", "ledger.expire_holds", cwd=tmp_path, CREDITRAIL_DATABASE_URL=database)
    assert ran.returncode == 0, ran.stderr
    [line] = ran.stdout.splitlines()
    assert json.loads(line)["outcome"] == "success"
    assert ran.stderr == ""


def test_run_and_dev_port_moves_the_development_base_url() -> None:
    served = _served(Settings(environment="development"), None, 9123)
    assert public_base_url(served) == "http://127.0.0.1:9123"
    assert credits_page_url(_served(Settings(), "localhost", 8100)) == "http://localhost:8100/credits"
    configured = Settings(public_base_url="https://credits.example.com")
    assert credits_page_url(_served(configured, None, 9123)) == "https://credits.example.com/credits"
