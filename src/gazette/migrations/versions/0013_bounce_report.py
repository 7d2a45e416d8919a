"""bounce reports: each processed report about sent mail once, and what it did

`gazette bounces process` records every report it acts on here, keyed by a hash of the
message's Message-ID (or of its bytes), so a message processed twice (copied back into
the mailbox, or read by two runs at once) never counts twice; the ids it keeps give
the operator counts per issue and per receiving domain, policy refusals included.

Revision ID: bounce180013
Revises: tally190012
Create Date: 2026-12-06

"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "bounce180013"
down_revision: Union[str, Sequence[str], None] = "tally190012"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema: the bounce_report table and its per-issue index."""
    op.create_table(
        "bounce_report",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_key", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("effect", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("issue_id", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("domain", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bounce_report")),
        sa.UniqueConstraint(
            "message_key", "position", name=op.f("uq_bounce_report_message_key")
        ),
    )
    op.create_index(
        "ix_bounce_report_issue_effect", "bounce_report", ["issue_id", "effect"], unique=False
    )


def downgrade() -> None:
    """Downgrade schema: the table goes (the counts it held with it)."""
    op.drop_index("ix_bounce_report_issue_effect", table_name="bounce_report")
    op.drop_table("bounce_report")
