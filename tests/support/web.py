"""The subscription site served over real HTTP, and what the web tests read back from it.

A Site is one installation with the app behind waitress and the suite's SMTP sink; the
helpers read its database and its mail as a reader's browser and mailbox would see them.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage

from sqlalchemy import func, select

from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Event, Newsletter, Subscriber, Subscription, SubscriptionStatus
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from gazette.web.csrf import FIELD
from tests.support.http import Browser, LiveServer, Page
from tests.support.smtp import Received, SMTPServer

SLUG = "test-weekly"
NAME = "Test Weekly"
OTHER_SLUG = "test-monthly"
OTHER_NAME = "Test Monthly"
BASE_URL = "https://news.example.org"
EMAIL = "oksana.kovalenko@example.org"
ACTIVE_EMAIL = "taro.yamada@example.org"
CONFIRM_LINK = re.compile(re.escape(BASE_URL) + r"(/confirm/[A-Za-z0-9_.-]+)")
SENT_TITLE = "Check your inbox"
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@dataclass
class Site:
    """A runtime on a fresh database, its app served on loopback, and the SMTP server."""

    runtime: Runtime
    smtp: SMTPServer
    server: LiveServer

    def browser(self, *, cookies: bool = True) -> Browser:
        return Browser(self.server, cookies=cookies)


SiteFactory = Callable[..., Site]


def add_reader(
    runtime: Runtime,
    email: str,
    *,
    confirmed: bool,
    language: str = "en",
    slugs: tuple[str, ...] = (SLUG,),
) -> str:
    """Subscribe ``email`` directly (no web, no mail); return their public id."""
    with transaction(runtime.sessions) as session:
        for slug in slugs:
            result = subscribe(
                session, email, slug, Origin("cli"), language=language, confirmed=confirmed
            )
        subscriber = session.get_one(Subscriber, result.subscriber_id)
        return subscriber.public_id


def find_subscriber(runtime: Runtime, email: str) -> Subscriber | None:
    with runtime.sessions() as session:
        return session.scalar(select(Subscriber).where(Subscriber.email == email))


def subscriber_count(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Subscriber)) or 0


def status_of(runtime: Runtime, email: str, slug: str = SLUG) -> SubscriptionStatus | None:
    with runtime.sessions() as session:
        return session.scalar(
            select(Subscription.status)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .join(Newsletter, Newsletter.id == Subscription.newsletter_id)
            .where(Subscriber.email == email, Newsletter.slug == slug)
        )


def events(runtime: Runtime) -> Counter[str]:
    """How many events of each kind the log holds."""
    with runtime.sessions() as session:
        return Counter(session.scalars(select(Event.kind)))


@dataclass(frozen=True)
class Snapshot:
    """Everything a reader's link could change: statuses, languages, topics, events."""

    statuses: dict[tuple[str, str], SubscriptionStatus]
    languages: dict[str, str]
    topics: dict[tuple[str, str], frozenset[str]]
    events: Counter[str]


def snapshot(runtime: Runtime) -> Snapshot:
    with runtime.sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Newsletter.slug, Subscription)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .join(Newsletter, Newsletter.id == Subscription.newsletter_id)
        ).all()
        statuses = {(email, slug): sub.status for email, slug, sub in rows}
        topics = {(email, slug): frozenset(t.slug for t in sub.topics) for email, slug, sub in rows}
        languages = dict(session.execute(select(Subscriber.email, Subscriber.language)).all())
    return Snapshot(statuses, languages, topics, events(runtime))


def plain_body(received: Received) -> str:
    """The text part of a message, its quoted-printable decoded by the email package."""
    message = received.parsed()
    assert isinstance(message, EmailMessage)
    plain = message.get_body(("plain",))
    assert plain is not None
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    content = plain.get_content()
    assert isinstance(content, str)
    return content


def confirm_path(received: Received) -> str:
    """The path of the one confirm link in a confirmation message."""
    links = CONFIRM_LINK.findall(plain_body(received))
    assert len(links) == 1, links
    return str(links[0])


def token_of(path: str) -> str:
    return path.rsplit("/", 1)[1]


def title_of(page: Page) -> str:
    match = re.search(r"<h1>(.*?)</h1>", page.text, re.S)
    assert match is not None, page.text
    return html.unescape(match.group(1)).strip()


def visible_text(page: Page) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.text))


def subscribe_form(browser: Browser, query: str = "") -> tuple[Page, str]:
    """GET the subscribe form; return the page and its CSRF token."""
    page = browser.get("/subscribe" + query)
    assert page.status == 200, page.text
    return page, page.form("/subscribe").value(FIELD)


SPELLINGS = (
    "Mailbox@example.com",
    "mailbox@example.com",
    "MAILBOX@EXAMPLE.COM",
    "mailbox@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",  # full-width "example"
    "MailBox@Example.Com",
)
