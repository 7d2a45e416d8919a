"""A real SMTP server on loopback (aiosmtpd) whose replies a test can script."""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.messages import parse

# (recipient, number of DATA commands seen so far) -> reply, or None to accept.
Script = Callable[[str, int], str | None]


@dataclass
class Received:
    """One message the server accepted."""

    sender: str
    recipients: list[str]
    data: bytes

    def parsed(self) -> EmailMessage:
        """The message parsed with the modern policy, checked for MIME defects."""
        return parse(self.data)


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
        self.keep(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted"

    def keep(self, received: Received) -> None:
        """Record one accepted message (a subclass may keep less of it)."""
        with self.lock:
            self.messages.append(received)


@dataclass
class MailCountingHandler(RecordingHandler):
    """RecordingHandler that counts MAIL FROM commands and refuses them with ``mail_reply``."""

    mail_reply: str | None = None
    mails: int = 0

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            self.mails += 1
        self.on_mail(session)
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    def on_mail(self, session: Any) -> None:
        """Called with the SMTP session of each MAIL FROM, for a subclass to note it."""


def header_block(received: Received) -> Received:
    """``received`` with its header block only: what the high-volume relays keep."""
    head = re.split(rb"\r?\n\r?\n", received.data, maxsplit=1)[0]
    return Received(received.sender, received.recipients, head)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SMTPServer:
    """aiosmtpd on 127.0.0.1 on a free port; a context manager, or started and stopped."""

    def __init__(
        self,
        handler: RecordingHandler,
        *,
        smtputf8: bool = False,
        controller: type[Controller] = Controller,
        **options: Any,
    ) -> None:
        """``controller`` and ``options`` (aiosmtpd's) shape the sessions, e.g. AUTH."""
        self.handler = handler
        self.port = free_port()
        self._controller = controller(
            handler, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=smtputf8, **options
        )

    def start(self) -> None:
        """Listen until stop()."""
        self._controller.start()

    def stop(self) -> None:
        """Stop listening and end every session."""
        self._controller.stop()

    def __enter__(self) -> SMTPServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

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


@dataclass
class CommandLog(RecordingHandler):
    """Records each command's name and arguments as the relay saw them."""

    mail_script: Callable[[str], str | None] | None = None
    commands: list[str] = field(default_factory=list)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.commands.append(" ".join(["MAIL", address, *options]))
        if self.mail_script is not None:
            reply = self.mail_script(address)
            if reply is not None:
                return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.commands.append(f"RCPT {address}")
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("DATA")
        return await super().handle_DATA(server, session, envelope)

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("RSET")
        return "250 OK"


@dataclass
class PipeliningRelay(CommandLog):
    """aiosmtpd offering PIPELINING and logging commands, with scripted MAIL replies.

    ``mail_replies`` are answered to the first MAIL commands in turn (None: accept).
    """

    pipelining: bool = True
    mail_replies: list[str | None] = field(default_factory=list)
    sessions: int = 0

    def __post_init__(self) -> None:
        self.mail_script = self._next_mail_reply

    def _next_mail_reply(self, _address: str) -> str | None:
        return self.mail_replies.pop(0) if self.mail_replies else None

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.sessions += 1
        if not self.pipelining:
            return responses
        return [*responses[:-1], "250-PIPELINING", responses[-1]]
