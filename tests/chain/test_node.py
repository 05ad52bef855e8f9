import pytest
import requests

from chain.node import AnvilError, AnvilNode
from chain.rpc import ChainRpc


def test_anvil_answers_on_localhost_with_the_chosen_chain_id(anvil, rpc):
    assert anvil.url.startswith("http://127.0.0.1:")
    assert rpc.chain_id() == 31337


def test_slots_in_an_epoch_one_makes_safe_and_finalized_trail_latest(rpc):
    rpc.request("anvil_mine", ["0x3"])
    latest = rpc.block_number()
    assert rpc.block_number("safe") == latest - 1
    assert rpc.block_number("finalized") == latest - 2


def test_second_node_with_another_chain_id_on_its_own_port_and_stop(anvil):
    node = AnvilNode(chain_id=8453, slots_in_an_epoch=None)
    with node:
        assert node.port != anvil.port
        assert ChainRpc(node.url).chain_id() == 8453
        url = node.url
    assert not node.running
    with pytest.raises(requests.ConnectionError):
        requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1)


def test_start_on_a_taken_port_fails_clearly(anvil):
    node = AnvilNode(port=anvil.port, start_timeout_seconds=5)
    with pytest.raises(AnvilError):
        node.start()
    node.close()
