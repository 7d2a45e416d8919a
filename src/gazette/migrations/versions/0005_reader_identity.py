"""reader identity: one reader per mailbox, merged duplicates, aliases for their links

Revision ID: 1de0517e0005
Revises: 4a1c0de5e1ec
Create Date: 2026-12-05

Readers were unique by their exact address, so ``Mailbox@example.com`` and
``mailbox@example.com`` were two readers of one mailbox. This adds ``email_key`` (the
identity_key of the address), merges the readers who share one into the earliest
created, and keeps the merged readers' public ids as aliases so that the links
already in inboxes (unsubscribe, preferences, confirm) keep working.
"""
from datetime import UTC, datetime
from typing import Any, Sequence, Union

from alembic import op
import sqlalchemy as sa

from gazette.addresses import identity_key


# revision identifiers, used by Alembic.
revision: str = '1de0517e0005'
down_revision: Union[str, Sequence[str], None] = '4a1c0de5e1ec'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

CHUNK = 1000
# Of two subscriptions to one newsletter, the one a reader is least likely to want
# mail from wins: a stop (unsubscribed, bounced, complained) beats active beats pending.
SUBSCRIPTION_RANK = {'pending': 0, 'active': 1, 'unsubscribed': 2, 'bounced': 3, 'complained': 4}
# Of two ledger rows for one issue, the one that went out wins, so nobody is sent twice.
DELIVERY_RANK = {'skipped': 0, 'failed': 1, 'pending': 2, 'sending': 3, 'sent': 4}

subscriber = sa.table(
    'subscriber',
    sa.column('id', sa.Integer()),
    sa.column('public_id', sa.String()),
    sa.column('email', sa.String()),
    sa.column('email_key', sa.String()),
    sa.column('name', sa.String()),
    sa.column('created_at', sa.DateTime(timezone=True)),
    sa.column('confirmed_at', sa.DateTime(timezone=True)),
    sa.column('consent_source', sa.String()),
    sa.column('consent_at', sa.DateTime(timezone=True)),
    sa.column('consent_ip', sa.String()),
    sa.column('bounce_count', sa.Integer()),
    sa.column('attributes', sa.JSON()),
    sa.column('extra_languages', sa.JSON()),
)
subscription = sa.table(
    'subscription',
    sa.column('id', sa.Integer()),
    sa.column('subscriber_id', sa.Integer()),
    sa.column('newsletter_id', sa.Integer()),
    sa.column('status', sa.String()),
)
subscription_topic = sa.table('subscription_topic', sa.column('subscription_id', sa.Integer()))
delivery = sa.table(
    'delivery',
    sa.column('id', sa.Integer()),
    sa.column('issue_id', sa.Integer()),
    sa.column('subscriber_id', sa.Integer()),
    sa.column('status', sa.String()),
)
event = sa.table(
    'event',
    sa.column('subscriber_id', sa.Integer()),
    sa.column('newsletter_id', sa.Integer()),
    sa.column('kind', sa.String()),
    sa.column('source', sa.String()),
    sa.column('ip', sa.String()),
    sa.column('detail', sa.JSON()),
    sa.column('created_at', sa.DateTime(timezone=True)),
)
alias = sa.table(
    'subscriber_alias', sa.column('public_id', sa.String()), sa.column('subscriber_id', sa.Integer())
)


def upgrade() -> None:
    """Add the identity key, fill it, merge readers who share one, then make it unique."""
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_key', sa.String(length=320), nullable=True))
    op.create_table('subscriber_alias',
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id'], name=op.f('fk_subscriber_alias_subscriber_id_subscriber'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('public_id', name=op.f('pk_subscriber_alias'))
    )
    with op.batch_alter_table('subscriber_alias', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subscriber_alias_subscriber_id'), ['subscriber_id'], unique=False)
    bind = op.get_bind()
    _fill_keys(bind)
    duplicated = bind.execute(
        sa.select(subscriber.c.email_key)
        .group_by(subscriber.c.email_key)
        .having(sa.func.count() > 1)
        .order_by(subscriber.c.email_key)
    ).scalars().all()
    now = datetime.now(UTC)
    if bind.dialect.name == 'sqlite':
        # What the models' UTCDateTime stores on SQLite: naive UTC.
        now = now.replace(tzinfo=None)
    for key in duplicated:
        _merge(bind, key, now)
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.alter_column('email_key', existing_type=sa.String(length=320), nullable=False)
        batch_op.create_unique_constraint(batch_op.f('uq_subscriber_email_key'), ['email_key'])
        # The key is the identity and implies the address is unique too: a second unique
        # index on the address would only cost every insert (an import writes thousands).
        batch_op.drop_constraint(batch_op.f('uq_subscriber_email'), type_='unique')


def _fill_keys(bind: sa.Connection) -> None:
    """Compute every reader's identity key in Python, a chunk of rows at a time."""
    last = 0
    set_key = (
        sa.update(subscriber)
        .where(subscriber.c.id == sa.bindparam('row_id'))
        .values(email_key=sa.bindparam('row_key'))
    )
    while True:
        rows = bind.execute(
            sa.select(subscriber.c.id, subscriber.c.email)
            .where(subscriber.c.id > last)
            .order_by(subscriber.c.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            return
        bind.execute(set_key, [{'row_id': i, 'row_key': identity_key(e)} for i, e in rows])
        last = rows[-1][0]


def _merge(bind: sa.Connection, key: str, now: datetime) -> None:
    """Fold every reader with this key into the earliest created one.

    Foreign keys are off on SQLite while migrations run, so nothing cascades: every row
    that names a merged reader is re-pointed or deleted here, explicitly.
    """
    members = bind.execute(
        sa.select(
            subscriber.c.id, subscriber.c.public_id, subscriber.c.name,
            subscriber.c.bounce_count, subscriber.c.attributes, subscriber.c.extra_languages,
        )
        .where(subscriber.c.email_key == key)
        .order_by(subscriber.c.created_at, subscriber.c.id)
    ).all()
    survivor, losers = members[0], members[1:]
    ids = [m.id for m in members]
    loser_ids = [m.id for m in losers]
    # The earliest consent on record is the one that stands.
    consent = bind.execute(
        sa.select(subscriber.c.consent_source, subscriber.c.consent_at, subscriber.c.consent_ip)
        .where(subscriber.c.id.in_(ids), subscriber.c.consent_at.is_not(None))
        .order_by(subscriber.c.consent_at, subscriber.c.id)
        .limit(1)
    ).first()
    confirmed_at = bind.execute(
        sa.select(sa.func.min(subscriber.c.confirmed_at)).where(subscriber.c.id.in_(ids))
    ).scalar()
    attributes: dict[str, Any] = {}
    languages: list[str] = []
    for member in reversed(members):  # the survivor's own values win
        attributes.update(member.attributes or {})
    for member in members:
        languages += [x for x in (member.extra_languages or []) if x not in languages]
    values: dict[str, Any] = {
        'name': next((m.name for m in members if m.name), ''),
        'bounce_count': sum(m.bounce_count or 0 for m in members),
        'attributes': attributes,
        'extra_languages': languages,
        'confirmed_at': confirmed_at,
    }
    if consent is not None:
        values.update(
            consent_source=consent.consent_source, consent_at=consent.consent_at,
            consent_ip=consent.consent_ip,
        )
    rank = {member_id: at for at, member_id in enumerate(ids)}
    _fold(
        bind, subscription, 'newsletter_id', ids, survivor.id, rank, SUBSCRIPTION_RANK,
        keep_status=True,
    )
    _fold(bind, delivery, 'issue_id', ids, survivor.id, rank, DELIVERY_RANK, keep_status=False)
    bind.execute(
        sa.update(event).where(event.c.subscriber_id.in_(loser_ids)).values(subscriber_id=survivor.id)
    )
    bind.execute(
        sa.insert(event),
        [
            {'subscriber_id': survivor.id, 'newsletter_id': None, 'kind': 'merged',
             'source': 'system', 'ip': None, 'detail': {'public_id': m.public_id},
             'created_at': now}
            for m in losers
        ],
    )
    bind.execute(
        sa.insert(alias), [{'public_id': m.public_id, 'subscriber_id': survivor.id} for m in losers]
    )
    bind.execute(sa.delete(subscriber).where(subscriber.c.id.in_(loser_ids)))
    bind.execute(sa.update(subscriber).where(subscriber.c.id == survivor.id).values(**values))


def _fold(
    bind: sa.Connection,
    table: sa.TableClause,
    per: str,
    ids: list[int],
    survivor_id: int,
    member_rank: dict[int, int],
    status_rank: dict[str, int],
    *,
    keep_status: bool,
) -> None:
    """Leave one row per ``per`` value among the members' rows, owned by the survivor.

    Subscriptions keep the survivor's row (or the earliest member's) and take the most
    restrictive status; ledger rows keep the row of highest rank (the one that was sent).
    The others are deleted before the kept one is re-pointed, so the unique key holds.
    """
    rows = bind.execute(
        sa.select(table.c.id, table.c[per], table.c.subscriber_id, table.c.status)
        .where(table.c.subscriber_id.in_(ids))
    ).all()
    groups: dict[int, list[Any]] = {}
    for row in rows:
        groups.setdefault(row[1], []).append(row)
    for group in groups.values():
        if keep_status:
            kept = min(group, key=lambda r: member_rank[r.subscriber_id])
            status = max((r.status for r in group), key=lambda s: status_rank.get(s, 0))
        else:
            kept = max(group, key=lambda r: (status_rank.get(r.status, 0), -member_rank[r.subscriber_id]))
            status = kept.status
        dropped = [r.id for r in group if r.id != kept.id]
        if dropped and table is subscription:
            bind.execute(
                sa.delete(subscription_topic).where(subscription_topic.c.subscription_id.in_(dropped))
            )
        if dropped:
            bind.execute(sa.delete(table).where(table.c.id.in_(dropped)))
        if kept.subscriber_id != survivor_id or kept.status != status:
            bind.execute(
                sa.update(table).where(table.c.id == kept.id)
                .values(subscriber_id=survivor_id, status=status)
            )


def downgrade() -> None:
    """Drop the identity key and the aliases; merged readers stay merged."""
    with op.batch_alter_table('subscriber_alias', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subscriber_alias_subscriber_id'))
    op.drop_table('subscriber_alias')
    with op.batch_alter_table('subscriber', schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f('uq_subscriber_email'), ['email'])
        batch_op.drop_constraint(batch_op.f('uq_subscriber_email_key'), type_='unique')
        batch_op.drop_column('email_key')
