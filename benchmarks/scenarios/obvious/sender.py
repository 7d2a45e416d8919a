"""The obvious approach's task: one Celery task per message, everything done per message.

Each task opens a database session, loads its delivery, the reader, the issue and its
articles, renders Gazette's digest templates with Jinja from scratch (subject, text and
HTML), builds an ``email.message.EmailMessage`` with ``email.policy.SMTP``, opens a new
SMTP connection for the one message, and marks the delivery sent. The Jinja environment
(compiled templates, translations) and the database engine are built once per process,
as any application would; everything else is per message.

It does not inline CSS, which Gazette does once per issue: that favours this approach.
"""

from __future__ import annotations

import gettext
import io
import smtplib
from collections.abc import Iterable
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from functools import cache
from typing import Any

from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from benchmarks.scenarios.obvious.app import app
from gazette.config import Settings, load_settings
from gazette.newsletters.brand import brand_for
from gazette.rendering import ArticleView, IssueView
from gazette.resources import shipped_dir
from gazette.store.db import make_engine, make_session_factory
from gazette.store.models import (
    Article,
    Delivery,
    DeliveryStatus,
    Issue,
    IssueArticle,
    Newsletter,
    Subscriber,
    utcnow,
)
from gazette.text import html_to_text
from gazette.tokens import Purpose, Tokens

LANGUAGES = ("en", "uk", "ja")


@cache
def settings() -> Settings:
    """This process's settings, read once."""
    return load_settings()


@cache
def sessions() -> sessionmaker[Session]:
    """The session factory, built in each worker process on first use (after the fork)."""
    return make_session_factory(make_engine(settings().database_url))


@cache
def tokens() -> Tokens:
    return Tokens(settings().secret_keys)


@cache
def _translations(language: str) -> gettext.NullTranslations:
    path = shipped_dir("templates") / "locale" / language / "LC_MESSAGES" / "messages.po"
    if not path.exists():
        return gettext.NullTranslations()
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


@cache
def environment(language: str) -> Environment:
    """A Jinja environment over Gazette's templates, with the language's translations."""
    env = Environment(
        loader=FileSystemLoader(str(shipped_dir("templates"))),
        autoescape=lambda name: name is not None and name.endswith(".html.j2"),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.install_gettext_translations(_translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.filters["date"] = lambda value, fmt="long": format_date(value, format=fmt, locale=language)
    env.globals["language"] = language
    return env


def render(language: str, context: dict[str, Any]) -> tuple[str, str, str]:
    """Subject, text and HTML of the digest, rendered in full for one reader."""
    env = environment(language if language in LANGUAGES else "en")
    subject = env.get_template("email/digest.subject.j2").render(context)
    body = env.get_template("email/digest.txt.j2").render(context)
    html = env.get_template("email/digest.html.j2").render(context)
    return " ".join(subject.split()), body, html


def build(
    newsletter: Newsletter,
    subscriber: Subscriber,
    issue: Issue,
    subject: str,
    body: str,
    html: str,
    unsubscribe_url: str,
) -> tuple[str, bytes]:
    """The message as ``email.message.EmailMessage`` with the SMTP policy writes it."""
    cfg = settings()
    sender = newsletter.from_address or cfg.from_address
    message = EmailMessage(policy=SMTP)
    message["From"] = Address(newsletter.name, addr_spec=sender)
    message["To"] = Address(subscriber.name, addr_spec=subscriber.email)
    message["Subject"] = subject
    message["Date"] = format_datetime(utcnow())
    domain = sender.rpartition("@")[2]
    message["Message-ID"] = f"<{issue.public_id}.{subscriber.public_id}@{domain}>"
    message["List-Id"] = f"{newsletter.name} <{newsletter.slug}.{domain}>"
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(body)
    message.add_alternative(html, subtype="html")
    return sender, message.as_bytes()


def _articles(session: Session, issue_id: int) -> list[Article]:
    return list(
        session.scalars(
            select(Article)
            .join(IssueArticle, IssueArticle.article_id == Article.id)
            .where(IssueArticle.issue_id == issue_id)
            .order_by(IssueArticle.position)
        )
    )


def _views(articles: Iterable[Article]) -> tuple[ArticleView, ...]:
    return tuple(
        ArticleView(
            title=a.title,
            url=a.url,
            summary_html=a.summary,
            summary_text=html_to_text(a.summary),
            author=a.author,
            published_at=a.published_at,
        )
        for a in articles
    )


def send_one_now(delivery_id: int) -> bool:
    """Send one delivery's message; return False when it was already sent."""
    cfg = settings()
    with sessions()() as session:
        delivery = session.get_one(Delivery, delivery_id)
        if delivery.status == DeliveryStatus.SENT:
            return False
        subscriber = session.get_one(Subscriber, delivery.subscriber_id)
        issue = session.get_one(Issue, delivery.issue_id)
        newsletter = session.get_one(Newsletter, issue.newsletter_id)
        view = IssueView(
            newsletter_name=newsletter.name,
            date=issue.cutoff_at,
            articles=_views(_articles(session, issue.id)),
            archive_url=f"{cfg.base_url}/archive/{issue.public_id}",
        )
        unsubscribe = tokens().mint(Purpose.UNSUBSCRIBE, subscriber.public_id, newsletter.slug)
        preferences = tokens().mint(Purpose.PREFERENCES, subscriber.public_id, newsletter.slug)
        unsubscribe_url = f"{cfg.base_url}/unsubscribe/{unsubscribe}"
        translations = _translations(subscriber.language)
        greeting = (
            translations.gettext("Hello, %(name)s!") % {"name": subscriber.name}
            if subscriber.name
            else translations.gettext("Hello!")
        )
        context = {
            "issue": view,
            "brand": brand_for(newsletter, cfg.brand),
            "greeting": greeting,
            "unsubscribe_url": unsubscribe_url,
            "preferences_url": f"{cfg.base_url}/preferences/{preferences}",
        }
        subject, body, html = render(subscriber.language, context)
        sender, data = build(newsletter, subscriber, issue, subject, body, html, unsubscribe_url)
        with smtplib.SMTP(cfg.smtp.host, cfg.smtp.port, timeout=cfg.smtp.timeout) as client:
            client.sendmail(sender, [subscriber.email], data)
        delivery.status = DeliveryStatus.SENT
        delivery.sent_at = utcnow()
        delivery.message_id = f"{issue.public_id}.{subscriber.public_id}"
        delivery.attempts += 1
        session.commit()
    return True


@app.task(name="bench.naive.send_one", ignore_result=True)
def send_one(delivery_id: int) -> None:
    """One message, the obvious way."""
    send_one_now(delivery_id)
