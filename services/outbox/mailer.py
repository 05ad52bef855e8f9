"""Sending one message over SMTP, and sorting what went wrong into "try again later" and "never".

The result of an attempt is one of: accepted (the server answered 250 to the message), transient (the server is
away, timed out, or answered 4xx: try again after a backoff) or permanent (5xx for the recipient or the message:
it will never be accepted). Nothing here touches the database.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
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

    # Within the block, the calling thread's messages may share one connection.
    def keep_connection(self) -> AbstractContextManager[None]: ...


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
    """SMTP as the settings say (plain, STARTTLS or implicit TLS; login when a username is set): a connection per
    message, or, within :meth:`keep_connection`, one per thread for all its messages (the delivery job's lanes)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local = threading.local()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.smtp_security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds)
        try:
            if s.smtp_security == "starttls":
                client.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                client.login(s.smtp_username, s.smtp_password.get_secret_value())
        except BaseException:
            _close(client)
            raise
        return client

    @contextmanager
    def keep_connection(self) -> Iterator[None]:
        """Within the block, this thread's messages share one connection: opened at the first, opened again after a
        failed one, closed (QUIT) at the end."""
        self._local.keep = True
        try:
            yield
        finally:
            self._local.keep = False
            kept: smtplib.SMTP | None = getattr(self._local, "client", None)
            self._local.client = None
            if kept is not None:
                _close(kept)

    def send(self, message: EmailMessage) -> SendResult:
        if not self.settings.smtp_host:
            return SendResult(False, error="no SMTP server configured (CREDITRAIL_SMTP_HOST)")
        keep = bool(getattr(self._local, "keep", False))
        client: smtplib.SMTP | None = getattr(self._local, "client", None) if keep else None
        reused = client is not None
        self._local.client = None
        try:
            try:
                client = client or self._connect()
                refused = client.send_message(message)
            except smtplib.SMTPServerDisconnected:
                if not reused:
                    raise
                # The kept connection was closed by the server meanwhile: once more on a new one.
                client = self._connect()
                refused = client.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            result = _code_error(code, text)
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, login refused ...
            result = _code_error(exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:  # away, disconnected, timed out, TLS failed
            result = SendResult(False, error=f"{type(exc).__name__}: {exc}"[:1000])
        else:
            if refused:
                code, text = next(iter(refused.values()))
                result = _code_error(code, text)
            else:
                result = SendResult(True)
            if keep:
                # Kept only after a message went through: after any failure the next one starts afresh.
                self._local.client, client = client, None
        if client is not None:
            _close(client)
        return result


def _close(client: smtplib.SMTP) -> None:
    """QUIT and close, whatever state the connection is in."""
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()
