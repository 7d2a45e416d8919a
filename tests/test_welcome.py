"""The welcome: after a reader confirms, what they will get and when, the latest issue,
and how to change preferences; once per confirmation, on unless the newsletter says no."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from gazette.newsletters.brand import PresentationChanges, apply_presentation
from gazette.newsletters.service import create_newsletter, newsletter_by_slug
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Event, Subscriber, Subscription
from gazette.subscribers.notices import send_welcome
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.support.digests import (
    ArticleSpec,
    add_articles,
    add_readers,
    maildir_messages,
    plan,
    send,
)
from tests.support.env import installed_runtime
from tests.support.messages import parse, parts
from tests.support.web import EMAIL, NAME, SLUG, Site, SiteFactory, confirm_path

# A Wednesday; the newsletter goes out on Mondays at 08:00 UTC.
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
NEXT_ISSUE = {"en": "December 7, 2026", "uk": "7 грудня 2026\u202fр.", "ja": "2026年12月7日"}
WELCOME_SUBJECT = {"en": "Welcome to The Weekly", "uk": "Ласкаво просимо до The Weekly",
                   "ja": "The Weeklyへようこそ"}  # fmt: skip


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    with installed_runtime(
        tmp_path, database_url, publisher="Kyiv Policy Lab", postal_address="Kyiv 01001"
    ) as built:
        with transaction(built.sessions) as session:
            create_newsletter(session, "weekly", "The Weekly")
        yield built


def subscription_id(runtime: Runtime, email: str) -> int:
    with runtime.sessions() as session:
        return session.scalars(
            select(Subscription.id)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscriber.email == email)
        ).one()


def welcome(runtime: Runtime, email: str) -> bool:
    return send_welcome(
        runtime.sessions, runtime.send_context, subscription_id(runtime, email), NOW
    )


@pytest.mark.parametrize("language", ["en", "uk", "ja"])
def test_welcome_says_what_when_latest_issue_and_preferences(
    runtime: Runtime, language: str
) -> None:
    add_articles(runtime, [ArticleSpec("Grid storage", "https://example.org/grid", 2)])
    add_readers(runtime, [("early@example.org", "", "en")], slug="weekly")
    with runtime.sessions() as session:
        newsletter_id = newsletter_by_slug(session, "weekly").id
    issue_id, public_id, _status = plan(runtime, newsletter_id)
    send(runtime, issue_id)
    before = len(maildir_messages(runtime))
    add_readers(runtime, [("new@example.org", "Oksana", language)], slug="weekly")

    assert welcome(runtime, "new@example.org")

    messages = maildir_messages(runtime)[before:]
    assert len(messages) == 1
    message = parse(messages[0])
    assert message["Subject"] == WELCOME_SUBJECT[language]
    assert message["To"].endswith("<new@example.org>")
    assert message["List-Unsubscribe"].startswith("<https://news.example.org/unsubscribe/")
    text, html = parts(message)
    for part in (text, html):
        # The text part is wrapped at 78 columns, so a date may span two lines.
        assert NEXT_ISSUE[language] in re.sub(r" *\n *", " ", part)
        assert f"https://news.example.org/archive/{public_id}" in part
        assert re.search(r"https://news\.example\.org/preferences/[\w.-]+", part)
        assert re.search(r"https://news\.example\.org/unsubscribe/[\w.-]+", part)
        assert "Kyiv Policy Lab" in part
        assert "Kyiv 01001" in part
    assert "Oksana" in text


def test_welcome_without_an_archive_points_to_it(runtime: Runtime) -> None:
    add_readers(runtime, [("new@example.org", "", "en")], slug="weekly")
    assert welcome(runtime, "new@example.org")
    text, _html = parts(parse(maildir_messages(runtime)[0]))
    archive = "https://news.example.org/archive?newsletter=weekly"
    assert f"Past issues will appear in the archive:\n{archive}" in text


def test_welcome_goes_once_per_confirmation(runtime: Runtime) -> None:
    add_readers(runtime, [("new@example.org", "", "en")], slug="weekly")
    sid = subscription_id(runtime, "new@example.org")
    assert send_welcome(runtime.sessions, runtime.send_context, sid, NOW)
    # A task delivered twice finds the event and sends nothing more.
    assert not send_welcome(runtime.sessions, runtime.send_context, sid, NOW)
    assert len(maildir_messages(runtime)) == 1
    with runtime.sessions() as session:
        kinds = session.scalars(select(Event.kind).where(Event.kind == "welcome_sent")).all()
    assert kinds == ["welcome_sent"]


def test_no_welcome_when_turned_off(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        apply_presentation(
            newsletter_by_slug(session, "weekly"), PresentationChanges(welcome=False)
        )
    add_readers(runtime, [("new@example.org", "", "en")], slug="weekly")
    assert not welcome(runtime, "new@example.org")
    assert maildir_messages(runtime) == []


def test_no_welcome_for_a_pending_or_missing_subscription(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        subscribe(session, "pending@example.org", "weekly", Origin("web"))
    sid = subscription_id(runtime, "pending@example.org")
    assert not send_welcome(runtime.sessions, runtime.send_context, sid, NOW)
    assert not send_welcome(runtime.sessions, runtime.send_context, sid + 1000, NOW)
    assert maildir_messages(runtime) == []


# --- through the web: confirming sends it ---------------------------------------------


def confirm_by_link(site: Site) -> None:
    """Subscribe on the form, then press the confirm button twice."""
    browser = site.browser()
    form = browser.get(f"/subscribe?newsletter={SLUG}").form("/subscribe")
    assert browser.submit(form, email=EMAIL).status == 200
    path = confirm_path(site.smtp.messages[0])
    confirm_form = browser.get(path).form(path)
    assert browser.submit(confirm_form).status == 200
    # A second press confirms nothing new, so nothing more is sent.
    assert browser.submit(confirm_form).status == 200


def test_confirming_on_the_web_sends_the_welcome(make_site: SiteFactory) -> None:
    site = make_site(publisher="Kyiv Policy Lab")
    confirm_by_link(site)
    assert len(site.smtp.messages) == 2
    welcome = parse(site.smtp.messages[1].data)
    assert welcome["Subject"] == f"Welcome to {NAME}"
    text, _html = parts(welcome)
    assert "Kyiv Policy Lab" in text


def test_confirming_sends_no_welcome_when_turned_off(make_site: SiteFactory) -> None:
    site = make_site()
    with transaction(site.runtime.sessions) as session:
        apply_presentation(newsletter_by_slug(session, SLUG), PresentationChanges(welcome=False))
    confirm_by_link(site)
    assert len(site.smtp.messages) == 1
