"""subscription tally: running totals per newsletter and status, kept by triggers; bounces per issue

Revision ID: tally190012
Revises: ledger140011
Create Date: 2026-12-05

/metrics reports subscriptions by status without counting the subscription table: the
tally is seeded here from the rows there are, and the triggers created here keep it
exact from then on, whatever statement changes a subscription (an insert, a change of
status or newsletter, a delete, the cascade of a forgotten reader or a removed
newsletter). PostgreSQL's are statement-level with transition tables, so a bulk import
adds to each (newsletter, status) once per statement, and each statement applies its
changes in key order, so that two transactions take the tally's row locks in the same
order; SQLite has only row-level triggers, and one writer at a time.

"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "tally190012"
down_revision: Union[str, Sequence[str], None] = "ledger140011"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")

# One upsert per (newsletter, status) a change adds to; SQLite runs it per row.
_SQLITE_ADD = (
    "INSERT INTO subscription_tally (newsletter_id, status, count) "
    "VALUES (NEW.newsletter_id, NEW.status, 1) "
    "ON CONFLICT (newsletter_id, status) DO UPDATE SET count = count + 1;"
)
_SQLITE_REMOVE = (
    "UPDATE subscription_tally SET count = count - 1 "
    "WHERE newsletter_id = OLD.newsletter_id AND status = OLD.status;"
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

# PostgreSQL: each statement's changes as (newsletter, status, delta) rows, summed per
# key and applied by one upsert in key order. A tally row whose newsletter is being
# deleted in the same cascade is skipped (the EXISTS), instead of breaking its key.
_PG_APPLY = """
    INSERT INTO subscription_tally AS t (newsletter_id, status, count)
    SELECT newsletter_id, status, sum(delta) FROM changes
    WHERE EXISTS (SELECT 1 FROM newsletter n WHERE n.id = changes.newsletter_id)
    GROUP BY newsletter_id, status
    HAVING sum(delta) <> 0
    ORDER BY newsletter_id, status
    ON CONFLICT (newsletter_id, status) DO UPDATE SET count = t.count + EXCLUDED.count;
"""
PG_FUNCTIONS = {
    "subscription_tally_inserted": (
        "WITH changes AS (SELECT newsletter_id, status, 1 AS delta FROM new_rows)"
    ),
    "subscription_tally_deleted": (
        "WITH changes AS (SELECT newsletter_id, status, -1 AS delta FROM old_rows)"
    ),
    "subscription_tally_updated": (
        "WITH moved AS ("
        " SELECT o.newsletter_id AS old_newsletter, o.status AS old_status,"
        " n.newsletter_id AS new_newsletter, n.status AS new_status"
        " FROM old_rows o JOIN new_rows n ON n.id = o.id"
        " WHERE o.status <> n.status OR o.newsletter_id <> n.newsletter_id),"
        " changes AS ("
        " SELECT old_newsletter AS newsletter_id, old_status AS status, -1 AS delta FROM moved"
        " UNION ALL"
        " SELECT new_newsletter, new_status, 1 FROM moved)"
    ),
}
PG_TRIGGERS = (
    "CREATE TRIGGER subscription_tally_insert AFTER INSERT ON subscription "
    "REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION subscription_tally_inserted()",
    "CREATE TRIGGER subscription_tally_update AFTER UPDATE ON subscription "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION subscription_tally_updated()",
    "CREATE TRIGGER subscription_tally_delete AFTER DELETE ON subscription "
    "REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION subscription_tally_deleted()",
)
TRIGGER_NAMES = (
    "subscription_tally_insert",
    "subscription_tally_update",
    "subscription_tally_delete",
)


def create_triggers() -> None:
    """Create the triggers that keep subscription_tally exact, for this database's dialect.

    A later migration that rebuilds the subscription table on SQLite (batch mode) drops
    them with the old table and must call this again.
    """
    if op.get_bind().dialect.name == "postgresql":
        for name, changes in PG_FUNCTIONS.items():
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"{changes} {_PG_APPLY.strip()} RETURN NULL; END $$"
            )
        for statement in PG_TRIGGERS:
            op.execute(statement)
        return
    for statement in SQLITE_TRIGGERS:
        op.execute(statement)


def drop_triggers() -> None:
    """Drop the tally's triggers (and PostgreSQL's functions behind them)."""
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name in TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON subscription" if postgresql else ""))
    if postgresql:
        for name in PG_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")


def upgrade() -> None:
    """Upgrade schema: the tally seeded from the subscriptions there are, then its triggers.

    Seeding and creating the triggers happen in the migration's one transaction, and on
    PostgreSQL the subscription table is locked against writes first, so no change
    made in between is missed or counted twice.
    """
    if op.get_bind().dialect.name == "postgresql":
        op.execute("LOCK TABLE subscription IN SHARE ROW EXCLUSIVE MODE")
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
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["newsletter_id"],
            ["newsletter.id"],
            name=op.f("fk_subscription_tally_newsletter_id_newsletter"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("newsletter_id", "status", name=op.f("pk_subscription_tally")),
    )
    op.execute(
        "INSERT INTO subscription_tally (newsletter_id, status, count) "
        "SELECT newsletter_id, status, count(*) FROM subscription "
        "GROUP BY newsletter_id, status"
    )
    create_triggers()
    with op.batch_alter_table("issue", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("bounced_count", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("issue", schema=None) as batch_op:
        batch_op.drop_column("bounced_count")
    drop_triggers()
    op.drop_table("subscription_tally")
