"""Readiness: whether this process should be sent traffic, and if not, why (a machine-readable list of reasons).

Ready means: the database answers; its schema is at this version's head; every configured chain's listener is at
most ``readyz_max_chain_lag_blocks`` behind the head it saw last; no configured job has failed
``readyz_max_job_failures`` runs in a row. The reasons say what and where (a chain id, a job's name), never an error's
text: the endpoint answers without authentication.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection, Engine

from services.core.db import table_of
from services.core.errors import CreditrailError
from services.core.migrate import head_revision
from services.core.settings import Settings
from services.usdc.status import read_cursors
from services.worker.models import JobHealth

log = logging.getLogger("creditrail.ops")

job_health = table_of(JobHealth)


class NotReady(CreditrailError):
    code = "not_ready"
    status_code = 503


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def _head() -> str | None:
    return head_revision()


def _current_revision(connection: Connection) -> str | None:
    """The schema's revision (None on a database never migrated), read quietly (Alembic's own reader logs at
    every call, and readiness is asked every few seconds)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    found = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return str(found[0]) if len(found) == 1 else None


def readiness_reasons(engine: Engine, settings: Settings, job_names: Sequence[str]) -> list[Reason]:
    """Why the process is not ready (empty: ready), from a few queries in one short transaction."""
    try:
        with engine.connect() as connection, connection.begin():
            current = _current_revision(connection)
            head = _head()
            if current != head:
                return [
                    Reason(
                        "schema_behind",
                        f"the database schema is at {current or 'nothing'}, this version needs {head}",
                        {"current": current, "head": head},
                    )
                ]
            cursors = read_cursors(connection)
            c = job_health.c
            failing = connection.execute(
                select(c.job, c.consecutive_failures).where(
                    c.consecutive_failures >= settings.readyz_max_job_failures, c.job.in_(list(job_names))
                )
            ).all()
    except Exception as exc:
        log.warning("readiness: the database is unreachable", exc_info=True)
        return [Reason("database_unreachable", "the database does not answer", {"error": type(exc).__name__})]

    reasons: list[Reason] = []
    chains = settings.usdc_chains if settings.usdc_xpub else []
    for chain in chains:
        cursor = cursors.get(chain.chain_id)
        lag = None if cursor is None else cursor.lag_blocks
        if lag is not None and lag > settings.readyz_max_chain_lag_blocks:
            reasons.append(
                Reason(
                    "chain_lagging",
                    f"chain {chain.chain_id}'s listener is {lag} blocks behind the head",
                    {
                        "chain_id": chain.chain_id,
                        "lag_blocks": lag,
                        "max_lag_blocks": settings.readyz_max_chain_lag_blocks,
                    },
                )
            )
    for row in failing:
        reasons.append(
            Reason(
                "job_failing",
                f"job {row.job} failed {row.consecutive_failures} runs in a row",
                {
                    "job": row.job,
                    "consecutive_failures": row.consecutive_failures,
                    "max_failures": settings.readyz_max_job_failures,
                },
            )
        )
    return reasons
