"""tally shards: the subscription tally kept in up to 64 rows per (newsletter, status)

Every unsubscribe moves a subscription from "active" to "unsubscribed", and 0012's
triggers added each move to the same two rows of its newsletter: concurrent one-click
unsubscribes queued on those two row locks, each waiting for the previous one's commit.
On PostgreSQL a change now goes to the shard of the server process that makes it
(pg_backend_pid() % 64), so two connections meet on a row only when their processes
share a shard; /metrics sums the shards, which are partial sums, not partitions (one
may go below zero). Not the subscription's id: a transaction that changes several
subscriptions would then lock shards in the order of its readers, and two such
transactions (two workers recording bounces) could deadlock; one connection's changes
all go to the same rows, as they did before. SQLite has one writer at a time and keeps
shard 0. The existing counts go to shard 0, under an exclusive lock on subscription,
so no change is missed or counted twice.

Revision ID: shards200015
Revises: deliver180014
Create Date: 2026-12-07

"""

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "shards200015"
down_revision: Union[str, Sequence[str], None] = "deliver180014"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Fixed here, as the triggers know it: the model's TALLY_SHARDS names the same number.
SHARDS = 64
# PostgreSQL's shard: the server process running the statement.
_PG_SHARD = f"pg_backend_pid() % {SHARDS}"
STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")

# SQLite: one writer at a time, so every count stays in shard 0.
_SQLITE_ADD = (
    "INSERT INTO subscription_tally (newsletter_id, status, shard, count) "
    "VALUES (NEW.newsletter_id, NEW.status, 0, 1) "
    "ON CONFLICT (newsletter_id, status, shard) DO UPDATE SET count = count + 1;"
)
_SQLITE_REMOVE = (
    "UPDATE subscription_tally SET count = count - 1 "
    "WHERE newsletter_id = OLD.newsletter_id AND status = OLD.status AND shard = 0;"
)
SQLITE_TRIGGERS = (
    "CREATE TRIGGER subscription_tally_insert AFTER INSERT ON subscription "
    f"BEGIN {_SQLITE_ADD} END",
    "CREATE TRIGGER subscription_tally_update AFTER UPDATE OF status, newsletter_id "
    "ON subscription WHEN OLD.status IS NOT NEW.status "
    "OR OLD.newsletter_id IS NOT NEW.newsletter_id "
    f"BEGIN {_SQLITE_REMOVE} {_SQLITE_ADD} END",
    "CREATE TRIGGER subscription_tally_delete AFTER DELETE ON subscription "
    f"BEGIN {_SQLITE_REMOVE} END",
)

# As 0012's, with the shard in each change's key: summed per key, applied in key order
# (two statements take the rows' locks in the same order), rows of a newsletter being
# deleted in the same cascade skipped. Every change of a statement has the same shard.
_PG_APPLY = """
    INSERT INTO subscription_tally AS t (newsletter_id, status, shard, count)
    SELECT newsletter_id, status, shard, sum(delta) FROM changes
    WHERE EXISTS (SELECT 1 FROM newsletter n WHERE n.id = changes.newsletter_id)
    GROUP BY newsletter_id, status, shard
    HAVING sum(delta) <> 0
    ORDER BY newsletter_id, status, shard
    ON CONFLICT (newsletter_id, status, shard) DO UPDATE SET count = t.count + EXCLUDED.count;
"""
PG_FUNCTIONS = {
    "subscription_tally_inserted": (
        f"WITH changes AS (SELECT newsletter_id, status, {_PG_SHARD} AS shard, 1 AS delta"
        " FROM new_rows)"
    ),
    "subscription_tally_deleted": (
        f"WITH changes AS (SELECT newsletter_id, status, {_PG_SHARD} AS shard, -1 AS delta"
        " FROM old_rows)"
    ),
    "subscription_tally_updated": (
        "WITH moved AS ("
        f" SELECT {_PG_SHARD} AS shard,"
        " o.newsletter_id AS old_newsletter, o.status AS old_status,"
        " n.newsletter_id AS new_newsletter, n.status AS new_status"
        " FROM old_rows o JOIN new_rows n ON n.id = o.id"
        " WHERE o.status <> n.status OR o.newsletter_id <> n.newsletter_id),"
        " changes AS ("
        " SELECT old_newsletter AS newsletter_id, old_status AS status, shard, -1 AS delta"
        " FROM moved"
        " UNION ALL"
        " SELECT new_newsletter, new_status, shard, 1 FROM moved)"
    ),
}


@cache
def _tally_0012() -> ModuleType:
    """Migration 0012, whose unsharded triggers the downgrade puts back (loaded once)."""
    path = Path(__file__).with_name("0012_subscription_tally.py")
    spec = importlib.util.spec_from_file_location("gazette_migration_0012", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def create_triggers() -> None:
    """Create the triggers that keep the sharded tally exact, for this dialect.

    A later migration that rebuilds the subscription table on SQLite (batch mode) drops
    them with the old table and must call this again.
    """
    if op.get_bind().dialect.name == "postgresql":
        for name, changes in PG_FUNCTIONS.items():
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"{changes} {_PG_APPLY.strip()} RETURN NULL; END $$"
            )
        for statement in _tally_0012().PG_TRIGGERS:  # same triggers, new functions
            op.execute(statement)
        return
    for statement in SQLITE_TRIGGERS:
        op.execute(statement)


def _create_table(sharded: bool) -> None:
    """The tally table, with or without its shard column."""
    shard = [sa.Column("shard", sa.SmallInteger(), nullable=False)] if sharded else []
    op.create_table(
        "subscription_tally",
        sa.Column("newsletter_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                *STATUSES,
                name="subscription_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        *shard,
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["newsletter_id"],
            ["newsletter.id"],
            name=op.f("fk_subscription_tally_newsletter_id_newsletter"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "newsletter_id",
            "status",
            *(["shard"] if sharded else []),
            name=op.f("pk_subscription_tally"),
        ),
    )


def _rebuild(sharded: bool) -> None:
    """Replace the tally and its triggers, seeded from the subscriptions there are.

    On PostgreSQL the subscription table is locked first, so no change made between the
    seeding and the new triggers is missed or counted twice; exclusively, as dropping
    its triggers needs, so the lock is never raised while another transaction waits.
    """
    if op.get_bind().dialect.name == "postgresql":
        op.execute("LOCK TABLE subscription IN ACCESS EXCLUSIVE MODE")
    _tally_0012().drop_triggers()  # the trigger names are the same in both versions
    op.drop_table("subscription_tally")
    _create_table(sharded)
    if sharded:
        op.execute(
            "INSERT INTO subscription_tally (newsletter_id, status, shard, count) "
            "SELECT newsletter_id, status, 0, count(*) FROM subscription "
            "GROUP BY newsletter_id, status"
        )
        create_triggers()
        return
    op.execute(
        "INSERT INTO subscription_tally (newsletter_id, status, count) "
        "SELECT newsletter_id, status, count(*) FROM subscription "
        "GROUP BY newsletter_id, status"
    )
    _tally_0012().create_triggers()


def upgrade() -> None:
    """Upgrade schema: the tally in shards, re-seeded, and triggers that know them."""
    _rebuild(sharded=True)


def downgrade() -> None:
    """Downgrade schema: one row per newsletter and status again, with 0012's triggers."""
    _rebuild(sharded=False)
