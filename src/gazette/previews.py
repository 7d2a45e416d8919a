"""Previews: the issue a newsletter would send if planned now, changing nothing."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gazette.composer import Composer, Personalised, Reader, SendContext, article_views, prepare
from gazette.digests import WEEKLY_FREQUENCY, editions, select_articles, window_start
from gazette.errors import GazetteError
from gazette.languages import carried_languages, reader_extra_languages
from gazette.newsletters import newsletter_by_slug
from gazette.store.models import Edition, Newsletter, Subscription, Topic, subscription_topic
from gazette.subscribers import subscriber_by_email

SAMPLE_READER = Reader(public_id="preview", email="reader@example.org", name="", language="en")


@dataclass(frozen=True)
class Preview:
    """A previewed message: the reader it was made for, its parts and its raw bytes."""

    reader: Reader
    articles: int
    personal: Personalised
    message: bytes
    edition: Edition = Edition.REGULAR


def _reader_for(session: Session, email: str, newsletter_id: int) -> Reader:
    subscriber = subscriber_by_email(session, email)
    topics = session.scalars(
        select(Topic.slug)
        .join(subscription_topic, subscription_topic.c.topic_id == Topic.id)
        .join(Subscription, Subscription.id == subscription_topic.c.subscription_id)
        .where(
            Subscription.subscriber_id == subscriber.id, Subscription.newsletter_id == newsletter_id
        )
    )
    return Reader(
        subscriber.public_id,
        subscriber.email,
        subscriber.name,
        subscriber.language,
        frozenset(topics),
        reader_extra_languages(subscriber.extra_languages),
    )


def preview(
    session: Session,
    ctx: SendContext,
    newsletter_slug: str,
    now: datetime,
    *,
    as_email: str | None = None,
    to: str | None = None,
    edition: Edition | None = None,
) -> Preview:
    """Compose the message the newsletter's next issue would bring, for a reader or a sample.

    Nothing is written: no issue, no ledger rows. ``to`` addresses the message to
    someone else (a test send) while keeping the chosen reader's language and topics.
    Without an explicit ``edition``, the reader's own (the weekly summary when they
    chose it) is shown.
    """
    newsletter = newsletter_by_slug(session, newsletter_slug)
    if edition is None:
        edition = _edition_of(session, as_email, newsletter) if as_email else Edition.REGULAR
    if edition not in editions(newsletter):
        raise GazetteError(
            f"{newsletter_slug} has no weekly edition: its readers cannot choose a frequency."
        )
    since = window_start(session, newsletter.id, now, edition)
    article_ids = select_articles(session, newsletter, now, since, edition=edition)
    if not article_ids:
        last = "weekly summary" if edition is Edition.WEEKLY else "issue"
        raise GazetteError(f"{newsletter_slug} has no new articles since its last {last}.")
    # A fresh id per preview: a mail provider drops a second test whose Message-ID it
    # already holds, which would hide the editor's corrected version.
    prepared = prepare(
        newsletter, ctx, issue_public_id=f"preview-{secrets.token_hex(6)}", date=now,
        planned_at=now, articles=article_views(session, article_ids),
        published=carried_languages(session, newsletter.id),
    )  # fmt: skip
    reader = _reader_for(session, as_email, newsletter.id) if as_email else SAMPLE_READER
    if to is not None:
        # The reader's language and topics, but links that name nobody: an editor who
        # clicks Unsubscribe in a test message must not unsubscribe the real reader.
        reader = replace(reader, public_id="preview", email=to)
    composer = Composer(prepared, ctx)
    personal = composer.personalise(reader)
    composed = composer.compose(reader, now)
    if personal is None or composed is None:
        raise GazetteError(f"{reader.email} would receive nothing: {composer.skip_reason(reader)}.")
    # The reader's own count: with routing by language or topics, not the issue's.
    return Preview(reader, len(composer.articles_for(reader)), personal, composed[1], edition)


def _edition_of(session: Session, email: str, newsletter: Newsletter) -> Edition:
    """The edition a reader receives: weekly only if they chose it and it is offered."""
    if Edition.WEEKLY not in editions(newsletter):
        return Edition.REGULAR
    subscriber = subscriber_by_email(session, email)
    frequency = session.scalar(
        select(Subscription.frequency).where(
            Subscription.subscriber_id == subscriber.id,
            Subscription.newsletter_id == newsletter.id,
        )
    )
    return Edition.WEEKLY if frequency == WEEKLY_FREQUENCY else Edition.REGULAR
