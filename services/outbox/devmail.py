"""A local mail server for development: a real SMTP server (aiosmtpd) on a local port that keeps every message it
accepts as a ``.eml`` file in a directory (``.run/mail/`` under ``creditrail dev``). It accepts any recipient and
needs no login or TLS (``CREDITRAIL_SMTP_SECURITY=none``)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from services.core.clock import utcnow

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class _Keeper:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook
        content = envelope.original_content or envelope.content
        data = content if isinstance(content, bytes) else str(content).encode()
        found = re.search(rb"^Message-ID:\s*<([^>]+)>", data, re.IGNORECASE | re.MULTILINE)
        label = _UNSAFE.sub("_", found.group(1).decode("ascii", "replace"))[:120] if found else uuid.uuid4().hex
        name = f"{utcnow().strftime('%Y%m%dT%H%M%S%f')}-{label}.eml"
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.rename(self.directory / name)  # a reader never sees half a message
        return "250 Message accepted for delivery"


class MailFolderServer:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self._controller: Controller | None = None

    def start(self) -> MailFolderServer:
        from chain.node import free_port

        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        self._controller = Controller(_Keeper(self.directory), hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[Path]:
        return sorted(self.directory.glob("*.eml"))

    def __enter__(self) -> MailFolderServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
