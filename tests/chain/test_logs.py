from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from chain.abi import TRANSFER_TOPIC, load_test_usdc_artifact
from chain.logs import NotAnErc20TransferError, TransferLog, decode_transfer_log, decode_transfer_logs

FROM = "0x" + "ab" * 20
TO = "0x" + "cd" * 20
TOKEN = "0x" + "12" * 20
BLOCK_HASH = "0x" + "0f" * 32
TX_HASH = "0x" + "e1" * 32


def raw_transfer(
    *, value_units: int = 1_500_000, topics: list[str] | None = None, data: str | None = None, **overrides: Any
) -> dict[str, Any]:
    raw = {
        "address": TOKEN.upper().replace("0X", "0x"),
        "topics": topics
        if topics is not None
        else [TRANSFER_TOPIC, "0x" + "0" * 24 + FROM[2:], "0x" + "0" * 24 + TO[2:].upper()],
        "data": data if data is not None else "0x" + f"{value_units:064x}",
        "blockNumber": "0x1b4",
        "blockHash": BLOCK_HASH,
        "transactionHash": TX_HASH,
        "transactionIndex": "0x0",
        "logIndex": "0x7",
        "removed": False,
    }
    raw.update(overrides)
    return raw


def test_decodes_from_topics_and_data_into_lowercase_fields():
    log = decode_transfer_log(raw_transfer(), chain_id=8453)
    assert log == TransferLog(
        chain_id=8453,
        block_number=436,
        block_hash=BLOCK_HASH,
        tx_hash=TX_HASH,
        log_index=7,
        token=TOKEN,
        from_address=FROM,
        to_address=TO,
        value_units=1_500_000,
    )
    assert log.key == (8453, TX_HASH, 7)
    assert not log.is_zero_value
    assert log.is_from_token(TOKEN)
    assert log.display()["to_address"] == to_checksum_address(TO)


def test_full_uint256_values_stay_exact_integers():
    top = 2**256 - 1
    assert decode_transfer_log(raw_transfer(value_units=top), 1).value_units == top


def test_zero_value_transfer_is_decoded_and_flagged():
    log = decode_transfer_log(raw_transfer(value_units=0), 1)
    assert log.value_units == 0
    assert log.is_zero_value


@pytest.mark.parametrize(
    "overrides",
    [
        # ERC-721 Transfer: the same topic0, the token id indexed, no data.
        {
            "topics": [TRANSFER_TOPIC, "0x" + "0" * 24 + FROM[2:], "0x" + "0" * 24 + TO[2:], "0x" + "0" * 63 + "5"],
            "data": "0x",
        },
        {"topics": ["0x" + "99" * 32, "0x" + "0" * 24 + FROM[2:], "0x" + "0" * 24 + TO[2:]]},
        {"data": "0x" + "00" * 64},
        {"topics": [TRANSFER_TOPIC, "0x" + "ff" * 32, "0x" + "0" * 24 + TO[2:]]},
    ],
    ids=["erc721", "other-event", "long-data", "unpadded-address"],
)
def test_rejects_logs_that_are_not_erc20_transfers(overrides):
    with pytest.raises(NotAnErc20TransferError):
        decode_transfer_log(raw_transfer(**overrides), 1)


def test_bulk_decode_skips_and_counts_the_rest():
    raws = [
        raw_transfer(),
        raw_transfer(data="0x"),
        raw_transfer(removed=True),
        raw_transfer(value_units=0, logIndex="0x8"),
    ]
    decoded = decode_transfer_logs(raws, 1)
    assert [log.log_index for log in decoded.transfers] == [7, 8]
    assert decoded.not_erc20_count == 1
    assert decoded.removed_count == 1


def test_matches_web3_event_decoding_on_real_logs(rpc, wallet, token, new_addresses):
    recipients = new_addresses(3)
    receipt = token.transfer_many(recipients, 1_234_567, rounds=2)
    block = int(receipt["blockNumber"], 16)
    raws = rpc.get_logs(from_block=block, to_block=block, address=token.address)
    ours = decode_transfer_logs(raws, 31337).transfers
    assert len(ours) == 6

    contract = rpc.web3.eth.contract(
        address=rpc.web3.to_checksum_address(token.address), abi=load_test_usdc_artifact().abi
    )
    theirs = [
        contract.events.Transfer().process_log(w3_log)
        for w3_log in rpc.web3.eth.get_logs({"fromBlock": block, "toBlock": block, "address": contract.address})
    ]
    assert [
        (log.from_address, log.to_address, log.value_units, log.log_index, log.tx_hash, log.block_hash) for log in ours
    ] == [
        (
            event.args["from"].lower(),
            event.args["to"].lower(),
            event.args["value"],
            event["logIndex"],
            event["transactionHash"].to_0x_hex(),
            event["blockHash"].to_0x_hex(),
        )
        for event in theirs
    ]
    assert [log.to_address for log in ours] == recipients * 2
    assert all(log.token == token.address and log.from_address == wallet.address for log in ours)
