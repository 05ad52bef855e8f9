import pytest

from chain.devchain import DevWallet, LocalToken, dev_account
from chain.errors import ChainUnreachableError
from chain.node import AnvilNode
from chain.rpc import ChainRpc, RetryPolicy
from chain.scanner import ScannerConfig, ScanState, TransferScanner

from .conftest import random_address


@pytest.fixture
def own_node(tmp_path):
    """A node of this test's own, keeping its chain in a state file across a restart."""
    node = AnvilNode(chain_id=31337, state_path=tmp_path / "state.json")
    node.start()
    yield node
    node.close()


def test_node_down_is_a_clear_error_then_the_scan_catches_up_after_restart(own_node):
    rpc = ChainRpc(own_node.url, retry=RetryPolicy(max_attempts=3, backoff_initial_seconds=0.05))
    wallet = DevWallet(rpc, dev_account(1))
    token = LocalToken.deploy(wallet)
    token.mint(wallet.address, 10**12)
    watched = [random_address()]
    scanner = TransferScanner(rpc, ScannerConfig(tokens=(token.address,)))

    token.transfer(watched[0], 1_000_000)
    before = scanner.scan(ScanState(0), watched)
    assert [t.value_units for t in before.transfers] == [1_000_000]
    checkpoint = before.state

    token.transfer(watched[0], 2_000_000)
    head_before_stop = rpc.block_number()
    own_node.stop()

    with pytest.raises(ChainUnreachableError) as caught:
        scanner.scan(checkpoint, watched)
    assert "cannot reach the node" in str(caught.value)
    assert own_node.url in str(caught.value)
    assert checkpoint.next_block == before.state.next_block, "the caller's checkpoint is untouched"

    own_node.start()
    assert own_node.url == rpc.url, "same port after restart"
    after = scanner.scan(checkpoint, watched)
    assert [t.value_units for t in after.transfers] == [2_000_000]
    assert after.caught_up
    assert after.state.next_block == head_before_stop + 1
