"""Planning: turn the articles an edition has not carried yet and its audience into an issue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, insert, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gazette.digests.editions import (
    NO_WEEKLY_READER,
    audience_filter,
    edition_due,
    editions,
    require_edition,
)
from gazette.digests.selection import (
    next_articles,
    record_expired,
    select_articles,
    waiting_articles,
    window_start,
)
from gazette.errors import GazetteError
from gazette.newsletters.pausing import pause_sentence
from gazette.newsletters.service import Schedule
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    Issue,
    IssueArticle,
    IssueStatus,
    Newsletter,
    Subscription,
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
    if newsletter.paused_at is not None:
        raise GazetteError(pause_sentence(newsletter.slug, newsletter.pause_reason or "paused"))
    require_edition(newsletter, edition)
    key = key or period_key(newsletter, now, edition)
    issue = Issue(
        newsletter_id=newsletter_id, period_key=key, cutoff_at=now, edition=edition,
        intro=dict(newsletter.intro or {}),  # the standing note, frozen with the articles
    )  # fmt: skip
    try:
        with session.begin_nested():
            session.add(issue)
    except IntegrityError:
        existing = session.scalars(
            select(Issue).where(Issue.newsletter_id == newsletter_id, Issue.period_key == key)
        ).one()
        return _describe(session, existing, created=False)
    return _freeze(session, newsletter, issue, now)


def _freeze(session: Session, newsletter: Newsletter, issue: Issue, now: datetime) -> PlanResult:
    """Freeze a new issue's window, articles and audience; or skip it, saying why."""
    edition = issue.edition
    since = window_start(session, newsletter.id, now, edition, issue.id)
    issue.since_at = since
    # An edition with nobody to send to is not one whose articles "expired unsent".
    if edition is Edition.REGULAR or _has_audience(session, newsletter, edition):
        record_expired(session, newsletter, issue, since)
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
    """Mark the new issue skipped for ``reason``: it sends nothing."""
    issue.status = IssueStatus.SKIPPED
    issue.skip_reason = reason
    session.flush()
    return PlanResult(issue.id, True, issue.status, articles, 0, reason)


def _has_audience(session: Session, newsletter: Newsletter, edition: Edition) -> bool:
    """Whether any active subscription receives the edition."""
    found = session.scalar(
        select(Subscription.id).where(audience_filter(newsletter, edition)).limit(1)
    )
    return found is not None


def _describe(session: Session, issue: Issue, *, created: bool) -> PlanResult:
    """The PlanResult of an issue already planned, counted from what it froze."""
    articles = session.scalar(
        select(func.count()).select_from(IssueArticle).where(IssueArticle.issue_id == issue.id)
    )
    deliveries = session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.issue_id == issue.id)
    )
    return PlanResult(
        issue.id, created, issue.status, articles or 0, deliveries or 0, issue.skip_reason
    )


def plans_at(session: Session, newsletter: Newsletter, edition: Edition, now: datetime) -> bool:
    """Whether the scheduler's tick at ``now`` plans the edition: the one "due" rule.

    Due means not retired, not paused (newsletters/pausing), the edition's tick (the
    weekly summary only at the week's first) and no issue yet for the period ``now``
    falls in; ``next_send`` asks the same question of future ticks, so what it says is
    what the scheduler will do.
    """
    if newsletter.retired_at is not None or newsletter.paused_at is not None:
        return False
    schedule = Schedule(newsletter.schedule_cron, newsletter.timezone)
    if not edition_due(schedule, edition, now):
        return False
    key = period_key(newsletter, now, edition)
    exists = session.scalar(
        select(Issue.id).where(Issue.newsletter_id == newsletter.id, Issue.period_key == key)
    )
    return exists is None


def due_editions(session: Session, now: datetime) -> list[tuple[int, Edition]]:
    """Return (newsletter, edition) pairs whose current period has no issue yet."""
    return [
        (newsletter.id, edition)
        for newsletter in session.scalars(
            select(Newsletter).where(Newsletter.retired_at.is_(None)).order_by(Newsletter.id)
        )
        for edition in editions(newsletter)
        if plans_at(session, newsletter, edition, now)
    ]


# How many scheduled times ``next_send`` looks at before it gives up. A regular issue is
# due at the first one after a planned period; more only if issues exist for periods
# ahead (planned by a scheduler whose clock ran ahead).
LOOK_AHEAD = 100


@dataclass(frozen=True)
class NextSend:
    """The scheduled time of the next regular issue, and whether it is due already.

    ``due_now``: the current period (which began at ``at``, at or before now) has no
    issue yet, and the scheduler plans it at its next tick. ``at`` stays that period's
    start rather than "now", so asking twice gives the same answer.
    """

    at: datetime
    due_now: bool


@dataclass(frozen=True)
class NextIssue:
    """The next regular issue: when (None: not scheduled, i.e. retired), what waits for it."""

    send: NextSend | None
    waiting: int  # due for the issue, beyond any cap (the rest roll over)
    carried: int  # what the issue would carry if it were planned now
    min_articles: int


def next_send(session: Session, newsletter: Newsletter, now: datetime) -> NextSend | None:
    """When the scheduler next plans the regular edition, in UTC; None if it never will.

    Asks ``plans_at`` of ``now`` and then of each scheduled time after it, so the answer
    follows the scheduler's rule rather than restating it.
    """
    if newsletter.retired_at is not None or newsletter.paused_at is not None:
        return None  # plans_at says no to every tick; no need to walk them
    schedule = Schedule(newsletter.schedule_cron, newsletter.timezone)
    if plans_at(session, newsletter, Edition.REGULAR, now):
        return NextSend(schedule.last_fire(now).astimezone(UTC), due_now=True)
    fire = now
    for _ in range(LOOK_AHEAD):
        fire = schedule.next_fire(fire)
        if plans_at(session, newsletter, Edition.REGULAR, fire):
            return NextSend(fire.astimezone(UTC), due_now=False)
    return None


def next_issue(session: Session, newsletter_id: int, now: datetime) -> NextIssue:
    """When the newsletter's next regular issue is planned, and the articles waiting now.

    The counts come from the planner's own selection (articles not yet carried by the
    edition, in its window), before any reader's language or topics narrow them.
    """
    newsletter = session.get_one(Newsletter, newsletter_id)
    return NextIssue(
        send=next_send(session, newsletter, now),
        waiting=waiting_articles(session, newsletter_id, now),
        carried=len(next_articles(session, newsletter, now)),
        min_articles=newsletter.min_articles,
    )
