"""feed removal and rejection reasons: feed.removed_at, feed.last_rejections

Revision ID: feed50000007
Revises: 5e1ec7000006
Create Date: 2026-12-05

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'feed50000007'
down_revision: Union[str, Sequence[str], None] = '5e1ec7000006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema: every existing feed stays active with no recorded rejections."""
    with op.batch_alter_table('feed', schema=None) as batch_op:
        batch_op.add_column(sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_rejections', sa.Text(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('feed', schema=None) as batch_op:
        batch_op.drop_column('last_rejections')
        batch_op.drop_column('removed_at')
