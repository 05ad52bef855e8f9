"""A process that runs ``creditrail migrate`` once per database URL read from stdin, answering one JSON line each.

The test starts several of these, lets them import everything, then hands them all the same fresh database at the
same moment, so their migrations race as the API's, the worker's and a one-shot migrate's do when they start
together.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import redirect_stdout

from services.cli import main
from services.core.settings import get_settings


def migrate_once(database_url: str) -> dict[str, object]:
    os.environ["CREDITRAIL_DATABASE_URL"] = database_url
    get_settings.cache_clear()
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
        print(json.dumps(migrate_once(line.strip())), flush=True)


if __name__ == "__main__":
    serve()
