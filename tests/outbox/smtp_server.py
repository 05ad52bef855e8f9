"""A real SMTP server for the outbox's tests (aiosmtpd on a free local port) whose answers a test chooses: accept,
refuse a recipient for good (550), refuse for now (451), or stall inside the DATA phase until released."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from chain.node import free_port


@dataclass
class Received:
    recipients: list[str]
    message: EmailMessage
    # The client's address and port: one per connection.
    peer: Any = None

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


@dataclass
class Behaviour:
    refuse_recipients: dict[str, str] = field(default_factory=dict)  # address -> reply ("550 ...")
    data_reply: str | None = None  # e.g. "451 try later"
    stall: threading.Event | None = None  # DATA waits until it is set
    stalled: threading.Event = field(default_factory=threading.Event)  # set once a DATA is waiting
    after_data: Callable[[], None] | None = None  # called once the message is kept, before the server answers


def _parse(content: bytes) -> EmailMessage:
    parsed = message_from_bytes(content, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


class _Handler:
    def __init__(self, server: TestSmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        reply = self.server.behaviour.refuse_recipients.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        behaviour = self.server.behaviour
        if behaviour.stall is not None:
            behaviour.stalled.set()
            await asyncio.get_running_loop().run_in_executor(None, behaviour.stall.wait, 30)
        if behaviour.data_reply:
            return behaviour.data_reply
        with self.server.lock:
            self.server.received.append(Received(list(envelope.rcpt_tos), _parse(envelope.content), session.peer))
        if behaviour.after_data is not None:
            behaviour.after_data()
        return "250 Message accepted"


class TestSmtpServer:
    __test__ = False

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.behaviour = Behaviour()
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    def start(self) -> TestSmtpServer:
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            if self.behaviour.stall is not None:
                self.behaviour.stall.set()
            self._controller.stop()
            self._controller = None
