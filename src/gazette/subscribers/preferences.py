"""A reader's preferences for one newsletter: what the page shows, and saving a choice."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy.orm import Session

from gazette.errors import GazetteError, InvalidChoiceError
from gazette.newsletters.service import newsletter_by_slug
from gazette.newsletters.topics import label as topic_label
from gazette.newsletters.topics import offered_topics
from gazette.store.models import Newsletter, SubscriptionStatus
from gazette.subscribers.service import (
    FREQUENCIES,
    Origin,
    check_language,
    record_event,
    subscriber_by_public_id,
    subscription_for,
)


@dataclass(frozen=True)
class Preferences:
    """What a reader can change from their preferences link."""

    email: str
    newsletter_name: str
    language: str
    status: SubscriptionStatus
    topics: tuple[tuple[str, str, bool], ...]  # (slug, name, chosen)
    frequency: str | None
    frequency_allowed: bool


def preferences(session: Session, public_id: str, newsletter_slug: str) -> Preferences:
    """Return a reader's preferences for one newsletter, for the preferences page."""
    subscriber = subscriber_by_public_id(session, public_id)
    newsletter = newsletter_by_slug(session, newsletter_slug)
    subscription = subscription_for(session, subscriber.id, newsletter.id)
    chosen = {t.slug for t in subscription.topics}
    offered = offered_topics(session, newsletter.id, subscriber.language)
    return Preferences(
        email=subscriber.email,
        newsletter_name=newsletter.name,
        language=subscriber.language,
        status=subscription.status,
        topics=tuple(
            (t.slug, topic_label(t, subscriber.language), t.slug in chosen) for t in offered
        ),
        frequency=subscription.frequency,
        frequency_allowed=newsletter.allow_frequency,
    )


def update_preferences(
    session: Session,
    public_id: str,
    newsletter_slug: str,
    origin: Origin,
    *,
    language: str,
    topics: list[str],
    frequency: str | None,
    languages: Collection[str] = (),
) -> None:
    """Save a reader's choices: language, topics (none means all), and frequency.

    ``languages``: further languages accepted (those the preferences page offered).
    """
    subscriber = subscriber_by_public_id(session, public_id)
    newsletter = newsletter_by_slug(session, newsletter_slug)
    subscription = subscription_for(session, subscriber.id, newsletter.id)
    try:
        subscriber.language = check_language(language, languages)
    except GazetteError as error:
        raise InvalidChoiceError(str(error)) from None
    # What the page offered. A choice of a topic no longer offered (the operator hid or
    # withdrew it) is dropped when the reader saves: what they see is what they get.
    offered = {t.slug: t for t in offered_topics(session, newsletter.id, subscriber.language)}
    unknown = [slug for slug in topics if slug not in offered]
    if unknown:
        raise InvalidChoiceError(f"Topic {unknown[0]!r} is not offered by {newsletter.name}.")
    subscription.topics = [offered[slug] for slug in topics]
    if frequency is not None:
        subscription.frequency = _check_frequency(newsletter, frequency)
    record_event(
        session, "preferences", origin, subscriber_id=subscriber.id,
        newsletter_id=newsletter.id, language=subscriber.language,
        topics=",".join(sorted(topics)), frequency=frequency or "",
    )  # fmt: skip


def _check_frequency(newsletter: Newsletter, frequency: str) -> str:
    """Return a frequency the newsletter lets readers choose, or raise InvalidChoiceError."""
    if not newsletter.allow_frequency:
        raise InvalidChoiceError(f"{newsletter.name} does not offer a choice of frequency.")
    if frequency not in FREQUENCIES:
        raise InvalidChoiceError(f"Frequency {frequency!r} is not one of {', '.join(FREQUENCIES)}.")
    return frequency
