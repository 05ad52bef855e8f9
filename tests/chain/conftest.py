"""A real anvil for the chain tests: one node per test session, on a free 127.0.0.1 port.

If ``node_modules`` is missing, ``npm ci`` installs the pinned anvil first; the tests are never skipped. Each test
works with fresh random addresses and scans only the blocks it made, so tests sharing the node do not see each
other's transfers.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator

import pytest

from chain.devchain import DevWallet, LocalToken, dev_account
from chain.node import AnvilNode, find_anvil, project_root
from chain.rpc import ChainRpc, RetryPolicy

CHAIN_ID = 31337
TOKEN_SUPPLY_UNITS = 10**15  # one billion test USDC


def ensure_node_modules() -> None:
    """Install the pinned npm packages (anvil, solc) if they are missing."""
    root = project_root()
    modules = root / "node_modules"
    if not (modules / ".bin" / "anvil").is_file() or not (modules / "solc" / "package.json").is_file():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=root, check=True, timeout=600)
    find_anvil(root)


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    ensure_node_modules()
    with AnvilNode(chain_id=CHAIN_ID, slots_in_an_epoch=1) as node:
        yield node


@pytest.fixture(scope="session")
def rpc(anvil: AnvilNode) -> ChainRpc:
    return ChainRpc(anvil.url, expected_chain_id=CHAIN_ID, retry=RetryPolicy(max_attempts=2))


@pytest.fixture(scope="session")
def wallet(rpc: ChainRpc) -> DevWallet:
    return DevWallet(rpc, dev_account(0))


@pytest.fixture(scope="session")
def token(wallet: DevWallet) -> LocalToken:
    deployed = LocalToken.deploy(wallet)
    deployed.mint(wallet.address, TOKEN_SUPPLY_UNITS)
    return deployed


@pytest.fixture(scope="session")
def other_token(wallet: DevWallet) -> LocalToken:
    """A second token contract: same code, different address (an impostor "USDC", as far as the rail cares)."""
    deployed = LocalToken.deploy(wallet)
    deployed.mint(wallet.address, TOKEN_SUPPLY_UNITS)
    return deployed


def random_address() -> str:
    return "0x" + secrets.token_hex(20)


@pytest.fixture
def new_addresses() -> Callable[[int], list[str]]:
    return lambda count: [random_address() for _ in range(count)]
