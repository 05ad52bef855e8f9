"""Run by the tests as a separate process: a poll of a chain that kills its own process with SIGKILL after writing
the deposits it found, before its unit of work commits (a worker dying at the worst moment).

Argument: a JSON object with ``database_url``, ``schema`` (PostgreSQL, or empty) and ``chain`` (ChainSettings).
Without ``kill_at_store`` it is one ``poll_chain`` that dies in its store. With ``kill_at_store`` (n) it is the poll
job's catch-up, one ``eth_getLogs`` call per range, that dies in the n-th store writing deposits, once the range
after it has been fetched meanwhile (it prints "prefetched" then; it waits 30 s at most for that).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any

from sqlmodel import Session

from chain.rpc import ChainRpc, RawLog
from services.core.clock import utcnow
from services.core.db import make_engine
from services.core.settings import ChainSettings
from services.usdc import repository, tasks
from services.usdc.flows.listener import poll_chain
from tests.chain.helpers import ForwardingReader


class FetchedRanges(ForwardingReader):
    """A ChainReader forwarding to a node, remembering the last block of every eth_getLogs answered."""

    def __init__(self, inner: ChainRpc) -> None:
        super().__init__(inner)
        self.answered = threading.Condition()
        self.last_blocks: list[int] = []

    def after_logs(self, from_block: int, to_block: int, logs: list[RawLog]) -> None:
        with self.answered:
            self.last_blocks.append(to_block)
            self.answered.notify_all()

    def wait_for_beyond(self, block: int, timeout_seconds: float) -> bool:
        """Whether a range past ``block`` was fetched (waiting up to ``timeout_seconds`` for one)."""
        with self.answered:
            return self.answered.wait_for(lambda: any(b > block for b in self.last_blocks), timeout_seconds)


def main(argv: list[str]) -> None:
    job = json.loads(argv[1])
    engine = make_engine(job["database_url"], schema=job["schema"] or None)
    chain = ChainSettings(**job["chain"])
    kill_at_store: int | None = job.get("kill_at_store")
    rpc = FetchedRanges(ChainRpc(chain.rpc_url, expected_chain_id=chain.chain_id))
    insert_observed = repository.insert_observed
    stores = 0

    def insert_then_die(session: Session, chain_id: int, transfers: Any, account_of: Any, now: Any) -> int:
        nonlocal stores
        stored = insert_observed(session, chain_id, transfers, account_of, now)
        if not transfers:
            return stored
        stores += 1
        if kill_at_store is not None:
            if stores < kill_at_store:
                return stored
            if rpc.wait_for_beyond(max(t.block_number for t in transfers), timeout_seconds=30):
                print("prefetched", flush=True)
        print(f"storing {stored} deposits", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        return stored

    repository.insert_observed = insert_then_die
    if kill_at_store is None:
        poll_chain(engine, chain, rpc)
    else:
        tasks.poll(engine, chain, rpc, utcnow(), 100, max_calls_per_poll=1)
    print("the poll finished: it should have been killed", flush=True)


if __name__ == "__main__":
    main(sys.argv)
