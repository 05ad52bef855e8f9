"""Receipts and notices, rendered from the ledger's rows (the lot, its mint transaction, the journal's entries): the
same text whether it is mailed at the mint or shown later at ``/v1/receipts/{receipt number}``.

A receipt's number is derived from its lot: ``CR-<year credited>-<lot id, 8 digits or more>``. No float touches an
amount: dollars and USDC are formatted from integers by services.core.money.

The card that paid a card lot is the card rail's to say: its caller passes a ``CardOfPurchase`` (the card rail
when it records the receipt; the app's ``card_of_purchase``, set by the top floor, for the receipt's page), so the
outbox, below the rails, reads none of their tables.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from sqlmodel import Session

from services.core.db import utc
from services.core.money import format_usd, format_usdc
from services.core.settings import Settings
from services.ledger import repository as ledger_repo
from services.ledger.history import VIA_X402
from services.ledger.models import Rail
from services.outbox import repository as repo
from services.outbox.links import receipt_url

# How the card rail names the card that paid one of its purchases ("Visa ending 4242"); None while it is not known.
CardOfPurchase = Callable[[Session, int], str | None]
# The same for several purchases at once, by purchase id (a purchase whose card is not known maps to None).
CardsOfPurchases = Callable[[Session, Sequence[int]], Mapping[int, str | None]]

RECEIPT_NUMBER = re.compile(r"^CR-(\d{4})-(\d{8,19})$")


def receipt_number(lot_id: int, credited_at: datetime) -> str:
    return f"CR-{utc(credited_at).year:04d}-{lot_id:08d}"


def lot_of_receipt_number(number: str) -> tuple[int, int] | None:
    """(year, lot id) a receipt number names, or None when it is not one."""
    found = RECEIPT_NUMBER.match(number)
    return (int(found.group(1)), int(found.group(2))) if found else None


@dataclass(frozen=True, slots=True)
class Receipt:
    number: str
    account_id: int
    lot_id: int
    credited_at: datetime
    expires_at: datetime
    credits: int
    balance_after_credits: int
    # What was paid, one line each ("$10.00 by card", "25.00 USDC on Base"), and any details (hash, link).
    paid: str
    payment_lines: list[tuple[str, str]]
    explorer_link: str | None
    support: list[str]
    url: str


def support_lines(settings: Settings) -> list[str]:
    lines = []
    if settings.support_email:
        lines.append(f"Email {settings.support_email}")
    if settings.support_url:
        lines.append(f"Visit {settings.support_url}")
    return lines or ["Reply to this message"]


def _chain_name(settings: Settings, chain_id: int) -> tuple[str, str]:
    """The chain's configured name (or its id), and its explorer template."""
    for chain in settings.usdc_chains:
        if chain.chain_id == chain_id:
            return chain.name or f"chain {chain_id}", chain.explorer_tx_url
    return f"chain {chain_id}", ""


def build_receipt(
    session: Session,
    settings: Settings,
    lot: Any,
    *,
    card_of_purchase: CardOfPurchase | None,
    balance_after_credits: int | None = None,
    cards: Mapping[int, str | None] | None = None,
) -> Receipt | None:
    """The receipt of a card or USDC lot; None for any other lot (grants, adjustments have none).
    ``card_of_purchase`` names the card that paid a card lot (None: the receipt goes without it); ``cards``: the
    cards of the purchases, by purchase id, when the caller read them already (for several receipts at once).
    ``balance_after_credits``: the balance right after the mint when the caller knows it; otherwise it is summed
    from the journal up to the mint."""
    details = dict(lot.details or {})
    explorer = None
    if lot.rail == Rail.CARD:
        paid_cents = int(lot.cost_basis_cents or 0)
        paid = f"{format_usd(paid_cents)} by card"
        lines = [("Paid", paid)]
        purchase_id = details.get("purchase_id")
        card = None
        if purchase_id:
            if cards is not None and int(purchase_id) in cards:
                card = cards[int(purchase_id)]
            elif card_of_purchase is not None:
                card = card_of_purchase(session, int(purchase_id))
        if card:  # unknown when Stripe could not say which card: the receipt goes without it
            lines.append(("Card", card))
        if details.get("pack"):
            lines.append(("Pack", str(details["pack"]).title()))
        lines.append(("Stripe reference", str(lot.external_ref)))
    elif lot.rail == Rail.USDC:
        chain_id = int(details.get("chain_id", 0))
        tx_hash = str(details.get("tx_hash", ""))
        name, template = _chain_name(settings, chain_id)
        paid = f"{format_usdc(int(lot.cost_basis_usdc_units or 0))} on {name}"
        if details.get("via") == VIA_X402:
            paid = f"{paid} via x402"
        lines = [("Paid", paid), ("Chain", f"{name} ({chain_id})"), ("Transaction", tx_hash)]
        if template and tx_hash:
            explorer = template.replace("{tx_hash}", tx_hash)
    else:
        return None
    number = receipt_number(int(lot.id), lot.credited_at)
    return Receipt(
        number=number,
        account_id=int(lot.account_id),
        lot_id=int(lot.id),
        credited_at=utc(lot.credited_at),
        expires_at=utc(lot.expires_at),
        credits=int(lot.credits),
        balance_after_credits=balance_after_credits
        if balance_after_credits is not None
        else repo.balance_after(session, int(lot.account_id), int(lot.mint_transaction_id)),
        paid=paid,
        payment_lines=lines,
        explorer_link=explorer,
        support=support_lines(settings),
        url=receipt_url(settings, int(lot.account_id), number),
    )


def receipt_for_lot(
    session: Session, settings: Settings, lot_id: int, *, card_of_purchase: CardOfPurchase
) -> Receipt | None:
    lot = ledger_repo.get_lot(session, lot_id)
    return build_receipt(session, settings, lot, card_of_purchase=card_of_purchase) if lot is not None else None


def receipt_rows(receipt: Receipt) -> list[tuple[str, str]]:
    """The receipt's rows, label and value, as every form of it shows them (mail, page, PDF)."""
    rows = [
        ("Receipt", receipt.number),
        ("Date", receipt.credited_at.strftime("%Y-%m-%d %H:%M UTC")),
        *receipt.payment_lines,
        ("Credits", f"{receipt.credits:,}"),
        ("Credits expire", receipt.expires_at.strftime("%Y-%m-%d")),
        ("New balance", f"{receipt.balance_after_credits:,} credits"),
    ]
    if receipt.explorer_link:
        rows.append(("Explorer", receipt.explorer_link))
    return rows


def receipt_subject(receipt: Receipt) -> str:
    return f"Your receipt {receipt.number}: {receipt.credits:,} credits"


def receipt_text(receipt: Receipt) -> str:
    lines = ["Thank you for your purchase.", ""]
    lines += [f"{label + ':':<17} {value}" for label, value in receipt_rows(receipt)]
    lines += ["", f"View or print this receipt: {receipt.url}", "", "Questions? " + "; ".join(receipt.support), ""]
    return "\n".join(lines)


PRINT_CSS = """
body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #111; }
table { border-collapse: collapse; width: 100%; } th { text-align: left; padding-right: 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: .4rem 0; vertical-align: top; word-break: break-all; }
.actions { margin-top: 1.5rem; }
button { font: inherit; padding: .4rem 1.2rem; cursor: pointer; }
@media print { .actions { display: none; } body { margin: 0; padding: 0; max-width: none; } a { color: #111; } }
"""
# The page's Content-Security-Policy allows its one <style> by this hash (and no other inline style or script).
PRINT_CSS_HASH = "sha256-" + base64.b64encode(hashlib.sha256(PRINT_CSS.encode()).digest()).decode()


def receipt_html(receipt: Receipt, *, print_script_url: str | None = None, pdf_url: str | None = None) -> str:
    """The receipt as HTML: for a mail (a link to its page), or, with ``print_script_url``, the page itself (a Print
    button the script at that URL wires up, no inline script; and a link to the PDF at ``pdf_url``)."""
    cells = []
    for label, value in receipt_rows(receipt):
        shown = escape(value)
        if label == "Explorer":
            shown = f'<a href="{escape(value, quote=True)}" rel="noreferrer">{shown}</a>'
        cells.append(f"<tr><th>{escape(label)}</th><td>{shown}</td></tr>")
    support = "; ".join(escape(line) for line in receipt.support)
    action = (
        '<p class="actions"><button type="button" id="print">Print</button>'
        + (f' <a href="{escape(pdf_url, quote=True)}">Download PDF</a>' if pdf_url else "")
        + f'</p><script src="{escape(print_script_url, quote=True)}" defer></script>'
        if print_script_url
        else f'<p><a href="{escape(receipt.url, quote=True)}">View or print this receipt</a></p>'
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Receipt {escape(receipt.number)}</title><style>{PRINT_CSS}</style></head><body>"
        f"<h1>Receipt {escape(receipt.number)}</h1><p>Thank you for your purchase.</p>"
        f"<table>{''.join(cells)}</table>{action}<p>Questions? {support}</p></body></html>"
    )


@dataclass(frozen=True, slots=True)
class Notice:
    subject: str
    text: str
    html: str


def _notice(settings: Settings, *, title: str, lead: str, subject: str, rows: list[tuple[str, str]]) -> Notice:
    support = "; ".join(support_lines(settings))
    text = "\n".join([lead, ""] + [f"{label}: {value}" for label, value in rows] + ["", f"Questions? {support}", ""])
    cells = "".join(f"<tr><th>{escape(label)}</th><td>{escape(value)}</td></tr>" for label, value in rows)
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title></head><body>'
        f"<p>{escape(lead)}</p><table>{cells}</table>"
        f"<p>Questions? {escape(support)}</p></body></html>"
    )
    return Notice(subject=subject, text=text, html=html)


def clawback_notice(
    settings: Settings, *, lot: Any, amount_credits: int, balance_after_credits: int, reason: str
) -> Notice:
    """Credits taken back from a purchase (a refund, a dispute, a deposit the chain dropped)."""
    number = receipt_number(int(lot.id), lot.credited_at)
    return _notice(
        settings,
        title="Credits taken back",
        lead="Credits from one of your purchases were taken back.",
        subject=f"Credits taken back from {number}",
        rows=[
            ("Purchase", number),
            ("Credits taken back", f"{amount_credits:,}"),
            ("Why", reason),
            ("New balance", f"{balance_after_credits:,} credits"),
        ],
    )


def reinstatement_notice(
    settings: Settings, *, lot: Any, amount_credits: int, balance_after_credits: int, reason: str
) -> Notice:
    """Credits given back to a purchase they had been taken back from (a dispute the purchase won)."""
    number = receipt_number(int(lot.id), lot.credited_at)
    return _notice(
        settings,
        title="Credits given back",
        lead="Credits taken back from one of your purchases were given back.",
        subject=f"Credits given back to {number}",
        rows=[
            ("Purchase", number),
            ("Credits given back", f"{amount_credits:,}"),
            ("Why", reason),
            ("New balance", f"{balance_after_credits:,} credits"),
        ],
    )
