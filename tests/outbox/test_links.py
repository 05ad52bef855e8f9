"""Receipt links: signed for one receipt of one account with the server's secret, unsigned without one; and
``creditrail dev`` keeps its generated secret in .run/ across restarts."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pydantic import SecretStr

from services.core.settings import Settings
from services.dev import RECEIPT_LINK_SECRET_FILE, dev_receipt_link_secret
from services.outbox.links import receipt_url, signature_valid

SECRET = SecretStr("receipt-links-unit-0123456789abcdef0123456789")


def _settings(secret: SecretStr = SECRET) -> Settings:
    return Settings(environment="test", public_base_url="https://pay.example/billing", receipt_link_secret=secret)


def _signature(url: str) -> str:
    [sig] = parse_qs(urlsplit(url).query)["sig"]
    return sig


def test_a_link_is_good_for_its_one_receipt_of_its_one_account() -> None:
    settings = _settings()
    url = receipt_url(settings, 7, "CR-2026-00000012")
    assert url.startswith("https://pay.example/billing/receipts/CR-2026-00000012?sig=")
    sig = _signature(url)
    assert len(sig) == 43  # 32 bytes, base64url without padding
    assert signature_valid(settings, 7, "CR-2026-00000012", sig)
    assert not signature_valid(settings, 8, "CR-2026-00000012", sig)
    assert not signature_valid(settings, 7, "CR-2026-00000013", sig)
    assert not signature_valid(settings, 7, "CR-2026-00000012", sig.upper())
    assert not signature_valid(settings, 7, "CR-2026-00000012", None)
    assert not signature_valid(settings, 7, "CR-2026-00000012", "")
    # Another secret signs otherwise: rotating it retires every link handed out.
    other = _settings(SecretStr("receipt-links-other-0123456789abcdef012345678"))
    assert not signature_valid(other, 7, "CR-2026-00000012", sig)
    assert receipt_url(settings, 7, "CR-2026-00000012") == url  # the same link every time


def test_without_a_secret_links_are_unsigned_and_no_signature_is_good() -> None:
    settings = _settings(SecretStr(""))
    assert receipt_url(settings, 7, "CR-2026-00000012") == "https://pay.example/billing/receipts/CR-2026-00000012"
    assert not signature_valid(settings, 7, "CR-2026-00000012", "anything")


def test_development_generates_the_secret_once_and_keeps_it_for_the_owner_only(tmp_path: Path) -> None:
    run_dir = tmp_path / ".run"
    first = dev_receipt_link_secret(Settings(environment="development"), run_dir)
    secret = first.receipt_link_secret.get_secret_value()
    assert len(secret) >= 32
    kept = run_dir / RECEIPT_LINK_SECRET_FILE
    assert kept.read_text().strip() == secret
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    again = dev_receipt_link_secret(Settings(environment="development"), run_dir)
    assert again.receipt_link_secret.get_secret_value() == secret  # links mailed before a restart still open
    chosen = Settings(environment="development", receipt_link_secret=SECRET)
    assert dev_receipt_link_secret(chosen, run_dir) is chosen
