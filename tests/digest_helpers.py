"""Helpers for the digest tests: a runtime on a real database, seeding, and message checks.

What a reader's mail client sees is checked from the bytes that arrive (Maildir file or
aiosmtpd), parsed with the standard library's modern policy; the HTML part is read with
html.parser, as a client would, never by searching the markup for substrings alone.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from sqlalchemy import select

from gazette.articles import ArticleInput, upsert_article
from gazette.config import load_settings
from gazette.digests import plan_issue
from gazette.rendering import IssueView, RenderedMessage
from gazette.runtime import Runtime, build_runtime, use_runtime
from gazette.store import migrate
from gazette.store.db import transaction
from gazette.store.models import Delivery, Issue, IssueStatus, Subscriber, utcnow
from gazette.subscribers import Origin, subscribe, update_preferences
from tests.conftest import make_env
from worker import tasks

SLUG = "test-weekly"
NAME = "Test Weekly"
DOMAIN = "news.example.org"
BASE_URL = f"https://{DOMAIN}"
FROM = f"digest@{DOMAIN}"
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Tags a text part must never show; "<https://...>" link annotations are not tags.
HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>]*)?/?>")
HTML_ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);")


@dataclass(frozen=True)
class Words:
    """The built-in theme's words in one language, as its catalogue has them."""

    greeting: str  # with {} for the name
    anonymous: str
    read: str
    view: str
    view_text: str
    unsubscribe: str
    preferences: str
    more: str  # with {} for the count
    preheader: Callable[[int], str]


WORDS = {
    "en": Words(
        "Hello, {}!",
        "Hello!",
        "Read the article",
        "View in your browser",
        "View this issue in your browser",
        "Unsubscribe",
        "Manage your preferences",
        "and {} more",
        lambda n: f"{n} new article for you" if n == 1 else f"{n} new articles for you",
    ),
    "uk": Words(
        "Вітаємо, {}!",
        "Вітаємо!",
        "Читати статтю",
        "Відкрити в браузері",
        "Цей випуск у браузері",
        "Відписатися",
        "Налаштування підписки",
        "та ще {}",
        # Ukrainian plural forms: 1 стаття, 2-4 статті, 5+ статей.
        lambda n: (
            f"{n} нова стаття для вас"
            if n % 10 == 1 and n % 100 != 11
            else f"{n} нові статті для вас"
            if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14
            else f"{n} нових статей для вас"
        ),
    ),
    "ja": Words(
        "{} 様",
        "こんにちは。",
        "記事を読む",
        "ブラウザで表示",
        "この号をブラウザで読む",
        "配信停止",
        "配信設定の変更",
        "ほか{}件",
        lambda n: f"あなたへの新着記事 {n} 件",
    ),
}


def greeting(language: str, name: str) -> str:
    words = WORDS[language]
    return words.greeting.format(name) if name else words.anonymous


def expected_subject(newsletter: str, titles: list[str], language: str) -> str:
    """The built-in subject: the first title, and how many more in the reader's language."""
    subject = f"{newsletter}: {titles[0]}"
    if len(titles) > 1:
        subject += " " + WORDS[language].more.format(len(titles) - 1)
    return " ".join(subject.split())


# --- runtime and data -----------------------------------------------------------------


@contextmanager
def installed_runtime(tmp_path: Path, database_url: str, **extra: str) -> Iterator[Runtime]:
    """A migrated database and a runtime built from make_env(**extra), installed for tasks."""
    from worker.app import configure

    settings = load_settings(make_env(tmp_path, database_url, **extra), cwd=tmp_path)
    built = build_runtime(settings)
    migrate.upgrade(built.engine)
    use_runtime(built)
    configure(settings)
    try:
        yield built
    finally:
        use_runtime(None)


@dataclass(frozen=True)
class ArticleSpec:
    title: str
    url: str
    hours_ago: float
    summary: str = ""
    topics: tuple[str, ...] = ()


def add_articles(runtime: Runtime, specs: list[ArticleSpec], now: datetime | None = None) -> None:
    now = now or utcnow()
    with transaction(runtime.sessions) as session:
        for spec in specs:
            upsert_article(
                session,
                ArticleInput(
                    title=spec.title,
                    url=spec.url,
                    published_at=now - timedelta(hours=spec.hours_ago),
                    summary=spec.summary,
                    topics=list(spec.topics),
                ),
            )


@dataclass(frozen=True)
class SeededReader:
    email: str
    name: str
    language: str
    public_id: str
    topics: frozenset[str] = frozenset()


def add_readers(
    runtime: Runtime, readers: list[tuple[str, str, str]], slug: str = SLUG
) -> dict[str, SeededReader]:
    """Subscribe (confirmed) each (email, name, language); return them by address."""
    with transaction(runtime.sessions) as session:
        for email, name, language in readers:
            subscribe(
                session, email, slug, Origin("import"), name=name, language=language, confirmed=True
            )
        session.flush()
        rows = session.execute(select(Subscriber.email, Subscriber.public_id)).all()
    public_ids = dict(rows)
    return {
        email: SeededReader(email, name, language, public_ids[email])
        for email, name, language in readers
    }


def choose_topics(runtime: Runtime, reader: SeededReader, topics: list[str]) -> SeededReader:
    """Save the reader's topic choice as the preferences page does."""
    with transaction(runtime.sessions) as session:
        update_preferences(
            session, reader.public_id, SLUG, Origin("web"), language=reader.language,
            topics=topics, frequency=None,
        )  # fmt: skip
    return SeededReader(
        reader.email, reader.name, reader.language, reader.public_id, frozenset(topics)
    )


def plan(
    runtime: Runtime, newsletter_id: int, now: datetime | None = None, key: str | None = None
) -> tuple[int, str, IssueStatus]:
    """Plan an issue; return its id, public id and status."""
    with transaction(runtime.sessions) as session:
        result = plan_issue(session, newsletter_id, now or utcnow(), key)
        assert result.created
        public_id = session.get_one(Issue, result.issue_id).public_id
    return result.issue_id, public_id, result.status


def send(runtime: Runtime, issue_id: int) -> Issue:
    """Send the planned issue with the tasks running in-process; return it afterwards."""
    tasks.enqueue_issue(issue_id)
    with runtime.sessions() as session:
        return session.get_one(Issue, issue_id)


def deliveries(runtime: Runtime, issue_id: int) -> dict[str, Delivery]:
    """The issue's ledger rows by reader address."""
    with runtime.sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.issue_id == issue_id)
        ).all()
    return dict(rows)


def maildir_messages(runtime: Runtime) -> list[bytes]:
    """Every message in the runtime's Maildir outbox, in the order written."""
    outbox = runtime.settings.smtp.path
    assert outbox is not None
    folder = outbox / "new"
    return [p.read_bytes() for p in sorted(folder.iterdir())] if folder.is_dir() else []


@dataclass
class RenderLog:
    """Calls of Renderer.render_issue: (language, the titles it rendered)."""

    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)


def count_renders(monkeypatch: pytest.MonkeyPatch, runtime: Runtime) -> RenderLog:
    """Wrap the runtime's render_issue with a counter (sending uses the same renderer)."""
    assert runtime.send_context.renderer is runtime.renderer
    original = runtime.renderer.render_issue
    log = RenderLog()

    def counting(view: IssueView, language: str, template_set: str = "digest") -> RenderedMessage:
        log.calls.append((language, tuple(a.title for a in view.articles)))
        return original(view, language, template_set)

    monkeypatch.setattr(runtime.renderer, "render_issue", counting)
    return log


# --- reading messages -----------------------------------------------------------------


def parse(data: bytes) -> EmailMessage:
    """Parse with the modern policy; the message and each part must have no defects."""
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message.defects == [], message.defects
    for part in message.walk():
        assert part.defects == [], part.defects
    return message


def check_wire_format(data: bytes) -> None:
    """CRLF line ends only, and no line longer than 998 octets (RFC 5322 2.1.1)."""
    assert data.endswith(b"\r\n")
    assert data.count(b"\n") == data.count(b"\r\n"), "a bare LF"
    assert data.count(b"\r") == data.count(b"\r\n"), "a bare CR"
    longest = max(len(line) for line in data.split(b"\r\n"))
    assert longest <= 998, f"a line of {longest} octets"


def raw_header_lines(data: bytes) -> list[bytes]:
    """The header section's physical lines, folding kept."""
    head, separator, _body = data.partition(b"\r\n\r\n")
    assert separator, "no blank line after the headers"
    return head.split(b"\r\n")


def raw_header(data: bytes, name: str) -> list[bytes]:
    """Every physical line of every occurrence of header ``name`` (first line first)."""
    lines = raw_header_lines(data)
    found: list[bytes] = []
    prefix = name.lower().encode("ascii") + b":"
    for n, line in enumerate(lines):
        if line.lower().startswith(prefix):
            found.append(line)
            for more in lines[n + 1 :]:
                if not more.startswith((b" ", b"\t")):
                    break
                found.append(more)
    return found


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text, HTML) of a multipart/alternative digest, decoded."""
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None
    assert html is not None
    for part in (plain, html):
        assert part.get_content_charset() == "utf-8"
    # Decoded quoted-printable keeps the canonical CRLF line ends; read them as lines.
    return (
        plain.get_content().replace("\r\n", "\n"),
        html.get_content().replace("\r\n", "\n"),
    )


def listed_titles(text: str) -> list[str]:
    """The article titles of a text part, from its numbered lines ("1. Title")."""
    return re.findall(r"^\d+\. (.+)$", text, flags=re.MULTILINE)


class HtmlDocument(HTMLParser):
    """What a client shows of an HTML part: links with their text, visible and hidden text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.lang: str | None = None
        self.tags: list[str] = []
        self._visible: list[str] = []
        self._hidden: list[str] = []
        self._stack: list[tuple[str, bool]] = []
        self._href: str | None = None
        self._link_text: list[str] = []
        self.feed(html)
        self.close()

    @property
    def text(self) -> str:
        return " ".join(" ".join(self._visible).split())

    @property
    def hidden_text(self) -> str:
        return " ".join(" ".join(self._hidden).split())

    def _is_hidden(self) -> bool:
        return any(hidden for _tag, hidden in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "html":
            self.lang = a.get("lang")
        if tag == "a":
            self._href, self._link_text = a.get("href", ""), []
        if tag in {"meta", "link", "br", "img", "hr", "input"}:
            return
        style = a.get("style", "").replace(" ", "").lower()
        self._stack.append((tag, "display:none" in style))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, " ".join("".join(self._link_text).split())))
            self._href = None
        while self._stack:
            top, _hidden = self._stack.pop()
            if top == tag:
                break

    def handle_data(self, data: str) -> None:
        if any(tag in ("style", "title", "script") for tag, _hidden in self._stack):
            return
        (self._hidden if self._is_hidden() else self._visible).append(data)
        if self._href is not None:
            self._link_text.append(data)

    def hrefs(self, text: str) -> list[str]:
        """The targets of the links whose text starts with ``text``."""
        return [href for href, label in self.links if label.startswith(text)]


# --- DKIM ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RsaKey:
    private_pem: Path
    public_pem: Path
    public_der_b64: bytes


def generate_rsa_key(folder: Path) -> RsaKey:
    """A 2048-bit RSA key made with openssl (cryptography is not installed)."""
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / "dkim.pem", folder / "dkim.pub.pem"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(private), "2048"], check=True, capture_output=True
    )
    subprocess.run(
        ["openssl", "rsa", "-in", str(private), "-pubout", "-out", str(public)],
        check=True,
        capture_output=True,
    )
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(private), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return RsaKey(private, public, base64.b64encode(der))


def dkim_tags(message: EmailMessage) -> dict[str, str]:
    """The tags of the message's DKIM-Signature, whitespace removed."""
    values = message.get_all("DKIM-Signature") or []
    assert len(values) == 1, values
    unfolded = "".join(str(values[0]).split())
    return dict(tag.split("=", 1) for tag in unfolded.split(";") if tag)


# --- Chromium -------------------------------------------------------------------------


def artifacts_dir(name: str) -> Path:
    """$GAZETTE_ARTIFACTS/<name> (a relative path read from the repository root)."""
    base = Path(os.environ.get("GAZETTE_ARTIFACTS", str(REPO / "artifacts")))
    folder = (base if base.is_absolute() else REPO / base) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def require_chromium() -> None:
    """Skip when Debian's chromium or its driver is missing; fail instead in CI."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if not missing:
        return
    why = (
        f"{' and '.join(missing)} not found: install Debian's chromium and chromium-driver "
        "packages to run the digest layout test"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI installs them, so this is a broken CI image).", pytrace=False)
    pytest.skip(why)


def start_chromium(profile: Path) -> WebDriver:
    """Headless Chromium from /usr/bin; selenium must not try to fetch a driver (SE_OFFLINE)."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def js(driver: WebDriver, script: str) -> Any:
    return driver.execute_script(script)
