"""selection and languages: look-back window, language routing, feed language

Revision ID: 4a1c0de5e1ec
Revises: 3c1f0e7a9b24
Create Date: 2026-12-05

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '4a1c0de5e1ec'
down_revision: Union[str, Sequence[str], None] = '3c1f0e7a9b24'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema: every newsletter keeps today's behaviour (all languages, 14 days)."""
    with op.batch_alter_table('newsletter', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('max_age_days', sa.Integer(), server_default='14', nullable=False)
        )
        batch_op.add_column(
            sa.Column('article_languages', sa.String(length=8), server_default='all', nullable=False)
        )
    with op.batch_alter_table('feed', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language', sa.String(length=16), nullable=True))
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('extra_languages', sa.JSON(), server_default='[]', nullable=False)
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.drop_column('extra_languages')
    with op.batch_alter_table('feed', schema=None) as batch_op:
        batch_op.drop_column('language')
    with op.batch_alter_table('newsletter', schema=None) as batch_op:
        batch_op.drop_column('article_languages')
        batch_op.drop_column('max_age_days')
