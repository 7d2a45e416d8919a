"""Topic curation: what readers are offered, and what each topic is called in their language.

Topics arrive as feed categories (often in several languages, often noise such as
"Featured"); the operator renames them, labels them per language, offers or hides them
and merges duplicates. A topic filters newsletters and subscriptions whatever its
flags: ``offered`` and ``hidden`` only decide what the preferences page lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, Table, delete, exists, func, insert, literal, select, update
from sqlalchemy.orm import Session

from gazette.articles.service import find_topic, slugify
from gazette.errors import GazetteError
from gazette.rendering import LANGUAGES
from gazette.store.models import (
    Feed,
    Newsletter,
    Topic,
    TopicAlias,
    article_topic,
    newsletter_topic,
    subscription_topic,
)
from gazette.text import clean_line

# The link tables a merge re-points, by the noun its summary line counts.
_LINKS = (
    ("articles", article_topic, article_topic.c.article_id),
    ("newsletters", newsletter_topic, newsletter_topic.c.newsletter_id),
    ("subscriptions", subscription_topic, subscription_topic.c.subscription_id),
)


@dataclass(frozen=True)
class TopicRow:
    """One topic as `gazette topics list` shows it, with what refers to it."""

    slug: str
    name: str
    labels: dict[str, str]
    offered: bool
    hidden: bool
    articles: int
    feeds: int
    newsletters: int
    subscriptions: int
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class MergeResult:
    """What a merge moved from the topic it deleted onto the one it kept."""

    source: str
    target: str
    articles: int
    feeds: int
    newsletters: int
    subscriptions: int


def topic_by_slug(session: Session, slug: str) -> Topic:
    """The topic with this slug (or merged into one under it); one sentence if none."""
    # Typed as the operator reads it ("Energy" for energy) or as listed: same slug.
    topic = find_topic(session, slugify(clean_line(slug, 200)))
    if topic is None:
        raise GazetteError(
            f"There is no topic {slug!r}; `gazette topics list --all` shows the slugs."
        )
    return topic


def label(topic: Topic, language: str | None) -> str:
    """The topic's name in ``language`` (its primary subtag), else its name."""
    primary = (language or "").split("-")[0].split("_")[0].lower()
    return topic.labels.get(primary) or topic.name


def check_label_language(language: str) -> str:
    """A label's language as stored (primary subtag, lower case), if readers can have it."""
    primary = language.strip().split("-")[0].split("_")[0].lower()
    if primary not in LANGUAGES:
        raise GazetteError(
            f"Language {language!r} is not one readers can choose; "
            f"use one of {', '.join(LANGUAGES)}."
        )
    return primary


def list_topics(session: Session, *, include_hidden: bool = False) -> list[TopicRow]:
    """Every topic (hidden ones only if asked), by slug, with how much refers to it."""
    query = select(Topic).order_by(Topic.slug)
    if not include_hidden:
        query = query.where(Topic.hidden.is_(False))
    aliases: dict[int, list[str]] = {}
    for alias in session.scalars(select(TopicAlias).order_by(TopicAlias.slug)):
        aliases.setdefault(alias.topic_id, []).append(alias.slug)
    counts: dict[str, dict[int, int]] = {}
    for noun, table, _ in _LINKS:
        grouped = select(table.c.topic_id, func.count().label("n")).group_by(table.c.topic_id)
        counts[noun] = {row.topic_id: row.n for row in session.execute(grouped)}
    live_feeds = (
        select(Feed.topic_id, func.count().label("n"))
        .where(Feed.topic_id.is_not(None), Feed.removed_at.is_(None))
        .group_by(Feed.topic_id)
    )
    counts["feeds"] = {row.topic_id: row.n for row in session.execute(live_feeds)}
    return [
        TopicRow(
            slug=t.slug,
            name=t.name,
            labels=dict(sorted(t.labels.items())),
            offered=t.offered,
            hidden=t.hidden,
            articles=counts["articles"].get(t.id, 0),
            feeds=counts["feeds"].get(t.id, 0),
            newsletters=counts["newsletters"].get(t.id, 0),
            subscriptions=counts["subscriptions"].get(t.id, 0),
            aliases=tuple(aliases.get(t.id, ())),
        )
        for t in session.scalars(query)
    ]


def rename_topic(session: Session, slug: str, text: str, language: str | None = None) -> Topic:
    """Set the topic's name (the fallback), or its label in one language.

    The slug stays: feeds, links and forms name the topic by it. An empty label for a
    language removes that label (readers then see the name); an empty name is refused.
    """
    topic = topic_by_slug(session, slug)
    cleaned = clean_line(text, 200)
    if language is None:
        if not cleaned:
            raise GazetteError(f"The name of topic {topic.slug!r} cannot be empty.")
        topic.name = cleaned
        return topic
    code = check_label_language(language)
    labels = dict(topic.labels)  # a new dict: JSON columns do not track changes in place
    if cleaned:
        labels[code] = cleaned
    else:
        labels.pop(code, None)
    topic.labels = labels
    return topic


def set_offered(session: Session, slug: str, offered: bool) -> Topic:
    """Offer the topic to readers on the preferences page, or stop offering it."""
    topic = topic_by_slug(session, slug)
    topic.offered = offered
    return topic


def set_hidden(session: Session, slug: str, hidden: bool) -> Topic:
    """Hide the topic from readers and from `topics list` (it still filters), or show it."""
    topic = topic_by_slug(session, slug)
    topic.hidden = hidden
    return topic


def merge_topics(session: Session, source_slug: str, target_slug: str) -> MergeResult:
    """Move everything that names ``source`` onto ``target``, then delete ``source``.

    Articles, feeds, newsletter filters and readers' choices move (a row that already
    names the target is not doubled); the target keeps its name and flags and gains the
    source's labels for languages it has none in. The source's slug (and its own
    aliases) become aliases of the target, so the next poll of a feed that still says
    the old category files its articles under the target. Run inside one transaction.
    """
    source = topic_by_slug(session, source_slug)
    target = topic_by_slug(session, target_slug)
    if source.id == target.id:
        raise GazetteError(f"Topic {source_slug!r} and {target_slug!r} are the same topic.")
    moved: dict[str, int] = {}
    for noun, table, owner in _LINKS:
        moved[noun] = _move_links(session, table, owner, source.id, target.id)
    moved["feeds"] = session.scalar(select(func.count()).where(Feed.topic_id == source.id)) or 0
    session.execute(update(Feed).where(Feed.topic_id == source.id).values(topic_id=target.id))
    session.execute(
        update(TopicAlias).where(TopicAlias.topic_id == source.id).values(topic_id=target.id)
    )
    target.labels = {**source.labels, **target.labels}
    result = MergeResult(source.slug, target.slug, **moved)
    session.delete(source)
    session.flush()
    session.add(TopicAlias(slug=result.source, topic_id=target.id))
    session.flush()
    # Collections loaded before (an article's topics) still name the deleted topic.
    session.expire_all()
    return result


def _move_links(
    session: Session, table: Table, owner: Column[int], source_id: int, target_id: int
) -> int:
    """Move one link table's rows from the source topic to the target; return how many owners."""
    owners = select(owner).where(table.c.topic_id == source_id)
    count = session.scalar(select(func.count()).select_from(owners.subquery())) or 0
    other = table.alias("existing")
    already = exists().where(other.c.topic_id == target_id, other.c[owner.name] == owner)
    # Give the target to every owner of the source that lacks it, then drop the source.
    session.execute(
        insert(table).from_select(
            [owner.name, "topic_id"],
            select(owner, literal(target_id)).where(table.c.topic_id == source_id, ~already),
        )
    )
    session.execute(delete(table).where(table.c.topic_id == source_id))
    return count


def offered_topics(session: Session, newsletter_id: int, language: str | None) -> list[Topic]:
    """The topics a newsletter's preferences page offers, in label order for ``language``.

    Its own topic filter if it has one, else every topic; either way only those offered
    and not hidden. Others still filter what a reader who chose them receives.
    """
    newsletter = session.get_one(Newsletter, newsletter_id)
    query = select(Topic).where(Topic.offered.is_(True), Topic.hidden.is_(False))
    if newsletter.topics:
        query = query.where(
            Topic.id.in_(
                select(newsletter_topic.c.topic_id).where(
                    newsletter_topic.c.newsletter_id == newsletter_id
                )
            )
        )
    topics = list(session.scalars(query))
    return sorted(topics, key=lambda t: (label(t, language).casefold(), t.slug))
