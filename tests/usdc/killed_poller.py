"""Run by the tests as a separate process: one poll of a chain that kills its own process with SIGKILL after writing
the deposits it found, before its unit of work commits (a worker dying at the worst moment).

Argument: a JSON object with ``database_url``, ``schema`` (PostgreSQL, or empty) and ``chain`` (ChainSettings).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from sqlmodel import Session

from chain.rpc import ChainRpc
from services.core.db import make_engine
from services.core.settings import ChainSettings
from services.usdc import repository
from services.usdc.listener import poll_chain


def main(argv: list[str]) -> None:
    job = json.loads(argv[1])
    engine = make_engine(job["database_url"], schema=job["schema"] or None)
    chain = ChainSettings(**job["chain"])
    insert_observed = repository.insert_observed

    def insert_then_die(session: Session, chain_id: int, transfers: Any, account_of: Any, now: Any) -> int:
        stored = insert_observed(session, chain_id, transfers, account_of, now)
        print(f"storing {stored} deposits", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        return stored

    repository.insert_observed = insert_then_die
    poll_chain(engine, chain, ChainRpc(chain.rpc_url, expected_chain_id=chain.chain_id))
    print("the poll finished: it should have been killed", flush=True)


if __name__ == "__main__":
    main(sys.argv)
