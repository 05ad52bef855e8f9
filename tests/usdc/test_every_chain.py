"""An account's deposit address is the same on every chain: money sent to it on any configured chain is credited,
whichever chain the account asked for, and a chain added to the configuration later watches every address from its
start block. Two real anvil nodes (two chain ids)."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from chain.devchain import LocalToken, mine
from chain.rpc import ChainRpc
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import Settings
from services.ledger.accounts import create_customer_account
from services.usdc import repository as usdc_repo
from services.usdc import tasks
from services.usdc.addresses import ensure_deposit_address

from .conftest import CHAIN_ID, OwnChain, Rail, chain_settings_for, random_xpub
from .support import send_transfer

OTHER_CHAIN_ID = CHAIN_ID + 1


def _run_poll_job(rail: Rail, chain_id: int, rpc: ChainRpc) -> int:
    """One run of the worker's poll job of a chain, as a fresh worker makes it."""
    run = tasks.poll_job_fn(rail.chain_by_id(chain_id), rail.settings, rpc)
    return run(rail.engine, utcnow(), 10_000)


def test_a_transfer_on_a_chain_the_account_did_not_ask_for_is_credited(
    make_rail: object, rpc: ChainRpc, own_chain: OwnChain
) -> None:
    other = chain_settings_for(own_chain.rpc, own_chain.token, name="other", confirmations=2)
    usdc: Rail = make_rail(other)  # type: ignore[operator]
    account_id, address = usdc.customer(chain_ids=(CHAIN_ID,))
    send_transfer(own_chain.token, address, 7_000_000)
    mine(own_chain.rpc, other.confirmations)

    usdc.settle(own_chain.rpc, other)

    [deposit] = usdc.deposits(account_id)
    assert (deposit.chain_id, deposit.status, deposit.credits_minted) == (OTHER_CHAIN_ID, "credited", 700)
    assert usdc.balance(account_id).total_credits == 700
    usdc.assert_invariants()


def test_a_chain_added_to_the_configuration_later_credits_what_was_sent_since_its_start_block(
    engine: Engine, rpc: ChainRpc, token: LocalToken, own_chain: OwnChain
) -> None:
    first = chain_settings_for(rpc, token)
    other = chain_settings_for(own_chain.rpc, own_chain.token, name="other", confirmations=2)
    before = Rail(engine, Settings(environment="test", usdc_xpub=random_xpub(), usdc_chains=[first]))
    account_id, address = before.customer()
    send_transfer(own_chain.token, address, 4_000_000)
    mine(own_chain.rpc, other.confirmations)

    after = Rail(engine, before.settings.model_copy(update={"usdc_chains": [first, other]}))
    assert _run_poll_job(after, OTHER_CHAIN_ID, own_chain.rpc) == 1
    after.confirm(own_chain.rpc, other)

    [deposit] = after.deposits(account_id)
    assert (deposit.chain_id, deposit.status, deposit.credits_minted) == (OTHER_CHAIN_ID, "credited", 400)
    after.assert_invariants()


def test_an_address_registered_on_one_chain_only_is_watched_on_the_others_with_their_past_blocks(
    make_rail: object, own_chain: OwnChain
) -> None:
    other = chain_settings_for(own_chain.rpc, own_chain.token, name="other", confirmations=2)
    usdc: Rail = make_rail(other)  # type: ignore[operator]
    usdc.poll_until_caught_up(own_chain.rpc, other)
    # An account whose address was registered on the first chain alone (as before every address was registered
    # on every chain), and a transfer to it on the other chain, in blocks its listener has already passed.
    with unit_of_work(usdc.engine) as session:
        account_id = create_customer_account(session, name="registered on one chain")
    with unit_of_work(usdc.engine) as session:
        view = ensure_deposit_address(session, usdc.settings, account_id=account_id, chain_id=CHAIN_ID)
        usdc_repo.deposit_address_for(session, account_id, OTHER_CHAIN_ID)
        session.execute(
            usdc_repo.addresses.delete().where(
                usdc_repo.addresses.c.account_id == account_id, usdc_repo.addresses.c.chain_id == OTHER_CHAIN_ID
            )
        )
    address = view.address.lower()
    send_transfer(own_chain.token, address, 6_000_000)
    mine(own_chain.rpc, other.confirmations)
    usdc.settle(own_chain.rpc, other)
    assert usdc.deposits(account_id) == []
    assert usdc.cursor(OTHER_CHAIN_ID).next_block == own_chain.rpc.block_number() + 1

    _run_poll_job(usdc, OTHER_CHAIN_ID, own_chain.rpc)
    assert [d.status for d in usdc.deposits(account_id)] == ["observed"]
    usdc.confirm(own_chain.rpc, other)
    assert _run_poll_job(usdc, OTHER_CHAIN_ID, own_chain.rpc) == 0

    [deposit] = usdc.deposits(account_id)
    assert (deposit.chain_id, deposit.status, deposit.credits_minted) == (OTHER_CHAIN_ID, "credited", 600)
    assert usdc.carry(account_id, OTHER_CHAIN_ID) == 0
    usdc.assert_invariants()
