"""deliverability: soft bounces that decay, per-issue bounce and complaint counts, pausing

A reader's last soft bounce time (subscriber.soft_bounced_at: older than
GAZETTE_SOFT_BOUNCE_DAYS, the count starts again), the hard bounces and complaints of
each issue as running totals (issue.hard_bounced_count, issue.complained_count; the
soft ones are bounced_count minus the hard), and a newsletter's pause (paused_at and
the sentence why, resumed_at). Existing issues take their counts from bounce_report;
refusals during sending before this migration were counted only in bounced_count.

Revision ID: deliver180014
Revises: bounce180013
Create Date: 2026-12-06

"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "deliver180014"
down_revision: Union[str, Sequence[str], None] = "bounce180013"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema: the new columns, and the counts of issues bounce_report already knows."""
    op.add_column("subscriber", sa.Column("soft_bounced_at", sa.DateTime(timezone=True)))
    for name in ("hard_bounced_count", "complained_count"):
        op.add_column(
            "issue", sa.Column(name, sa.Integer(), nullable=False, server_default="0")
        )
    op.add_column("newsletter", sa.Column("paused_at", sa.DateTime(timezone=True)))
    op.add_column("newsletter", sa.Column("pause_reason", sa.String(length=500)))
    op.add_column("newsletter", sa.Column("resumed_at", sa.DateTime(timezone=True)))
    for column, effect in (("hard_bounced_count", "hard bounce"), ("complained_count", "complaint")):
        op.execute(
            f"UPDATE issue SET {column} = (SELECT count(*) FROM bounce_report "
            f"WHERE bounce_report.issue_id = issue.id AND bounce_report.effect = '{effect}')"
        )


def downgrade() -> None:
    """Downgrade schema: the columns go (the decay, the counts and any pause with them)."""
    op.drop_column("newsletter", "resumed_at")
    op.drop_column("newsletter", "pause_reason")
    op.drop_column("newsletter", "paused_at")
    op.drop_column("issue", "complained_count")
    op.drop_column("issue", "hard_bounced_count")
    op.drop_column("subscriber", "soft_bounced_at")
