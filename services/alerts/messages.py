"""The alerts' emails: a subject, a plain-text body and an HTML body, in the look of the receipts and notices (a
sentence, a table of what matters, where to get help). Amounts are integers, formatted here; dates in UTC."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from services.core.db import utc
from services.core.money import credits_to_cents, format_usd
from services.core.settings import Settings
from services.outbox.receipts import Notice, support_lines


def _credits(amount_credits: int) -> str:
    return f"{amount_credits:,} credits ({format_usd(credits_to_cents(amount_credits))})"


def _day(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%d")


def render(settings: Settings, *, subject: str, intro: str, rows: Sequence[tuple[str, str]], outro: str) -> Notice:
    """One alert email: ``intro``, a table of ``rows``, ``outro``, and where to get help."""
    support = "; ".join(support_lines(settings))
    text = "\n".join(
        [intro, ""]
        + [f"{label + ':':<17} {value}" for label, value in rows]
        + ["", outro, "", f"Questions? {support}", ""]
    )
    cells = "".join(f"<tr><th>{escape(label)}</th><td>{escape(value)}</td></tr>" for label, value in rows)
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(subject)}</title></head><body>'
        f"<p>{escape(intro)}</p><table>{cells}</table><p>{escape(outro)}</p>"
        f"<p>Questions? {escape(support)}</p></body></html>"
    )
    return Notice(subject=subject, text=text, html=html)


def low_balance(settings: Settings, *, available_credits: int, threshold_credits: int) -> Notice:
    return render(
        settings,
        subject=f"Your credits are running low: {available_credits:,} left",
        intro="Your available credits fell below the alert threshold you set.",
        rows=[("Available", _credits(available_credits)), ("Alert threshold", _credits(threshold_credits))],
        outro="Buy credits to keep your usage going. We will tell you again only after your balance has recovered.",
    )


def credits_expiring(settings: Settings, *, lots: Sequence[tuple[int, int, datetime]]) -> Notice:
    """``lots``: (lot id, credits left, expires at), soonest first."""
    total = sum(credits for _, credits, _ in lots)
    rows = [("Expiring", _credits(total))]
    rows += [
        (f"Expires {_day(expires_at)}", f"{credits:,} credits (lot {lot_id})") for lot_id, credits, expires_at in lots
    ]
    return render(
        settings,
        subject=f"{total:,} credits expire on {_day(lots[0][2])}",
        intro="Some of your credits expire within 30 days. Credits are spent soonest-expiring first.",
        rows=rows,
        outro="Credits left on a lot when it expires cannot be used afterwards.",
    )


def budget_threshold(
    settings: Settings,
    *,
    budget_name: str,
    period: str,
    percent: int,
    used_credits: int,
    limit_credits: int,
    period_start: datetime,
) -> Notice:
    reached = "is used up" if percent >= 100 else f"is {percent}% used"
    return render(
        settings,
        subject=f"Budget {budget_name!r} {reached}",
        intro=f"Your budget {budget_name!r} {reached} this {period}.",
        rows=[
            ("Budget", budget_name),
            ("Period", f"{period} from {_day(period_start)}" if period != "total" else "total"),
            ("Used", f"{used_credits:,} of {limit_credits:,} credits"),
            ("Threshold", f"{percent}%"),
        ],
        outro=(
            "Spending beyond the limit is refused until the next period or until the limit is raised."
            if percent >= 100
            else "Spending beyond the limit will be refused until the next period."
        ),
    )


def auto_recharge_failed(
    settings: Settings, *, amount_credits: int, amount_cents: int, reason: str, available_credits: int
) -> Notice:
    return render(
        settings,
        subject=f"Auto-recharge of {amount_credits:,} credits failed",
        intro="We could not charge your saved card for your auto-recharge.",
        rows=[
            ("Auto-recharge", f"{amount_credits:,} credits for {format_usd(amount_cents)}"),
            ("Why", reason),
            ("Available", _credits(available_credits)),
        ],
        outro="Check your card, or buy credits yourself, so that your usage is not interrupted.",
    )
