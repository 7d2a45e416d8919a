"""One reader per mailbox: the identity key, the 0005 merge of existing duplicates, and
every way in (subscribe, forget, links, the web sign-up and its per-address limit)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gazette.addresses import address_and_key, identity_key
from gazette.errors import GazetteError
from gazette.newsletters.service import create_newsletter
from gazette.store import migrate
from gazette.store.db import make_engine, make_session_factory, transaction
from gazette.store.models import (
    Delivery,
    Event,
    RateLimit,
    Subscriber,
    SubscriberAlias,
    Subscription,
    SubscriptionStatus,
)
from gazette.subscribers.service import (
    Origin,
    is_suppressed,
    subscriber_by_email,
    subscriber_by_public_id,
)
from gazette.subscribers.subscribing import subscribe
from gazette.subscribers.unsubscribing import forget, unsubscribe_link
from gazette.tokens import Purpose
from tests.support.web import SPELLINGS, Site, SiteFactory, subscribe_form

BEFORE = "4a1c0de5e1ec"  # 0004, the last revision without the identity key
CLI = Origin("cli")


# --- the key ------------------------------------------------------------------------------


def test_every_spelling_of_one_mailbox_has_one_key_and_keeps_its_spelling() -> None:
    pairs = [address_and_key(s, allow_smtputf8=False) for s in SPELLINGS]
    assert {key for _address, key in pairs} == {"mailbox@example.com"}
    # The local part is kept as given; the domain is its IDNA form.
    assert [address for address, _key in pairs] == [
        "Mailbox@example.com",
        "mailbox@example.com",
        "MAILBOX@example.com",
        "mailbox@example.com",
        "MailBox@example.com",
    ]


def test_only_ascii_letters_fold_so_distinct_international_mailboxes_stay_distinct() -> None:
    # casefold() would make these one mailbox (ß -> ss) and fold Ä; RFC 6531 does not.
    assert identity_key("Straße@example.com") == "straße@example.com"
    assert identity_key("STRASSE@example.com") == "strasse@example.com"
    assert identity_key("Äb@example.com") == "Äb@example.com"
    # NFC: a decomposed and a composed é are one mailbox.
    assert identity_key("Ame\u0301lie@example.com") == identity_key("Am\u00e9lie@example.com")
    _address, key = address_and_key("jürgen@Bücher.DE", allow_smtputf8=True)
    assert key == "jürgen@xn--bcher-kva.de"


# --- the domain functions -----------------------------------------------------------------


@pytest.fixture
def sessions(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def test_subscribing_every_spelling_makes_one_reader_with_the_first_spelling(
    sessions: Engine,
) -> None:
    factory = make_session_factory(sessions)
    with transaction(factory) as session:
        create_newsletter(session, "weekly", "Weekly")
    ids = set()
    for spelling in SPELLINGS:
        with transaction(factory) as session:
            ids.add(subscribe(session, spelling, "weekly", CLI, confirmed=True).subscriber_id)
    assert len(ids) == 1
    with factory() as session:
        assert list(session.scalars(select(Subscriber.email))) == ["Mailbox@example.com"]
        for spelling in SPELLINGS:
            assert subscriber_by_email(session, spelling).id in ids


def test_forgetting_one_spelling_suppresses_every_spelling(sessions: Engine) -> None:
    factory = make_session_factory(sessions)
    with transaction(factory) as session:
        create_newsletter(session, "weekly", "Weekly")
        subscribe(session, SPELLINGS[0], "weekly", CLI, confirmed=True)
    with transaction(factory) as session:
        forget(session, SPELLINGS[2], CLI)
    with transaction(factory) as session:
        assert all(is_suppressed(session, address_and_key(s, allow_smtputf8=False)[0])
                   for s in SPELLINGS)  # fmt: skip
        with pytest.raises(GazetteError, match="forgotten or suppressed"):
            subscribe(session, SPELLINGS[4], "weekly", CLI, confirmed=True)


# --- the migration ------------------------------------------------------------------------

T = "'2025-06-02 08:00:00+00:00'"


def _at(day: int) -> str:
    return f"'2025-06-{day:02d} 08:00:00+00:00'"


def statuses_of(session: Session, subscriber_id: int) -> dict[int, SubscriptionStatus]:
    """The reader's subscription status on each newsletter, by newsletter id."""
    rows = session.execute(
        select(Subscription.newsletter_id, Subscription.status).where(
            Subscription.subscriber_id == subscriber_id
        )
    )
    return dict(rows.all())


def insert_rows(
    run: Callable[[str], object], into: str, values: str, rows: list[tuple[object, ...]]
) -> None:
    """INSERT INTO ``into`` one row per tuple: ``values`` with the tuple's fields filled in."""
    for row in rows:
        run(f"INSERT INTO {into} VALUES ({values.format(*row)})")


def _seed_duplicates(engine: Engine) -> None:
    """A 0004 database: three spellings of one mailbox, and one other reader."""
    with engine.begin() as connection:
        run = connection.exec_driver_sql
        for nid, slug in ((1, "weekly"), (2, "monthly")):
            run(
                "INSERT INTO newsletter (id, slug, name, description, schedule_cron, timezone, "
                "min_articles, max_articles, allow_frequency, template_set, default_language, "
                f"created_at) VALUES ({nid}, '{slug}', '{slug}', '', '0 8 * * 1', 'UTC', 1, 20, "
                f"false, 'digest', 'en', {T})"
            )
        run("INSERT INTO topic (id, slug, name) VALUES (1, 'tech', 'Tech')")
        # (id, public id, address, created, consent at, consent source, confirmed at)
        readers = [
            (1, "p-first", "Mailbox@example.com", _at(3), _at(4), "web", _at(4)),
            (2, "p-second", "mailbox@example.com", _at(5), _at(1), "import", _at(1)),
            (3, "p-third", "MAILBOX@example.com", _at(7), "NULL", "", "NULL"),
            (4, "p-other", "other@example.org", _at(2), _at(2), "cli", _at(2)),
        ]
        for sid, public_id, email, created, consent_at, source, confirmed_at in readers:
            run(
                "INSERT INTO subscriber (id, public_id, email, name, language, created_at, "
                "confirmed_at, consent_source, consent_at, bounce_count, attributes) VALUES "
                f"({sid}, '{public_id}', '{email}', '', 'en', {created}, {confirmed_at}, "
                f"'{source}', {consent_at}, 1, '{{}}')"
            )
        # weekly: active, unsubscribed, pending; monthly: pending (first), active (third).
        insert_rows(
            run, "subscription (id, subscriber_id, newsletter_id, status, created_at, updated_at)",
            f"{{}}, {{}}, {{}}, '{{}}', {T}, {T}",
            [(1, 1, 1, "active"), (2, 2, 1, "unsubscribed"), (3, 3, 1, "pending"),
             (4, 1, 2, "pending"), (5, 3, 2, "active"), (6, 4, 1, "active")],
        )  # fmt: skip
        run("INSERT INTO subscription_topic (subscription_id, topic_id) VALUES (3, 1)")
        for iid in (1, 2):
            run(
                "INSERT INTO issue (id, public_id, newsletter_id, period_key, status, "
                "cutoff_at, planned_at, sent_count, failed_count, skipped_count) VALUES "
                f"({iid}, 'i{iid}', 1, 'k{iid}', 'sent', {T}, {T}, 1, 0, 0)"
            )
        # Issue 1 went out to the second spelling only; issue 2 to the first only.
        insert_rows(
            run, "delivery (id, issue_id, subscriber_id, status, attempts)", "{}, {}, {}, '{}', 1",
            [(1, 1, 1, "pending"), (2, 1, 2, "sent"), (3, 1, 3, "failed"),
             (4, 2, 1, "sent"), (5, 2, 3, "skipped"), (6, 1, 4, "sent")],
        )  # fmt: skip
        for sid in (1, 2, 3, 4):
            run(
                "INSERT INTO event (subscriber_id, newsletter_id, kind, source, detail, "
                f"created_at) VALUES ({sid}, 1, 'subscribed', 'cli', '{{}}', {T})"
            )
        if connection.dialect.name == "postgresql":
            # Rows given explicit ids leave the sequences behind; later inserts need them on.
            for table in ("newsletter", "topic", "subscriber", "subscription", "issue", "delivery"):
                run(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 100)")


def test_upgrade_merges_spellings_into_the_earliest_reader_and_keeps_their_links(
    engine: Engine,
) -> None:
    migrate.upgrade(engine, BEFORE)
    _seed_duplicates(engine)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    with factory() as session:
        readers = session.execute(
            select(Subscriber.id, Subscriber.email, Subscriber.email_key).order_by(Subscriber.id)
        ).all()
        assert [tuple(r) for r in readers] == [
            (1, "Mailbox@example.com", "mailbox@example.com"),
            (4, "other@example.org", "other@example.org"),
        ]
        survivor = session.get_one(Subscriber, 1)
        # The earliest consent on record (the second spelling's import) stands.
        assert survivor.consent_source == "import"
        assert survivor.consent_at is not None
        assert survivor.consent_at.day == 1
        assert survivor.confirmed_at is not None
        assert survivor.confirmed_at.day == 1
        assert survivor.bounce_count == 3
        statuses = statuses_of(session, 1)
        # An unsubscribe beats active and pending; active beats pending.
        assert statuses == {1: SubscriptionStatus.UNSUBSCRIBED, 2: SubscriptionStatus.ACTIVE}
        assert session.scalar(select(func.count()).select_from(Subscription)) == 3
        ledger = session.execute(
            select(Delivery.id, Delivery.issue_id, Delivery.subscriber_id, Delivery.status)
            .order_by(Delivery.id)
        ).all()  # fmt: skip
        # Per issue the row that was sent is kept, and it now names the survivor.
        assert [(d.id, d.issue_id, d.subscriber_id, d.status.value) for d in ledger] == [
            (2, 1, 1, "sent"),
            (4, 2, 1, "sent"),
            (6, 1, 4, "sent"),
        ]
        events = session.execute(select(Event.subscriber_id, Event.kind).order_by(Event.id)).all()
        assert [tuple(e) for e in events] == [
            (1, "subscribed"), (1, "subscribed"), (1, "subscribed"), (4, "subscribed"),
            (1, "merged"), (1, "merged"),
        ]  # fmt: skip
        aliases = dict(session.execute(select(SubscriberAlias.public_id,
                                              SubscriberAlias.subscriber_id)).all())  # fmt: skip
        assert aliases == {"p-second": 1, "p-third": 1}
        for public_id in ("p-first", "p-second", "p-third"):
            assert subscriber_by_public_id(session, public_id).id == 1
        # The unique key now holds for every spelling.
        with pytest.raises(IntegrityError, match="email_key"), session.begin_nested():
            session.add(Subscriber(email="MailBox@example.com"))
    # A one-click link minted for a merged spelling stops the one reader.
    with transaction(factory) as session:
        done = unsubscribe_link(session, "p-third", "monthly", Origin("web"))
        assert done.changed
    with factory() as session:
        assert (
            session.scalar(
                select(Subscription.status).where(
                    Subscription.subscriber_id == 1, Subscription.newsletter_id == 2
                )
            )
            == SubscriptionStatus.UNSUBSCRIBED
        )

    migrate.downgrade(engine, BEFORE)
    inspector = inspect(engine)
    assert "subscriber_alias" not in inspector.get_table_names()
    assert "email_key" not in {c["name"] for c in inspector.get_columns("subscriber")}
    with engine.connect() as connection:
        counts = [
            connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
            for table in ("subscriber", "subscription", "delivery", "event")
        ]
    assert counts == [2, 3, 3, 7]
    migrate.upgrade(engine)  # and up again, over merged data
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_upgrade_without_duplicates_only_fills_the_key(engine: Engine) -> None:
    migrate.upgrade(engine, BEFORE)
    with engine.begin() as connection:
        for n in range(2500):  # more than one chunk
            connection.exec_driver_sql(
                "INSERT INTO subscriber (public_id, email, name, language, created_at, "
                f"consent_source, bounce_count, attributes) VALUES ('p{n}', "
                f"'Reader{n}@example.org', '', 'en', {T}, '', 0, '{{}}')"
            )
    migrate.upgrade(engine)
    with Session(engine) as session:
        keys = set(session.scalars(select(Subscriber.email_key)))
    assert keys == {f"reader{n}@example.org" for n in range(2500)}


# --- the web sign-up ----------------------------------------------------------------------


def test_five_spellings_signing_up_are_one_reader_under_one_per_address_limit(
    make_site: SiteFactory,
) -> None:
    site: Site = make_site(subscribe_limit_per_address="3")
    browser = site.browser()
    page, _ = subscribe_form(browser)
    form = page.form("/subscribe")
    for spelling in SPELLINGS:
        response = browser.post("/subscribe", form.filled(email=spelling))
        assert response.status == 200, (spelling, response.text)
    rt = site.runtime
    with rt.sessions() as session:
        assert list(session.scalars(select(Subscriber.email))) == ["Mailbox@example.com"]
        # One counter for the mailbox, hit five times: the last two were over the limit.
        counter = hashlib.sha256(b"subscribe-address:mailbox@example.com").hexdigest()
        counts = dict(session.execute(select(RateLimit.key, RateLimit.count)).all())
    assert counts[counter] == 5
    others = {
        hashlib.sha256(key.encode()).hexdigest()
        for key in ("subscribe-ip:127.0.0.1", "confirm-mail:Mailbox@example.com")
    }
    assert set(counts) == {counter, *others}
    assert [m.recipients for m in site.smtp.messages] == [["Mailbox@example.com"]]


def test_one_click_from_a_merged_spellings_link_stops_the_one_reader(
    database_url: str,
    make_site: SiteFactory,
) -> None:
    """Links already in inboxes name the merged readers' public ids: each still works."""
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine, BEFORE)
        _seed_duplicates(engine)
    finally:
        engine.dispose()
    site: Site = make_site()  # upgrades to head: the three spellings become one reader
    rt = site.runtime
    path = f"/unsubscribe/{rt.tokens.mint(Purpose.UNSUBSCRIBE, 'p-third', 'monthly')}"
    response = site.browser(cookies=False).post(path, [("List-Unsubscribe", "One-Click")])
    assert response.status == 200, response.text
    with rt.sessions() as session:
        statuses = statuses_of(session, 1)
    assert statuses == {1: SubscriptionStatus.UNSUBSCRIBED, 2: SubscriptionStatus.UNSUBSCRIBED}
    # The preferences link of another merged spelling shows the one reader's page.
    token = rt.tokens.mint(Purpose.PREFERENCES, "p-second", "monthly")
    page = site.browser().get(f"/preferences/{token}")
    assert page.status == 200, page.text
    assert "Mailbox@example.com" in page.text
