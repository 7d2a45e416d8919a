"""article identity and the carried set: identity key, article_feed, retire, withdraw

Revision ID: 5e1ec7000006
Revises: 1de0517e0005
Create Date: 2026-12-05

"""
from typing import Sequence, Union
from urllib.parse import urlsplit

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '5e1ec7000006'
down_revision: Union[str, Sequence[str], None] = '1de0517e0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _identity_key(guid: str, feed_id: int | None) -> str:
    """The key 0006 gives an existing article (a frozen copy of articles.identity_key).

    A guid with a scheme and a host (or a urn:/tag: URI) is global and kept as it is;
    a bare guid is scoped by the feed it came from.
    """
    parts = urlsplit(guid)
    if (parts.scheme and parts.netloc) or parts.scheme.lower() in ("urn", "tag"):
        return guid
    return f"feed:{feed_id}:{guid}" if feed_id is not None else f"local:{guid}"


def upgrade() -> None:
    """Upgrade schema: identity keys for existing articles; old issues mark the floor."""
    with op.batch_alter_table('article', schema=None) as batch_op:
        batch_op.add_column(sa.Column('identity_key', sa.String(length=2100), nullable=True))
        batch_op.add_column(sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=True))

    connection = op.get_bind()
    article = sa.table(
        'article',
        sa.column('id', sa.Integer),
        sa.column('guid', sa.String),
        sa.column('feed_id', sa.Integer),
        sa.column('identity_key', sa.String),
    )
    rows = connection.execute(sa.select(article.c.id, article.c.guid, article.c.feed_id)).all()
    if rows:
        connection.execute(
            article.update().where(article.c.id == sa.bindparam('article_id')),
            [
                {'article_id': row.id, 'identity_key': _identity_key(row.guid, row.feed_id)}
                for row in rows
            ],
        )

    with op.batch_alter_table('article', schema=None) as batch_op:
        batch_op.alter_column('identity_key', existing_type=sa.String(length=2100), nullable=False)
        batch_op.drop_constraint('uq_article_guid', type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_article_identity_key'), ['identity_key'])
        batch_op.create_index(batch_op.f('ix_article_guid'), ['guid'], unique=False)

    op.create_table(
        'article_feed',
        sa.Column('article_id', sa.Integer(), nullable=False),
        sa.Column('feed_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ['article_id'], ['article.id'], name=op.f('fk_article_feed_article_id_article'),
            ondelete='CASCADE',
        ),
        sa.ForeignKeyConstraint(
            ['feed_id'], ['feed.id'], name=op.f('fk_article_feed_feed_id_feed'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('article_id', 'feed_id', name=op.f('pk_article_feed')),
    )
    with op.batch_alter_table('article_feed', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_article_feed_feed_id'), ['feed_id'], unique=False)
    op.execute(
        "INSERT INTO article_feed (article_id, feed_id) "
        "SELECT id, feed_id FROM article WHERE feed_id IS NOT NULL"
    )

    with op.batch_alter_table('newsletter', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True))

    # Every issue planned so far was chosen by the old rule ("cutoff"); issues planned
    # from now on are "carried". The newest old issue's cutoff is each edition's floor.
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('selection', sa.String(length=16), server_default='cutoff', nullable=False)
        )
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.alter_column(
            'selection', existing_type=sa.String(length=16), server_default='carried',
            existing_nullable=False,
        )


def downgrade() -> None:
    """Downgrade schema: back to one global guid (first sighting wins on a clash)."""
    with op.batch_alter_table('issue', schema=None) as batch_op:
        batch_op.drop_column('selection')
    with op.batch_alter_table('newsletter', schema=None) as batch_op:
        batch_op.drop_column('retired_at')
    with op.batch_alter_table('article_feed', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_article_feed_feed_id'))
    op.drop_table('article_feed')
    # The old schema had guids unique across feeds: a bare guid seen in two feeds
    # becomes unique again by taking its identity key.
    op.execute(
        "UPDATE article SET guid = identity_key WHERE id NOT IN "
        "(SELECT min(id) FROM article GROUP BY guid)"
    )
    with op.batch_alter_table('article', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_article_guid'))
        batch_op.drop_constraint(batch_op.f('uq_article_identity_key'), type_='unique')
        batch_op.create_unique_constraint('uq_article_guid', ['guid'])
        batch_op.drop_column('withdrawn_at')
        batch_op.drop_column('identity_key')
