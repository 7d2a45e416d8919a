"""Previews: the issue a newsletter would send if planned now, changing nothing."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from gazette.digests.composer import Composer, Personalised, Reader, SendContext, prepare
from gazette.digests.content import ContentChoice, article_views
from gazette.digests.editions import has_edition, reader_edition, require_edition
from gazette.digests.routing import carried_languages, reader_extra_languages
from gazette.digests.selection import next_articles
from gazette.errors import GazetteError
from gazette.newsletters.service import newsletter_by_slug
from gazette.store.models import (
    Edition,
    Issue,
    IssueArticle,
    Newsletter,
    Subscription,
    Topic,
    subscription_topic,
)
from gazette.subscribers.service import subscriber_by_email

SAMPLE_READER = Reader(public_id="preview", email="reader@example.org", name="", language="en")


@dataclass(frozen=True)
class Preview:
    """A previewed message: the reader it was made for, its parts and its raw bytes."""

    reader: Reader
    articles: int
    personal: Personalised
    message: bytes
    edition: Edition = Edition.REGULAR
    # The issue whose articles were shown when nothing new was due (latest_if_none).
    from_issue: int | None = None


def _reader_for(session: Session, email: str, newsletter_id: int) -> Reader:
    """The subscriber at ``email`` as a Reader of the newsletter: language and topics."""
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
    latest_if_none: bool = False,
) -> Preview:
    """Compose the message the newsletter's next issue would bring, for a reader or a sample.

    Nothing is written: no issue, no ledger rows. ``to`` addresses the message to
    someone else (a test send) while keeping the chosen reader's language and topics.
    Without an explicit ``edition``, the reader's own (the weekly summary when they
    chose it) is shown. With ``latest_if_none``, a newsletter with nothing new shows
    its latest issue's articles instead, so a template or relay can be tested again
    after a send.
    """
    newsletter = newsletter_by_slug(session, newsletter_slug)
    if edition is None:
        edition = _edition_of(session, as_email, newsletter) if as_email else Edition.REGULAR
    require_edition(newsletter, edition)
    from_issue, article_ids = _articles_to_show(session, newsletter, now, edition, latest_if_none)
    # A fresh id per preview: a mail provider drops a second test whose Message-ID it
    # already holds, which would hide the editor's corrected version.
    prepared = prepare(
        newsletter, ctx, issue_public_id=f"preview-{secrets.token_hex(6)}", date=now,
        planned_at=now,
        articles=article_views(session, article_ids, ContentChoice.of(newsletter)),
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
    return Preview(
        reader, len(composer.articles_for(reader)), personal, composed[1], edition, from_issue
    )


def _articles_to_show(
    session: Session, newsletter: Newsletter, now: datetime, edition: Edition, latest: bool
) -> tuple[int | None, list[int]]:
    """The (issue, article ids) a preview shows; GazetteError when there are none.

    The articles the edition's next issue would carry, from no issue; or, with
    ``latest`` and nothing new, those of the edition's latest issue, and its id.
    """
    article_ids = next_articles(session, newsletter, now, edition)
    from_issue = None
    if not article_ids and latest:
        from_issue, article_ids = _latest_articles(session, newsletter.id, edition)
    if not article_ids:
        kind = "weekly summary" if edition is Edition.WEEKLY else "issue"
        raise GazetteError(
            f"{newsletter.slug} has no articles waiting for its next {kind}: "
            "every recent article has been carried."
        )
    return from_issue, article_ids


def _latest_articles(
    session: Session, newsletter_id: int, edition: Edition
) -> tuple[int | None, list[int]]:
    """The latest issue (of this edition) that carried articles, and those, in order."""
    issue_id = session.scalar(
        select(Issue.id)
        .where(
            Issue.newsletter_id == newsletter_id,
            Issue.edition == edition,
            exists().where(IssueArticle.issue_id == Issue.id),
        )
        .order_by(Issue.planned_at.desc(), Issue.id.desc())
        .limit(1)
    )
    if issue_id is None:
        return None, []
    articles = session.scalars(
        select(IssueArticle.article_id)
        .where(IssueArticle.issue_id == issue_id)
        .order_by(IssueArticle.position)
    )
    return issue_id, list(articles)


def _edition_of(session: Session, email: str, newsletter: Newsletter) -> Edition:
    """The edition a reader receives: weekly only if they chose it and it is offered."""
    if not has_edition(newsletter, Edition.WEEKLY):
        return Edition.REGULAR
    subscriber = subscriber_by_email(session, email)
    frequency = session.scalar(
        select(Subscription.frequency).where(
            Subscription.subscriber_id == subscriber.id,
            Subscription.newsletter_id == newsletter.id,
        )
    )
    return reader_edition(newsletter, frequency)
