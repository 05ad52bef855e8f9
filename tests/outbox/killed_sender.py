"""A delivery run in a process of its own (``python -m tests.outbox.killed_sender URL SCHEMA PORT``), for the test
that kills it with SIGKILL in the middle of its SMTP conversation."""

from __future__ import annotations

import sys

from services.core.clock import utcnow
from services.core.db import make_engine
from services.core.settings import Settings
from services.outbox.mailer import SmtpMailer
from services.outbox.tasks import deliver


def main() -> None:
    url, schema, port = sys.argv[1:4]
    engine = make_engine(url, schema=schema or None)
    settings = Settings(
        environment="test", database_url=url, smtp_host="127.0.0.1", smtp_port=int(port), smtp_security="none"
    )
    deliver(engine, settings, SmtpMailer(settings), utcnow(), 10)


if __name__ == "__main__":
    main()
