"""Raw digest messages: CRLF lines within limits, headers that decode exactly, no injection."""

from __future__ import annotations

import binascii
import dataclasses
import re
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gazette.mail.mime import Envelope, build_message, encode_text, format_address, quoted_printable
from gazette.text import clean_line
from tests.support.messages import parse

BOUNDARY = "=_gazette_7f3a9c41d2"
TO_ADDRESS = "reader@example.org"
FROM_ADDRESS = "digest@news.example.org"
# ~400 characters, like a real one-click link carrying a signed token.
UNSUBSCRIBE_URL = (
    "https://news.example.org/unsubscribe/"
    + "WyJzdWJfOGYxNGU0NWZjZWVhMTY3YSIsIndlZWtseS1kaWdlc3QiXQ.ZjK8sA.2sV1c-Qx_" * 5
    + "?utm_source=digest&utm_medium=email&lang=uk"
)
BASE = Envelope(
    from_name="Gazette Weekly",
    from_address=FROM_ADDRESS,
    to_name="Olivia Bennett",
    to_address=TO_ADDRESS,
    subject="This week in Gazette",
    message_id="issue-42.sub-8f14e45f@news.example.org",
    date=datetime(2024, 5, 1, 8, 30, tzinfo=UTC),
    list_id="weekly.news.example.org",
    list_name="Weekly digest",
    unsubscribe_url=UNSUBSCRIBE_URL,
)
ALL_HEADERS = {
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Content-Type",
}
UKRAINIAN_SUBJECT = (
    "Щотижневий огляд: нові статті про відкрите програмне забезпечення, "
    "безпеку та спільноту — читайте зараз"
)
JAPANESE_SUBJECT = (
    "今週の ダイジェスト: オープンソース の 新しい 記事 と "
    "セキュリティ の ニュース を お届け します"
)


def envelope(**changes: Any) -> Envelope:
    return dataclasses.replace(BASE, **changes)


def crlf(text: str) -> str:
    return re.sub(r"\r\n|\r|\n", "\r\n", text)


def raw_lines(data: bytes) -> list[bytes]:
    """Split on CRLF after checking there is no bare CR or LF anywhere."""
    bare = [m.start() for m in re.finditer(rb"\r(?!\n)|(?<!\r)\n", data)]
    if bare:
        first = bare[0]
        pytest.fail(f"{len(bare)} bare CR or LF, the first in {data[first - 30 : first + 5]!r}")
    assert data.endswith(b"\r\n")
    return data[:-2].split(b"\r\n")


def raw_header_lines(data: bytes) -> list[bytes]:
    """The header block, unfolded: one entry per header field."""
    head = data.split(b"\r\n\r\n", 1)[0]
    return re.sub(rb"\r\n[ \t]", b" ", head).split(b"\r\n")


def article(paragraph_break: str = "\n") -> str:
    """About 3,000 characters of digest text with the hard cases in it."""
    paragraphs = [
        "Вітаємо, Оксана! Ось найцікавіше за тиждень. 今週のダイジェストをお届けします。",
        "A long link: https://news.example.org/articles/2024/05/01/"
        + "a-very-long-slug-with-no-spaces-at-all-" * 6
        + "end?ref=digest&x=1",
        "Unbroken: " + "Supercalifragilisticexpialidocious" * 8,
        "Equals = signs, tabs\there, and trailing spaces   ",
        ".",
        "From the editor: a line that starts with From and a dot line above.",
        "日本語の長い文章" * 30,
        "Привіт" * 60,
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
        "incididunt ut labore et dolore magna aliqua. " * 8,
    ]
    text = (paragraph_break * 2).join(paragraphs)
    while len(text) < 3000:
        text += paragraph_break * 2 + "More words to read this week, " * 5
    return text


def single_line_article() -> str:
    return " ".join(article().split())


def html_body() -> str:
    return (
        "<!doctype html><html><body>"
        + "".join(f"<p>{p}</p>" for p in article().split("\n\n"))
        + f'<p><a href="{UNSUBSCRIBE_URL}">Unsubscribe</a></p></body></html>'
    )


# --- line structure -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "html"),
    [
        pytest.param(article(), html_body().replace("<p>", "\n<p>"), id="lf"),
        pytest.param(article("\r\n"), html_body().replace("<p>", "\r\n<p>"), id="crlf"),
        pytest.param(article("\r"), html_body().replace("<p>", "\r<p>"), id="cr"),
        pytest.param(article(), html_body(), id="html-on-one-line"),
        pytest.param(
            single_line_article(), html_body().replace("<p>", "\n<p>"), id="text-on-one-line"
        ),
    ],
)
def test_every_line_ends_in_crlf_and_fits_998_octets(text: str, html: str) -> None:
    assert len(text) >= 3000
    data = build_message(envelope(), text, html, BOUNDARY)
    lines = raw_lines(data)
    too_long = [len(line) for line in lines if len(line) > 998]
    assert too_long == []


def test_long_ascii_subject_keeps_header_lines_within_998_octets() -> None:
    # A feed title can be long; the header must be folded, not written as one line.
    subject = " ".join(["headline"] * 150)  # 1349 characters of ASCII
    data = build_message(envelope(subject=subject), "text", "<p>html</p>", BOUNDARY)
    assert max(len(line) for line in raw_lines(data)) <= 998
    assert parse(data)["Subject"] == subject


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(article(), id="lf"),
        pytest.param(article("\r\n"), id="crlf"),
        pytest.param(article("\r"), id="cr"),
        pytest.param(single_line_article(), id="no-line-breaks"),
        pytest.param("x" * 500, id="one-long-word"),
        pytest.param("short", id="short"),
        pytest.param("ends with space \nand tab\t\nlast", id="trailing-whitespace"),
    ],
)
def test_quoted_printable_is_crlf_and_decodes_back(text: str) -> None:
    encoded = quoted_printable(text)
    assert encoded.isascii()
    if encoded:
        lines = raw_lines(encoded + (b"" if encoded.endswith(b"\r\n") else b"\r\n"))
        assert max(len(line) for line in lines) <= 998
        # Trailing white space would be stripped by some relays: it must be encoded.
        assert all(not line.endswith((b" ", b"\t")) for line in lines)
    assert binascii.a2b_qp(encoded).decode("utf-8") == crlf(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("x" * 74 + " \n" + "next line", id="space-at-column-75"),
        pytest.param("\n".join("y" * n + " " for n in range(60, 90)), id="trailing-spaces"),
        pytest.param(article(), id="article"),
    ],
)
def test_quoted_printable_lines_are_at_most_76_octets(text: str) -> None:
    # RFC 2045 6.7 (5), and what quoted_printable() promises: 76 octets before CRLF.
    lines = quoted_printable(text).split(b"\r\n")
    assert [len(line) for line in lines if len(line) > 76] == []


# --- List-Unsubscribe ---------------------------------------------------------------


def test_long_unsubscribe_url_is_verbatim_on_one_line() -> None:
    assert len(UNSUBSCRIBE_URL) > 380
    data = build_message(envelope(), "text", "<p>html</p>", BOUNDARY)
    lines = raw_lines(data)
    expected = b"List-Unsubscribe: <" + UNSUBSCRIBE_URL.encode("ascii") + b">"
    index = lines.index(expected)
    # Not folded: the next line is another header, not a continuation.
    assert not lines[index + 1].startswith((b" ", b"\t"))
    assert b"=?" not in lines[index]
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in lines
    message = parse(data)
    assert message["List-Unsubscribe"] == f"<{UNSUBSCRIBE_URL}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_no_list_headers_without_list_id_or_unsubscribe_url() -> None:
    data = build_message(
        envelope(list_id=None, unsubscribe_url=None), "text", "<p>html</p>", BOUNDARY
    )
    message = parse(data)
    assert set(message.keys()) == ALL_HEADERS - {
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    }
    assert message.defects == []


# --- Subject ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param(UKRAINIAN_SUBJECT, id="ukrainian"),
        pytest.param(JAPANESE_SUBJECT, id="japanese"),
        pytest.param("Weekly: " + UKRAINIAN_SUBJECT + " / " + JAPANESE_SUBJECT, id="mixed"),
        pytest.param("Ї" * 22 + " " + "Ї" * 22 + " x", id="space-at-chunk-boundary"),
        pytest.param("日本 " * 40, id="many-short-words"),
    ],
)
def test_non_ascii_subject_decodes_to_exactly_the_original(subject: str) -> None:
    data = build_message(envelope(subject=subject), "text", "<p>html</p>", BOUNDARY)
    raw = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    start = next(i for i, line in enumerate(raw) if line.startswith(b"Subject: "))
    continuation = 0
    while raw[start + continuation + 1].startswith(b" "):
        continuation += 1
    assert continuation >= 1, "expected a subject split over several encoded words"
    words = re.findall(
        rb"=\?[^?]+\?[bBqQ]\?[^?]*\?=", b" ".join(raw[start : start + continuation + 1])
    )
    assert len(words) == continuation + 1
    assert all(len(word) <= 75 for word in words)
    message = parse(data)
    assert message["Subject"] == subject.strip()
    assert message["Subject"].defects == ()


@pytest.mark.parametrize("base", [UKRAINIAN_SUBJECT.replace(" ", ""), "日本語のニュース" * 12])
def test_a_space_at_any_position_of_an_encoded_subject_survives(base: str) -> None:
    # Every offset puts the space at a different place relative to the 45-byte chunks:
    # at the end of one encoded word, at the start of the next, or inside one.
    for offset in range(1, 70):
        subject = base[:offset] + " " + base[offset:]
        data = build_message(envelope(subject=subject), "t", "h", BOUNDARY)
        assert parse(data)["Subject"] == subject, f"space at {offset}"


def test_encode_text_leaves_ascii_alone_and_encodes_the_rest() -> None:
    assert encode_text("Weekly digest #42: what's new") == "Weekly digest #42: what's new"
    encoded = encode_text(UKRAINIAN_SUBJECT)
    assert encoded.isascii()
    words = encoded.split("\r\n ")
    assert len(words) >= 3
    for word in words:
        assert re.fullmatch(r"=\?utf-8\?b\?[A-Za-z0-9+/=]+\?=", word), word
        assert len(word) <= 75
        # Each encoded word holds whole characters: it decodes on its own.
        ((payload, charset),) = decode_header(word)
        assert isinstance(payload, bytes)
        assert charset == "utf-8"
        payload.decode("utf-8")
    assert str(make_header(decode_header(encoded))) == UKRAINIAN_SUBJECT


def test_encode_text_folds_line_breaks_and_controls_away() -> None:
    assert encode_text("one\r\ntwo\nthree\u2028four\x85five\tsix") == "one two three four five six"
    # Other control characters are dropped, not turned into spaces.
    assert encode_text("nul\x00here, bell\x07 and del\x7f") == "nulhere, bell and del"
    assert "\r\n" not in encode_text("Новини\r\nBcc: victim@example.org")
    # Only the CRLF+space between encoded words: no header can start inside the value.
    assert all(part.startswith("=?") for part in encode_text("Новини\nBcc: x@y" * 5).split("\r\n "))


def test_ascii_text_that_looks_like_an_encoded_word_is_kept_literally() -> None:
    # A feed title may literally contain "=?...?=": readers must see it as written.
    subject = "How =?utf-8?q?encoded_words?= work"
    name = "=?utf-8?q?Admin?="
    data = build_message(envelope(subject=subject, to_name=name), "t", "h", BOUNDARY)
    message = parse(data)
    assert message["Subject"] == subject
    assert message["To"].addresses[0].display_name == name


# --- addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Olivia Bennett",
        "Bennett, Olivia",
        'Pat "the cat" Smith',
        'O\'Brien, "Pat"',
        'back\\slash and \\"escaped\\"',
        "Dr. J. (Jay) <admin@example.org>; x",
        "Оксана Коваленко",
        "佐藤 花子",
        'Коваленко, Оксана "Ксеня"',
        '佐藤, <花子> "様"',
    ],
)
def test_display_name_decodes_to_the_original(name: str) -> None:
    data = build_message(envelope(to_name=name, from_name=name), "text", "<p>html</p>", BOUNDARY)
    message = parse(data)
    for header, address in (("To", TO_ADDRESS), ("From", FROM_ADDRESS)):
        addresses = message[header].addresses
        assert len(addresses) == 1
        assert addresses[0].display_name == name
        assert addresses[0].addr_spec == address
        assert message[header].defects == ()
    assert message.defects == []


def test_long_non_ascii_display_name_is_split_into_valid_encoded_words() -> None:
    # CPython's policy.default parser inserts a space between adjacent encoded words in
    # an address (python/cpython#128110), against RFC 2047 6.2; decode per the RFC here.
    name = "Олександра Костянтинівна Коваленко-Шевченко, 佐藤 花子"
    formatted = format_address(name, TO_ADDRESS)
    phrase, _, address = formatted.rpartition(" ")
    assert address == f"<{TO_ADDRESS}>"
    words = phrase.split("\r\n ")
    assert len(words) >= 2
    assert all(re.fullmatch(r"=\?utf-8\?b\?[A-Za-z0-9+/=]+\?=", word) for word in words)
    assert str(make_header(decode_header(phrase))) == name
    message = parse(build_message(envelope(to_name=name), "t", "h", BOUNDARY))
    assert [a.addr_spec for a in message["To"].addresses] == [TO_ADDRESS]


def test_format_address_forms() -> None:
    assert format_address("", TO_ADDRESS) == TO_ADDRESS
    assert format_address(" \r\n ", TO_ADDRESS) == TO_ADDRESS
    assert format_address("Olivia Bennett", TO_ADDRESS) == f"Olivia Bennett <{TO_ADDRESS}>"
    assert format_address('Bennett, "Liv"', TO_ADDRESS) == f'"Bennett, \\"Liv\\"" <{TO_ADDRESS}>'
    assert format_address("a\\b.", TO_ADDRESS) == f'"a\\\\b." <{TO_ADDRESS}>'
    assert format_address("Оксана", TO_ADDRESS) == f"=?utf-8?b?0J7QutGB0LDQvdCw?= <{TO_ADDRESS}>"


# --- structure and bodies -----------------------------------------------------------


def test_parsed_message_has_no_defects_and_parts_decode_back() -> None:
    text, html = article(), html_body()
    data = build_message(envelope(subject=UKRAINIAN_SUBJECT), text, html, BOUNDARY)
    message = parse(data)
    assert message.defects == []
    assert set(message.keys()) == ALL_HEADERS
    assert len(message.keys()) == len(ALL_HEADERS)
    for name in ALL_HEADERS:
        assert message[name].defects == (), name
    assert message["Date"].datetime == BASE.date
    assert message["Message-ID"] == f"<{BASE.message_id}>"
    assert message["MIME-Version"] == "1.0"
    assert message["List-Id"] == f"{BASE.list_name} <{BASE.list_id}>"
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_param("boundary") == BOUNDARY
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    for part, original in zip(parts, (text, html), strict=True):
        assert isinstance(part, EmailMessage)
        assert part.defects == []
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert crlf(part.get_content()) == crlf(original)


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("", ""),
        ("ends with a newline\n", "<p>ends</p>\n"),
        ("no newline at end", "<p>x</p>"),
        ("=3D and =\n=\r\n", "<p>=20</p>"),
    ],
)
def test_bodies_round_trip_exactly_at_the_edges(text: str, html: str) -> None:
    message = parse(build_message(envelope(), text, html, BOUNDARY))
    assert message.defects == []
    plain, rich = list(message.iter_parts())
    assert isinstance(plain, EmailMessage)
    assert isinstance(rich, EmailMessage)
    assert crlf(plain.get_content()) == crlf(text)
    assert crlf(rich.get_content()) == crlf(html)


# --- header injection ---------------------------------------------------------------

NASTY_TEXT = st.lists(
    st.one_of(
        st.sampled_from(
            ["\r", "\n", "\r\n", "\x00", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\t", " "]
        ),
        st.sampled_from(list(":;,<>@\"'\\()[].=?")),
        st.sampled_from(
            ["Bcc: x@evil.example", "\r\nTo: y@evil.example", "\nX-Evil: 1", "Оксана", "花子"]
        ),
        st.characters(codec="utf-8", exclude_categories=["Cs"]),
    ),
    max_size=40,
).map("".join)
BAD_IN_VALUES = re.compile("[\r\n\x00\u2028\u2029\x85\x0b\x0c]")


@settings(max_examples=200, deadline=None, database=None)
@given(to_name=NASTY_TEXT, from_name=NASTY_TEXT, subject=NASTY_TEXT, list_name=NASTY_TEXT)
def test_no_input_can_add_a_header_or_a_recipient(
    to_name: str, from_name: str, subject: str, list_name: str
) -> None:
    data = build_message(
        envelope(to_name=to_name, from_name=from_name, subject=subject, list_name=list_name),
        "text",
        "<p>html</p>",
        BOUNDARY,
    )
    expected = ALL_HEADERS
    # The raw header block, unfolded: exactly one line per expected header.
    names = [line.split(b":", 1)[0].decode("ascii") for line in raw_header_lines(data)]
    assert sorted(names) == sorted(expected)
    assert max(len(line) for line in raw_lines(data)) <= 998

    message = parse(data)
    assert message.defects == []
    assert set(message.keys()) == expected
    assert len(message.keys()) == len(expected)
    for header, address in (("To", TO_ADDRESS), ("From", FROM_ADDRESS)):
        assert [a.addr_spec for a in message[header].addresses] == [address]
    for name in expected:
        assert not BAD_IN_VALUES.search(str(message[name])), (name, str(message[name]))
    assert message["Subject"] == clean_line(subject, 2000)
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
