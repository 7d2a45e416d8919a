"""Helpers for the digest tests: a runtime on a real database, seeding, and message checks.

What a reader's mail client sees is checked from the bytes that arrive (Maildir file or
aiosmtpd), parsed with the standard library's modern policy; the HTML part is read with
html.parser, as a client would, never by searching the markup for substrings alone.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from sqlalchemy import select
from sqlalchemy.orm import Session

from gazette.articles.service import ArticleInput, upsert_article
from gazette.digests.planning import plan_issue
from gazette.rendering import IssueView, RenderedMessage
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Delivery, Issue, IssueArticle, IssueStatus, Subscriber, utcnow
from gazette.subscribers.preferences import update_preferences
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from worker import tasks

SLUG = "test-weekly"
NAME = "Test Weekly"
DOMAIN = "news.example.org"
BASE_URL = f"https://{DOMAIN}"
FROM = f"digest@{DOMAIN}"
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


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


def add_article(
    session: Session,
    title: str,
    published_at: datetime,
    *,
    topics: Iterable[str] = (),
    guid: str = "",
    language: str | None = None,
    url: str | None = None,
) -> int:
    """Store one article (its URL made from its title unless given); return its id."""
    slug = "-".join(title.lower().split())
    return upsert_article(
        session,
        ArticleInput(
            title=title,
            url=url or f"https://news.example.org/{slug}",
            published_at=published_at,
            guid=guid,
            language=language,
            topics=list(topics),
        ),
    ).article_id


def carried(session: Session, issue_id: int) -> list[int]:
    """The ids of the articles the issue carries, in its order."""
    return list(
        session.scalars(
            select(IssueArticle.article_id)
            .where(IssueArticle.issue_id == issue_id)
            .order_by(IssueArticle.position)
        )
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


# --- DKIM ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RsaKey:
    private_pem: Path
    public_pem: Path
    public_der_b64: bytes


def generate_rsa_key(folder: Path) -> RsaKey:
    """A 2048-bit RSA key made with the openssl command, as an operator makes one."""
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


def start_chromium(
    profile: Path,
    *flags: str,
    window: str | None = "1200,900",
    prefs: dict[str, str] | None = None,
) -> WebDriver:
    """Headless Chromium from /usr/bin; selenium must not try to fetch a driver (SE_OFFLINE).

    ``flags`` are added to the usual ones; ``window`` is the size (None: Chromium's own);
    ``prefs`` are Chromium preferences.
    """
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
        *([f"--window-size={window}"] if window else []),
        f"--user-data-dir={profile}",
        *flags,
    ):
        options.add_argument(flag)
    if prefs:
        options.add_experimental_option("prefs", prefs)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


@contextmanager
def chromium_session(profile: Path, **options: Any) -> Iterator[WebDriver]:
    """start_chromium(profile, **options) until the block ends, then quit it."""
    driver = start_chromium(profile, **options)
    try:
        yield driver
    finally:
        driver.quit()


def js(driver: WebDriver, script: str) -> Any:
    return driver.execute_script(script)
