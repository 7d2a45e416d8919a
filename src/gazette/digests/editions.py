"""The editions a newsletter sends, and the weekly summary's rules, each written once.

A newsletter sends its regular issues; one that lets readers choose a frequency also
sends a weekly summary, at the first scheduled tick of each week, to the readers who
chose it. Planning, the scheduler, previews and test sends ask here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, or_

from gazette.errors import GazetteError
from gazette.newsletters.service import Schedule
from gazette.store.models import Edition, Newsletter, Subscription, SubscriptionStatus

# Subscription.frequency values; NULL means the newsletter's own schedule.
WEEKLY_FREQUENCY = "weekly"
# Issue.skip_reason of a weekly summary nobody was waiting for.
NO_WEEKLY_READER = "no reader chose the weekly summary"


def editions(newsletter: Newsletter) -> tuple[Edition, ...]:
    """The editions the newsletter sends: the weekly summary only when readers may choose."""
    if newsletter.allow_frequency:
        return (Edition.REGULAR, Edition.WEEKLY)
    return (Edition.REGULAR,)


def has_edition(newsletter: Newsletter, edition: Edition) -> bool:
    """Whether the newsletter sends ``edition`` (the weekly one only with the choice on)."""
    return edition in editions(newsletter)


def require_edition(newsletter: Newsletter, edition: Edition) -> None:
    """Raise GazetteError when the newsletter does not send ``edition``."""
    if not has_edition(newsletter, edition):
        raise GazetteError(
            f"{newsletter.slug} has no weekly edition: its readers cannot choose a frequency."
        )


def edition_due(schedule: Schedule, edition: Edition, now: datetime) -> bool:
    """Whether the scheduler plans ``edition`` at the tick of ``now``.

    The summary goes out at the week's first tick, not whenever the choice is switched
    on mid-week (it would repeat days its readers already received).
    """
    return edition is not Edition.WEEKLY or schedule.first_tick_of_week(now)


def reader_edition(newsletter: Newsletter, frequency: str | None) -> Edition:
    """The edition a reader with ``frequency`` receives: weekly only if chosen and offered."""
    if has_edition(newsletter, Edition.WEEKLY) and frequency == WEEKLY_FREQUENCY:
        return Edition.WEEKLY
    return Edition.REGULAR


def audience_filter(newsletter: Newsletter, edition: Edition) -> ColumnElement[bool]:
    """Which active subscriptions an edition goes to, by the frequency readers chose.

    The query form of ``reader_edition``. A frequency is only honoured while the
    newsletter offers the choice: when an operator withdraws it, weekly readers go back
    to every issue rather than to nothing.
    """
    active = (Subscription.newsletter_id == newsletter.id) & (
        Subscription.status == SubscriptionStatus.ACTIVE
    )
    if not has_edition(newsletter, Edition.WEEKLY):
        return active
    weekly = Subscription.frequency == WEEKLY_FREQUENCY
    if edition is Edition.WEEKLY:
        return active & weekly
    return active & or_(Subscription.frequency.is_(None), ~weekly)
