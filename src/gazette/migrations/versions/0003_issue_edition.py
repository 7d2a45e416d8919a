"""issue edition: regular issues and the weekly summary

Revision ID: 3c1f0e7a9b24
Revises: 135314e7cf60
Create Date: 2026-11-28

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '3c1f0e7a9b24'
down_revision: Union[str, Sequence[str], None] = '135314e7cf60'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema: every existing issue is a regular one."""
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                'edition',
                sa.Enum('regular', 'weekly', name='issue_edition', native_enum=False, create_constraint=True, length=16),
                server_default='regular',
                nullable=False,
            )
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('issue', schema=None) as batch_op:
        # The column's CHECK constraint goes first, or SQLite's copy of the table keeps it.
        batch_op.drop_constraint(op.f('ck_issue_issue_edition'), type_='check')
        batch_op.drop_column('edition')
