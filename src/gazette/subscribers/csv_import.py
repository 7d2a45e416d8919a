"""Importing readers from CSV: one transaction and a handful of bulk statements per chunk.

The file is checked whole and read row by row in csv_reading.py; here each chunk of
rows is written. Re-running an import changes nothing, spellings of one mailbox are one
reader, and an address that unsubscribed or was forgotten is skipped, never
resubscribed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from sqlalchemy import BindParameter, Dialect, Table, insert, literal, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import UserDefinedType

from gazette.newsletters.service import newsletter_by_slug
from gazette.store.models import (
    Base,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from gazette.subscribers.csv_reading import ImportReport, ReaderRow, check_file, chunks, read_rows
from gazette.subscribers.service import Origin, event_row, suppression_hashes

CHUNK = 1000
# Core inserts over the tables, built once: the ORM's bulk path costs per-row bookkeeping
# an import of new readers does not need (column types and defaults still apply).
_SUBSCRIBER_TABLE = Base.metadata.tables["subscriber"]
_SUBSCRIPTION_TABLE = Base.metadata.tables["subscription"]
_EVENT_TABLE = Base.metadata.tables["event"]
_INSERT_SUBSCRIBERS = insert(_SUBSCRIBER_TABLE).returning(
    _SUBSCRIBER_TABLE.c.id, _SUBSCRIBER_TABLE.c.email_key
)
_INSERT_EVENTS = insert(_EVENT_TABLE)


def import_csv(
    sessions: sessionmaker[Session],
    path: Path,
    newsletter_slug: str,
    origin: Origin,
    *,
    confirmed: bool = False,
    allow_smtputf8: bool = False,
    progress: Callable[[int], None] | None = None,
    chunk_size: int = CHUNK,
) -> ImportReport:
    """Import subscribers from CSV (columns: email, and optionally name and language).

    Re-running the same import changes nothing. Spellings of one mailbox are one reader
    (the first spelling is kept). An address that unsubscribed, or was forgotten, is
    skipped, never resubscribed. A language tag is read as the offered language it
    names (``ja-JP`` as ``ja``); a new reader with one not offered gets the
    newsletter's default. ``progress`` is called with the number of rows handled after
    each chunk.
    """
    with sessions() as session:
        newsletter = newsletter_by_slug(session, newsletter_slug)
        session.expunge(newsletter)
    check_file(path)
    report = ImportReport(default_language=newsletter.default_language)
    done = 0
    rows = read_rows(path, report, allow_smtputf8)
    for chunk in chunks(rows, chunk_size):
        with sessions() as session, session.begin():
            _import_chunk(session, newsletter, chunk, origin, confirmed, report)
        done += len(chunk)
        if progress is not None:
            progress(done + len(report.rejected))
    return report


def _import_chunk(
    session: Session,
    newsletter: Newsletter,
    chunk: list[ReaderRow],
    origin: Origin,
    confirmed: bool,
    report: ImportReport,
) -> None:
    """Write one chunk with a handful of bulk statements, whatever its size."""
    now = utcnow()
    rows = _distinct_readers(chunk, report)
    existing = {
        s.email_key: s
        for s in session.scalars(select(Subscriber).where(Subscriber.email_key.in_(rows)))
    }
    suppressed = _suppressed(session, rows, existing)
    report.skipped_suppressed += len(suppressed)
    new_rows = [r for key, r in rows.items() if key not in existing and key not in suppressed]
    ids = _insert_readers(session, new_rows, newsletter.default_language, origin, confirmed, now)
    report.languages_defaulted += sum(r.unoffered for r in new_rows)
    ids.update({key: s.id for key, s in existing.items()})
    subscriptions = _subscriptions(session, newsletter.id, existing.values())
    writer = _ChunkWriter(newsletter.id, origin, confirmed, now, report)
    for key, row in rows.items():
        if key not in suppressed:
            writer.add(row, ids[key], existing.get(key), subscriptions.get(ids[key]))
    # Only readers this chunk created, so none can have gone since they were read.
    writer.write(session, created_only=len(writer.to_subscribe) == len(new_rows))


def _distinct_readers(chunk: list[ReaderRow], report: ImportReport) -> dict[str, ReaderRow]:
    """The chunk's rows by identity: two spellings of one mailbox in a file are one reader."""
    by_key: dict[str, ReaderRow] = {}
    for row in chunk:
        if row.key in by_key:
            report.unchanged += 1  # the same mailbox twice in the file
            continue
        by_key[row.key] = row
    return by_key


def _suppressed(
    session: Session, rows: dict[str, ReaderRow], existing: dict[str, Subscriber]
) -> set[str]:
    """The identity keys of the readers whose address was forgotten or suppressed.

    Known readers too: a reader who complained keeps a suppression, and no import may
    subscribe them to another newsletter.
    """
    hashes = {
        digest: key
        for key, row in rows.items()
        for digest in suppression_hashes(existing[key].email if key in existing else row.email)
    }
    found = session.scalars(
        select(Suppression.email_hash).where(Suppression.email_hash.in_(hashes))
    )
    return {hashes[digest] for digest in found}


def _insert_readers(
    session: Session,
    new_rows: list[ReaderRow],
    default_language: str,
    origin: Origin,
    confirmed: bool,
    now: datetime,
) -> dict[str, int]:
    """Insert the chunk's new readers in one statement; return their ids by identity key."""
    if not new_rows:
        return {}
    common: dict[str, object] = {"created_at": now, "attributes": {}}
    if confirmed:
        # New readers imported with consent held: record when and how it was given.
        common.update(confirmed_at=now, consent_at=now, consent_source=origin.source)
    shared = _shared(_SUBSCRIBER_TABLE, session.connection().dialect, common)
    created = session.execute(
        _INSERT_SUBSCRIBERS.values(shared),
        [{"email": r.email, "email_key": r.key, "name": r.name,
          "language": r.language or default_language} for r in new_rows],
    ).all()  # fmt: skip
    return {key: subscriber_id for subscriber_id, key in created}


def _subscriptions(
    session: Session, newsletter_id: int, readers: Iterable[Subscriber]
) -> dict[int, Subscription]:
    """The known readers' subscriptions to the newsletter, by subscriber id."""
    query = select(Subscription).where(
        Subscription.newsletter_id == newsletter_id,
        Subscription.subscriber_id.in_([s.id for s in readers]),
    )
    return {sub.subscriber_id: sub for sub in session.scalars(query)}


def _edit_reader(subscriber: Subscriber, row: ReaderRow) -> bool:
    """Give a known reader the name and language the file has for them; True if changed."""
    changed = False
    if row.name and row.name != subscriber.name:
        subscriber.name, changed = row.name, True
    if row.language and row.language != subscriber.language:
        subscriber.language, changed = row.language, True
    return changed


class _ChunkWriter:
    """What one chunk does to each reader, gathered row by row, then written in bulk."""

    def __init__(
        self, newsletter_id: int, origin: Origin, confirmed: bool, now: datetime,
        report: ImportReport,
    ) -> None:  # fmt: skip
        self.newsletter_id, self.origin, self.now = newsletter_id, origin, now
        self.confirmed, self.report = confirmed, report
        # Readers to subscribe, and so to give a "subscribed" event, in the file's order.
        self.to_subscribe: list[int] = []
        # A subscriber id for each "subscribed" event; a whole row for any other.
        self.events: list[dict[str, object]] = []
        self.confirmations = 0

    def add(
        self,
        row: ReaderRow,
        subscriber_id: int,
        subscriber: Subscriber | None,
        subscription: Subscription | None,
    ) -> None:
        """Take one reader of the file: subscribe, confirm, update, or leave them be."""
        if subscription is not None and subscription.status == SubscriptionStatus.UNSUBSCRIBED:
            # The reader left: the import neither resubscribes nor edits them.
            self.report.skipped_unsubscribed += 1
            return
        changed = subscriber is not None and _edit_reader(subscriber, row)
        if subscription is None:
            self._subscribe(subscriber_id, subscriber)
        elif self._confirm(subscriber_id, subscription) or changed:
            self.report.updated += 1
        else:
            self.report.unchanged += 1

    def _subscribe(self, subscriber_id: int, subscriber: Subscriber | None) -> None:
        """Queue a new subscription (and its event) for a reader who has none."""
        self.to_subscribe.append(subscriber_id)
        self.events.append({"subscriber_id": subscriber_id})
        if not self.confirmed:
            self.report.pending.append(subscriber_id)
        if self.confirmed and subscriber is not None and subscriber.confirmed_at is None:
            subscriber.confirmed_at = self.now
        if subscriber is None:
            self.report.added += 1
        else:
            self.report.updated += 1

    def _confirm(self, subscriber_id: int, subscription: Subscription) -> bool:
        """Activate a pending subscription when consent is held; True when it did."""
        if subscription.status != SubscriptionStatus.PENDING:
            return False
        if not self.confirmed:
            self.report.pending.append(subscriber_id)
            return False
        subscription.status = SubscriptionStatus.ACTIVE
        self.events.append(_event(subscriber_id, self.newsletter_id, "confirmed", self.origin,
                                  self.now, consent="held by operator"))  # fmt: skip
        self.confirmations += 1
        return True

    def write(self, session: Session, *, created_only: bool) -> None:
        """Insert the queued subscriptions and events; ``created_only``: see _insert_each."""
        # One event per imported reader: a bulk import of 100,000 rows must not write
        # three audit rows each. It says whether consent was held.
        consent = {"consent": "held by operator"} if self.confirmed else {}
        subscribed = _event(
            None, self.newsletter_id, "subscribed", self.origin, self.now, **consent
        )
        if self.to_subscribe:
            status = SubscriptionStatus.ACTIVE if self.confirmed else SubscriptionStatus.PENDING
            common = {"newsletter_id": self.newsletter_id, "status": status,
                      "created_at": self.now, "updated_at": self.now}  # fmt: skip
            _insert_each(session, _SUBSCRIPTION_TABLE, common, self.to_subscribe, created_only)
        if self.events and not self.confirmations:
            common = {key: value for key, value in subscribed.items() if key != "subscriber_id"}
            _insert_each(session, _EVENT_TABLE, common, self.to_subscribe, created_only)
        elif self.events:
            # Both kinds in one statement, so the events' ids keep the file's order.
            session.execute(_INSERT_EVENTS, [{**subscribed, **event} for event in self.events])


def _insert_each(
    session: Session,
    table: Table,
    common: dict[str, object],
    subscriber_ids: list[int],
    created_only: bool,
) -> None:
    """Insert a row of ``common`` values for each reader, in the order of ``subscriber_ids``.

    Readers the chunk created have ascending ids: one INSERT ... SELECT over them in id
    order then writes the same rows, numbered in the same order, without a set of
    parameters to build and convert for each one.
    """
    shared = _shared(table, session.connection().dialect, common)
    if created_only and all(a < b for a, b in pairwise(subscriber_ids)):
        readers = _SUBSCRIBER_TABLE.c.id
        each = select(readers, *shared.values()).where(readers.in_(subscriber_ids))
        session.execute(
            insert(table).from_select(["subscriber_id", *shared], each.order_by(readers))
        )
    else:
        session.execute(
            insert(table).values(shared), [{"subscriber_id": i} for i in subscriber_ids]
        )


class _Converted(UserDefinedType[object]):
    """A value already put through its column type's bind processing: passed on as it is."""

    cache_ok = True


def _shared(
    table: Table, dialect: Dialect, values: dict[str, object]
) -> dict[str, BindParameter[Any]]:
    """Bind values every row of a chunk shares, each through its column's type just once.

    Given in each row's parameters, the same timestamp or JSON document would be
    converted again for every row. Converted here, the driver receives what the
    column's type would have given it, so the stored values are the same.
    """
    shared: dict[str, BindParameter[Any]] = {}
    for name, value in values.items():
        column_type = table.c[name].type
        process = column_type.dialect_impl(dialect).bind_processor(dialect)
        if process is None:
            shared[name] = literal(value, column_type)
        else:
            shared[name] = literal(process(value), _Converted())
    return shared


def _event(
    subscriber_id: int | None,
    newsletter_id: int | None,
    kind: str,
    origin: Origin,
    now: object,
    **detail: str,
) -> dict[str, object]:
    # One timestamp for the whole import, so its events sort together.
    row = event_row(
        kind, origin, subscriber_id=subscriber_id, newsletter_id=newsletter_id, **detail
    )
    return {**row, "created_at": now}
