"""The per-reader fast paths, proven against the slow paths they replace.

A digest's shared lines are quoted-printable encoded once per render and only the lines
holding a reader's greeting and links are encoded per reader; SMTP sends the message
without smtplib's dot-stuffing regex. Both must give exactly the bytes, the SMTP
exchange and the failures of the plain way, which is what these tests compare.
"""

from __future__ import annotations

import binascii
import re
import smtplib
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gazette.articles.service import clean_html
from gazette.digests.composer import Composer, Reader, SendContext, feedback_id, prepare
from gazette.mail.mime import BodyTemplate, DotSafe, Envelope, build_message, quoted_printable
from gazette.mail.outcomes import DeliveryError
from gazette.mail.smtp import SMTPConnection, dot_stuffed, transmit
from gazette.mail.transports import MaildirTransport
from gazette.ratelimit import make_throttle
from gazette.rendering import ArticleView, IssueView, RenderedMessage, Renderer
from gazette.store.models import Newsletter, utcnow
from gazette.text import _DIRTY, _is_clean, clean_line, html_to_text
from gazette.tokens import Tokens
from gazette.url_settings import MailURL
from tests.support.env import TEST_KEY
from tests.support.messages import parse
from tests.support.reliability import DropAfterDotHandler
from tests.support.smtp import CommandLog, RecordingHandler, SMTPServer

MARKERS = ("@@5eed:GREETING@@", "@@5eed:UNSUBSCRIBE@@", "@@5eed:PREFERENCES@@")
# The inputs that make quoted-printable interesting: blanks that end a line or a chunk,
# "." and "=" at a line start or a wrap column, every line-end spelling, non-ASCII, and
# runs long enough to need soft breaks.
HARD_BITS = [
    " ", "\t", "  ", ".", "..", "=", "=3D", "\n", "\r", "\r\n", "\n.", "\n.\n", "é", "日本語",
    "Привіт", "\x00", "\x7f", "\x0b", "\x0c", "\x85", "\u2028", "From ", "x" * 70, "a " * 40,
    "y" * 74 + " ", "." * 90, "=" * 30,
]  # fmt: skip
bits = st.one_of(st.sampled_from(HARD_BITS), st.text(max_size=12))
bodies = st.lists(st.one_of(bits, st.sampled_from(MARKERS)), max_size=40).map("".join)
values = st.lists(bits, max_size=8).map("".join)

SENDER = "digest@news.example.org"
BASE_URL = "https://news.example.org"
NOW = datetime(2024, 5, 6, 8, 0)


def substitute(body: str, greeting: str, unsubscribe: str, preferences: str) -> str:
    for marker, value in zip(MARKERS, (greeting, unsubscribe, preferences), strict=True):
        body = body.replace(marker, value)
    return body


def lines_of(encoded: bytes) -> list[bytes]:
    return encoded.split(b"\r\n")


# --- headers that need no cleaning ------------------------------------------------------

# Whitespace, separators, controls and format characters among ordinary letters: every
# kind of character the regular expression looks for, and some it must let through.
header_text = st.text(
    alphabet=st.sampled_from(
        list("ab .-@<>")
        + list("\t\n\r\x0b\x0c\x1c\x85\xa0\xad\u2002\u200b\u2028\u2029\u3000")
        + list("東京Київ")
    ),
    max_size=12,
)


@settings(max_examples=2000, deadline=None)
@given(text=header_text)
def test_clean_lines_check_decides_as_the_regular_expression(text: str) -> None:
    assert _is_clean(text) == (_DIRTY.search(text) is None)


def test_printable_text_holds_no_whitespace_but_the_space() -> None:
    # What the check rests on, over every code point of this Python's Unicode tables.
    spaces = [hex(c) for c in range(sys.maxunicode + 1) if re.fullmatch(r"\s", chr(c))]
    assert [c for c in spaces if chr(int(c, 16)).isprintable()] == ["0x20"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Reader Name", "Reader Name"),
        ("Reader\xa0Name", "Reader\xa0Name"),
        ("Reader\u3000\u3000Name", "Reader Name"),
        ("Reader  Name ", "Reader Name"),
        (" 東京", "東京"),
    ],
)
def test_clean_line_keeps_clean_text_and_folds_the_rest(text: str, expected: str) -> None:
    assert clean_line(text) == expected


# --- encoding each run of lines once ----------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(body=bodies, greeting=values, unsubscribe=values, preferences=values)
def test_encoding_line_runs_apart_gives_the_whole_body_encoding(
    body: str, greeting: str, unsubscribe: str, preferences: str
) -> None:
    template = BodyTemplate.split(body, MARKERS)
    filled = template.fill(lambda piece: substitute(piece, greeting, unsubscribe, preferences))
    assert filled == quoted_printable(substitute(body, greeting, unsubscribe, preferences))


@settings(max_examples=600, deadline=None)
@given(text=bodies)
def test_quoted_printable_never_starts_a_line_with_a_dot(text: str) -> None:
    encoded = quoted_printable(text)
    assert [line for line in lines_of(encoded) if line.startswith(b".")] == []
    assert [line for line in lines_of(encoded) if len(line) > 76] == []
    assert binascii.a2b_qp(encoded).decode("utf-8") == re.sub(r"\r\n|\r|\n", "\r\n", text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(".starts", b"=2Estarts", id="first-line"),
        pytest.param("a\n.b\n..c\n.", b"a\r\n=2Eb\r\n=2E.c\r\n=2E", id="after-line-breaks"),
        # The soft break after 75 octets leaves the dots to start the next line.
        pytest.param("x" * 75 + "...", b"x" * 75 + b"=\r\n=2E..", id="after-a-soft-break"),
    ],
)
def test_a_leading_dot_is_written_as_an_escape(text: str, expected: bytes) -> None:
    assert quoted_printable(text) == expected


def test_a_leading_dot_escape_never_makes_a_line_too_long() -> None:
    # "=2E" is two octets longer than ".": a full line is wrapped again, and the dot
    # that the new soft break brings to a line start is escaped in turn.
    text = "\n".join("." * n for n in range(70, 160))
    encoded = quoted_printable(text)
    assert max(map(len, lines_of(encoded))) <= 76
    assert [line for line in lines_of(encoded) if line.startswith(b".")] == []
    assert binascii.a2b_qp(encoded).decode() == text.replace("\n", "\r\n")


# --- real renders: the same message as encoding each whole body -------------------------


class RecordingRenderer(Renderer):
    """The real renderer, keeping every render so a test can rebuild a message by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.renders: list[tuple[str, IssueView, RenderedMessage]] = []

    def render_issue(
        self, view: IssueView, language: str, template_set: str = "digest"
    ) -> RenderedMessage:
        rendered = super().render_issue(view, language, template_set)
        self.renders.append((language, view, rendered))
        return rendered

    def for_reader(self, reader: Reader) -> RenderedMessage:
        found = [
            rendered
            for language, view, rendered in self.renders
            if language == reader.language
            and all(not reader.topics or a.topics & reader.topics for a in view.articles)
        ]
        assert len(found) == 1, found
        return found[0]


def articles(now: datetime) -> tuple[ArticleView, ...]:
    """Summaries with the cases that matter: dots at line starts, long lines, non-ASCII."""
    long_link = "https://example.org/" + "a-long-path-segment." * 8 + "end"
    summaries = [
        "<p>...and then the dots: a paragraph that starts with three of them.</p>"
        "<p>.hidden files and .dotfiles, one per line.</p>",
        f'<p>Read more at <a href="{long_link}">{long_link}</a> today.</p>'
        + "<p>" + "." * 300 + "</p>",
        "<p>" + "長い日本語の文章が続きます。" * 12 + "</p><p>Ось український текст.</p>",
        "<p>Equals = signs,\ttabs and trailing spaces   </p>",
    ]  # fmt: skip
    topics = [frozenset({"dots"}), frozenset({"links"}), frozenset({"dots", "world"}), frozenset()]
    return tuple(
        ArticleView(
            title=f"Article {n}: «quotes» & <angles>",
            url=f"https://example.org/articles/{n}",
            summary_html=clean_html(summary),
            summary_text=html_to_text(clean_html(summary)),
            author="Олександра Іваненко" if n % 2 else "",
            published_at=now - timedelta(hours=n),
            topics=topic,
        )
        for n, (summary, topic) in enumerate(zip(summaries, topics, strict=True))
    )


@pytest.fixture
def renderer() -> RecordingRenderer:
    return RecordingRenderer()


def composer(renderer: Renderer, folder: Path) -> Composer:
    ctx = SendContext(
        base_url=BASE_URL, default_from=SENDER, tokens=Tokens([TEST_KEY]), renderer=renderer,
        transport=MaildirTransport(folder / "outbox"), lease=timedelta(minutes=10),
        throttle=make_throttle(None, 0, "fast-paths-test"),
    )  # fmt: skip
    prepared = prepare(
        Newsletter(slug="fast-weekly", name="Fast Weekly — тиждень"), ctx,
        issue_public_id="issue-7", date=NOW, planned_at=NOW, articles=articles(NOW),
    )  # fmt: skip
    return Composer(prepared, ctx)


READERS = [
    Reader("r-en", "olivia@example.org", "Olivia Bennett", "en"),
    Reader("r-en-anonymous", "anon@example.org", "", "en"),
    Reader("r-en-topics", "dots@example.org", ".Dot <b>&amp;</b> Name", "en", frozenset({"dots"})),
    Reader("r-uk", "oksana@example.org", "Оксана Коваленко-Шевченко", "uk"),
    Reader("r-uk-topics", "links@example.org", "Тарас", "uk", frozenset({"links"})),
    Reader("r-ja", "yuki@example.org", "山田 由紀", "ja"),
    Reader("r-ja-long", "long@example.org", "名前" * 60, "ja", frozenset({"world"})),
]


def test_composed_messages_are_the_bytes_of_encoding_whole_bodies(
    renderer: RecordingRenderer, tmp_path: Path
) -> None:
    digest = composer(renderer, tmp_path)
    prepared = digest.prepared
    for reader in READERS:
        composed = digest.compose(reader, NOW)
        assert composed is not None
        mid, message = composed
        # The links carry signed tokens with a timestamp: read back the ones used.
        parsed = parse(message)
        unsubscribe_url = str(parsed["List-Unsubscribe"]).strip("<>")
        plain = parsed.get_body(("plain",))
        assert plain is not None
        found = re.search(rf"{re.escape(BASE_URL)}/preferences/\S+", plain.get_content())
        assert found is not None
        rendered = renderer.for_reader(reader)
        text, html = rendered.personalise(reader.name, unsubscribe_url, found.group(0))
        envelope = Envelope(
            from_name=prepared.from_name, from_address=prepared.from_address,
            to_name=reader.name, to_address=reader.email, subject=rendered.subject,
            message_id=mid, date=NOW, list_id=prepared.list_id,
            list_name=prepared.from_name, unsubscribe_url=unsubscribe_url,
            feedback_id=feedback_id(prepared, None),
        )  # fmt: skip
        assert message == build_message(envelope, text, html, rendered.boundary), reader
        # Nothing for SMTP to dot-stuff: the message goes out as it is.
        assert not message.startswith(b".")
        assert b"\n." not in message
    # Each language and article set was rendered once, whoever read it.
    assert len(renderer.renders) == 6


def test_personalised_bodies_encode_as_the_whole_bodies(renderer: RecordingRenderer) -> None:
    view = IssueView("Fast Weekly", NOW, articles(NOW), f"{BASE_URL}/archive/issue-7")
    links = (f"{BASE_URL}/unsubscribe/{'t0k.en-' * 40}", f"{BASE_URL}/preferences/a&b<c>")
    for language in ("en", "uk", "ja"):
        rendered = renderer.render_issue(view, language)
        for reader in READERS:
            encoded = rendered.personalise_encoded(reader.name, *links)
            whole = tuple(quoted_printable(b) for b in rendered.personalise(reader.name, *links))
            assert encoded == whole, (language, reader.name)


def test_per_reader_lines_are_a_small_part_of_a_digest(renderer: RecordingRenderer) -> None:
    # The reason encoding per line pays: the marker lines, even of the CSS-inlined HTML,
    # are a few hundred characters of tens of thousands.
    view = IssueView("Fast Weekly", NOW, articles(NOW) * 5, f"{BASE_URL}/archive/issue-7")
    rendered = renderer.render_issue(view, "en")
    m = rendered.markers
    for body in (rendered.text, rendered.html):
        personal = sum(
            len(line)
            for line in body.split("\n")
            if any(marker in line for marker in (m.greeting, m.unsubscribe_url, m.preferences_url))
        )
        assert personal < 600
        assert personal * 20 < len(body)


# --- sending without the regex ----------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    data=st.lists(st.sampled_from([b".", b"\n", b"\r\n", b"\r", b"..", b"x", b"\n."])).map(b"".join)
)
def test_dot_stuffing_matches_smtplib(data: bytes) -> None:
    assert dot_stuffed(data) == re.sub(rb"(?m)^\.", b"..", data)


REPLIES = {
    "refused": ("rcpt", "550 5.1.1 no such user"),
    "closing": ("rcpt", "421 4.3.2 closing"),
    "later": ("rcpt", "451 4.7.1 try later"),
    "rejected": ("data", "554 5.7.1 rejected as spam"),
    "full": ("data", "552 5.2.2 mailbox full"),
    "shutdown": ("data", "421 4.3.2 service shutting down"),
}


def scripted(address: str, stage: str) -> str | None:
    """The relay's reply to ``address`` at ``stage``, from its local part."""
    at_stage, reply = REPLIES.get(address.partition("@")[0], ("", ""))
    return reply if at_stage == stage else None


@pytest.fixture
def smtp_handler() -> CommandLog:
    """The relay of the exchange tests: scripted replies by local part, every command logged."""
    return CommandLog(
        rcpt_script=lambda address, _count: scripted(address, "rcpt"),
        data_script=lambda address, _count: scripted(address, "data"),
        mail_script=lambda address: "550 5.7.1 sender blocked" if "blocked" in address else None,
    )


# Dots at line starts (the first byte too), a lone dot line, and no CRLF at the end.
DOTTED = b".first\r\nSubject: dots\r\n\r\n..two\r\n.\r\nmid.dle\r\n.\r\n\r\n.last"
Send = Callable[[smtplib.SMTP, str, str, bytes], object]


def exchange(smtp_server: SMTPServer, send: Send, sender: str, recipient: str) -> list[object]:
    """The commands, outcome and deliveries of one send and of a plain send after it."""
    handler = smtp_server.handler
    assert isinstance(handler, CommandLog)
    handler.commands.clear()
    handler.messages.clear()
    seen: list[object] = []
    client = smtplib.SMTP("127.0.0.1", smtp_server.port, timeout=10)
    try:
        try:
            send(client, sender, recipient, DOTTED)
            seen.append("sent")
        except smtplib.SMTPException as exc:
            seen.append((type(exc).__name__, exc.args))
        seen.append(client.sock is not None)
        if client.sock is not None:
            send(client, SENDER, "next@example.org", b"Subject: next\r\n\r\nbody\r\n")
    finally:
        client.close()
    return [
        *seen,
        list(handler.commands),
        [(m.sender, m.recipients, m.data) for m in smtp_server.messages],
    ]


@pytest.mark.parametrize(
    ("sender", "recipient"),
    [
        (SENDER, "reader@example.org"),
        (SENDER, "refused@example.org"),
        (SENDER, "closing@example.org"),
        (SENDER, "later@example.org"),
        (SENDER, "rejected@example.org"),
        (SENDER, "full@example.org"),
        (SENDER, "shutdown@example.org"),
        ("blocked@example.org", "reader@example.org"),
    ],
)
def test_transmit_talks_smtp_as_sendmail_does(
    smtp_server: SMTPServer, sender: str, recipient: str
) -> None:
    def sendmail(client: smtplib.SMTP, sender: str, recipient: str, message: bytes) -> object:
        return client.sendmail(sender, [recipient], message)

    plain = exchange(smtp_server, sendmail, sender, recipient)
    assert exchange(smtp_server, transmit, sender, recipient) == plain
    if recipient == "reader@example.org" and sender == SENDER:
        # Dot-stuffed on the wire, unstuffed by the relay: the bytes as sent, plus CRLF.
        assert plain[-1][0] == (SENDER, [recipient], DOTTED + b"\r\n")  # type: ignore[index]


def connection(smtp_server: SMTPServer) -> SMTPConnection:
    return SMTPConnection(
        MailURL(scheme="smtp", host="127.0.0.1", port=smtp_server.port, timeout=10), 100
    )


@contextmanager
def talking_to(handler: RecordingHandler) -> Iterator[SMTPConnection]:
    """A relay on loopback with ``handler``, and a connection to it; both closed after."""
    with SMTPServer(handler) as relay:
        conn = connection(relay)
        try:
            yield conn
        finally:
            conn.close()


def streamed(conn: SMTPConnection, messages: list[tuple[int, str, str, bytes]]) -> list[object]:
    """send_each's (key, (code, permanent) or None) for each message."""
    return [(key, _outcome(failure)) for key, failure in conn.send_each(iter(messages))]


@pytest.mark.parametrize(
    ("recipient", "code", "permanent"),
    [
        ("refused@example.org", 550, True),
        ("rejected@example.org", 554, True),
        ("full@example.org", 552, False),
        ("later@example.org", 451, False),
        ("closing@example.org", 421, False),
    ],
)
def test_refusals_are_delivery_errors_and_the_session_goes_on(
    smtp_server: SMTPServer, recipient: str, code: int, permanent: bool
) -> None:
    handler = smtp_server.handler
    assert isinstance(handler, CommandLog)
    conn = connection(smtp_server)
    try:
        with pytest.raises(DeliveryError) as caught:
            conn.send(SENDER, recipient, b"Subject: hi\r\n\r\nbody\r\n")
        assert (caught.value.code, caught.value.permanent) == (code, permanent)
        assert REPLIES[recipient.partition("@")[0]][1] in caught.value.detail
        # Refused once, never retried: a 421 to RCPT is the reader's, not the session's.
        assert handler.commands.count(f"RCPT {recipient}") == 1
        conn.send(SENDER, "next@example.org", b"Subject: next\r\n\r\nbody\r\n")
    finally:
        conn.close()
    assert [m.recipients for m in smtp_server.messages] == [["next@example.org"]]


@pytest.mark.parametrize("offered", [True, False])
def test_an_internationalised_address_goes_by_smtputf8_or_is_refused_clearly(
    offered: bool,
) -> None:
    """GAZETTE_SMTPUTF8 lets readers with such addresses in; sending must not crash."""
    server = SMTPServer(RecordingHandler(), smtputf8=offered)
    server.start()
    conn = connection(server)
    try:
        if offered:
            conn.send(SENDER, "оксана@приклад.укр", b"Subject: hi\r\n\r\nbody\r\n")
        else:
            with pytest.raises(DeliveryError) as caught:
                conn.send(SENDER, "оксана@приклад.укр", b"Subject: hi\r\n\r\nbody\r\n")
            assert (caught.value.code, caught.value.permanent) == (553, True)
            assert "does not offer SMTPUTF8" in caught.value.detail
        # Either way the session goes on for the next reader.
        conn.send(SENDER, "next@example.org", b"Subject: next\r\n\r\nbody\r\n")
    finally:
        conn.close()
        server.stop()
    expected = [["оксана@приклад.укр"], ["next@example.org"]] if offered else [["next@example.org"]]
    assert [m.recipients for m in server.messages] == expected


def test_421_after_data_reconnects_once_then_defers(smtp_server: SMTPServer) -> None:
    handler = smtp_server.handler
    assert isinstance(handler, CommandLog)
    conn = connection(smtp_server)
    try:
        with pytest.raises(DeliveryError) as caught:
            conn.send(SENDER, "shutdown@example.org", b"Subject: hi\r\n\r\nbody\r\n")
        assert (caught.value.code, caught.value.permanent) == (421, False)
        assert handler.data_count == 2
        conn.send(SENDER, "next@example.org", b"Subject: next\r\n\r\nbody\r\n")
    finally:
        conn.close()
    assert [m.recipients for m in smtp_server.messages] == [["next@example.org"]]


@pytest.mark.parametrize("drops", [1, 2])
def test_a_dropped_connection_is_retried_once(drops: int) -> None:
    handler = DropAfterDotHandler(drops=drops)
    with talking_to(handler) as conn:
        if drops == 1:
            conn.send(SENDER, "reader@example.org", DOTTED)
        else:
            with pytest.raises(DeliveryError) as caught:
                conn.send(SENDER, "reader@example.org", DOTTED)
            assert (caught.value.code, caught.value.permanent) == (None, False)
    # The relay took the message before hanging up, so a retry is a second copy.
    assert [m.data for m in handler.messages] == [DOTTED + b"\r\n"] * 2


def test_a_digest_arrives_byte_identical(
    smtp_server: SMTPServer, renderer: RecordingRenderer, tmp_path: Path
) -> None:
    digest = composer(renderer, tmp_path)
    sent = []
    conn = connection(smtp_server)
    try:
        for reader in READERS:
            composed = digest.compose(reader, utcnow())
            assert composed is not None
            conn.send(SENDER, reader.email, composed[1])
            sent.append(composed[1])
    finally:
        conn.close()
    assert [m.data for m in smtp_server.messages] == sent


@settings(max_examples=300, deadline=None)
@given(
    subject=st.text(alphabet=".\n\r x=é", max_size=200),
    name=st.text(alphabet='.\n\r x"<é', max_size=80),
    body=st.text(alphabet=".\n\r x=é\t", max_size=400),
)
def test_built_messages_never_start_a_line_with_a_dot(subject: str, name: str, body: str) -> None:
    # build_message marks its output DotSafe, so transmit sends it without stuffing:
    # the mark must hold whatever the subject, the reader's name and the bodies hold.
    envelope = Envelope(
        from_name=name, from_address="news@example.org", to_name=name,
        to_address="reader@example.org", subject=subject, message_id="m@example.org",
        date=datetime(2026, 1, 5, 9, 0), list_id="news.example.org", list_name=name,
        unsubscribe_url="https://example.org/unsubscribe/abc",
    )  # fmt: skip
    message = build_message(envelope, body, f"<p>{body}</p>", "BOUNDARY")
    assert isinstance(message, DotSafe)
    assert dot_stuffed(message) == message


def test_transmit_still_stuffs_plain_bytes_and_sends_dot_safe_ones_as_they_are() -> None:
    plain = b"Subject: x\r\n\r\n.starts with a dot\r\n..two\r\nend\r\n"
    server = SMTPServer(RecordingHandler())
    server.start()
    client = smtplib.SMTP("127.0.0.1", server.port, timeout=10)
    try:
        transmit(client, "news@example.org", "a@example.org", plain)
        safe = build_message(
            Envelope(
                from_name="News", from_address="news@example.org", to_name="",
                to_address="b@example.org", subject=".dot", message_id="m@example.org",
                date=datetime(2026, 1, 5, 9, 0),
            ),
            ".text\n.", "<p>.</p>", "BOUNDARY",
        )  # fmt: skip
        transmit(client, "news@example.org", "b@example.org", safe)
    finally:
        client.quit()
        server.stop()
    received = {m.recipients[0]: m.data for m in server.messages}
    # The relay undoes the stuffing: each side gets back exactly the bytes handed over.
    assert received["a@example.org"] == plain
    assert received["b@example.org"] == bytes(safe)


# --- send_each: the next message built while the relay answers ------------------------

STREAM = [
    "first@example.org", "refused@example.org", "later@example.org", "rejected@example.org",
    "full@example.org", "shutdown@example.org", "closing@example.org", "last@example.org",
]  # fmt: skip


def _outcome(failure: DeliveryError | None) -> tuple[int | None, bool] | None:
    return None if failure is None else (failure.code, failure.permanent)


def test_send_each_gives_each_message_the_outcome_send_gives_it(smtp_server: SMTPServer) -> None:
    messages = [
        (n, SENDER, r, f"Subject: {n}\r\n\r\nbody\r\n".encode()) for n, r in enumerate(STREAM)
    ]
    conn = connection(smtp_server)
    try:
        one_at_a_time = []
        for _key, sender, recipient, message in messages:
            try:
                conn.send(sender, recipient, message)
            except DeliveryError as failure:
                one_at_a_time.append(_outcome(failure))
            else:
                one_at_a_time.append(None)
        delivered_by_send = [m.recipients for m in smtp_server.messages]
        smtp_server.messages.clear()
        streamed = [(key, _outcome(failure)) for key, failure in conn.send_each(iter(messages))]
    finally:
        conn.close()
    assert streamed == list(enumerate(one_at_a_time))
    assert one_at_a_time == [
        None, (550, True), (451, False), (554, True), (552, False), (421, False), (421, False),
        None,
    ]  # fmt: skip
    assert [m.recipients for m in smtp_server.messages] == delivered_by_send


def test_send_each_builds_the_next_message_before_reading_the_last_reply() -> None:
    built_second = threading.Event()
    seen_before_reply: list[bool] = []

    def slow_first_reply(_recipient: str, count: int) -> str | None:
        # The relay holds its reply to the first message until the client has built
        # the second (or 5 s pass): only a client that builds ahead gets there first.
        if count == 1:
            seen_before_reply.append(built_second.wait(5))
        return None

    handler = RecordingHandler(data_script=slow_first_reply)

    def stream() -> Iterator[tuple[int, str, str, bytes]]:
        yield 1, SENDER, "one@example.org", b"Subject: 1\r\n\r\none\r\n"
        built_second.set()
        yield 2, SENDER, "two@example.org", b"Subject: 2\r\n\r\ntwo\r\n"

    with talking_to(handler) as conn:
        outcomes = list(conn.send_each(stream()))
    assert outcomes == [(1, None), (2, None)]
    assert seen_before_reply == [True]
    assert [m.recipients for m in handler.messages] == [["one@example.org"], ["two@example.org"]]


@pytest.mark.parametrize("drops", [1, 2])
def test_send_each_retries_a_hang_up_after_the_dot_once(drops: int) -> None:
    handler = DropAfterDotHandler(drops=drops)
    with talking_to(handler) as conn:
        outcomes = streamed(
            conn,
            [(1, SENDER, "reader@example.org", DOTTED), (2, SENDER, "next@example.org", b"x")],
        )
    first = None if drops == 1 else (None, False)
    assert outcomes == [(1, first), (2, None)]
    # The relay took the first message before each hang-up: every retry is a copy.
    assert [m.recipients[0] for m in handler.messages] == ["reader@example.org"] * 2 + [
        "next@example.org"
    ]


def test_maildir_send_each_writes_each_message(tmp_path: Path) -> None:
    transport = MaildirTransport(tmp_path / "outbox")
    with transport.connect() as conn:
        outcomes = list(conn.send_each(iter([(k, SENDER, f"{k}@example.org", b"m") for k in "ab"])))
    assert outcomes == [("a", None), ("b", None)]
    assert len(list((tmp_path / "outbox" / "new").iterdir())) == 2


@dataclass
class ClosingAtFirstMail(DropAfterDotHandler):
    """Says 421 to the session's first MAIL, then behaves as DropAfterDotHandler."""

    mails: int = 0

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.mails += 1
        if self.mails == 1:
            return "421 4.3.2 closing"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"


def test_send_each_makes_two_attempts_at_most_whichever_step_fails() -> None:
    # Attempt 1 ends at MAIL (421); attempt 2 reaches the final dot and the relay hangs
    # up. That was the second attempt: the message waits for a later retry, no third copy.
    handler = ClosingAtFirstMail(drops=1)
    with talking_to(handler) as conn:
        outcomes = streamed(conn, [(1, SENDER, "reader@example.org", b"Subject: 1\r\n\r\none\r\n")])
    assert outcomes == [(1, (None, False))]
    assert [m.recipients for m in handler.messages] == [["reader@example.org"]]
