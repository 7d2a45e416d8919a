"""Newsletters: what a publisher sends, on which schedule, to whom."""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gazette.errors import ConfigError, GazetteError
from gazette.store.models import Newsletter

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
ARTICLE_LANGUAGES = ("all", "own")
# What each article in a digest carries: an excerpt (the default) or the whole post.
CONTENT_MODES = ("excerpt", "full")


@dataclass(frozen=True)
class Schedule:
    """A cron expression read in an IANA time zone."""

    cron: str
    timezone: str

    def last_fire(self, now: datetime) -> datetime:
        """Return the most recent scheduled time at or before ``now`` (aware, local zone)."""
        local = now.astimezone(zoneinfo.ZoneInfo(self.timezone))
        # CronSim walks from the next minute when reversed; +59 s keeps `now` itself.
        start = local.replace(second=59, microsecond=0)
        return next(CronSim(self.cron, start, reverse=True))

    def next_fire(self, after: datetime) -> datetime:
        """Return the first scheduled time strictly after ``after`` (aware, local zone)."""
        local = after.astimezone(zoneinfo.ZoneInfo(self.timezone))
        return next(CronSim(self.cron, local))

    def fires_within(self, start: datetime, days: int) -> int:
        """How many times the schedule fires in the ``days`` after ``start`` (capped at 128)."""
        local = start.astimezone(zoneinfo.ZoneInfo(self.timezone))
        end = local + timedelta(days=days)
        count = 0
        for fire in CronSim(self.cron, local):
            if fire > end or count >= 128:
                break
            count += 1
        return count

    def more_often_than_weekly(self) -> bool:
        """True when the schedule fires more than once a week over the next eight weeks.

        A weekly summary is only a choice for readers of a newsletter that sends more
        often than weekly; twice a week or daily qualifies, weekly or rarer does not.
        Eight weeks, so a monthly burst (days 1-3 of each month) does not pass or fail
        by the date it is asked on.
        """
        return self.fires_within(datetime.now(UTC), 56) > 8

    def first_tick_of_week(self, now: datetime) -> bool:
        """True when the last fire at or before ``now`` is the first of its ISO week."""
        last = self.last_fire(now)
        before = self.last_fire(last - timedelta(minutes=1))
        return before.isocalendar()[:2] != last.isocalendar()[:2]


def check_schedule(cron: str, timezone: str) -> Schedule:
    """Return the schedule, or raise GazetteError naming the bad expression or zone."""
    try:
        zone = zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise GazetteError(f"Time zone {timezone!r} is not an IANA zone name.") from None
    try:
        CronSim(cron, datetime.now(zone))
    except CronSimError:
        raise GazetteError(f"Schedule {cron!r} is not a five-field cron expression.") from None
    return Schedule(cron, timezone)


def _check_frequency_choice(slug: str, schedule: Schedule) -> None:
    if not schedule.more_often_than_weekly():
        raise GazetteError(
            f"{slug} is sent on schedule {schedule.cron!r}, at most weekly already: "
            "a choice of a weekly summary needs a schedule that fires more often."
        )


def newsletter_by_slug(session: Session, slug: str) -> Newsletter:
    """Return the newsletter called ``slug``, or raise GazetteError naming it."""
    # Checked before the query: a slug from a URL may hold anything, NUL included,
    # which PostgreSQL refuses outright.
    if not SLUG.match(slug):
        raise GazetteError(f"There is no newsletter {slug!r}.")
    newsletter = session.scalar(select(Newsletter).where(Newsletter.slug == slug))
    if newsletter is None:
        raise GazetteError(f"There is no newsletter {slug!r}.")
    return newsletter


def newsletter_or_only(session: Session, slug: str | None) -> str:
    """The newsletter a command acts on: the one named, or the only one there is."""
    if slug:
        return slug
    slugs = list(session.scalars(select(Newsletter.slug).order_by(Newsletter.slug)))
    if len(slugs) == 1:
        return slugs[0]
    if not slugs:
        raise GazetteError("There is no newsletter yet; add one with `gazette newsletters add`.")
    raise GazetteError(f"Name the newsletter with --newsletter (one of {', '.join(slugs)}).")


def _sender(raw: str | None) -> str | None:
    """A from address as stored: checked, ``Name <address>`` or bare; empty means none."""
    from gazette.mail.senders import parse_sender

    return parse_sender(raw).stored if raw and raw.strip() else None


def check_topics_known(session: Session, names: list[str]) -> None:
    """Refuse a topic filter naming a topic no article or feed has (exit 2).

    A misspelt topic would otherwise be created empty and every later issue skipped.
    """
    from gazette.articles.service import find_topic, slugify
    from gazette.store.models import Topic
    from gazette.text import clean_line

    known = {topic.slug: topic.name for topic in session.scalars(select(Topic))}
    for name in names:
        if find_topic(session, slugify(clean_line(name, 200))) is None:
            listed = ", ".join(sorted(known.values(), key=str.casefold))
            others = f"the known topics are {listed}" if known else "there are no topics yet"
            raise ConfigError(f"There is no topic {name!r}; {others}.")


def create_newsletter(
    session: Session,
    slug: str,
    name: str,
    *,
    cron: str = "0 8 * * 1",
    timezone: str = "UTC",
    min_articles: int = 1,
    max_articles: int = 20,
    from_address: str | None = None,
    list_id: str | None = None,
    allow_frequency: bool = False,
    max_age_days: int = 14,
    article_languages: str = "all",
    content_mode: str = "excerpt",
    excerpt_words: int = 60,
    images: bool = True,
) -> int:
    """Create a newsletter and return its id; the slug must be new."""
    if not SLUG.match(slug):
        raise GazetteError(
            f"Newsletter slug {slug!r} must be lower-case letters, digits and hyphens."
        )
    schedule = check_schedule(cron, timezone)
    if allow_frequency:
        _check_frequency_choice(slug, schedule)
    _check_article_counts(min_articles, max_articles)
    _check_selection(max_age_days, article_languages)
    _check_content(content_mode, excerpt_words)
    newsletter = Newsletter(
        slug=slug, name=name.strip() or slug, schedule_cron=cron, timezone=timezone,
        min_articles=min_articles, max_articles=max_articles,
        from_address=_sender(from_address), list_id=list_id, allow_frequency=allow_frequency,
        max_age_days=max_age_days, article_languages=article_languages,
        content_mode=content_mode, excerpt_words=excerpt_words, images=images,
    )  # fmt: skip
    try:
        with session.begin_nested():
            session.add(newsletter)
    except IntegrityError:
        raise GazetteError(f"A newsletter {slug!r} already exists.") from None
    return newsletter.id


def _check_article_counts(low: int, high: int) -> None:
    """Refuse a minimum of articles under one or over the maximum."""
    if not 1 <= low <= high:
        raise GazetteError(
            f"Minimum articles ({low}) must be at least 1 and at most the maximum ({high})."
        )


def _check_selection(max_age_days: int, article_languages: str) -> None:
    """Refuse a look-back window under a day and a language mode other than all or own."""
    if max_age_days < 1:
        raise GazetteError(f"The look-back window must be at least one day, not {max_age_days}.")
    if article_languages not in ARTICLE_LANGUAGES:
        raise GazetteError(f"Article languages must be 'all' or 'own', not {article_languages!r}.")


def _check_content(content_mode: str, excerpt_words: int) -> None:
    """Refuse a content mode other than excerpt or full, and an excerpt under ten words."""
    if content_mode not in CONTENT_MODES:
        raise GazetteError(f"Content must be 'excerpt' or 'full', not {content_mode!r}.")
    if not 10 <= excerpt_words <= 1000:
        raise GazetteError(
            f"An excerpt must be between 10 and 1000 words long, not {excerpt_words}."
        )


def retire_newsletter(session: Session, slug: str, now: datetime) -> bool:
    """Retire a newsletter: no longer offered or scheduled; its issues and archive stay.

    Returns False when it was already retired.
    """
    newsletter = newsletter_by_slug(session, slug)
    if newsletter.retired_at is not None:
        return False
    newsletter.retired_at = now
    session.flush()
    return True


def offered_newsletters(session: Session) -> list[Newsletter]:
    """The newsletters a reader may subscribe to: every one not retired, by slug."""
    return list(
        session.scalars(
            select(Newsletter).where(Newsletter.retired_at.is_(None)).order_by(Newsletter.slug)
        )
    )


def ensure_newsletter(session: Session, slug: str, name: str) -> int:
    """Return the id of newsletter ``slug``, creating it with default settings when missing."""
    existing = session.scalar(select(Newsletter.id).where(Newsletter.slug == slug))
    if existing is not None:
        return existing
    return create_newsletter(session, slug, name)


def list_newsletters(session: Session) -> list[Newsletter]:
    """Return every newsletter, by slug."""
    return list(session.scalars(select(Newsletter).order_by(Newsletter.slug)))


@dataclass(frozen=True)
class NewsletterChanges:
    """Fields an operator may change; None leaves a field as it is."""

    name: str | None = None
    cron: str | None = None
    timezone: str | None = None
    min_articles: int | None = None
    max_articles: int | None = None
    from_address: str | None = None
    list_id: str | None = None
    allow_frequency: bool | None = None
    topics: list[str] | None = None  # topic names; an empty list removes the filter
    template_set: str | None = None
    max_age_days: int | None = None
    article_languages: str | None = None
    # What each article carries ("excerpt" or "full"), the excerpt's length, images.
    content_mode: str | None = None
    excerpt_words: int | None = None
    images: bool | None = None


def update_newsletter(session: Session, slug: str, changes: NewsletterChanges) -> None:
    """Apply ``changes`` to the newsletter, checking the result as creation does."""
    newsletter = newsletter_by_slug(session, slug)
    cron, timezone = _changed_schedule(slug, newsletter, changes)
    low = changes.min_articles if changes.min_articles is not None else newsletter.min_articles
    high = changes.max_articles if changes.max_articles is not None else newsletter.max_articles
    _check_article_counts(low, high)
    max_age = changes.max_age_days if changes.max_age_days is not None else newsletter.max_age_days
    languages = changes.article_languages or newsletter.article_languages
    _check_selection(max_age, languages)
    _check_content(
        changes.content_mode or newsletter.content_mode,
        changes.excerpt_words if changes.excerpt_words is not None else newsletter.excerpt_words,
    )
    newsletter.schedule_cron, newsletter.timezone = cron, timezone
    newsletter.min_articles, newsletter.max_articles = low, high
    newsletter.max_age_days, newsletter.article_languages = max_age, languages
    _apply_fields(session, newsletter, changes)


def _changed_schedule(
    slug: str, newsletter: Newsletter, changes: NewsletterChanges
) -> tuple[str, str]:
    """The cron and time zone after ``changes``, checked with the frequency choice."""
    cron = changes.cron or newsletter.schedule_cron
    timezone = changes.timezone or newsletter.timezone
    schedule = check_schedule(cron, timezone)
    allow = (
        changes.allow_frequency
        if changes.allow_frequency is not None
        else newsletter.allow_frequency
    )
    # Checked only when the schedule or the choice changes: a rename must not fail on
    # a combination an older version allowed.
    choice_changed = allow and not newsletter.allow_frequency
    schedule_changed = (cron, timezone) != (newsletter.schedule_cron, newsletter.timezone)
    if allow and (choice_changed or schedule_changed):
        _check_frequency_choice(slug, schedule)
    return cron, timezone


def _apply_fields(session: Session, newsletter: Newsletter, changes: NewsletterChanges) -> None:
    """Set each field ``changes`` gives that needs no check against the others."""
    from gazette.articles.service import topic_for

    if changes.content_mode is not None:
        newsletter.content_mode = changes.content_mode
    if changes.excerpt_words is not None:
        newsletter.excerpt_words = changes.excerpt_words
    if changes.images is not None:
        newsletter.images = changes.images
    if changes.name is not None:
        newsletter.name = changes.name.strip() or newsletter.name
    if changes.from_address is not None:
        newsletter.from_address = _sender(changes.from_address)
    if changes.list_id is not None:
        newsletter.list_id = changes.list_id or None
    if changes.allow_frequency is not None:
        newsletter.allow_frequency = changes.allow_frequency
    if changes.topics is not None:
        check_topics_known(session, changes.topics)
        newsletter.topics = [topic_for(session, name) for name in changes.topics]
    if changes.template_set is not None:
        newsletter.template_set = changes.template_set
