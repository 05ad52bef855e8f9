import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from chain.node import project_root
from chain.rpc import ChainRpc
from chain.scanner import ScannerConfig, ScanState, TransferScanner
from scripts.localchain import cli, parse_usdc_units

from .conftest import random_address

SCRIPT = str(project_root() / "scripts" / "localchain.py")


def run_cli(info_file: Path, *args: str, exit_code: int = 0) -> str:
    result = CliRunner().invoke(cli, ["--info-file", str(info_file), *args])
    assert result.exit_code == exit_code, result.output
    return result.output.strip()


def test_start_then_send_a_deposit_that_a_scan_finds(tmp_path):
    info_file = tmp_path / "localchain.json"
    process = subprocess.Popen(
        [sys.executable, SCRIPT, "--info-file", str(info_file), "start", "--port", "0", "--mint", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not info_file.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "start did not write its details"
            time.sleep(0.05)
        info = json.loads(info_file.read_text())
        deposit_address = random_address()

        sent = json.loads(run_cli(info_file, "send", deposit_address, "25.5"))
        assert sent["value_units"] == 25_500_000
        assert sent["balance_units"] == 25_500_000
        assert run_cli(info_file, "balance", deposit_address) == "25.500000"
        run_cli(info_file, "mine", "--blocks", "2")
        assert run_cli(info_file, "uri", deposit_address, "5").endswith("&uint256=5000000")

        scanner = TransferScanner(
            ChainRpc(info["rpc_url"]), ScannerConfig(tokens=(info["token"],), head_tag="finalized")
        )
        found = scanner.scan(ScanState(0), [deposit_address]).transfers
        assert [(t.to_address, t.value_units, t.tx_hash) for t in found] == [
            (deposit_address, 25_500_000, sent["tx_hash"])
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "TestUSDC" in out
    assert "stopped" in out


def test_deploy_and_mint_against_a_running_node(tmp_path, anvil):
    info_file = tmp_path / "info.json"
    token = run_cli(info_file, "deploy", "--rpc-url", anvil.url, "--mint", "0")
    assert json.loads(info_file.read_text())["token"] == token.lower()
    holder = random_address()
    assert run_cli(info_file, "mint", holder, "0.000001") == "0.000001"
    assert "at most 6 decimals" in run_cli(info_file, "send", holder, "1.0000001", exit_code=2)


def test_usdc_amounts_parse_to_exact_units():
    assert parse_usdc_units("25") == 25_000_000
    assert parse_usdc_units("0.5") == 500_000
    assert parse_usdc_units(".000001") == 1
    assert parse_usdc_units("1000000.123456") == 1_000_000_123_456
