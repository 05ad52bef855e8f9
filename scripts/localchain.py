"""A local EVM chain for development: anvil with a USDC-like test token.

    .venv/bin/python scripts/localchain.py start                 # anvil on 127.0.0.1:8545, TestUSDC deployed, minted
    .venv/bin/python scripts/localchain.py send 0xADDRESS 25     # send 25 test USDC (a deposit to credit)
    .venv/bin/python scripts/localchain.py balance 0xADDRESS
    .venv/bin/python scripts/localchain.py mine --blocks 3       # add confirmations

``start`` runs in the foreground until interrupted and writes the connection details (RPC URL, chain id, token
address) to ``.run/localchain.json``, where the other commands find them. Transactions are signed locally by
anvil's development account 0 with explicit nonces.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from chain.addresses import checksum, normalize_address
from chain.devchain import DevWallet, LocalToken, dev_account, mine, open_dev_token
from chain.hd import eip681_transfer_uri
from chain.node import DEFAULT_CHAIN_ID, AnvilNode, project_root
from chain.rpc import ChainRpc

USDC_DECIMALS = 6
UNITS_PER_USDC = 1_000_000
DEFAULT_PORT = 8545
DEFAULT_INFO_FILE = project_root() / ".run" / "localchain.json"


def parse_usdc_units(text: str) -> int:
    """``"25"`` or ``"0.5"`` USDC as integer base units (6 decimals); more than 6 decimals is refused."""
    value = text.strip()
    whole, _, fraction = value.partition(".")
    if not whole:
        whole = "0"
    if not (whole.isdigit() and (fraction == "" or fraction.isdigit())) or len(fraction) > USDC_DECIMALS:
        raise click.BadParameter(f"{text!r}: a USDC amount with at most {USDC_DECIMALS} decimals")
    return int(whole) * UNITS_PER_USDC + int(fraction.ljust(USDC_DECIMALS, "0") or "0")


def format_usdc(units: int) -> str:
    whole, fraction = divmod(units, UNITS_PER_USDC)
    return f"{whole}.{fraction:06d}"


def read_info(info_file: Path) -> dict[str, Any]:
    if not info_file.exists():
        raise click.ClickException(f"{info_file} not found: run `scripts/localchain.py start` first")
    info: dict[str, Any] = json.loads(info_file.read_text())
    return info


def write_info(info_file: Path, info: dict[str, Any]) -> None:
    info_file.parent.mkdir(parents=True, exist_ok=True)
    info_file.write_text(json.dumps(info, indent=2) + "\n")


def connect(info_file: Path, rpc_url: str | None, token: str | None) -> tuple[ChainRpc, LocalToken]:
    info = read_info(info_file) if rpc_url is None or token is None else {}
    rpc = ChainRpc(rpc_url or str(info["rpc_url"]))
    wallet = DevWallet(rpc, dev_account(0))
    return rpc, LocalToken(wallet, token or str(info["token"]))


@click.group()
@click.option(
    "--info-file",
    type=click.Path(path_type=Path),
    default=DEFAULT_INFO_FILE,
    show_default=True,
    help="Where `start` records the chain's URL, chain id and token address.",
)
@click.pass_context
def cli(ctx: click.Context, info_file: Path) -> None:
    """A local chain with a test USDC token."""
    ctx.obj = info_file


@cli.command()
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="0 picks a free port.")
@click.option("--chain-id", type=int, default=DEFAULT_CHAIN_ID, show_default=True)
@click.option("--mint", "mint_usdc", default="1000000", show_default=True, help="Test USDC minted to the deployer.")
@click.option("--block-time", type=int, default=None, help="Mine a block every N seconds (default: per transaction).")
@click.option(
    "--state",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the chain in this file across restarts (the token is reused).",
)
@click.pass_obj
def start(
    info_file: Path, port: int, chain_id: int, mint_usdc: str, block_time: int | None, state: Path | None
) -> None:
    """Start anvil, deploy TestUSDC and mint test USDC; runs until interrupted."""
    node = AnvilNode(
        chain_id=chain_id, port=port or None, block_time_seconds=block_time, state_path=state, slots_in_an_epoch=1
    )
    node.start()
    try:
        rpc = ChainRpc(node.url, expected_chain_id=chain_id)
        previous = json.loads(info_file.read_text()) if state is not None and info_file.exists() else {}
        known = previous.get("token") if previous.get("chain_id") == chain_id else None
        token = open_dev_token(rpc, known, parse_usdc_units(mint_usdc))
        deployer = token.wallet.address
        write_info(info_file, {"rpc_url": node.url, "chain_id": chain_id, "token": token.address, "deployer": deployer})
        click.echo(f"anvil        {node.url} (chain id {chain_id})")
        click.echo(f"TestUSDC     {checksum(token.address)}")
        click.echo(f"deployer     {checksum(deployer)} holds {format_usdc(token.balance_units(deployer))} USDC")
        click.echo(f"details in   {info_file}")
        click.echo("send a deposit: .venv/bin/python scripts/localchain.py send 0xDEPOSIT_ADDRESS 25")
        click.echo("Ctrl-C stops the chain.")
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        try:
            while not stopped.wait(1.0):
                if not node.running:
                    raise click.ClickException("anvil exited")
        except KeyboardInterrupt:
            pass
    finally:
        node.close()
        click.echo("stopped")


@cli.command()
@click.option("--rpc-url", required=True, help="A running node, e.g. http://127.0.0.1:8545")
@click.option("--mint", "mint_usdc", default="1000000", show_default=True)
@click.pass_obj
def deploy(info_file: Path, rpc_url: str, mint_usdc: str) -> None:
    """Deploy TestUSDC to a running node and record it."""
    rpc = ChainRpc(rpc_url)
    token = open_dev_token(rpc, None, parse_usdc_units(mint_usdc))
    write_info(
        info_file,
        {"rpc_url": rpc_url, "chain_id": rpc.chain_id(), "token": token.address, "deployer": token.wallet.address},
    )
    click.echo(checksum(token.address))


@cli.command()
@click.argument("to")
@click.argument("amount_usdc")
@click.option("--units", is_flag=True, help="AMOUNT_USDC is in base units (1 USDC = 1000000).")
@click.option("--rpc-url", default=None)
@click.option("--token", "token_address", default=None)
@click.pass_obj
def send(
    info_file: Path, to: str, amount_usdc: str, units: bool, rpc_url: str | None, token_address: str | None
) -> None:
    """Send test USDC from the deployer to TO (a deposit address, for instance)."""
    _, token = connect(info_file, rpc_url, token_address)
    value_units = int(amount_usdc) if units else parse_usdc_units(amount_usdc)
    recipient = normalize_address(to)
    receipt = token.transfer(recipient, value_units)
    click.echo(
        json.dumps(
            {
                "tx_hash": receipt["transactionHash"],
                "block_number": int(receipt["blockNumber"], 16),
                "to": checksum(recipient),
                "value_units": value_units,
                "balance_units": token.balance_units(recipient),
            }
        )
    )


@cli.command("mint")
@click.argument("to")
@click.argument("amount_usdc")
@click.option("--rpc-url", default=None)
@click.option("--token", "token_address", default=None)
@click.pass_obj
def mint_command(info_file: Path, to: str, amount_usdc: str, rpc_url: str | None, token_address: str | None) -> None:
    """Mint test USDC to TO (the deployer owns the token)."""
    _, token = connect(info_file, rpc_url, token_address)
    token.mint(normalize_address(to), parse_usdc_units(amount_usdc))
    click.echo(format_usdc(token.balance_units(to)))


@cli.command()
@click.argument("address")
@click.option("--rpc-url", default=None)
@click.option("--token", "token_address", default=None)
@click.pass_obj
def balance(info_file: Path, address: str, rpc_url: str | None, token_address: str | None) -> None:
    """Test USDC balance of ADDRESS."""
    _, token = connect(info_file, rpc_url, token_address)
    click.echo(format_usdc(token.balance_units(address)))


@cli.command("mine")
@click.option("--blocks", type=int, default=1, show_default=True)
@click.option("--rpc-url", default=None)
@click.pass_obj
def mine_command(info_file: Path, blocks: int, rpc_url: str | None) -> None:
    """Mine empty blocks (confirmations for the last deposit)."""
    rpc = ChainRpc(rpc_url or str(read_info(info_file)["rpc_url"]))
    mine(rpc, blocks)
    click.echo(rpc.block_number())


@cli.command()
@click.argument("to")
@click.argument("amount_usdc")
@click.pass_obj
def uri(info_file: Path, to: str, amount_usdc: str) -> None:
    """The EIP-681 payment URI a wallet would scan to send AMOUNT_USDC to TO."""
    info = read_info(info_file)
    click.echo(
        eip681_transfer_uri(
            token=str(info["token"]), chain_id=int(info["chain_id"]), to=to, value_units=parse_usdc_units(amount_usdc)
        )
    )


if __name__ == "__main__":
    sys.exit(cli())
