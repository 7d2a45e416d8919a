"""Which articles an edition's next issue carries: its look-back window, what is due.

An article is due for an edition when it was published inside the edition's window,
is taken by the newsletter (its topics, its feeds) and no issue of the edition carried
it yet; the oldest due go first, up to the newsletter's cap, and the rest roll over.
Read-only but for ``record_expired``, so a preview shows exactly what planning freezes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from gazette.digests.editions import NO_WEEKLY_READER
from gazette.store.models import (
    Article,
    Edition,
    Event,
    Feed,
    Issue,
    IssueArticle,
    IssueStatus,
    Newsletter,
    article_feed,
    article_topic,
    newsletter_topic,
)

# Issue.selection: how an issue chose its articles (see the model).
CARRIED_RULE = "carried"
OLD_RULE = "cutoff"
EXPIRED_EVENT = "article_expired"
# An article with no language forms its own group when languages are capped apart.
OWN_LANGUAGES = "own"


def _edition_issues(
    newsletter_id: int, edition: Edition, issue_id: int | None
) -> ColumnElement[bool]:
    """The issues of one edition of a newsletter, but ``issue_id`` (being planned)."""
    condition = (Issue.newsletter_id == newsletter_id) & (Issue.edition == edition)
    if issue_id is not None:
        condition = condition & (Issue.id != issue_id)
    return condition


def upgrade_floor(
    session: Session,
    newsletter_id: int,
    edition: Edition = Edition.REGULAR,
    issue_id: int | None = None,
) -> datetime | None:
    """Cutoff of the edition's last issue that went out under the old rule, if any.

    Issues planned before migration 0006 took "articles published after the previous
    cutoff" and left no record of what they dropped; what was published before the
    last of them counts as carried, so the upgrade sends nothing old.
    """
    return session.scalar(
        select(func.max(Issue.cutoff_at)).where(
            _edition_issues(newsletter_id, edition, issue_id),
            Issue.selection == OLD_RULE,
            Issue.status != IssueStatus.SKIPPED,
        )
    )


def window_start(
    session: Session,
    newsletter_id: int,
    now: datetime,
    edition: Edition = Edition.REGULAR,
    issue_id: int | None = None,
) -> datetime:
    """Where the edition's look-back window starts for an issue cut at ``now``.

    An article published after this and not yet carried by the edition is due. The
    window is the newsletter's --max-age, or back to the previous issue when that was
    longer ago. The weekly summary's (within --max-age) is the week before it, or back
    to its last summary that was sent or had no reader, over summaries skipped for too
    few articles (whose articles roll over); never over weeks without the choice, so
    readers who just chose the summary do not get again what regular issues gave them.
    """
    newsletter = session.get_one(Newsletter, newsletter_id)
    start = now - timedelta(days=newsletter.max_age_days)
    if edition is Edition.WEEKLY:
        start = max(start, _weekly_start(session, newsletter_id, now, issue_id))
    else:
        previous = session.scalar(
            select(func.max(Issue.cutoff_at)).where(
                _edition_issues(newsletter_id, edition, issue_id), Issue.cutoff_at <= now
            )
        )
        if previous is not None:
            # A schedule sparser than --max-age (monthly, 14 days) still carries all
            # that was published since the previous issue: no issue ever saw it.
            start = min(start, previous)
    floor = upgrade_floor(session, newsletter_id, edition, issue_id)
    return max(start, floor) if floor is not None else start


def _weekly_start(
    session: Session, newsletter_id: int, now: datetime, issue_id: int | None
) -> datetime:
    """The weekly summary's own bound: a week, or its last summary not skipped for too few."""
    week_ago = now - timedelta(days=7)
    weekly = _edition_issues(newsletter_id, Edition.WEEKLY, issue_id) & (Issue.cutoff_at <= now)
    latest = session.scalar(select(func.max(Issue.cutoff_at)).where(weekly))
    if latest is None or latest < now - timedelta(days=8):
        return week_ago
    counted = (Issue.status != IssueStatus.SKIPPED) | (Issue.skip_reason == NO_WEEKLY_READER)
    since = session.scalar(select(func.max(Issue.cutoff_at)).where(weekly, counted))
    return since if since is not None else week_ago


def _taken_by(newsletter: Newsletter, session: Session) -> ColumnElement[bool] | None:
    """Which articles the newsletter takes by their feeds; None when every feed feeds all.

    A feed added with --newsletter feeds only that newsletter; any other feed, and the
    CLI or a JSON import (an article seen in no feed), feeds every newsletter.
    """
    elsewhere = session.scalar(
        select(Feed.id)
        .where(Feed.newsletter_id.is_not(None), Feed.newsletter_id != newsletter.id)
        .limit(1)
    )
    if elsewhere is None:
        return None
    seen_in_a_feed = (
        select(article_feed.c.article_id).where(article_feed.c.article_id == Article.id).exists()
    )
    seen_in_ours = (
        select(article_feed.c.article_id)
        .join(Feed, Feed.id == article_feed.c.feed_id)
        .where(
            article_feed.c.article_id == Article.id,
            or_(Feed.newsletter_id.is_(None), Feed.newsletter_id == newsletter.id),
        )
        .exists()
    )
    return ~seen_in_a_feed | seen_in_ours


def _due(
    session: Session,
    newsletter: Newsletter,
    cutoff: datetime,
    since: datetime | None,
    exclude_issue_id: int | None,
    edition: Edition,
) -> Select[int, datetime, str | None]:
    """Articles due for an issue of the edition: in (since, cutoff], taken, not carried.

    Carried means in an issue of the same edition that was not skipped: the weekly
    summary is its own edition, so it repeats the week's regular issues for readers who
    receive nothing else. A skipped issue sent nothing, so its articles stay due.
    """
    carried = (
        select(IssueArticle.article_id)
        .join(Issue, Issue.id == IssueArticle.issue_id)
        .where(
            IssueArticle.article_id == Article.id,
            _edition_issues(newsletter.id, edition, exclude_issue_id),
            Issue.status != IssueStatus.SKIPPED,
        )
        .exists()
    )
    query = select(Article.id, Article.published_at, Article.language).where(
        Article.published_at <= cutoff, Article.withdrawn_at.is_(None), ~carried
    )
    if since is not None:
        query = query.where(Article.published_at > since)
    topic_ids = select(newsletter_topic.c.topic_id).where(
        newsletter_topic.c.newsletter_id == newsletter.id
    )
    if session.scalar(select(func.count()).select_from(topic_ids.subquery())):
        query = query.where(
            Article.id.in_(
                select(article_topic.c.article_id).where(article_topic.c.topic_id.in_(topic_ids))
            )
        )
    taken = _taken_by(newsletter, session)
    if taken is not None:
        query = query.where(taken)
    return query


def select_articles(
    session: Session,
    newsletter: Newsletter,
    cutoff: datetime,
    since: datetime | None,
    exclude_issue_id: int | None = None,
    edition: Edition = Edition.REGULAR,
) -> list[int]:
    """The articles an issue cut at ``cutoff`` carries, newest first.

    Due articles (see ``_due``; ``since`` is ``window_start``) are taken oldest first
    up to --max-articles, so the ones nearest to leaving the window go before newer
    ones, and the rest roll over to the next issue. With article_languages "own", the
    cap holds for each language (no language is a group of its own). Read-only, so a
    preview shows exactly what planning would freeze.
    """
    query = _due(session, newsletter, cutoff, since, exclude_issue_id, edition).order_by(
        Article.published_at, Article.id
    )
    if newsletter.article_languages != OWN_LANGUAGES:
        rows = list(session.execute(query.limit(newsletter.max_articles)))
    else:
        taken: dict[str | None, int] = {}
        rows = []
        for row in session.execute(query):
            if taken.get(row.language, 0) < newsletter.max_articles:
                taken[row.language] = taken.get(row.language, 0) + 1
                rows.append(row)
    rows.sort(key=lambda row: (row.published_at, row.id), reverse=True)
    return [row.id for row in rows]


def next_articles(
    session: Session, newsletter: Newsletter, now: datetime, edition: Edition = Edition.REGULAR
) -> list[int]:
    """The articles the edition's next issue would carry if it were cut at ``now``."""
    since = window_start(session, newsletter.id, now, edition)
    return select_articles(session, newsletter, now, since, edition=edition)


def waiting_articles(
    session: Session, newsletter_id: int, now: datetime, edition: Edition = Edition.REGULAR
) -> int:
    """How many articles are due for the edition's next issue, beyond any cap."""
    newsletter = session.get_one(Newsletter, newsletter_id)
    since = window_start(session, newsletter_id, now, edition)
    due = _due(session, newsletter, now, since, None, edition).subquery()
    return session.scalar(select(func.count()).select_from(due)) or 0


def record_expired(session: Session, newsletter: Newsletter, issue: Issue, since: datetime) -> int:
    """Record, once, each article that left the edition's window without being carried.

    The window of the edition's previous issue started at its since_at; what was due
    then, was published before this window starts, and is still not carried has
    expired. Successive windows do not overlap, so each article is recorded once.
    """
    previous = session.scalar(
        select(Issue.since_at)
        .where(
            _edition_issues(newsletter.id, issue.edition, issue.id),
            Issue.selection == CARRIED_RULE,
            Issue.since_at.is_not(None),
        )
        .order_by(Issue.cutoff_at.desc(), Issue.id.desc())
        .limit(1)
    )
    if previous is None or previous >= since:
        return 0
    expired = list(
        session.scalars(
            _due(session, newsletter, since, previous, issue.id, issue.edition)
            .with_only_columns(Article.id)
            .order_by(Article.id)
        )
    )
    session.add_all(
        Event(
            newsletter_id=newsletter.id,
            subscriber_id=None,
            kind=EXPIRED_EVENT,
            source="planning",
            detail={"article_id": article_id, "edition": issue.edition.value, "issue": issue.id},
            created_at=issue.cutoff_at,
        )
        for article_id in expired
    )
    return len(expired)
