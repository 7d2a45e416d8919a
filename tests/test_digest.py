"""Digest issues as readers receive them: headers, parts, languages, DKIM, topics, archive.

Issues are planned in a real database (SQLite, and PostgreSQL when configured) and sent
by the Celery tasks running in-process, to an aiosmtpd server on loopback or to the
Maildir outbox. The command-line tests run `gazette` as a subprocess; the archive is
served by waitress; the layout test opens the HTML part in headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import dkim
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from sqlalchemy import create_engine, func, select

from gazette.articles import clean_html, topic_for
from gazette.composer import Composer, Reader, SendContext, prepare
from gazette.config import load_settings
from gazette.demo import NEWSLETTER as DEMO_SLUG
from gazette.demo import NEWSLETTER_NAME as DEMO_NAME
from gazette.demo import READERS as DEMO_READERS
from gazette.errors import ConfigError
from gazette.mailer import MaildirTransport
from gazette.newsletters import create_newsletter
from gazette.ratelimit import make_throttle
from gazette.rendering import ArticleView, Renderer
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Issue,
    IssueStatus,
    Newsletter,
    utcnow,
)
from gazette.text import html_to_text
from gazette.tokens import Purpose, Tokens
from gazette.web import create_app, server_options
from tests.conftest import TEST_KEY, make_env
from tests.digest_helpers import (
    BASE_URL,
    DOMAIN,
    FROM,
    NAME,
    SLUG,
    WORDS,
    ArticleSpec,
    HtmlDocument,
    RsaKey,
    SeededReader,
    add_articles,
    add_readers,
    artifacts_dir,
    check_wire_format,
    choose_topics,
    count_renders,
    deliveries,
    dkim_tags,
    expected_subject,
    generate_rsa_key,
    greeting,
    installed_runtime,
    js,
    listed_titles,
    maildir_messages,
    parse,
    parts,
    plan,
    raw_header,
    require_chromium,
    send,
    start_chromium,
)
from tests.http import Browser, LiveServer, serve
from tests.smtp import RecordingHandler, SMTPServer
from worker import tasks

LANGUAGES = ("en", "uk", "ja")
UNSUBSCRIBE_LINE = re.compile(
    rb"List-Unsubscribe: <" + re.escape(BASE_URL.encode()) + rb"/unsubscribe/[A-Za-z0-9_.\-]+>"
)
MESSAGE_ID = re.compile(r"<[A-Za-z0-9_.\-]+@" + re.escape(DOMAIN) + ">")


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    server = SMTPServer(RecordingHandler())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_runtime(tmp_path: Path, database_url: str, smtp_server: SMTPServer) -> Iterator[Runtime]:
    with installed_runtime(tmp_path, database_url, smtp_url=smtp_server.url) as built:
        yield built


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> RsaKey:
    return generate_rsa_key(tmp_path_factory.mktemp("dkim"))


def new_newsletter(runtime: Runtime, name: str = NAME) -> int:
    with transaction(runtime.sessions) as session:
        return create_newsletter(session, SLUG, name)


# --- a thousand readers -----------------------------------------------------------------

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


@pytest.mark.slow
def test_a_thousand_reader_issue_arrives_well_formed_in_every_language(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    newsletter_id = new_newsletter(smtp_runtime)
    add_articles(smtp_runtime, BIG_ISSUE)
    readers = add_readers(
        smtp_runtime,
        [
            (f"reader{n:04d}@example.com", reader_name(n), LANGUAGES[n % len(LANGUAGES)])
            for n in range(1000)
        ],
    )
    issue_id, issue_public_id, status = plan(smtp_runtime, newsletter_id)
    assert status == IssueStatus.PLANNED

    issue = send(smtp_runtime, issue_id)

    assert (issue.status, issue.sent_count, issue.failed_count) == (IssueStatus.SENT, 1000, 0)
    assert len(smtp_server.messages) == 1000
    assert Counter(r for m in smtp_server.messages for r in m.recipients) == Counter(readers.keys())
    message_ids: set[str] = set()
    subjects: dict[str, set[str]] = {language: set() for language in LANGUAGES}
    for received in smtp_server.messages:
        assert received.sender == FROM
        reader = readers[received.recipients[0]]
        message_ids.add(
            check_digest(smtp_runtime, received.data, reader, issue_public_id, BIG_ISSUE)
        )
        subjects[reader.language].add(str(received.parsed()["Subject"]))
    assert len(message_ids) == 1000
    # One subject per language, each in that language.
    assert {language: len(found) for language, found in subjects.items()} == {
        "en": 1, "uk": 1, "ja": 1,
    }  # fmt: skip
    [english], [ukrainian], [japanese] = (subjects[language] for language in LANGUAGES)
    assert english.endswith(" and 4 more")
    assert ukrainian.endswith(" та ще 4")
    assert japanese.endswith(" ほか4件")
    assert {row.status for row in deliveries(smtp_runtime, issue_id).values()} == {
        DeliveryStatus.SENT
    }


def test_list_id_of_a_newsletter_with_a_non_ascii_name_keeps_its_identifier_plain(
    runtime: Runtime,
) -> None:
    # RFC 2919: List-Id is a phrase and "<list-id>"; only the phrase may be RFC 2047
    # encoded, or filters that read the raw header (Gmail, Sieve, procmail) find no list.
    name = "Щотижневик «Меридіан»"
    newsletter_id = new_newsletter(runtime, name)
    add_articles(runtime, BIG_ISSUE[:1])
    add_readers(runtime, [("reader@example.com", "Reader", "uk")])
    issue_id, _public_id, _status = plan(runtime, newsletter_id)
    send(runtime, issue_id)

    [data] = maildir_messages(runtime)
    message = parse(data)
    assert message["List-Id"] == f"{name} <{SLUG}.{DOMAIN}>"
    assert message["From"].addresses[0].display_name == name
    unfolded = b"".join(raw_header(data, "List-Id"))
    assert unfolded.endswith(f" <{SLUG}.{DOMAIN}>".encode()), unfolded


# --- DKIM -------------------------------------------------------------------------------

SELECTOR = "gz2026"
DKIM_DOMAIN = "mail.example.org"


def test_every_message_carries_a_dkim_signature_that_verifies(
    tmp_path: Path, database_url: str, smtp_server: SMTPServer, dkim_key: RsaKey
) -> None:
    record = b"v=DKIM1; k=rsa; p=" + dkim_key.public_der_b64
    queried: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        queried.append(name)
        return (
            record if name.rstrip(b".") == f"{SELECTOR}._domainkey.{DKIM_DOMAIN}".encode() else None
        )

    with installed_runtime(
        tmp_path, database_url, smtp_url=smtp_server.url, dkim_key_file=str(dkim_key.private_pem),
        dkim_selector=SELECTOR, dkim_domain=DKIM_DOMAIN,
    ) as rt:  # fmt: skip
        assert rt.send_context.signer is not None
        newsletter_id = new_newsletter(rt)
        add_articles(rt, BIG_ISSUE[:3])
        readers = add_readers(
            rt, [(f"r{n}@example.com", reader_name(n), LANGUAGES[n % 3]) for n in range(6)]
        )
        issue_id, issue_public_id, _status = plan(rt, newsletter_id)
        assert send(rt, issue_id).sent_count == 6

        assert len(smtp_server.messages) == 6
        for received in smtp_server.messages:
            data = received.data
            assert data.startswith(b"DKIM-Signature:")
            reader = readers[received.recipients[0]]
            check_digest(rt, data, reader, issue_public_id, BIG_ISSUE[:3])
            assert dkim.verify(data, dnsfunc=dns) is True

            tags = dkim_tags(parse(data))
            assert (tags["v"], tags["a"], tags["c"]) == ("1", "rsa-sha256", "relaxed/relaxed")
            assert (tags["d"], tags["s"]) == (DKIM_DOMAIN, SELECTOR)
            signed = set(tags["h"].lower().split(":"))
            assert {"list-unsubscribe", "list-unsubscribe-post"} <= signed
            assert {"from", "to", "subject", "date", "message-id", "list-id"} <= signed

            # The signature covers what one-click unsubscribe relies on, and the body.
            swapped = data.replace(
                f"List-Unsubscribe: <{BASE_URL}/".encode(),
                b"List-Unsubscribe: <https://evil.example.net/",
            )
            assert swapped != data
            assert dkim.verify(swapped, dnsfunc=dns) is False
            dropped = data.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b"")
            assert dropped != data
            assert dkim.verify(dropped, dnsfunc=dns) is False
            body_at = data.index(b"\r\n\r\n") + 4
            edited = data[:body_at] + data[body_at:].replace(
                b"blog.example.com", b"blog.example.net"
            )
            assert edited != data
            assert dkim.verify(edited, dnsfunc=dns) is False
    assert set(queried) == {f"{SELECTOR}._domainkey.{DKIM_DOMAIN}.".encode()}


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


@pytest.mark.parametrize("case", sorted(DKIM_CASES))
def test_bad_dkim_settings_are_a_config_error_naming_the_variable(
    tmp_path: Path, dkim_key: RsaKey, case: str
) -> None:
    env = make_env(
        tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", **_dkim_settings(case, tmp_path, dkim_key)
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(env, cwd=tmp_path)
    message = str(raised.value)
    assert DKIM_CASES[case] in message
    assert "\n" not in message
    assert "PRIVATE KEY" not in message


# --- topics and rendering once ----------------------------------------------------------

TOPIC_ISSUE = [
    ArticleSpec("Telescopes of the north", "https://blog.example.com/telescopes", 1, "",
                ("Science",)),
    ArticleSpec("Opera in the park", "https://blog.example.com/opera", 2, "", ("Culture",)),
    ArticleSpec("The chemistry of paint", "https://blog.example.com/paint", 3, "",
                ("Science", "Culture")),
    ArticleSpec("Cup final preview", "https://blog.example.com/cup", 4, "", ("Sport",)),
    ArticleSpec("Editor's note", "https://blog.example.com/note", 5),
]  # fmt: skip


def test_readers_who_chose_topics_get_only_those_and_equal_choices_share_a_render(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    newsletter_id = new_newsletter(runtime)
    add_articles(runtime, TOPIC_ISSUE)
    with transaction(runtime.sessions) as session:
        topic_for(session, "Gardening")  # offered, but no article of this issue has it
    seeded = add_readers(
        runtime,
        [
            ("sci1@example.com", "Sci One", "en"),
            ("sci2@example.com", "Sci Two", "en"),
            ("sci3@example.com", "Наука Три", "uk"),
            ("arts@example.com", "Culture Sport", "en"),
            ("garden@example.com", "Gardener", "en"),
            ("all1@example.com", "All One", "en"),
            ("all2@example.com", "All Two", "en"),
        ],
    )
    chosen = {
        "sci1@example.com": ["science"],
        "sci2@example.com": ["science"],
        "sci3@example.com": ["science"],
        "arts@example.com": ["culture", "sport"],
        "garden@example.com": ["gardening"],
    }
    readers = {
        email: choose_topics(runtime, reader, chosen[email]) if email in chosen else reader
        for email, reader in seeded.items()
    }
    renders = count_renders(monkeypatch, runtime)
    issue_id, issue_public_id, _status = plan(runtime, newsletter_id)

    issue = send(runtime, issue_id)

    titles = [a.title for a in TOPIC_ISSUE]
    science = [titles[0], titles[2]]
    culture_sport = [titles[1], titles[2], titles[3]]
    expected = {
        "sci1@example.com": science,
        "sci2@example.com": science,
        "sci3@example.com": science,
        "arts@example.com": culture_sport,
        "all1@example.com": titles,
        "all2@example.com": titles,
    }
    received: dict[str, list[str]] = {}
    for data in maildir_messages(runtime):
        message = parse(data)
        address = message["To"].addresses[0].addr_spec
        text, html = parts(message)
        received[address] = listed_titles(text)
        reader = readers[address]
        assert greeting(reader.language, reader.name) in text
        assert message["Subject"] == expected_subject(NAME, expected[address], reader.language)
        doc = HtmlDocument(html)
        assert doc.hrefs(WORDS[reader.language].read) == [
            a.url for a in TOPIC_ISSUE if a.title in expected[address]
        ]
        assert doc.hidden_text.startswith(WORDS[reader.language].preheader(len(expected[address])))
        assert doc.hrefs(WORDS[reader.language].view) == [f"{BASE_URL}/archive/{issue_public_id}"]
    assert received == expected

    rows = deliveries(runtime, issue_id)
    assert rows["garden@example.com"].status == DeliveryStatus.SKIPPED
    assert rows["garden@example.com"].last_error == "no article matches the reader's topics"
    assert rows["garden@example.com"].message_id is None
    assert {email for email, row in rows.items() if row.status == DeliveryStatus.SENT} == set(
        expected
    )
    assert (issue.status, issue.sent_count, issue.skipped_count) == (IssueStatus.SENT, 6, 1)
    # One render per (language, article set): sci1 and sci2 share, all1 and all2 share.
    assert sorted(renders.calls) == sorted(
        [
            ("en", tuple(science)),
            ("uk", tuple(science)),
            ("en", tuple(culture_sport)),
            ("en", tuple(titles)),
        ]
    )


def test_an_issue_is_rendered_once_per_language_not_once_per_reader(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with installed_runtime(tmp_path, database_url, batch_size="100") as rt:
        newsletter_id = new_newsletter(rt)
        add_articles(rt, BIG_ISSUE[:2])
        readers = add_readers(
            rt,
            [(f"r{n:03d}@example.com", f"Reader {n:03d}", LANGUAGES[n % 3]) for n in range(300)],
        )
        renders = count_renders(monkeypatch, rt)
        issue_id, _public_id, _status = plan(rt, newsletter_id)

        assert tasks.enqueue_issue(issue_id) == 3  # three batches, one process

        messages = maildir_messages(rt)
        assert len(messages) == 300
        assert Counter(language for language, _titles in renders.calls) == Counter(LANGUAGES)
        assert {titles for _language, titles in renders.calls} == {
            tuple(a.title for a in BIG_ISSUE[:2])
        }
        # Shared renders are still personalised: each reader's own name and links.
        seen = set()
        for data in messages:
            message = parse(data)
            reader = readers[message["To"].addresses[0].addr_spec]
            text, _html = parts(message)
            assert greeting(reader.language, reader.name) in text
            token = str(message["List-Unsubscribe"])[1:-1].rpartition("/")[2]
            assert rt.tokens.read(Purpose.UNSUBSCRIBE, token).subscriber == reader.public_id
            seen.add(reader.email)
        assert seen == set(readers)


# --- templates --------------------------------------------------------------------------


def test_a_template_folder_overrides_one_template_and_keeps_the_rest(
    tmp_path: Path, database_url: str
) -> None:
    theme = tmp_path / "theme"
    (theme / "email").mkdir(parents=True)
    (theme / "email" / "digest.subject.j2").write_text(
        '[{{ _("Archive") }}] {{ issue.newsletter_name }}: {{ issue.articles|length }} new\n',
        encoding="utf-8",
    )
    with installed_runtime(tmp_path, database_url, template_dir=str(theme)) as rt:
        newsletter_id = new_newsletter(rt)
        articles = BIG_ISSUE[1:3]
        add_articles(rt, articles)
        readers = add_readers(
            rt, [("en@example.com", "Ada", "en"), ("uk@example.com", "Оксана", "uk")]
        )
        issue_id, issue_public_id, _status = plan(rt, newsletter_id)
        send(rt, issue_id)
        messages = [parse(data) for data in maildir_messages(rt)]

    assert [p.relative_to(theme).as_posix() for p in theme.rglob("*") if p.is_file()] == [
        "email/digest.subject.j2"
    ]
    subjects = {m["To"].addresses[0].addr_spec: str(m["Subject"]) for m in messages}
    # The operator's template, translated like the built-in ones.
    assert subjects == {
        "en@example.com": f"[Archive] {NAME}: 2 new",
        "uk@example.com": f"[Архів] {NAME}: 2 new",
    }
    for message in messages:
        reader = readers[message["To"].addresses[0].addr_spec]
        words = WORDS[reader.language]
        text, html = parts(message)
        # Text and HTML still come from the built-in theme.
        assert greeting(reader.language, reader.name) in text
        assert listed_titles(text) == [a.title for a in articles]
        assert f"{words.read}: {articles[0].url}" in text
        doc = HtmlDocument(html)
        assert doc.hidden_text.startswith(words.preheader(2))
        assert doc.hrefs(words.view) == [f"{BASE_URL}/archive/{issue_public_id}"]
        assert len(doc.hrefs(words.unsubscribe)) == 1


def test_titles_are_escaped_in_html_and_left_alone_in_text(runtime: Runtime) -> None:
    title = "<b>x</b> & <script>"
    newsletter_id = new_newsletter(runtime)
    add_articles(
        runtime,
        [ArticleSpec(title, "https://blog.example.com/x?a=1&b=2", 1,
                     '<p>A <b>bold</b> move<script>alert(1)</script></p>')],
    )  # fmt: skip
    add_readers(runtime, [("reader@example.com", "<i>Eve</i> & Co", "en")])
    issue_id, _public_id, _status = plan(runtime, newsletter_id)
    send(runtime, issue_id)

    [data] = maildir_messages(runtime)
    message = parse(data)
    text, html = parts(message)
    assert message["Subject"] == f"{NAME}: {title}"

    assert "&lt;b&gt;x&lt;/b&gt; &amp; &lt;script&gt;" in html
    assert "<script" not in html.lower()
    assert "&lt;i&gt;Eve&lt;/i&gt; &amp; Co" in html
    assert "<i>" not in html
    doc = HtmlDocument(html)
    assert ("https://blog.example.com/x?a=1&b=2", title) in doc.links
    assert "Hello, <i>Eve</i> & Co!" in doc.text
    assert "b" in doc.tags  # the sanitised summary keeps its own markup
    assert "A bold move" in doc.text
    assert "alert(1)" not in html

    assert f"1. {title}" in text
    assert "Hello, <i>Eve</i> & Co!" in text
    assert "&lt;" not in text
    assert "&amp;" not in text
    assert "Read the article: https://blog.example.com/x?a=1&b=2" in text


# --- the command line -------------------------------------------------------------------

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


def test_preview_test_send_and_status_from_the_command_line(
    tmp_path: Path, database_url: str
) -> None:
    demo = cli(tmp_path, database_url, "demo")
    assert demo.returncode == 0, demo.stderr
    after_demo = state(tmp_path, database_url)
    assert (after_demo.issues, after_demo.deliveries, len(after_demo.outbox)) == (
        1, len(DEMO_READERS), len(DEMO_READERS),
    )  # fmt: skip
    html_file, eml_file = tmp_path / "preview.html", tmp_path / "preview.eml"
    preview_args = (
        "digest",
        "preview",
        DEMO_SLUG,
        "--as",
        OKSANA[0],
        "--html",
        str(html_file),
        "--eml",
        str(eml_file),
    )

    # Everything went out with the demo's issue: nothing to preview, send or test.
    one_sentence_failure(cli(tmp_path, database_url, *preview_args), "no articles waiting")
    assert not html_file.exists()
    assert not eml_file.exists()
    skipped = cli(tmp_path, database_url, "digest", "send", DEMO_SLUG, "--now")
    assert skipped.returncode == 0, skipped.stderr
    assert "nothing sent" in skipped.stdout
    after_skip = state(tmp_path, database_url)
    assert after_skip == State(after_demo.issues + 1, after_demo.deliveries, after_demo.outbox)

    added = cli(
        tmp_path,
        database_url,
        "articles",
        "add",
        "--title",
        NEW_TITLE,
        "--url",
        NEW_URL,
        "--summary",
        "<p>Sleeper trains are back &amp; busy.</p>",
    )
    assert added.returncode == 0, added.stderr
    assert "added" in added.stdout

    shown = cli(tmp_path, database_url, *preview_args)
    assert shown.returncode == 0, shown.stderr
    assert state(tmp_path, database_url) == after_skip  # a preview changes nothing
    data = eml_file.read_bytes()
    check_wire_format(data)
    message = parse(data)
    to = message["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == [(OKSANA[1], OKSANA[0])]
    assert message["Subject"] == f"{DEMO_NAME}: {NEW_TITLE}"
    assert shown.stdout.splitlines()[0] == f"Subject: {DEMO_NAME}: {NEW_TITLE}"
    text, html = parts(message)
    assert listed_titles(text) == [NEW_TITLE]
    assert greeting("uk", OKSANA[1]) in text
    assert greeting("uk", OKSANA[1]) in shown.stdout
    page = HtmlDocument(html_file.read_text(encoding="utf-8"))
    assert page.lang == "uk"
    assert greeting("uk", OKSANA[1]) in page.text
    assert (NEW_URL, NEW_TITLE) in page.links
    assert page.hidden_text.startswith(WORDS["uk"].preheader(1))
    assert HtmlDocument(html).links == page.links

    tested = cli(tmp_path, database_url, "digest", "test", DEMO_SLUG, "--to", "editor@example.org")
    assert tested.returncode == 0, tested.stderr
    assert "editor@example.org" in tested.stdout
    after_test = state(tmp_path, database_url)
    assert (after_test.issues, after_test.deliveries) == (after_skip.issues, after_skip.deliveries)
    [new_file] = after_test.outbox - after_skip.outbox
    test_data = (tmp_path / "var" / "outbox" / "new" / new_file).read_bytes()
    check_wire_format(test_data)
    test_message = parse(test_data)
    assert [a.addr_spec for a in test_message["To"].addresses] == ["editor@example.org"]
    assert test_message["Subject"] == f"{DEMO_NAME}: {NEW_TITLE}"
    test_text, _test_html = parts(test_message)
    assert WORDS["en"].anonymous in test_text
    assert listed_titles(test_text) == [NEW_TITLE]

    status = cli(tmp_path, database_url, "digest", "status", "--json")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)  # the whole output is one JSON document
    issues = document["issues"]
    assert [row["status"] for row in issues] == ["skipped", "sent"]  # newest first
    assert (issues[1]["newsletter"], issues[1]["sent"], issues[1]["pending"]) == (
        DEMO_SLUG, len(DEMO_READERS), 0,
    )  # fmt: skip
    assert (issues[0]["planned"], issues[0]["sent"]) == (0, 0)


def test_two_test_sends_are_two_messages_with_their_own_message_ids(
    tmp_path: Path, database_url: str
) -> None:
    # Gmail and others drop a message whose Message-ID they already hold: an editor who
    # sends a second test after fixing a typo must receive it.
    assert cli(tmp_path, database_url, "demo").returncode == 0
    added = cli(tmp_path, database_url, "articles", "add", "--title", NEW_TITLE, "--url", NEW_URL)
    assert added.returncode == 0, added.stderr
    before = state(tmp_path, database_url)
    for _ in range(2):
        result = cli(tmp_path, database_url, "digest", "test", DEMO_SLUG, "--to", "ed@example.org")
        assert result.returncode == 0, result.stderr
    new = sorted(state(tmp_path, database_url).outbox - before.outbox)
    assert len(new) == 2
    ids = [
        parse((tmp_path / "var" / "outbox" / "new" / name).read_bytes())["Message-ID"]
        for name in new
    ]
    demo_ids = {
        parse((tmp_path / "var" / "outbox" / "new" / name).read_bytes())["Message-ID"]
        for name in before.outbox
    }
    assert ids[0] != ids[1], ids
    assert not demo_ids & set(ids)


# --- the archive over HTTP --------------------------------------------------------------

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


@pytest.fixture
def archive(runtime: Runtime) -> Iterator[Archive]:
    now = utcnow()
    newsletter_id = new_newsletter(runtime)
    add_articles(runtime, ARCHIVED, now)
    add_readers(runtime, [("a@example.com", "A", "en"), ("b@example.com", "B", "uk")])
    first, first_id, _ = plan(runtime, newsletter_id, now - timedelta(hours=48), "p1")
    assert send(runtime, first).status == IssueStatus.SENT
    second, second_id, _ = plan(runtime, newsletter_id, now - timedelta(hours=24), "p2")
    assert send(runtime, second).status == IssueStatus.SENT
    _skipped, skipped_id, status = plan(runtime, newsletter_id, now - timedelta(hours=12), "p3")
    assert status == IssueStatus.SKIPPED
    _planned, planned_id, status = plan(runtime, newsletter_id, now, "p4")
    assert status == IssueStatus.PLANNED
    with serve(create_app(runtime), **server_options(runtime.settings)) as server:
        yield Archive(server, [second_id, first_id], [skipped_id, planned_id])


def test_the_archive_lists_sent_issues_newest_first_with_their_articles(archive: Archive) -> None:
    browser = Browser(archive.server, cookies=False)
    newest, oldest = archive.sent

    listing = browser.get("/archive")
    assert listing.status == 200
    doc = HtmlDocument(listing.text)
    issue_links = [href for href, _text in doc.links if href.startswith("/archive/")]
    assert issue_links == [f"/archive/{newest}", f"/archive/{oldest}"]
    assert f"{ARCHIVED[1].title} and 1 more" in doc.text  # newest article first
    assert ARCHIVED[2].title in doc.text
    assert ARCHIVED[3].title not in doc.text

    page = browser.get(f"/archive/{oldest}")
    assert page.status == 200
    doc = HtmlDocument(page.text)
    assert (ARCHIVED[0].url, ARCHIVED[0].title) in doc.links
    assert (ARCHIVED[1].url, ARCHIVED[1].title) in doc.links
    assert ARCHIVED[2].title not in doc.text
    assert "<beta>" not in page.text
    page = browser.get(f"/archive/{newest}")
    assert page.status == 200
    assert [(ARCHIVED[2].url, ARCHIVED[2].title)] == [
        link for link in HtmlDocument(page.text).links if "blog.example.com" in link[0]
    ]

    feed = browser.get("/archive.xml")
    assert feed.status == 200
    assert feed.headers["Content-Type"].startswith("application/atom+xml")
    root = ET.fromstring(feed.body)  # well-formed XML, or this raises
    assert root.tag == "{http://www.w3.org/2005/Atom}feed"
    entries = root.findall("atom:entry", ATOM)
    assert [e.findtext("atom:id", namespaces=ATOM) for e in entries] == [
        f"{BASE_URL}/archive/{newest}",
        f"{BASE_URL}/archive/{oldest}",
    ]
    assert [e.find("atom:link", ATOM).get("href") for e in entries] == [  # type: ignore[union-attr]
        f"{BASE_URL}/archive/{newest}",
        f"{BASE_URL}/archive/{oldest}",
    ]
    assert entries[1].findtext("atom:summary", namespaces=ATOM) == (
        f"{ARCHIVED[1].title} · {ARCHIVED[0].title}"
    )
    assert entries[0].findtext("atom:summary", namespaces=ATOM) == ARCHIVED[2].title

    for hidden in [*archive.not_published, "no-such-issue"]:
        missing = browser.get(f"/archive/{hidden}")
        assert missing.status == 404, hidden
        assert hidden not in browser.get("/archive").text
        assert hidden not in feed.text


def test_the_archive_feed_has_what_rfc_4287_requires(archive: Archive) -> None:
    feed = Browser(archive.server, cookies=False).get("/archive.xml")
    assert feed.status == 200
    root = ET.fromstring(feed.body)
    for name in ("id", "title", "updated"):
        assert root.findtext(f"atom:{name}", namespaces=ATOM), f"feed without atom:{name}"
    assert RFC3339.fullmatch(root.findtext("atom:updated", namespaces=ATOM) or "")
    entries = root.findall("atom:entry", ATOM)
    assert len(entries) == 2
    for entry in entries:
        for name in ("id", "title", "updated"):
            assert entry.findtext(f"atom:{name}", namespaces=ATOM), f"entry without atom:{name}"
        assert RFC3339.fullmatch(entry.findtext("atom:updated", namespaces=ATOM) or "")
    # RFC 4287 4.1.1: a feed has an author, unless every entry has one.
    feed_authors = root.findall("atom:author/atom:name", ATOM)
    entry_authors = [entry.findall("atom:author/atom:name", ATOM) for entry in entries]
    assert feed_authors or all(entry_authors), "no atom:author on the feed or its entries"


# --- the HTML part in a browser ---------------------------------------------------------


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


@pytest.fixture
def chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    require_chromium()
    monkeypatch.setenv("SE_OFFLINE", "true")
    driver = start_chromium(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


def test_the_digest_fits_a_phone_and_a_desktop_window(tmp_path: Path, chromium: WebDriver) -> None:
    page = tmp_path / "digest.html"
    page.write_text(composed_html(tmp_path), encoding="utf-8")
    shots = artifacts_dir("digest")
    for width in (375, 1200):
        chromium.set_window_size(width, 900)
        chromium.get(page.as_uri())
        assert js(chromium, "return window.innerWidth") == width
        shot = shots / f"digest-{width}.png"
        assert chromium.save_screenshot(str(shot)), f"no screenshot saved at {shot}"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert greeting("uk", "Олександра Іваненко-Ковальчук") in js(
            chromium, "return document.body.innerText"
        )
        scroll_width = js(chromium, "return document.documentElement.scrollWidth")
        inner_width = js(chromium, "return window.innerWidth")
        assert scroll_width <= inner_width, (
            f"the digest is {scroll_width}px wide in a {inner_width}px window: it scrolls sideways"
        )
        container = js(
            chromium,
            "return document.querySelector('table.container').getBoundingClientRect().width",
        )
        assert container <= min(600, width)
        if width == 1200:
            assert container == 600  # the column keeps its width on a wide screen
