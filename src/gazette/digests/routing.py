"""Language routing: which of an issue's articles each reader receives, by language.

A newsletter with ``article_languages = "own"`` sends each reader the articles in their
own language and in the further languages they chose, plus the articles that have no
language. A reader none of whose languages the newsletter publishes receives its default
language's articles instead. With ``"all"`` (the default) every reader gets everything.
The choice is made once per distinct set of languages, never per reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from gazette.errors import GazetteError, InvalidChoiceError
from gazette.newsletters.service import newsletter_by_slug
from gazette.store.models import (
    Article,
    Feed,
    Issue,
    IssueArticle,
    Newsletter,
    Subscriber,
    article_topic,
    newsletter_topic,
)
from gazette.subscribers.service import (
    Origin,
    record_event,
    subscriber_by_public_id,
    subscription_for,
)

ALL = "all"
OWN = "own"
ROUTINGS = (ALL, OWN)
# The built-in site languages: what the subscribe form offers before anything is published.
SITE_LANGUAGES = ("en", "uk", "ja")
# A primary language subtag (RFC 5646 2.2.1): what tags are compared on.
_PRIMARY = re.compile(r"[a-z]{2,8}")
# A link's language list is short; anything longer is not one Gazette wrote.
MAX_LINK_LANGUAGES = 12


def normalise_tag(tag: str | None) -> str | None:
    """The primary subtag of a language tag, lower-cased (``en-US`` -> ``en``), or None.

    Tags are compared on their primary subtag: a reader of ``en`` reads ``en-GB`` articles.
    """
    if not tag:
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if _PRIMARY.fullmatch(primary) else None


@lru_cache(maxsize=4096)
def normalise_tags(tags: tuple[str, ...]) -> frozenset[str]:
    """The normalised set of several tags, invalid ones dropped; cached, as readers repeat."""
    return frozenset(t for t in map(normalise_tag, tags) if t is not None)


@lru_cache(maxsize=4096)
def extra_languages_from_json(text: str | None) -> frozenset[str]:
    """A subscriber's extra_languages as the database's JSON text, as a normalised set.

    The send path reads the column as text: nearly every reader's is "[]", and the
    same few lists repeat, so per reader this is a cache hit, not a JSON decode.
    """
    if not text or text == "[]":
        return frozenset()
    try:
        return reader_extra_languages(json.loads(text))
    except ValueError:
        return frozenset()


def reader_extra_languages(raw: object) -> frozenset[str]:
    """A subscriber's stored extra_languages (a JSON list) as a normalised set."""
    if not raw or not isinstance(raw, list):
        return frozenset()
    return normalise_tags(tuple(str(tag) for tag in raw))


@dataclass(frozen=True)
class Route:
    """What one set of reader languages receives of an issue.

    ``wanted`` is the set of languages whose articles they get (articles without a
    language always come too); None means every article (``article_languages = all``).
    """

    wanted: frozenset[str] | None

    def admits(self, language: str | None) -> bool:
        """True when an article in ``language`` goes to readers on this route."""
        return self.wanted is None or language is None or language in self.wanted


EVERYTHING = Route(None)


def route(
    routing: str,
    own: str,
    extra: frozenset[str],
    published: frozenset[str],
    default_language: str,
) -> Route:
    """The route of a reader with language ``own`` and ``extra`` languages.

    ``published`` is what the newsletter publishes in: a reader who reads none of it
    gets the ``default_language``'s articles rather than only the language-less ones.
    """
    if routing != OWN:
        return EVERYTHING
    reads = extra | normalise_tags((own,))
    if not reads & published:
        reads = normalise_tags((default_language,))
    return Route(reads)


def link_languages(wanted: frozenset[str] | None, present: frozenset[str]) -> tuple[str, ...]:
    """The languages a reader's "view in your browser" link names, sorted.

    Only the route's languages that the issue has: readers whose routes differ only in
    languages the issue lacks share the same link, and so the same render. When the
    issue has none of them, the route's own languages (the page then shows only the
    articles without a language, as the message does).
    """
    if wanted is None:
        return ()
    return tuple(sorted(wanted & present or wanted))


def parse_link_languages(value: str | None) -> frozenset[str] | None:
    """A ``?lang=uk,en`` list from an archive link as a set; None when absent or empty.

    Raises GazetteError naming the value when it is not a list of language tags.
    """
    if value is None or not value.strip():
        return None
    tags = [normalise_tag(t) for t in value.split(",") if t.strip()]
    if len(tags) > MAX_LINK_LANGUAGES or None in tags:
        raise GazetteError(f"The language list {value[:100]!r} is not a list of language codes.")
    return frozenset(t for t in tags if t is not None)


def lang_query(languages: frozenset[str] | None) -> str:
    """``?lang=en,uk`` for links between archive pages, so a reader's edition stays narrowed."""
    return f"?lang={','.join(sorted(languages))}" if languages else ""


def _carried(newsletter_id: int, up_to_issue_id: int | None) -> ColumnElement[bool]:
    condition = Issue.newsletter_id == newsletter_id
    if up_to_issue_id is not None:
        condition = condition & (Issue.id <= up_to_issue_id)
    return condition


def carried_languages(
    session: Session, newsletter_id: int, up_to_issue_id: int | None = None
) -> frozenset[str]:
    """The languages of the articles the newsletter's issues carried (up to one issue).

    Bounded by an issue id at sending time, so every batch of an issue, in any process,
    routes by the same set however many issues are planned meanwhile.
    """
    languages = session.scalars(
        select(Article.language)
        .distinct()
        .join(IssueArticle, IssueArticle.article_id == Article.id)
        .join(Issue, Issue.id == IssueArticle.issue_id)
        .where(_carried(newsletter_id, up_to_issue_id), Article.language.is_not(None))
    )
    return normalise_tags(tuple(t for t in languages if t))


def published_languages(session: Session, newsletter: Newsletter, now: datetime) -> frozenset[str]:
    """The languages the newsletter publishes in: of its carried articles and its due ones.

    "Due" here is what could still go out: articles within the look-back window from
    the newsletter's feeds (or feeds for every newsletter, or no feed), on its topics.
    """
    carried = carried_languages(session, newsletter.id)
    recent = (
        select(Article.language)
        .distinct()
        .outerjoin(Feed, Feed.id == Article.feed_id)
        .where(
            Article.language.is_not(None),
            Article.published_at >= now - timedelta(days=newsletter.max_age_days),
            Article.published_at <= now,
            or_(
                Feed.id.is_(None), Feed.newsletter_id.is_(None), Feed.newsletter_id == newsletter.id
            ),
        )
    )
    topic_ids = select(newsletter_topic.c.topic_id).where(
        newsletter_topic.c.newsletter_id == newsletter.id
    )
    if session.scalar(select(func.count()).select_from(topic_ids.subquery())):
        recent = recent.where(
            Article.id.in_(
                select(article_topic.c.article_id).where(article_topic.c.topic_id.in_(topic_ids))
            )
        )
    due = normalise_tags(tuple(t for t in session.scalars(recent) if t))
    return carried | due


def offered_languages(session: Session, newsletter: Newsletter, now: datetime) -> tuple[str, ...]:
    """The languages a reader may choose on the subscribe form, in a stable order.

    With ``own``, those the newsletter publishes (the site's languages while it has
    published nothing yet); with ``all`` the language only chooses the messages'
    wording, so the site's languages.
    """
    if newsletter.article_languages != OWN:
        return SITE_LANGUAGES
    return ordered(published_languages(session, newsletter, now)) or SITE_LANGUAGES


def ordered(languages: Iterable[str]) -> tuple[str, ...]:
    """The site's languages first, in their usual order, then the rest alphabetically."""
    chosen = set(languages)
    return tuple(t for t in SITE_LANGUAGES if t in chosen) + tuple(
        sorted(chosen - set(SITE_LANGUAGES))
    )


@dataclass(frozen=True)
class LanguageChoices:
    """The further-languages part of a reader's preferences page."""

    shown: bool  # only newsletters that route by language show it
    offered: tuple[str, ...]  # further languages on offer
    chosen: frozenset[str]
    primary: tuple[str, ...] = SITE_LANGUAGES  # what "Language" may be set to


def language_choices(
    session: Session, public_id: str, newsletter_slug: str, now: datetime
) -> LanguageChoices:
    """Which further languages the reader may choose for this newsletter, and has chosen.

    Offered: the languages the newsletter has published in, besides the reader's own.
    The reader's own language may be any of the site's, any published one, or the one
    they have (so saving the page never changes it behind their back).
    """
    subscriber = subscriber_by_public_id(session, public_id)
    newsletter = newsletter_by_slug(session, newsletter_slug)
    subscription_for(session, subscriber.id, newsletter.id)
    chosen = reader_extra_languages(subscriber.extra_languages)
    own = normalise_tag(subscriber.language)
    current = {own} if own else set()
    if newsletter.article_languages != OWN:
        return LanguageChoices(False, (), chosen, ordered({*SITE_LANGUAGES, *current}))
    published = published_languages(session, newsletter, now)
    primary = ordered({*SITE_LANGUAGES, *published, *current})
    return LanguageChoices(True, ordered(published - current), chosen, primary)


def save_extra_languages(
    session: Session,
    public_id: str,
    newsletter_slug: str,
    origin: Origin,
    languages: Collection[str],
    now: datetime,
) -> None:
    """Save the further languages a reader chose; each must be one the newsletter offers.

    Raises InvalidChoiceError naming the first language not on offer, changing nothing.
    """
    subscriber = subscriber_by_public_id(session, public_id)
    newsletter = newsletter_by_slug(session, newsletter_slug)
    subscription_for(session, subscriber.id, newsletter.id)
    if newsletter.article_languages != OWN:
        raise InvalidChoiceError(f"{newsletter.name} sends every reader every language.")
    offered = published_languages(session, newsletter, now)
    own = normalise_tag(subscriber.language)
    chosen: list[str] = []
    for raw in languages:
        tag = normalise_tag(raw)
        if tag is None or tag not in offered:
            raise InvalidChoiceError(
                f"Language {raw[:40]!r} is not one {newsletter.name} publishes in."
            )
        if tag != own and tag not in chosen:
            chosen.append(tag)
    subscriber.extra_languages = list(ordered(chosen))
    record_event(
        session, "languages", origin, subscriber_id=subscriber.id,
        newsletter_id=newsletter.id, extra_languages=",".join(subscriber.extra_languages),
    )  # fmt: skip


def subscriber_extra_languages(session: Session, subscriber_id: int) -> frozenset[str]:
    """A reader's further languages, normalised (previews and tests read them here)."""
    raw = session.scalar(select(Subscriber.extra_languages).where(Subscriber.id == subscriber_id))
    return reader_extra_languages(raw)
