"""digest content and brand: article excerpt/content/image, newsletter brand and content
settings, curated topics

Revision ID: d16e57000008
Revises: feed50000007
Create Date: 2026-12-05

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'd16e57000008'
down_revision: Union[str, Sequence[str], None] = 'feed50000007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema.

    Existing articles keep their summary as the excerpt and get no separate content;
    existing newsletters use the installation's brand and the excerpt default; existing
    topics stay offered to readers, as they were before curation existed.
    """
    with op.batch_alter_table('article', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('image_url', sa.String(length=2000), nullable=True))
        batch_op.add_column(
            sa.Column('image_alt', sa.String(length=500), nullable=False, server_default='')
        )
    with op.batch_alter_table('newsletter', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('content_mode', sa.String(length=8), nullable=False, server_default='excerpt')
        )
        batch_op.add_column(
            sa.Column('excerpt_words', sa.Integer(), nullable=False, server_default='60')
        )
        batch_op.add_column(
            sa.Column('images', sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(sa.Column('publisher', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('website', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('logo_url', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('accent_colour', sa.String(length=7), nullable=True))
        batch_op.add_column(sa.Column('postal_address', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('privacy_url', sa.String(length=2000), nullable=True))
        batch_op.add_column(
            sa.Column('welcome', sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(sa.Column('utm_source', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('utm_medium', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('utm_campaign', sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column('intro', sa.JSON(), nullable=False, server_default='{}')
        )
    with op.batch_alter_table('topic', schema=None) as batch_op:
        batch_op.add_column(sa.Column('labels', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(
            sa.Column('offered', sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(
            sa.Column('hidden', sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('topic', schema=None) as batch_op:
        batch_op.drop_column('hidden')
        batch_op.drop_column('offered')
        batch_op.drop_column('labels')
    with op.batch_alter_table('newsletter', schema=None) as batch_op:
        for column in (
            'intro', 'utm_campaign', 'utm_medium', 'utm_source', 'welcome', 'privacy_url',
            'postal_address', 'accent_colour', 'logo_url', 'website', 'publisher', 'images',
            'excerpt_words', 'content_mode',
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table('article', schema=None) as batch_op:
        batch_op.drop_column('image_alt')
        batch_op.drop_column('image_url')
        batch_op.drop_column('content')
