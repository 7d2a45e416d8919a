"""ledger without foreign keys: planning a million deliveries no longer checks each one

PostgreSQL checks a foreign key once per inserted row and locks the referenced row each
time; on the ledger that was two thirds of planning an issue (14 of 21 s for 1,000,000
deliveries). Planning inserts only ids it has just read in its own transaction, and
forgetting a reader deletes the reader's rows itself.

Revision ID: ledger140011
Revises: brand150009
Create Date: 2026-12-06

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = 'ledger140011'
down_revision: Union[str, Sequence[str], None] = 'brand150009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema: drop the ledger's two foreign keys (SQLite copies the table)."""
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_constraint('fk_delivery_issue_id_issue', type_='foreignkey')
        batch_op.drop_constraint('fk_delivery_subscriber_id_subscriber', type_='foreignkey')


def downgrade() -> None:
    """Downgrade schema: rows whose reader or issue is gone go first, then the keys return."""
    op.execute('DELETE FROM delivery WHERE subscriber_id NOT IN (SELECT id FROM subscriber)')
    op.execute('DELETE FROM delivery WHERE issue_id NOT IN (SELECT id FROM issue)')
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.create_foreign_key(
            'fk_delivery_issue_id_issue', 'issue', ['issue_id'], ['id'], ondelete='CASCADE'
        )
        batch_op.create_foreign_key(
            'fk_delivery_subscriber_id_subscriber', 'subscriber', ['subscriber_id'], ['id'],
            ondelete='CASCADE',
        )
