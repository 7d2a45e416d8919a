"""SQLAlchemy models: the data model of docs/design.md, with the unique keys it names.

One module per part of the model (base, content, readers, issues, reports); this package
gathers their names, so ``gazette.store.models`` stays the one place to import a
mapped class from, and importing it maps every class.
"""

from gazette.store.models.base import (
    NAMING,
    OPEN_ISSUES,
    Base,
    DeliveryStatus,
    Edition,
    IssueStatus,
    SubscriptionStatus,
    UTCDateTime,
    new_public_id,
    status_column,
    utcnow,
)
from gazette.store.models.content import (
    Article,
    Feed,
    Newsletter,
    Topic,
    TopicAlias,
    article_feed,
    article_topic,
    newsletter_topic,
)
from gazette.store.models.issues import Delivery, Issue, IssueArticle
from gazette.store.models.readers import (
    Event,
    RateLimit,
    Subscriber,
    SubscriberAlias,
    Subscription,
    SubscriptionTally,
    Suppression,
    subscription_topic,
)
from gazette.store.models.reports import BounceReport

__all__ = [
    "NAMING",
    "OPEN_ISSUES",
    "Article",
    "Base",
    "BounceReport",
    "Delivery",
    "DeliveryStatus",
    "Edition",
    "Event",
    "Feed",
    "Issue",
    "IssueArticle",
    "IssueStatus",
    "Newsletter",
    "RateLimit",
    "Subscriber",
    "SubscriberAlias",
    "Subscription",
    "SubscriptionStatus",
    "SubscriptionTally",
    "Suppression",
    "Topic",
    "TopicAlias",
    "UTCDateTime",
    "article_feed",
    "article_topic",
    "new_public_id",
    "newsletter_topic",
    "status_column",
    "subscription_topic",
    "utcnow",
]
