"""Sending one message over SMTP, and sorting what went wrong into "try again later" and "never".

The result of an attempt is one of: accepted (the server answered 250 to the message), transient (the server is
away, timed out, or answered 4xx: try again after a backoff) or permanent (5xx for the recipient or the message:
it will never be accepted). Nothing here touches the database.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Protocol

from services.core.db import utc
from services.core.settings import Settings


@dataclass(frozen=True, slots=True)
class SendResult:
    accepted: bool
    permanent: bool = False
    error: str | None = None


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> SendResult: ...


def build_email(settings: Settings, row: Any) -> EmailMessage:
    """The MIME message of an outbox row: text and HTML alternatives, with the row's own Message-ID."""
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = row.recipient
    message["Subject"] = row.subject
    message["Message-ID"] = row.message_id
    message["Date"] = format_datetime(utc(row.created_at))
    message.set_content(row.body_text)
    message.add_alternative(row.body_html, subtype="html")
    return message


def _code_error(code: int, text: bytes | str) -> SendResult:
    reply = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return SendResult(False, permanent=500 <= code < 600, error=f"{code} {reply}"[:1000])


class SmtpMailer:
    """One SMTP conversation per message, as the settings say (plain, STARTTLS or implicit TLS; login when a
    username is set)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.smtp_security == "tls":
            return smtplib.SMTP_SSL(
                s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds, context=ssl.create_default_context()
            )
        client = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds)
        if s.smtp_security == "starttls":
            client.starttls(context=ssl.create_default_context())
        return client

    def send(self, message: EmailMessage) -> SendResult:
        if not self.settings.smtp_host:
            return SendResult(False, error="no SMTP server configured (CREDITRAIL_SMTP_HOST)")
        try:
            with self._connect() as client:
                if self.settings.smtp_username:
                    client.login(self.settings.smtp_username, self.settings.smtp_password.get_secret_value())
                refused = client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return _code_error(code, text)
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, login refused ...
            return _code_error(exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:  # away, disconnected, timed out, TLS failed
            return SendResult(False, error=f"{type(exc).__name__}: {exc}"[:1000])
        if refused:
            code, text = next(iter(refused.values()))
            return _code_error(code, text)
        return SendResult(True)
