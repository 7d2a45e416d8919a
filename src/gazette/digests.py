"""Planning: turn the articles an edition has not carried yet and its audience into an issue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Select, func, insert, literal, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gazette.errors import GazetteError
from gazette.newsletters import Schedule
from gazette.store.models import (
    Article,
    Delivery,
    DeliveryStatus,
    Edition,
    Event,
    Feed,
    Issue,
    IssueArticle,
    IssueStatus,
    Newsletter,
    Subscription,
    SubscriptionStatus,
    article_feed,
    article_topic,
    newsletter_topic,
)


@dataclass(frozen=True)
class PlanResult:
    """What planning did: the issue, whether this call created it, and its size."""

    issue_id: int
    created: bool
    status: IssueStatus
    articles: int
    deliveries: int
    skip_reason: str | None = None


# Subscription.frequency values; NULL means the newsletter's own schedule.
WEEKLY_FREQUENCY = "weekly"
NO_WEEKLY_READER = "no reader chose the weekly summary"


def period_key(newsletter: Newsletter, now: datetime, edition: Edition = Edition.REGULAR) -> str:
    """Return the key of the scheduled period ``now`` falls in.

    A regular issue's key is the start of its period in UTC; the weekly summary's is
    the ISO week (in the newsletter's zone) of that start, so it is planned at the
    first scheduled tick of each week. Every scheduler computes the same key for the
    same tick, which is what makes a schedule that fires twice, or two schedulers,
    plan one issue.
    """
    start = Schedule(newsletter.schedule_cron, newsletter.timezone).last_fire(now)
    if edition is Edition.WEEKLY:
        year, week, _day = start.isocalendar()
        return f"week-{year}-W{week:02d}"
    return start.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def editions(newsletter: Newsletter) -> tuple[Edition, ...]:
    """The editions the newsletter sends: the weekly summary only when readers may choose."""
    if newsletter.allow_frequency:
        return (Edition.REGULAR, Edition.WEEKLY)
    return (Edition.REGULAR,)


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


def waiting_articles(
    session: Session, newsletter_id: int, now: datetime, edition: Edition = Edition.REGULAR
) -> int:
    """How many articles are due for the edition's next issue, beyond any cap."""
    newsletter = session.get_one(Newsletter, newsletter_id)
    since = window_start(session, newsletter_id, now, edition)
    due = _due(session, newsletter, now, since, None, edition).subquery()
    return session.scalar(select(func.count()).select_from(due)) or 0


def _record_expired(session: Session, newsletter: Newsletter, issue: Issue, since: datetime) -> int:
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


def _freeze_articles(
    session: Session, newsletter: Newsletter, issue: Issue, since: datetime | None
) -> int:
    """Pick the issue's articles and record them in order; return how many."""
    article_ids = select_articles(
        session, newsletter, issue.cutoff_at, since, issue.id, issue.edition
    )
    session.add_all(
        IssueArticle(issue_id=issue.id, article_id=article_id, position=position)
        for position, article_id in enumerate(article_ids)
    )
    return len(article_ids)


def audience_filter(newsletter: Newsletter, edition: Edition) -> ColumnElement[bool]:
    """Which active subscriptions an edition goes to, by the frequency readers chose.

    A frequency is only honoured while the newsletter offers the choice: when an
    operator withdraws it, weekly readers go back to every issue rather than to nothing.
    """
    active = (Subscription.newsletter_id == newsletter.id) & (
        Subscription.status == SubscriptionStatus.ACTIVE
    )
    if not newsletter.allow_frequency:
        return active
    weekly = Subscription.frequency == WEEKLY_FREQUENCY
    if edition is Edition.WEEKLY:
        return active & weekly
    return active & or_(Subscription.frequency.is_(None), ~weekly)


def _freeze_audience(session: Session, newsletter: Newsletter, issue: Issue) -> int:
    """Insert one pending delivery per subscription of the edition, in one INSERT ... SELECT."""
    audience = select(
        literal(issue.id),
        Subscription.subscriber_id,
        literal(DeliveryStatus.PENDING.value),
        literal(0),
    ).where(audience_filter(newsletter, issue.edition))
    result = session.execute(
        insert(Delivery).from_select(["issue_id", "subscriber_id", "status", "attempts"], audience),
        # psycopg reports -1 for INSERT ... SELECT unless SQLAlchemy is told to keep it.
        execution_options={"preserve_rowcount": True},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def plan_issue(
    session: Session,
    newsletter_id: int,
    now: datetime,
    key: str | None = None,
    edition: Edition = Edition.REGULAR,
) -> PlanResult:
    """Plan the edition's issue of ``newsletter_id`` for the period of ``now`` (or a key).

    Idempotent: the (newsletter, period key) pair is unique, so planning again, or from
    another process at the same time, returns the issue already planned. Runs inside the
    caller's transaction; the caller commits before enqueueing any sending.
    """
    newsletter = session.get_one(Newsletter, newsletter_id)
    if newsletter.retired_at is not None:
        raise GazetteError(f"{newsletter.slug} is retired: it is no longer sent.")
    if edition not in editions(newsletter):
        raise GazetteError(
            f"{newsletter.slug} has no weekly edition: its readers cannot choose a frequency."
        )
    key = key or period_key(newsletter, now, edition)
    issue = Issue(newsletter_id=newsletter_id, period_key=key, cutoff_at=now, edition=edition)
    try:
        with session.begin_nested():
            session.add(issue)
    except IntegrityError:
        existing = session.scalars(
            select(Issue).where(Issue.newsletter_id == newsletter_id, Issue.period_key == key)
        ).one()
        return _describe(session, existing, created=False)
    since = window_start(session, newsletter_id, now, edition, issue.id)
    issue.since_at = since
    # An edition with nobody to send to is not one whose articles "expired unsent".
    if edition is Edition.REGULAR or _has_audience(session, newsletter, edition):
        _record_expired(session, newsletter, issue, since)
    articles = _freeze_articles(session, newsletter, issue, since)
    if articles < newsletter.min_articles:
        return _skip(
            session,
            issue,
            articles,
            f"{articles} new article(s), fewer than the minimum of {newsletter.min_articles}",
        )
    if edition is Edition.WEEKLY and not _has_audience(session, newsletter, edition):
        # Recorded, so the week counts as covered: nobody was waiting for its summary.
        return _skip(session, issue, articles, NO_WEEKLY_READER)
    deliveries = _freeze_audience(session, newsletter, issue)
    session.flush()
    return PlanResult(issue.id, True, issue.status, articles, deliveries)


def _skip(session: Session, issue: Issue, articles: int, reason: str) -> PlanResult:
    issue.status = IssueStatus.SKIPPED
    issue.skip_reason = reason
    session.flush()
    return PlanResult(issue.id, True, issue.status, articles, 0, reason)


def _has_audience(session: Session, newsletter: Newsletter, edition: Edition) -> bool:
    found = session.scalar(
        select(Subscription.id).where(audience_filter(newsletter, edition)).limit(1)
    )
    return found is not None


def _describe(session: Session, issue: Issue, *, created: bool) -> PlanResult:
    articles = session.scalar(
        select(func.count()).select_from(IssueArticle).where(IssueArticle.issue_id == issue.id)
    )
    deliveries = session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.issue_id == issue.id)
    )
    return PlanResult(
        issue.id, created, issue.status, articles or 0, deliveries or 0, issue.skip_reason
    )


def pending_batches(session: Session, issue_id: int, batch_size: int) -> list[tuple[int, int]]:
    """Split the issue's pending deliveries into id ranges of at most ``batch_size`` rows.

    The audience is inserted by one statement, so its ids are (nearly) contiguous and
    fixed-width ranges are about ``batch_size`` rows each; the ranges are cheap to
    compute and to hand to tasks as plain numbers.
    """
    low, high = session.execute(
        select(func.min(Delivery.id), func.max(Delivery.id)).where(
            Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.PENDING
        )
    ).one()
    if low is None:
        return []
    return [
        (start, min(start + batch_size - 1, high)) for start in range(low, high + 1, batch_size)
    ]


def due_editions(session: Session, now: datetime) -> list[tuple[int, Edition]]:
    """Return (newsletter, edition) pairs whose current period has no issue yet."""
    due: list[tuple[int, Edition]] = []
    for newsletter in session.scalars(
        select(Newsletter).where(Newsletter.retired_at.is_(None)).order_by(Newsletter.id)
    ):
        schedule = Schedule(newsletter.schedule_cron, newsletter.timezone)
        for edition in editions(newsletter):
            # The summary goes out at the week's first tick, not whenever the choice is
            # switched on mid-week (it would repeat days its readers already received).
            if edition is Edition.WEEKLY and not schedule.first_tick_of_week(now):
                continue
            key = period_key(newsletter, now, edition)
            exists = session.scalar(
                select(Issue.id).where(
                    Issue.newsletter_id == newsletter.id, Issue.period_key == key
                )
            )
            if exists is None:
                due.append((newsletter.id, edition))
    return due


def resumable_issues(session: Session, now: datetime) -> list[int]:
    """Return issues with pending rows that are due now: retries, or batches whose task was lost."""
    return list(
        session.scalars(
            select(Delivery.issue_id)
            .join(Issue, Issue.id == Delivery.issue_id)
            .where(
                Issue.status.in_([IssueStatus.PLANNED, IssueStatus.SENDING]),
                Delivery.status == DeliveryStatus.PENDING,
                (Delivery.next_attempt_at.is_(None)) | (Delivery.next_attempt_at <= now),
            )
            .distinct()
        )
    )


@dataclass(frozen=True)
class IssueStats:
    """An issue's progress from the ledger, for `gazette digest status` and --wait."""

    issue_id: int
    newsletter: str
    edition: Edition
    period_key: str
    status: IssueStatus
    planned: int
    sent: int
    failed: int
    skipped: int
    pending: int
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        """True when nothing is left to send."""
        return self.pending == 0 and self.status in (IssueStatus.SENT, IssueStatus.SKIPPED)

    def rate(self, now: datetime) -> float | None:
        """Messages per second since the first batch started, or None before it did."""
        if self.started_at is None:
            return None
        elapsed = ((self.finished_at or now) - self.started_at).total_seconds()
        return self.sent / elapsed if elapsed > 0 else None


def issue_stats(
    session: Session, issue_ids: list[int] | None = None, limit: int = 20
) -> list[IssueStats]:
    """Return the ledger counts of the given issues, or of the newest ``limit`` issues."""
    query = select(Issue, Newsletter.slug).join(Newsletter, Newsletter.id == Issue.newsletter_id)
    if issue_ids is not None:
        query = query.where(Issue.id.in_(issue_ids))
    rows = session.execute(query.order_by(Issue.id.desc()).limit(limit)).all()
    ids = [issue.id for issue, _slug in rows]
    counts: dict[tuple[int, DeliveryStatus], int] = {
        (issue_id, status): count
        for issue_id, status, count in session.execute(
            select(Delivery.issue_id, Delivery.status, func.count())
            .where(Delivery.issue_id.in_(ids))
            .group_by(Delivery.issue_id, Delivery.status)
        )
    }
    stats = []
    for issue, slug in rows:
        by = {status: counts.get((issue.id, status), 0) for status in DeliveryStatus}
        stats.append(
            IssueStats(
                issue_id=issue.id,
                newsletter=slug,
                edition=issue.edition,
                period_key=issue.period_key,
                status=issue.status,
                planned=sum(by.values()),
                sent=by[DeliveryStatus.SENT],
                failed=by[DeliveryStatus.FAILED],
                skipped=by[DeliveryStatus.SKIPPED],
                pending=by[DeliveryStatus.PENDING] + by[DeliveryStatus.SENDING],
                started_at=issue.started_at,
                finished_at=issue.finished_at,
            )
        )
    return stats


def in_flight(session: Session, issue_id: int, now: datetime) -> bool:
    """True while rows are being sent or are due now; rows waiting on a backoff are not."""
    due = (Delivery.status == DeliveryStatus.SENDING) | (
        (Delivery.status == DeliveryStatus.PENDING)
        & (Delivery.next_attempt_at.is_(None) | (Delivery.next_attempt_at <= now))
    )
    return (
        session.scalar(select(Delivery.id).where(Delivery.issue_id == issue_id, due).limit(1))
        is not None
    )


def settled_unfinished(session: Session) -> list[int]:
    """Issues still planned or sending that have no pending or sending row left.

    An issue is usually finished by its last batch; one whose last waiting row was
    skipped instead (the reader unsubscribed during a retry backoff) has no batch left
    to do it, so the sweep finishes it.
    """
    open_rows = select(Delivery.id).where(
        Delivery.issue_id == Issue.id,
        Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING]),
    )
    return list(
        session.scalars(
            select(Issue.id).where(
                Issue.status.in_([IssueStatus.PLANNED, IssueStatus.SENDING]),
                ~open_rows.exists(),
            )
        )
    )
