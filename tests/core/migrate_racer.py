"""A process that runs ``creditrail migrate`` once per round, answering one JSON line each.

The test starts several of these and lets them import everything. Each round it holds an exclusive lock on a barrier
file and hands every racer the same fresh database; each racer says it is waiting, blocks on the barrier, and runs
``creditrail migrate`` the moment the test lets go: their migrations race as those of the API, the worker and a
one-shot migrate do when they start together.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from contextlib import redirect_stdout

from services.cli import main
from services.core.settings import get_settings


def wait_at(barrier: str) -> None:
    print(json.dumps({"waiting": True}), flush=True)
    with open(barrier) as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)  # granted once the test releases its exclusive lock


def migrate_once(database_url: str, barrier: str) -> dict[str, object]:
    os.environ["CREDITRAIL_DATABASE_URL"] = database_url
    get_settings.cache_clear()
    get_settings()
    wait_at(barrier)
    try:
        with redirect_stdout(sys.stderr):  # stdout carries only the answers
            main.main(args=["migrate"], prog_name="creditrail", standalone_mode=False)
    except SystemExit as exc:
        return {"ok": exc.code in (0, None), "error": f"exit {exc.code}"}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    return {"ok": True, "error": None}


def serve() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        round_ = json.loads(line)
        print(json.dumps(migrate_once(round_["database_url"], round_["barrier"])), flush=True)


if __name__ == "__main__":
    serve()
