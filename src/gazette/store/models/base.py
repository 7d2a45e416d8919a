"""The mapping's foundations: the declarative base, its UTC timestamp type, the status enums.

Statuses are short strings checked by the database (non-native enums), so a migration
never has to alter a PostgreSQL enum type, and SQLite enforces the same set.
"""

from __future__ import annotations

import enum
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Enum, MetaData, TypeDecorator
from sqlalchemy.orm import DeclarativeBase

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime, the only kind the store keeps."""
    return datetime.now(UTC)


def new_public_id() -> str:
    """Return an opaque identifier for links, so tokens never carry a row id or an address."""
    return secrets.token_urlsafe(12)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that always comes back timezone-aware.

    SQLite has no time zone type and returns naive values; without this, comparisons
    between loaded and fresh timestamps would raise or silently compare wrong.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(  # noqa: D102 - TypeDecorator hook
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the store; use aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(  # noqa: D102 - TypeDecorator hook
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with constraint names fixed, so migrations can refer to them."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it as a class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class SubscriptionStatus(enum.StrEnum):
    """Where a reader stands with one newsletter."""

    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class IssueStatus(enum.StrEnum):
    """Where an issue is between planning and the last message."""

    PLANNED = "planned"
    SENDING = "sending"
    SENT = "sent"
    SKIPPED = "skipped"


# The issues that may still send: an issue is marked sent once it has no pending or
# sending row left (digests.ledger.finish_issue), and only these are resumed.
OPEN_ISSUES = (IssueStatus.PLANNED, IssueStatus.SENDING)


class Edition(enum.StrEnum):
    """Which readers an issue is for: every scheduled issue, or the weekly summary.

    Readers of a newsletter that offers a choice of frequency pick one; the weekly
    edition has its own article window, so it repeats what the week's issues carried.
    """

    REGULAR = "regular"
    WEEKLY = "weekly"


class DeliveryStatus(enum.StrEnum):
    """Where one message of an issue is: the ledger's states."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


def status_column(cls: type[enum.StrEnum], name: str) -> Enum:
    """The column type of a status: its values as short strings the database checks."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )
