"""topic aliases: the slugs merged into a topic (`gazette topics merge`)

Revision ID: topics150009
Revises: d16e57000008
Create Date: 2026-12-05

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'topics150009'
down_revision: Union[str, Sequence[str], None] = 'd16e57000008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema: an empty alias table (no topic has been merged yet)."""
    op.create_table(
        'topic_alias',
        sa.Column('slug', sa.String(length=80), nullable=False),
        sa.Column('topic_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ['topic_id'], ['topic.id'], name=op.f('fk_topic_alias_topic_id_topic'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('slug', name=op.f('pk_topic_alias')),
    )
    with op.batch_alter_table('topic_alias', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_topic_alias_topic_id'), ['topic_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('topic_alias', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_topic_alias_topic_id'))
    op.drop_table('topic_alias')
