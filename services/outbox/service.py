"""Writing messages to the outbox, inside the caller's transaction (the one that made the change they report).

One call per change: :func:`record_receipt` after a card purchase or USDC deposit mints, :func:`record_clawback_notice`
after a refund, dispute or deep reorg takes credits back, :func:`record_reinstatement_notice` after a won dispute gives
them back. Each is keyed (``receipt:lot:<lot id>``, ``clawback:txn:<transaction id>``,
``reinstatement:txn:<transaction id>``), so a retried change, or the same mint reached by the webhook and the sync job,
writes one message. An account without an email address gets no message: nothing is written for it. Nothing here
commits or sends.

A receipt is decided in the mint's transaction (its row: recipient, lot, Message-ID) but rendered when the worker
first claims it (:func:`render_receipts`), from the ledger's rows as they were at the mint (the lot, and the balance
right after the mint summed from the journal) and the card the purchase names by then; the rendering is kept in the
row, so every later attempt sends the same message. The mint's transaction, which holds the customer's locks, reads
nothing for it but the address.

Receipts and notices go to the account's address whether the platform marked it verified or not (a customer changing
it makes it unverified). A receipt is what a customer who just paid expects, and holding it back would lose it for
good (nothing re-sends it once the address is verified); what it discloses is that one purchase, and its link opens
that one receipt only. ``email_verified`` is for what needs proof of the address, which no message here does.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from email.utils import parseaddr
from types import SimpleNamespace
from typing import Any

from sqlmodel import Session

from services.core.settings import Settings, get_settings
from services.ledger import repository as ledger_repo
from services.ledger.balance import get_balance
from services.outbox import repository as repo
from services.outbox.models import Channel, MessageKind, MessageStatus
from services.outbox.receipts import (
    CardsOfPurchases,
    Notice,
    build_receipt,
    clawback_notice,
    receipt_html,
    receipt_subject,
    receipt_text,
    reinstatement_notice,
)

_configured: Settings | None = None


def configure(settings: Settings | None) -> None:
    """The settings receipts are rendered with in this process (its chains' names, public URLs, support), when a
    process runs with settings of its own rather than the environment's (``creditrail dev``); None: the
    environment's."""
    global _configured
    _configured = settings


def _settings() -> Settings:
    return _configured or get_settings()


def message_id_for(settings: Settings, dedupe_key: str) -> str:
    """A new RFC 5322 Message-ID for a message (kept in its row and sent with every attempt)."""
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2] or "creditrail.invalid"
    left = dedupe_key.replace(":", ".")
    return f"<{left}.{uuid.uuid4().hex}@{domain}>"


def _balance_now(session: Session, account_id: int) -> int:
    return get_balance(session, account_id).total_credits


def recipient_of(session: Session, account_id: int) -> str | None:
    """Where the account's mail goes; None: it has no address, and gets no message."""
    return ledger_repo.account_email(session, account_id)


def record_email(
    session: Session,
    *,
    settings: Settings | None = None,
    dedupe_key: str,
    kind: str,
    account_id: int,
    lot_id: int | None,
    recipient: str,
    subject: str,
    body_text: str,
    body_html: str,
    now: datetime,
) -> bool:
    """Write one email to the outbox (in the caller's transaction), once per ``dedupe_key``; whether it was written
    now. Every message the service mails goes through here: receipts, notices, alerts."""
    settings = settings or _settings()
    return repo.insert_message(
        session,
        {
            "dedupe_key": dedupe_key,
            "channel": Channel.EMAIL,
            "kind": kind,
            "account_id": account_id,
            "lot_id": lot_id,
            "recipient": recipient,
            "subject": subject[:300],
            "body_text": body_text,
            "body_html": body_html,
            "message_id": message_id_for(settings, dedupe_key),
            "status": MessageStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        },
    )


def receipt_key(lot_id: int) -> str:
    return f"receipt:lot:{lot_id}"


def record_receipt(
    session: Session,
    *,
    account_id: int,
    lot_id: int,
    now: datetime,
    settings: Settings | None = None,
) -> bool:
    """Write the receipt of the lot just minted for ``account_id`` (card or USDC), once; whether a message was
    written now. It is rendered when first sent (see the module's docstring): here it costs one column read (the
    address) and one insert. An account without an email gets nothing; an unverified address gets its receipt."""
    recipient = recipient_of(session, account_id)
    if recipient is None:
        return False
    return record_email(
        session,
        settings=settings,
        dedupe_key=receipt_key(lot_id),
        kind=MessageKind.RECEIPT,
        account_id=account_id,
        lot_id=lot_id,
        recipient=recipient,
        subject="",
        body_text="",
        body_html="",
        now=now,
    )


def unrendered(row: Any) -> bool:
    """Whether an outbox row is a receipt still to be rendered (its subject is written with its rendering)."""
    return bool(row.kind == MessageKind.RECEIPT and not row.subject and row.lot_id is not None)


def render_receipts(
    session: Session,
    rows: list[Any],
    settings: Settings | None = None,
    *,
    cards_of_purchases: CardsOfPurchases | None = None,
) -> list[Any]:
    """``rows`` with every receipt not yet rendered rendered and kept in its row (in the caller's transaction: three
    statements for them all); a receipt whose lot has none (it cannot happen for the lots :func:`record_receipt` is
    called for) fails for good with the reason. The rows, in order, as they now are (status, subject and bodies)."""
    pending = [row for row in rows if unrendered(row)]
    if not pending:
        return rows
    settings = settings or _settings()
    found = repo.lots_with_balance_after(session, [int(row.lot_id) for row in pending])
    purchase_ids = [
        int(lot.details["purchase_id"])
        for lot, _balance in found.values()
        if isinstance(lot.details, dict) and str(lot.details.get("purchase_id", "")).isdigit()
    ]
    cards = cards_of_purchases(session, purchase_ids) if cards_of_purchases is not None else {}
    changed: dict[int, dict[str, Any]] = {}
    for row in pending:
        lot, balance_after = found.get(int(row.lot_id), (None, 0))
        receipt = (
            build_receipt(
                session, settings, lot, card_of_purchase=None, balance_after_credits=balance_after, cards=cards
            )
            if lot is not None
            else None
        )
        if receipt is None:
            repo.fail_message(session, int(row.id), "no receipt for this lot")
            changed[int(row.id)] = {"status": MessageStatus.FAILED, "last_error": "no receipt for this lot"}
            continue
        changed[int(row.id)] = {
            "subject": receipt_subject(receipt)[:300],
            "body_text": receipt_text(receipt),
            "body_html": receipt_html(receipt),
        }
    repo.set_contents(session, [{"id_": key} | values for key, values in changed.items() if "subject" in values])
    return [_with(row, changed[int(row.id)]) if int(row.id) in changed else row for row in rows]


def _with(row: Any, values: dict[str, Any]) -> Any:
    """A row as it is once ``values`` are written to it."""
    return SimpleNamespace(**(dict(row._mapping) | values))


def record_clawback_notice(
    session: Session,
    *,
    lot_id: int,
    transaction_id: int,
    amount_credits: int,
    reason: str,
    now: datetime,
    settings: Settings | None = None,
) -> bool:
    """Write the notice of credits taken back from a lot (by the ledger transaction ``transaction_id``, in its
    transaction), once."""
    return _record_lot_notice(
        session,
        render=clawback_notice,
        dedupe_key=f"clawback:txn:{transaction_id}",
        kind=MessageKind.CLAWBACK_NOTICE,
        lot_id=lot_id,
        amount_credits=amount_credits,
        reason=reason,
        now=now,
        settings=settings,
    )


def record_reinstatement_notice(
    session: Session,
    *,
    lot_id: int,
    transaction_id: int,
    amount_credits: int,
    reason: str,
    now: datetime,
    settings: Settings | None = None,
) -> bool:
    """Write the notice of credits given back to a lot they were taken from (a won dispute; by the ledger
    transaction ``transaction_id``, in its transaction), once."""
    return _record_lot_notice(
        session,
        render=reinstatement_notice,
        dedupe_key=f"reinstatement:txn:{transaction_id}",
        kind=MessageKind.REINSTATEMENT_NOTICE,
        lot_id=lot_id,
        amount_credits=amount_credits,
        reason=reason,
        now=now,
        settings=settings,
    )


def _record_lot_notice(
    session: Session,
    *,
    render: Callable[..., Notice],
    dedupe_key: str,
    kind: str,
    lot_id: int,
    amount_credits: int,
    reason: str,
    now: datetime,
    settings: Settings | None,
) -> bool:
    settings = settings or _settings()
    lot = ledger_repo.get_lot(session, lot_id)
    if lot is None:
        return False
    recipient = recipient_of(session, int(lot.account_id))
    if recipient is None:
        return False
    notice = render(
        settings,
        lot=lot,
        amount_credits=amount_credits,
        balance_after_credits=_balance_now(session, int(lot.account_id)),
        reason=reason,
    )
    return record_email(
        session,
        settings=settings,
        dedupe_key=dedupe_key,
        kind=kind,
        account_id=int(lot.account_id),
        lot_id=lot_id,
        recipient=recipient,
        subject=notice.subject,
        body_text=notice.text,
        body_html=notice.html,
        now=now,
    )
