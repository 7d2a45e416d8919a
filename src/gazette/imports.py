"""CSV import and export of subscribers, streamed, in bulk statements per chunk.

An import reads the file twice: first to check that it is readable CSV with an email
column from start to end (so a bad byte on line 90,000 fails the import before anything
is written), then to write valid rows in one transaction per chunk. Row-level problems
(a bad address, an unknown language) reject that row alone, with its line number.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import IO, Any, NamedTuple

from sqlalchemy import BindParameter, Dialect, Table, insert, literal, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import UserDefinedType

from gazette.addresses import AddressError, identity_key, normalise_address
from gazette.errors import GazetteError
from gazette.newsletters import newsletter_by_slug
from gazette.store.models import (
    Base,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    utcnow,
)
from gazette.subscribers import LANGUAGES, Origin, event_row, suppression_hashes
from gazette.text import clean_line

CHUNK = 1000
MAX_FIELD = 10_000
# Spreadsheets run a cell that starts with one of these as a formula.
FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")
# Core inserts over the tables, built once: the ORM's bulk path costs per-row bookkeeping
# an import of new readers does not need (column types and defaults still apply).
_SUBSCRIBER_TABLE = Base.metadata.tables["subscriber"]
_SUBSCRIPTION_TABLE = Base.metadata.tables["subscription"]
_EVENT_TABLE = Base.metadata.tables["event"]
_INSERT_SUBSCRIBERS = insert(_SUBSCRIBER_TABLE).returning(
    _SUBSCRIBER_TABLE.c.id, _SUBSCRIBER_TABLE.c.email_key
)
_INSERT_EVENTS = insert(_EVENT_TABLE)
EXPORT_COLUMNS = ("email", "name", "language", "newsletter", "status", "created_at", "confirmed_at")


@dataclass(frozen=True)
class RejectedRow:
    """A row that was not imported: its line in the file and the reason."""

    line: int
    reason: str


@dataclass
class ImportReport:
    """What an import did, row by row category."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped_unsubscribed: int = 0
    skipped_suppressed: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    # Language tags read as an offered language (``ja-JP`` as ``ja``).
    languages_mapped: int = 0
    # New readers whose language is not offered, given the newsletter's default instead.
    languages_defaulted: int = 0
    default_language: str = ""
    # Readers left pending by this import, in the file's order: whom to send a link to.
    pending: list[int] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the operator and the log."""
        line = (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.skipped_unsubscribed} skipped as unsubscribed, "
            f"{self.skipped_suppressed} skipped as forgotten or suppressed, "
            f"{len(self.rejected)} rejected"
        )
        if self.languages_mapped or self.languages_defaulted:
            mapped = self.languages_mapped
            line += (
                f", {mapped} language{'' if mapped == 1 else 's'} mapped, "
                f"{self.languages_defaulted} given the default language {self.default_language}"
            )
        return line


class _Row(NamedTuple):
    line: int
    email: str
    name: str
    language: str
    # The identity of ``email``: rows with one key are one reader.
    key: str
    # True when the file named a language Gazette does not offer.
    unoffered: bool


def offered_language(tag: str) -> tuple[str, bool]:
    """The offered language a tag names (``ja-JP``, ``EN_gb``), and whether it was mapped.

    Empty when the tag is empty or names a language Gazette has no templates for.
    """
    code = tag.strip().lower()
    if not code or code in LANGUAGES:
        return code, False
    primary = code.replace("_", "-").split("-", 1)[0]
    if primary in LANGUAGES:
        return primary, True
    return "", False


def _open_text(path: Path) -> IO[str]:
    # utf-8-sig drops the byte-order mark Excel writes; newline="" is what csv wants.
    return open(path, encoding="utf-8-sig", errors="strict", newline="")


def _reader(handle: IO[str], source: str) -> tuple[csv.DictReader[str], dict[str, str]]:
    """Return a reader over the rows and the mapping of our column names to the file's."""
    # strict: an unclosed quote is an error, not a field that swallows the next lines.
    reader = csv.DictReader(handle, strict=True)
    try:
        header = reader.fieldnames
    except (csv.Error, UnicodeDecodeError) as exc:
        raise GazetteError(f"{source} cannot be read as CSV on line 1 ({exc}).") from None
    if not header:
        raise GazetteError(f"{source} is empty: expected a header row with an email column.")
    columns = {name.strip().casefold(): name for name in header if name}
    if "email" not in columns:
        shown = ", ".join(repr(n) for n in header[:10])
        raise GazetteError(f"{source} has no email column (its header row is {shown}).")
    return reader, columns


def _check_encoding(path: Path) -> None:
    """Decode the file line by line, so a bad byte is reported on its own line."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise GazetteError(
                    f"{path} is not UTF-8 text: byte 0x{line[exc.start]:02x} on line {number}."
                ) from None


def _records(reader: csv.DictReader[str]) -> Iterator[tuple[int, list[str]]]:
    """The rows after the header, each with the line it ends on, as ``reader`` gives them.

    DictReader's own iteration builds a dict per row; this reads its underlying csv
    reader instead, skipping blank rows as it does.
    """
    rows = reader.reader
    for row in rows:
        if row:
            yield rows.line_num, row


def check_file(path: Path) -> int:
    """Read the whole file once; return its row count or raise GazetteError on line N."""
    source = str(path)
    if not path.is_file():
        raise GazetteError(f"{source} is not a file.")
    _check_encoding(path)
    with _open_text(path) as handle:
        reader, _columns = _reader(handle, source)
        count = 0
        start = reader.line_num + 1
        try:
            for line, _row in _records(reader):
                count += 1
                start = line + 1
        except csv.Error as exc:
            raise GazetteError(
                f"{source} is not valid CSV: the record that starts on line {start} ({exc})."
            ) from None
    return count


def _rows(path: Path, report: ImportReport, smtputf8: bool) -> Iterator[_Row]:
    with _open_text(path) as handle:
        reader, columns = _reader(handle, str(path))
        header = reader.fieldnames or []
        width = len(header)
        # As in DictReader, a name repeated in the header row reads its last column. A
        # column the file lacks sits at ``width``, past the end of every row it accepts,
        # so it reads as empty, as does a column past the end of a short row.
        last = {name: at for at, name in enumerate(header)}
        named = [last[original] for original in columns.values()]
        email_at = last[columns["email"]]
        name_at = last[columns["name"]] if "name" in columns else width
        language_at = last[columns["language"]] if "language" in columns else width
        for line, record in _records(reader):
            fields = len(record)
            if fields > width:
                report.rejected.append(RejectedRow(line, "more fields than the header row"))
                continue
            # Only a named column's field counts; most rows have no long field at all.
            if max(map(len, record)) > MAX_FIELD and any(
                at < fields and len(record[at]) > MAX_FIELD for at in named
            ):
                report.rejected.append(RejectedRow(line, f"a field is over {MAX_FIELD} characters"))
                continue
            raw_email = record[email_at] if email_at < fields else ""
            try:
                email = normalise_address(raw_email, allow_smtputf8=smtputf8)
            except AddressError as exc:
                report.rejected.append(RejectedRow(line, str(exc)))
                continue
            # Empty when the file does not say: an existing reader keeps their language.
            raw_language = record[language_at] if language_at < fields else ""
            language, mapped = offered_language(raw_language) if raw_language else ("", False)
            report.languages_mapped += mapped
            name = record[name_at] if name_at < fields else ""
            yield _Row(
                line, email, clean_line(name, 200), language, identity_key(email),
                bool(raw_language.strip()) and not language,
            )  # fmt: skip


def _chunks(rows: Iterator[_Row], size: int) -> Iterator[list[_Row]]:
    chunk: list[_Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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
    rows = _rows(path, report, allow_smtputf8)
    for chunk in _chunks(rows, chunk_size):
        with sessions() as session, session.begin():
            _import_chunk(session, newsletter, chunk, origin, confirmed, report)
        done += len(chunk)
        if progress is not None:
            progress(done + len(report.rejected))
    return report


def _import_chunk(
    session: Session,
    newsletter: Newsletter,
    chunk: list[_Row],
    origin: Origin,
    confirmed: bool,
    report: ImportReport,
) -> None:
    """Write one chunk with a handful of bulk statements, whatever its size."""
    # Keyed by identity: two spellings of one mailbox in a file are one reader.
    by_email: dict[str, _Row] = {}
    for row in chunk:
        if row.key in by_email:
            report.unchanged += 1  # the same mailbox twice in the file
            continue
        by_email[row.key] = row
    now = utcnow()
    existing = {
        s.email_key: s
        for s in session.scalars(select(Subscriber).where(Subscriber.email_key.in_(by_email)))
    }
    hashes = {
        digest: key
        for key, row in by_email.items()
        if key not in existing
        for digest in suppression_hashes(row.email)
    }
    suppressed = {
        hashes[h]
        for h in session.scalars(
            select(Suppression.email_hash).where(Suppression.email_hash.in_(hashes))
        )
    }
    new_rows = [r for e, r in by_email.items() if e not in existing and e not in suppressed]
    report.skipped_suppressed += len(suppressed)
    ids: dict[str, int] = {}
    if new_rows:
        common: dict[str, object] = {"created_at": now, "attributes": {}}
        if confirmed:
            # New readers imported with consent held: record when and how it was given.
            common.update(confirmed_at=now, consent_at=now, consent_source=origin.source)
        default_language = newsletter.default_language
        shared = _shared(_SUBSCRIBER_TABLE, session.connection().dialect, common)
        created = session.execute(
            _INSERT_SUBSCRIBERS.values(shared),
            [{"email": r.email, "email_key": r.key, "name": r.name,
              "language": r.language or default_language} for r in new_rows],
        ).all()  # fmt: skip
        ids = {key: sid for sid, key in created}
        report.languages_defaulted += sum(r.unoffered for r in new_rows)
    ids.update({email: s.id for email, s in existing.items()})
    subscriptions = {
        sub.subscriber_id: sub
        for sub in session.scalars(
            select(Subscription).where(
                Subscription.newsletter_id == newsletter.id,
                Subscription.subscriber_id.in_([s.id for s in existing.values()]),
            )
        )
    }
    # One event per imported reader: a bulk import of 100,000 rows must not write three
    # audit rows each. It says whether consent was held.
    consent = {"consent": "held by operator"} if confirmed else {}
    subscribed = _event(None, newsletter.id, "subscribed", origin, now, **consent)
    # Readers to subscribe, and so to give a "subscribed" event, in the file's order.
    to_subscribe: list[int] = []
    # A subscriber id for each "subscribed" event; a whole row for any other.
    events: list[dict[str, object]] = []
    confirmations = 0
    for email, row in by_email.items():
        if email in suppressed:
            continue
        subscriber_id = ids[email]
        subscriber = existing.get(email)
        subscription = subscriptions.get(subscriber_id)
        if subscription is not None and subscription.status == SubscriptionStatus.UNSUBSCRIBED:
            # The reader left: the import neither resubscribes nor edits them.
            report.skipped_unsubscribed += 1
            continue
        changed = False
        if subscriber is not None:
            if row.name and row.name != subscriber.name:
                subscriber.name, changed = row.name, True
            if row.language and row.language != subscriber.language:
                subscriber.language, changed = row.language, True
        if subscription is None:
            to_subscribe.append(subscriber_id)
            events.append({"subscriber_id": subscriber_id})
            if not confirmed:
                report.pending.append(subscriber_id)
            if confirmed and subscriber is not None and subscriber.confirmed_at is None:
                subscriber.confirmed_at = now
            if subscriber is None:
                report.added += 1
            else:
                report.updated += 1
            continue
        if not confirmed and subscription.status == SubscriptionStatus.PENDING:
            report.pending.append(subscriber_id)
        if confirmed and subscription.status == SubscriptionStatus.PENDING:
            subscription.status = SubscriptionStatus.ACTIVE
            events.append(_event(subscriber_id, newsletter.id, "confirmed", origin, now,
                                 consent="held by operator"))  # fmt: skip
            confirmations += 1
            changed = True
        if changed:
            report.updated += 1
        else:
            report.unchanged += 1
    # Only readers this chunk created, so none can have gone since they were read.
    created_only = len(to_subscribe) == len(new_rows)
    if to_subscribe:
        status = SubscriptionStatus.ACTIVE if confirmed else SubscriptionStatus.PENDING
        common = {"newsletter_id": newsletter.id, "status": status,
                  "created_at": now, "updated_at": now}  # fmt: skip
        _insert_each(session, _SUBSCRIPTION_TABLE, common, to_subscribe, created_only)
    if events and not confirmations:
        common = {key: value for key, value in subscribed.items() if key != "subscriber_id"}
        _insert_each(session, _EVENT_TABLE, common, to_subscribe, created_only)
    elif events:
        # Both kinds in one statement, so the events' ids keep the file's order.
        session.execute(_INSERT_EVENTS, [{**subscribed, **event} for event in events])


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


def neutralise(value: str) -> str:
    """Make a cell safe to open in a spreadsheet: a leading formula character is quoted."""
    return "'" + value if value.startswith(FORMULA_LEAD) else value


def export_csv(session: Session, out: IO[str], newsletter_slug: str | None = None) -> int:
    """Write subscribers as CSV, streamed from the database; return the row count."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    query = (
        select(Subscriber, Subscription.status, Newsletter.slug)
        .join(Subscription, Subscription.subscriber_id == Subscriber.id)
        .join(Newsletter, Newsletter.id == Subscription.newsletter_id)
        .order_by(Subscriber.id, Newsletter.slug)
        .execution_options(yield_per=1000)
    )
    if newsletter_slug is not None:
        query = query.where(Newsletter.id == newsletter_by_slug(session, newsletter_slug).id)
    count = 0
    for subscriber, status, slug in session.execute(query):
        writer.writerow(
            [
                neutralise(subscriber.email),
                neutralise(subscriber.name),
                subscriber.language,
                slug,
                status.value,
                subscriber.created_at.isoformat(),
                subscriber.confirmed_at.isoformat() if subscriber.confirmed_at else "",
            ]
        )
        count += 1
    return count


def text_stream(binary: IO[bytes]) -> IO[str]:
    """Wrap a binary stream for export_csv (UTF-8 with a BOM, which Excel needs)."""
    return io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
