"""Who a claimed chunk of the ledger goes to: the rows whose reader is still subscribed.

Sending re-reads each chunk's readers just before its first message is due, so an
unsubscribe that lands mid-send is honoured; one query per chunk, whatever its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import cast

from sqlalchemy import Table, Text, and_, bindparam, select
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
    rows = session.execute(_CHUNK_READERS, {"ids": list(delivery_ids)}).all()
    recipients = []
    # Ordered by delivery id, so a reader's rows (one per chosen topic) are adjacent.
    for delivery_id, group in groupby(rows, key=itemgetter(0)):
        same = list(group)
        _, subscriber_id, attempts, public_id, email, name, language, extra, _slug = same[0]
        topics = frozenset(row[-1] for row in same if row[-1] is not None)
        reader = Reader(public_id, email, name, language, topics, extra_languages_from_json(extra))
        recipients.append(Recipient(delivery_id, subscriber_id, attempts, reader))
    return recipients


def _table(model: type[object]) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


_d, _s, _i, _sub, _t = map(_table, (Delivery, Subscriber, Issue, Subscription, Topic))
_st = subscription_topic
# Built once, over the tables (Core, not the ORM's entities): it runs for every chunk of
# every batch, and building and compiling it each time cost more than running it.
_CHUNK_READERS = (
    select(
        _d.c.id, _d.c.subscriber_id, _d.c.attempts, _s.c.public_id, _s.c.email, _s.c.name,
        _s.c.language,
        # As text: decoded once per distinct list (languages.py), not once per row.
        sql_cast(_s.c.extra_languages, Text),
        _t.c.slug,
    )
    .select_from(_d)
    .join(_s, _s.c.id == _d.c.subscriber_id)
    .join(_i, _i.c.id == _d.c.issue_id)
    .join(
        _sub,
        and_(
            _sub.c.subscriber_id == _d.c.subscriber_id,
            _sub.c.newsletter_id == _i.c.newsletter_id,
        ),
    )
    .outerjoin(_st, _st.c.subscription_id == _sub.c.id)
    .outerjoin(_t, _t.c.id == _st.c.topic_id)
    .where(
        _d.c.id.in_(bindparam("ids", expanding=True)),
        _d.c.status == DeliveryStatus.SENDING,
        _sub.c.status == SubscriptionStatus.ACTIVE,
    )
    .order_by(_d.c.id)
)  # fmt: skip
