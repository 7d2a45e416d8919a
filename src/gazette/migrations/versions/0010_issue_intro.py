"""issue intro: the editor's note an issue carries, frozen when it is planned

Revision ID: brand150009
Revises: topics150009
Create Date: 2026-12-05

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'brand150009'
down_revision: Union[str, Sequence[str], None] = 'topics150009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema: issues planned before keep no note of their own (NULL: none)."""
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.add_column(sa.Column('intro', sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.drop_column('intro')
