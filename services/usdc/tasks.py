"""The USDC rail's worker jobs, per configured chain: poll the chain for deposits, and confirm (credit) them.

Both are engine-level: they talk to the chain's node, which must never happen inside a transaction, so each opens
its own short units of work (services.usdc.flows.listener) rather than working in a session handed to it. Both are
state-driven (the cursor, the stored block hashes and the deposits' statuses are the only state), so a run killed
at any instant and started again loses and duplicates nothing.

A node error is written on the chain's cursor (``last_error``, for operators and the API) and raised again, so the
worker records the failed run and backs off; the cursor does not move, and the next run catches up.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from chain.errors import ChainRpcError
from chain.rpc import NO_RETRY, ChainReader, ChainRpc
from services.core.settings import ChainSettings, Settings
from services.usdc.chains import check_token_decimals, rpc_for
from services.usdc.flows.listener import (
    DEFAULT_KEEP_BLOCKS,
    MAX_CALLS_PER_POLL,
    catch_up,
    confirm_deposits,
    record_error,
    watch_every_address,
)
from services.worker.jobs import JobSpec, StepFn

# Deposits a poll run stores before it hands back to the worker (which calls it again at once when it is reached):
# about a second of catching up, so the worker still sees a stop request or a lost lock soon, while a run is long
# enough for its fetches and stores to overlap (each run starts with a fetch and ends with a store alone).
POLL_BATCH_SIZE = 20_000
# Polls in one call at most (each a bounded scan): bounds a call on a chain that reorganises on every poll.
MAX_POLLS_PER_CALL = 100


def preflight(settings: Settings) -> list[str]:
    """At the worker's start: every configured chain's token checked (:func:`check_token_decimals`); a mismatch is
    raised. A node that does not answer now is no reason not to start (the poll job checks again before its first
    poll): the warnings are returned, naming the chain and never its RPC URL."""
    if not settings.usdc_xpub:
        return []
    warnings = []
    for chain in settings.usdc_chains:
        # One try each: a node that is down must not hold the worker's start back by its retries.
        client = ChainRpc(
            chain.rpc_url, expected_chain_id=chain.chain_id, timeout_seconds=chain.rpc_timeout_seconds, retry=NO_RETRY
        )
        try:
            check_token_decimals(chain, client)
        except ChainRpcError as exc:
            warnings.append(f"chain {chain.chain_id}: the token's decimals could not be read now ({exc})")
        finally:
            client.close()
    return warnings


def poll(
    engine: Engine,
    chain: ChainSettings,
    rpc: ChainReader,
    now: datetime,
    batch_size: int,
    *,
    keep_blocks: int = DEFAULT_KEEP_BLOCKS,
    max_polls: int = MAX_POLLS_PER_CALL,
    max_calls_per_poll: int = MAX_CALLS_PER_POLL,
) -> int:
    """Poll ``chain`` until it is caught up with the node's head, ``batch_size`` deposits were stored, or
    ``max_polls`` polls were made; returns the deposits stored (new, or back in the canonical chain). Each poll
    commits on its own, while the next range is fetched (services.usdc.flows.listener.catch_up). A node error is
    recorded on the cursor and raised."""
    try:
        outcomes = catch_up(
            engine,
            chain,
            rpc,
            now=now,
            keep_blocks=keep_blocks,
            max_polls=max_polls,
            max_calls=max_calls_per_poll,
            max_stored=batch_size,
        )
    except ChainRpcError as exc:
        record_error(engine, chain.chain_id, exc, now)
        raise
    return sum(outcome.stored_logs for outcome in outcomes)


def confirm(engine: Engine, chain: ChainSettings, rpc: ChainReader, now: datetime, batch_size: int) -> int:
    """Credit up to ``batch_size`` observed deposits deep enough on ``chain`` (orphaning those whose block left the
    canonical chain); returns how many it looked at, so a full batch means "call again". A node error is recorded
    on the cursor and raised."""
    try:
        return confirm_deposits(engine, chain, rpc, now=now, limit=batch_size)
    except ChainRpcError as exc:
        record_error(engine, chain.chain_id, exc, now)
        raise


def poll_job_fn(chain: ChainSettings, settings: Settings, rpc: ChainReader | None = None) -> StepFn:
    """``poll`` bound to one chain, as an engine-level batch function ``(engine, now, batch_size) -> items``.

    Its first successful run in a process also watches on this chain every deposit address of the other chains
    (services.usdc.flows.listener.watch_every_address): a chain added to the configuration, or addresses registered on
    one chain only before every address was registered on all of them."""
    client = rpc or rpc_for(chain)
    every_address_watched = False

    def run(engine: Engine, now: datetime, batch_size: int) -> int:
        nonlocal every_address_watched
        if not every_address_watched:
            try:
                check_token_decimals(chain, client)
                watch_every_address(engine, chain, client, now=now)
            except ChainRpcError as exc:
                record_error(engine, chain.chain_id, exc, now)
                raise
            every_address_watched = True
        return poll(engine, chain, client, now, batch_size, keep_blocks=settings.usdc_recent_blocks_kept)

    return run


def confirm_job_fn(chain: ChainSettings, rpc: ChainReader | None = None) -> StepFn:
    """``confirm`` bound to one chain, as an engine-level batch function ``(engine, now, batch_size) -> items``."""
    client = rpc or rpc_for(chain)

    def run(engine: Engine, now: datetime, batch_size: int) -> int:
        return confirm(engine, chain, client, now, batch_size)

    return run


def usdc_job_specs(settings: Settings) -> list[JobSpec]:
    """Two jobs per configured chain, ``usdc.poll.<chain id>`` and ``usdc.confirm.<chain id>``, every
    ``usdc_poll_interval_seconds``; none when the rail is off (no xpub or no chains)."""
    if not settings.usdc_xpub:
        return []
    specs: list[JobSpec] = []
    for chain in settings.usdc_chains:
        rpc = rpc_for(chain)
        specs.append(
            JobSpec(
                name=f"usdc.poll.{chain.chain_id}",
                batch=None,
                step=poll_job_fn(chain, settings, rpc),
                interval_seconds=settings.usdc_poll_interval_seconds,
                batch_size=POLL_BATCH_SIZE,
                description=f"Scan chain {chain.chain_id} for USDC transfers to deposit addresses; rewind on reorgs.",
            )
        )
        specs.append(
            JobSpec(
                name=f"usdc.confirm.{chain.chain_id}",
                batch=None,
                step=confirm_job_fn(chain, rpc),
                interval_seconds=settings.usdc_poll_interval_seconds,
                batch_size=settings.usdc_confirm_batch_size,
                description=f"Credit deposits on chain {chain.chain_id} once deep enough and still canonical.",
            )
        )
    return specs
