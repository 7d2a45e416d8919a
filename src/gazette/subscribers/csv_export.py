"""Exporting readers as CSV: streamed from the database, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from gazette.newsletters.service import newsletter_by_slug
from gazette.store.models import Newsletter, Subscriber, Subscription

# Spreadsheets run a cell that starts with one of these as a formula.
FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")
EXPORT_COLUMNS = ("email", "name", "language", "newsletter", "status", "created_at", "confirmed_at")


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
