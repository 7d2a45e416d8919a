"""What the digest tests share: the readers and articles of an issue, and how to read it back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, func, select

from gazette.articles.service import clean_html
from gazette.demo_publisher import READERS as DEMO_READERS
from gazette.digests.composer import Composer, Reader, SendContext, prepare
from gazette.mail.transports import MaildirTransport
from gazette.newsletters.service import create_newsletter
from gazette.ratelimit import make_throttle
from gazette.rendering import ArticleView, Renderer
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Delivery, Issue, Newsletter, utcnow
from gazette.text import html_to_text
from gazette.tokens import Purpose, Tokens
from tests.support.digests import (
    BASE_URL,
    DOMAIN,
    FROM,
    NAME,
    SLUG,
    WORDS,
    ArticleSpec,
    RsaKey,
    SeededReader,
    expected_subject,
    greeting,
)
from tests.support.env import TEST_KEY
from tests.support.http import LiveServer
from tests.support.messages import (
    HtmlDocument,
    check_wire_format,
    listed_titles,
    parse,
    parts,
    raw_header,
)

LANGUAGES = ("en", "uk", "ja")
UNSUBSCRIBE_LINE = re.compile(
    rb"List-Unsubscribe: <" + re.escape(BASE_URL.encode()) + rb"/unsubscribe/[A-Za-z0-9_.\-]+>"
)
MESSAGE_ID = re.compile(r"<[A-Za-z0-9_.\-]+@" + re.escape(DOMAIN) + ">")


def new_newsletter(runtime: Runtime, name: str = NAME) -> int:
    with transaction(runtime.sessions) as session:
        return create_newsletter(session, SLUG, name)


LONG_TITLE = 'A very long headline about "libraries", ' + ", ".join(
    f"district {n} & its reading room" for n in range(1, 16)
)
SUMMARY = (
    '<p>Summary with <a href="https://example.org/read?a=1&amp;b=2">a link</a> '
    "&amp; <b>bold</b> words.</p><ul><li>one point</li><li>another</li></ul>"
)
BIG_ISSUE = [
    ArticleSpec(LONG_TITLE, "https://blog.example.com/long/?ref=digest&lang=all", 1, SUMMARY),
    ArticleSpec('Q&A: "Open data" & the city\'s budget', "https://blog.example.com/qa?x=1&y=2", 2),
    ArticleSpec(
        "Київ: нова бібліотека «Світло» відкриває двері", "https://blog.example.com/kyiv", 3
    ),
    ArticleSpec("東京の夜行列車が「復活」へ", "https://blog.example.com/tokyo", 4, SUMMARY),
    ArticleSpec("Café culture, 24/7 — a survey", "https://blog.example.com/cafe", 5),
]
READER_NAMES = (
    "Olivia Bennett",
    "O'Brien, Pat",
    'Анна "Аня" Коваленко',
    "山田 太郎",
    'Back\\slash, "Q."',
    "Zoë Ærøskøbing, Jr.",
    "",
    "Mr =?utf-8?q?x?= Smith",
)


def reader_name(n: int) -> str:
    base = READER_NAMES[n % len(READER_NAMES)]
    return f"{base} {n}" if base else ""


def check_digest(
    runtime: Runtime,
    data: bytes,
    reader: SeededReader,
    issue_public_id: str,
    articles: list[ArticleSpec],
) -> str:
    """Check one digest message end to end; return its Message-ID."""
    check_wire_format(data)
    message = parse(data)
    words = WORDS[reader.language]
    titles = [a.title for a in articles]
    urls = [a.url for a in articles]
    for name in (
        "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "List-Id",
        "List-Unsubscribe", "List-Unsubscribe-Post",
    ):  # fmt: skip
        assert len(message.get_all(name) or []) == 1, f"{name} in {reader.email}'s message"

    sender = message["From"].addresses
    assert [(a.display_name, a.addr_spec) for a in sender] == [(NAME, FROM)]
    to = message["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == [(reader.name, reader.email)]
    assert message["Subject"] == expected_subject(NAME, titles, reader.language)
    date = message["Date"].datetime
    assert date is not None
    assert date.tzinfo is not None
    assert abs(utcnow() - date) < timedelta(hours=1)
    message_id = str(message["Message-ID"])
    assert MESSAGE_ID.fullmatch(message_id), message_id
    assert message["MIME-Version"] == "1.0"
    assert message["List-Id"] == f"{NAME} <{SLUG}.{DOMAIN}>"

    # RFC 8058: one URL in angle brackets on one line, verbatim, and the POST header.
    unsubscribe_lines = raw_header(data, "List-Unsubscribe")
    assert len(unsubscribe_lines) == 1, unsubscribe_lines
    assert UNSUBSCRIBE_LINE.fullmatch(unsubscribe_lines[0]), unsubscribe_lines[0]
    assert raw_header(data, "List-Unsubscribe-Post") == [
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click"
    ]
    unsubscribe_url = str(message["List-Unsubscribe"])[1:-1]
    token = unsubscribe_url.rpartition("/")[2]
    claims = runtime.tokens.read(Purpose.UNSUBSCRIBE, token)
    assert (claims.subscriber, claims.newsletter) == (reader.public_id, SLUG)

    text, html = parts(message)
    archive_url = f"{BASE_URL}/archive/{issue_public_id}"

    # The text part is for reading: words, titles and links, no markup.
    assert greeting(reader.language, reader.name) in text
    assert listed_titles(text) == titles
    for url in urls:
        assert f"{words.read}: {url}" in text
    assert f"{words.view_text}: {archive_url}" in text
    assert f"{words.unsubscribe}: {unsubscribe_url}" in text
    assert not re.search(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>]*)?/?>", text), text
    assert not re.search(r"&(#\d+|[A-Za-z]+);", text), text
    assert "@@GAZETTE" not in text

    # The HTML part, as a client shows it.
    doc = HtmlDocument(html)
    assert doc.lang == reader.language
    assert doc.hidden_text.startswith(words.preheader(len(articles))), doc.hidden_text
    assert greeting(reader.language, reader.name) in doc.text
    assert doc.hrefs(words.view) == [archive_url]
    assert doc.hrefs(words.unsubscribe) == [unsubscribe_url]
    [preferences_url] = doc.hrefs(words.preferences)
    assert preferences_url.startswith(f"{BASE_URL}/preferences/")
    claims = runtime.tokens.read(Purpose.PREFERENCES, preferences_url.rpartition("/")[2])
    assert (claims.subscriber, claims.newsletter) == (reader.public_id, SLUG)
    for title, url in zip(titles, urls, strict=True):
        assert (url, title) in doc.links
    assert doc.hrefs(words.read) == urls
    assert "script" not in doc.tags
    assert "@@GAZETTE" not in html
    return message_id


SELECTOR = "gz2026"
DKIM_DOMAIN = "mail.example.org"
DKIM_CASES = {
    "selector-without-key": "GAZETTE_DKIM_KEY_FILE",
    "key-without-selector": "GAZETTE_DKIM_SELECTOR",
    "missing-key-file": "GAZETTE_DKIM_KEY_FILE",
    "key-file-is-a-folder": "GAZETTE_DKIM_KEY_FILE",
    "key-file-not-pem": "GAZETTE_DKIM_KEY_FILE",
    "key-file-is-a-public-key": "GAZETTE_DKIM_KEY_FILE",
    "pem-armour-around-no-key": "GAZETTE_DKIM_KEY_FILE",
    "selector-not-a-dns-label": "GAZETTE_DKIM_SELECTOR",
    "domain-not-a-domain-name": "GAZETTE_DKIM_DOMAIN",
}


def _dkim_settings(case: str, folder: Path, key: RsaKey) -> dict[str, str]:
    good = {"dkim_key_file": str(key.private_pem), "dkim_selector": SELECTOR}
    junk = folder / "junk.key"
    if case == "selector-without-key":
        return {"dkim_selector": SELECTOR}
    if case == "key-without-selector":
        return {"dkim_key_file": str(key.private_pem)}
    if case == "missing-key-file":
        return {**good, "dkim_key_file": str(folder / "no-such.pem")}
    if case == "key-file-is-a-folder":
        return {**good, "dkim_key_file": str(folder)}
    if case == "key-file-not-pem":
        junk.write_bytes(os.urandom(600))
    elif case == "key-file-is-a-public-key":
        junk.write_bytes(key.public_pem.read_bytes())
    elif case == "pem-armour-around-no-key":
        # Looks like a key to a glance at the armour; dkimpy cannot parse it, so
        # signing would fail in the worker, message after message.
        junk.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    elif case == "selector-not-a-dns-label":
        return {**good, "dkim_selector": "not a label!"}
    elif case == "domain-not-a-domain-name":
        return {**good, "dkim_domain": "mail example.org"}
    return {**good, "dkim_key_file": str(junk)}


TOPIC_ISSUE = [
    ArticleSpec("Telescopes of the north", "https://blog.example.com/telescopes", 1, "",
                ("Science",)),
    ArticleSpec("Opera in the park", "https://blog.example.com/opera", 2, "", ("Culture",)),
    ArticleSpec("The chemistry of paint", "https://blog.example.com/paint", 3, "",
                ("Science", "Culture")),
    ArticleSpec("Cup final preview", "https://blog.example.com/cup", 4, "", ("Sport",)),
    ArticleSpec("Editor's note", "https://blog.example.com/note", 5),
]  # fmt: skip
GAZETTE = [sys.executable, "-m", "gazette"]
OKSANA = next(reader for reader in DEMO_READERS if reader[2] == "uk")
NEW_TITLE = 'Нічні потяги & "Night trains" 夜行列車'
NEW_URL = "https://example.org/night-trains?from=cli&to=digest"


def cli(folder: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
    env["GAZETTE_DATABASE_URL"] = database_url
    return subprocess.run(
        [*GAZETTE, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )


@dataclass(frozen=True)
class State:
    issues: int
    deliveries: int
    outbox: frozenset[str]


def state(folder: Path, database_url: str) -> State:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            issues = connection.scalar(select(func.count()).select_from(Issue)) or 0
            rows = connection.scalar(select(func.count()).select_from(Delivery)) or 0
    finally:
        engine.dispose()
    new = folder / "var" / "outbox" / "new"
    return State(
        issues, rows, frozenset(p.name for p in new.iterdir()) if new.is_dir() else frozenset()
    )


def one_sentence_failure(result: subprocess.CompletedProcess[str], phrase: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert phrase in lines[0]
    assert result.stdout == ""


ATOM = {"atom": "http://www.w3.org/2005/Atom"}
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
ARCHIVED = [
    ArticleSpec('Q&A: "Open data" <beta> & Київ', "https://blog.example.com/a1?x=1&y=2", 72),
    ArticleSpec("東京の夜行列車", "https://blog.example.com/a2", 70),
    ArticleSpec('Ціни на енергію & the "peak"', "https://blog.example.com/a3", 36),
    ArticleSpec("Not sent yet", "https://blog.example.com/a4", 1),
]


@dataclass(frozen=True)
class Archive:
    server: LiveServer
    sent: list[str]  # public ids, newest first
    not_published: list[str]  # a skipped issue, and one planned but not sent


def composed_html(folder: Path) -> str:
    """The HTML part of a real digest message, composed as sending composes it."""
    now = utcnow()
    renderer = Renderer()
    ctx = SendContext(
        base_url=BASE_URL, default_from=FROM, tokens=Tokens([TEST_KEY]), renderer=renderer,
        transport=MaildirTransport(folder / "outbox"), lease=timedelta(minutes=10),
        throttle=make_throttle(None, 0, "digest-test"),
    )  # fmt: skip
    long_link = "https://example.org/" + "a-very-long-path-segment-" * 6 + "end"
    summaries = [
        SUMMARY,
        f'<p>Read more at <a href="{long_link}">{long_link}</a> today.</p>',
        "<p>" + "長い日本語の文章が続きます。" * 12 + "</p>",
    ]
    articles = tuple(
        ArticleView(
            title=spec.title,
            url=spec.url,
            summary_html=clean_html(summary),
            summary_text=html_to_text(clean_html(summary)),
            author="Олександра Іваненко",
            published_at=now - timedelta(hours=spec.hours_ago),
        )
        for spec, summary in zip(BIG_ISSUE, [*summaries, "", ""], strict=True)
    )
    prepared = prepare(
        Newsletter(slug=SLUG, name=NAME), ctx, issue_public_id="layout", date=now,
        planned_at=now, articles=articles,
    )  # fmt: skip
    reader = Reader("layout-reader", "reader@example.org", "Олександра Іваненко-Ковальчук", "uk")
    composed = Composer(prepared, ctx).compose(reader, now)
    assert composed is not None
    _text, html = parts(parse(composed[1]))
    return html
