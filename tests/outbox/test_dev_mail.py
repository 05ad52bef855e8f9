"""Development's mail server: a real SMTP server keeping each message as a .eml file; ``creditrail dev`` starts it,
points the outbox at it, and the demo deposit's receipt lands in ``.run/mail/``."""

from __future__ import annotations

import json
import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import uvicorn
from click.testing import CliRunner
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from chain.node import free_port
from services.cli import main
from services.core.settings import Settings, get_settings
from services.dev import RECEIPT_LINK_SECRET_FILE, start_dev_mail
from services.outbox.devmail import MailFolderServer
from services.outbox.links import signature_valid
from tests.outbox.conftest import Mail, mail_settings


def test_the_development_mail_server_keeps_each_message_as_an_eml_file(engine: Engine, tmp_path: Path) -> None:
    with MailFolderServer(tmp_path / "mail") as server:
        mail = Mail(engine, mail_settings(engine, server.port), None)  # type: ignore[arg-type]
        mail.purchase(mail.account(email="demo@example.test"))
        assert mail.deliver() == 1
        [kept] = server.messages()
    [row] = mail.messages()
    parsed = message_from_bytes(kept.read_bytes(), policy=policy.default)
    assert parsed["Message-ID"] == row.message_id
    assert parsed["To"] == "demo@example.test"
    assert row.status == "sent"


def test_development_points_smtp_at_the_local_server_unless_one_is_set(tmp_path: Path) -> None:
    settings, server = start_dev_mail(Settings(environment="development"), tmp_path)
    assert server is not None
    try:
        assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == ("127.0.0.1", server.port, "none")
        assert server.directory == tmp_path / "mail"
    finally:
        server.stop()
    unchanged, none = start_dev_mail(Settings(environment="development", smtp_host="mail.example"), tmp_path)
    assert (unchanged.smtp_host, none) == ("mail.example", None)


def test_creditrail_dev_mails_the_demo_deposits_receipt_into_run_mail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CREDITRAIL_DATABASE_URL", f"sqlite:///{tmp_path / 'dev.db'}")
    monkeypatch.setenv("CREDITRAIL_USDC_POLL_INTERVAL_SECONDS", "0.5")
    for name in ("STRIPE_SECRET_KEY", "SMTP_HOST", "USDC_CHAINS", "USDC_XPUB"):
        monkeypatch.delenv(f"CREDITRAIL_{name}", raising=False)
    get_settings.cache_clear()
    mail_dir = tmp_path / ".run" / "mail"
    found: list[Path] = []

    def serve(app: Any, **_options: Any) -> None:
        # In place of uvicorn's loop: wait (with a deadline) for the worker to mail the demo deposit's receipt.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not found:
            found.extend(mail_dir.glob("*.eml"))
            time.sleep(0.2)

    monkeypatch.setattr(uvicorn, "run", serve)
    try:
        result = CliRunner().invoke(main, ["dev", "--port", str(free_port())])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "mail         local SMTP server at 127.0.0.1:" in result.output
    [receipt] = found
    parsed = message_from_bytes(receipt.read_bytes(), policy=policy.default)
    assert parsed["To"] == "demo@example.test"
    body = parsed.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "25.00 USDC on local anvil" in text
    assert "Credits:          2,500" in text
    # Its link is signed with the secret development generated and keeps in .run/.
    [link] = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("View or print this receipt:")]
    number = urlsplit(link).path.rsplit("/", 1)[1]
    [sig] = parse_qs(urlsplit(link).query)["sig"]
    secret = (tmp_path / ".run" / RECEIPT_LINK_SECRET_FILE).read_text().strip()
    demo_account_id = json.loads((tmp_path / ".run" / "dev-keys.json").read_text())["demo_account_id"]
    keyed = Settings(environment="development", receipt_link_secret=SecretStr(secret))
    assert signature_valid(keyed, demo_account_id, number, sig)
