"""Who a claimed chunk of the ledger goes to: the rows whose reader is still subscribed.

Sending re-reads each chunk's readers just before its first message is due, so an
unsubscribe that lands mid-send is honoured; one query per chunk, whatever its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter

from sqlalchemy import Text, and_, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from gazette.digests.composer import Reader
from gazette.digests.routing import extra_languages_from_json
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Issue,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Topic,
    subscription_topic,
)


@dataclass(frozen=True)
class Recipient:
    """One claimed row still to be sent: its ledger row, its attempts, and its reader."""

    delivery_id: int
    subscriber_id: int
    attempts: int
    reader: Reader


def chunk_recipients(session: Session, delivery_ids: Sequence[int]) -> list[Recipient]:
    """Load the claimed rows whose subscription is still active, in id order.

    One query per chunk whatever its size: the rows joined to the topics their readers
    chose (a reader with several topics comes back once per topic, and is folded here),
    with the further languages each reader reads, for routing by language.
    """
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.subscriber_id,
            Delivery.attempts,
            Subscriber.public_id,
            Subscriber.email,
            Subscriber.name,
            Subscriber.language,
            # As text: decoded once per distinct list (languages.py), not once per row.
            sql_cast(Subscriber.extra_languages, Text),
            Topic.slug,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .join(Issue, Issue.id == Delivery.issue_id)
        .join(
            Subscription,
            and_(
                Subscription.subscriber_id == Delivery.subscriber_id,
                Subscription.newsletter_id == Issue.newsletter_id,
            ),
        )
        .outerjoin(subscription_topic, subscription_topic.c.subscription_id == Subscription.id)
        .outerjoin(Topic, Topic.id == subscription_topic.c.topic_id)
        .where(
            Delivery.id.in_(delivery_ids),
            Delivery.status == DeliveryStatus.SENDING,
            Subscription.status == SubscriptionStatus.ACTIVE,
        )
        .order_by(Delivery.id)
    ).all()
    recipients = []
    # Ordered by delivery id, so a reader's rows (one per chosen topic) are adjacent.
    for delivery_id, group in groupby(rows, key=itemgetter(0)):
        same = list(group)
        _, subscriber_id, attempts, public_id, email, name, language, extra, _slug = same[0]
        topics = frozenset(row[-1] for row in same if row[-1] is not None)
        reader = Reader(public_id, email, name, language, topics, extra_languages_from_json(extra))
        recipients.append(Recipient(delivery_id, subscriber_id, attempts, reader))
    return recipients
