"""A real SMTP server on loopback (aiosmtpd) whose replies a test can script."""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

# (recipient, number of DATA commands seen so far) -> reply, or None to accept.
Script = Callable[[str, int], str | None]


@dataclass
class Received:
    """One message the server accepted."""

    sender: str
    recipients: list[str]
    data: bytes

    def parsed(self) -> EmailMessage:
        """The message parsed with the standard library's modern policy."""
        message = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class RecordingHandler:
    """Accepts everything unless ``rcpt_script`` or ``data_script`` says otherwise."""

    rcpt_script: Script | None = None
    data_script: Script | None = None
    messages: list[Received] = field(default_factory=list)
    data_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.rcpt_script is not None:
            reply = self.rcpt_script(address, self.data_count)
            if reply is not None:
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.data_count += 1
            count = self.data_count
        if self.data_script is not None:
            reply = self.data_script(envelope.rcpt_tos[0], count)
            if reply is not None:
                return reply
        with self.lock:
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return "250 Message accepted"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SMTPServer:
    """aiosmtpd on 127.0.0.1 on a free port, started and stopped by a fixture."""

    def __init__(self, handler: RecordingHandler, *, smtputf8: bool = False) -> None:
        self.handler = handler
        self.port = free_port()
        self._controller = Controller(
            handler, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=smtputf8
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages


MESSAGE_ID = re.compile(rb"^Message-ID:\s*<([^>\r\n]+)>", re.MULTILINE | re.IGNORECASE)


def message_ids(messages: list[Received]) -> Counter[str]:
    """How many times each Message-ID arrived (a count above 1 is a duplicate)."""
    found: Counter[str] = Counter()
    for message in messages:
        match = MESSAGE_ID.search(message.data)
        assert match is not None, f"no Message-ID in {message.data[:200]!r}"
        found[match.group(1).decode()] += 1
    return found


def by_recipient(messages: list[Received]) -> Counter[str]:
    """How many messages each recipient address got."""
    return Counter(r for message in messages for r in message.recipients)
