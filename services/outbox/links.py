"""Receipt links that open from a mail client: ``/receipts/<receipt number>?sig=<signature>`` (and ``.pdf``).

A link carries no bearer token; its ``sig`` is HMAC-SHA256, keyed by ``CREDITRAIL_RECEIPT_LINK_SECRET``, of the
receipt number and the account it belongs to, base64url without padding. Only the server can make one, a link is
good for its one receipt, and checking it takes a constant-time comparison. Without a secret (development started
otherwise than by ``creditrail dev``, tests that set none) links are made unsigned: they open for the owner's bearer
token only. Production requires the secret (services.core.settings).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from services.core.settings import Settings
from services.core.urls import public_url

RECEIPT_PAGE_PATH = "/receipts"
SIGNATURE_PARAM = "sig"
# A receipt's PDF: its page's address with this after the number.
PDF_SUFFIX = ".pdf"
# The page's one script (its Print button), served beside the receipts it prints.
PRINT_SCRIPT_PATH = f"{RECEIPT_PAGE_PATH}/print.js"


def _signature(secret: str, account_id: int, number: str) -> str:
    message = f"receipt:{account_id}:{number}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def receipt_url(settings: Settings, account_id: int, number: str, *, suffix: str = "") -> str:
    """The link to a receipt's page that mails, the purchase history and every other place hand out; ``suffix``
    ``.pdf``: the same receipt as a PDF (the same signature opens both)."""
    secret = settings.receipt_link_secret.get_secret_value()
    query = {SIGNATURE_PARAM: _signature(secret, account_id, number)} if secret else None
    return public_url(settings, f"{RECEIPT_PAGE_PATH}/{number}{suffix}", query)


def signature_valid(settings: Settings, account_id: int, number: str, signature: str | None) -> bool:
    """Whether ``signature`` is the one this server gives the account's receipt (compared in constant time)."""
    secret = settings.receipt_link_secret.get_secret_value()
    if not secret or not signature:
        return False
    return hmac.compare_digest(_signature(secret, account_id, number).encode(), signature.encode())
