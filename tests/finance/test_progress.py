"""A reconciliation shows its chain re-scan's progress on a terminal, and nothing when stderr is not one (a real
anvil)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from chain.devchain import LocalToken
from chain.rpc import ChainRpc
from services.cli import main
from services.core import progress
from services.core.settings import get_settings
from services.finance.flows.reconcile import reconcile_period
from tests.core.test_progress import Terminal
from tests.finance.chain_support import ChainTime, anvil, make_rail, own_chain, rpc, token, wallet
from tests.usdc.conftest import Rail

__all__ = ["anvil", "make_rail", "own_chain", "rpc", "token", "wallet"]


def test_a_reconciliation_shows_the_rescan_moving_on_a_terminal(
    make_rail: object, rpc: ChainRpc, token: LocalToken
) -> None:
    rail: Rail = make_rail(confirmations=0, max_range_blocks=4)  # type: ignore[operator]
    chain_id = rail.chain.chain_id
    _, alice = rail.customer("alice")
    clock = ChainTime(rpc)
    clock.send(token, alice, 5_000_000, 10)
    clock.mine(20, count=12)
    clock.mine(100)
    settings = rail.settings.model_copy(update={"finance_late_window_seconds": 0})
    stream = Terminal()
    with progress.on_terminal(stream):
        reconcile_period(
            rail.engine,
            settings,
            rail=f"usdc:{chain_id}",
            period_start=clock.at(0),
            period_end=clock.at(60),
            readers={chain_id: rpc},
            now=clock.at(200),
        )
    shown = stream.getvalue()
    assert f"\rre-scanning chain {chain_id} (blocks): 0/" in shown
    assert "(100%)\n" in shown
    assert shown.endswith("(rails): 1/1 (100%)\n")


def test_finance_reconcile_prints_only_its_result_when_stderr_is_not_a_terminal(
    make_rail: object, rpc: ChainRpc, token: LocalToken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rail: Rail = make_rail(confirmations=0)  # type: ignore[operator]
    clock = ChainTime(rpc)
    clock.mine(10, count=3)
    clock.mine(100)
    chain = rail.chain.model_dump()
    monkeypatch.setenv("CREDITRAIL_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("CREDITRAIL_USDC_XPUB", rail.settings.usdc_xpub)
    monkeypatch.setenv("CREDITRAIL_USDC_CHAINS", json.dumps([chain]))
    monkeypatch.setenv("CREDITRAIL_FINANCE_LATE_WINDOW_SECONDS", "0")
    get_settings.cache_clear()
    when = "%Y-%m-%dT%H:%M:%S"
    try:
        result = CliRunner().invoke(
            main,
            [
                "finance",
                "reconcile",
                "--rail",
                f"usdc:{chain['chain_id']}",
                "--from",
                clock.at(0).strftime(when),
                "--to",
                clock.at(60).strftime(when),
            ],
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    [run] = json.loads(result.stdout)
    assert run["rail"] == f"usdc:{chain['chain_id']}"
