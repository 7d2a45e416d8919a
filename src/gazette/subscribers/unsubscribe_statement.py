"""PostgreSQL's unsubscribe as one statement: end, skip and log together.

The RFC 8058 one-click target is called by mail providers in bursts. A click changes
only the reader's own rows and one shard of the subscription tally its trigger keeps
(migration 0015): no row every click updates, such as the issue's running totals, so
clicks do not queue on each other's commit. In several statements a transaction would
hold its row locks across round trips to a web process that may wait milliseconds for
its GIL; data-modifying CTEs hold them only while the server runs the statement, run
on its own (autocommit), not even across a COMMIT.
SQLite has no such CTEs and one writer at a time: unsubscribing.py keeps its steps.
"""

from __future__ import annotations

from sqlalchemy import TextualSelect, bindparam, column, text

from gazette.newsletters.brand import BRAND_FIELDS
from gazette.store.models import Base
from gazette.subscribers.service import Origin, event_row

_event = Base.metadata.tables["event"]


# The changes of unsubscribing.unsubscribe: the status by a conditional UPDATE (of two
# clicks at once only one changes it), the reader's pending deliveries of the newsletter
# skipped (their issues' rows untouched: /metrics counts skipped rows of open issues),
# and one "unsubscribed" event. {reader} and {newsletter} say how the reader and the
# newsletter are named. It yields one row (reader id, language, 1 if the subscription
# changed else 0, then the newsletter's id, name and brand, NULL when there is no such
# newsletter, for the page that answers), or none when no reader matches. Plain SQL:
# SQLAlchemy 2.1 loses a parameter of this statement built from Core's DML-in-CTE
# constructs.
#
# Only an open issue's pending rows can still be sent (ledger.resumable_issues); an
# issue is marked sent once none is left (ledger.finish_issue). The reader's rows are
# found first, by the unique (issue_id, subscriber_id) index, one probe per open issue, in a
# materialised CTE that does not name the status. Given the status, PostgreSQL may read
# the pending rows through (issue_id, status) instead, every one of them on
# every click, whenever its statistics predate the planning and call 'pending'
# rare: 24 ms a click at 20,000 pending rows (tests/test_unsubscribe_at_once.py).
_SQL = """
WITH reader AS (
    SELECT id, language FROM subscriber WHERE {reader}
), letter AS (
    SELECT {letter_columns} FROM newsletter WHERE {newsletter}
), ended AS (
    UPDATE subscription SET status = 'unsubscribed', updated_at = :now
    WHERE subscriber_id IN (SELECT id FROM reader)
      AND newsletter_id IN (SELECT id FROM letter)
      AND status <> 'unsubscribed'
    RETURNING subscriber_id, newsletter_id
), mine AS MATERIALIZED (
    SELECT delivery.id FROM ended
    JOIN issue ON issue.newsletter_id = ended.newsletter_id
        AND issue.status IN ('planned', 'sending')
    JOIN delivery ON delivery.issue_id = issue.id
        AND delivery.subscriber_id = ended.subscriber_id
), skipped AS (
    UPDATE delivery SET status = 'skipped', last_error = 'unsubscribed'
    WHERE id IN (SELECT id FROM mine) AND status = 'pending'
), logged AS (
    INSERT INTO event (subscriber_id, newsletter_id, kind, source, ip, detail, created_at)
    SELECT subscriber_id, newsletter_id, :kind, :source, :ip, :detail, :now FROM ended
)
SELECT reader.id AS reader_id, reader.language, (SELECT count(*) FROM ended) AS changed,
    letter.id AS newsletter_id, {letter_out}
FROM reader LEFT JOIN letter ON true
"""


# What the answering page shows of the newsletter: its name and its own brand values.
LETTER_COLUMNS = ("id", "name", *BRAND_FIELDS)


def _statement(reader: str, newsletter: str) -> TextualSelect:
    """The statement with how it names the reader and the newsletter, its types bound.

    Its result columns named too: then SQLAlchemy keeps their description with the
    compiled statement instead of reading the cursor's afresh on every click.
    """
    sql = _SQL.format(
        reader=reader,
        newsletter=newsletter,
        letter_columns=", ".join(LETTER_COLUMNS),
        letter_out=", ".join(f"letter.{name}" for name in LETTER_COLUMNS[1:]),
    )
    result = ("reader_id", "language", "changed", "newsletter_id", *LETTER_COLUMNS[1:])
    return (
        text(sql)
        .bindparams(
            bindparam("now", type_=_event.c.created_at.type),
            bindparam("detail", type_=_event.c.detail.type),
        )
        .columns(*(column(name) for name in result))
    )


# By the ids the caller has (unsubscribe) and by what a link carries (unsubscribe_link).
BY_IDS = _statement("id = :reader", "id = :newsletter")
BY_LINK = _statement("public_id = :public_id", "slug = :slug")


def parameters(origin: Origin, now: object, **names: object) -> dict[str, object]:
    """The statement's parameters: what names the reader and newsletter, the event's."""
    event = event_row("unsubscribed", origin, subscriber_id=None)
    return {
        "now": now,
        "kind": event["kind"],
        "source": event["source"],
        "ip": event["ip"],
        "detail": event["detail"],
        **names,
    }
