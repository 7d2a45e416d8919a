"""DKIM that aligns: each newsletter signed for its own From domain, or not sent at all.

Through the real CLI (`python -m gazette`, Maildir outbox): newsletters on two domains,
one key each (RSA and Ed25519), every message verified by dkimpy with d= its From
domain; a From domain without a key is refused by `newsletters add/edit` and by
`digest send`, and a send that reaches a worker is refused before any row is claimed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import dkim
import pytest
from sqlalchemy import func, select

from gazette.digests import sending
from gazette.mail.dkim import MissingDkimKeyError
from gazette.newsletters.service import create_newsletter
from gazette.store.db import transaction
from gazette.store.models import (
    Delivery,
    DeliveryStatus,
    Issue,
    IssueStatus,
    Newsletter,
    SubscriptionStatus,
)
from tests.support.cli import NewsletterCli, one_sentence
from tests.support.digests import SLUG, ArticleSpec, add_articles, add_readers, plan
from tests.support.dkim_keys import TestKey, dns_for, make_key
from tests.support.env import installed_runtime, make_env
from tests.support.messages import dkim_tags, parse
from tests.support.web import EMAIL, SENT_TITLE, SiteFactory, status_of, subscribe_form, title_of


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestKey, TestKey]:
    folder = tmp_path_factory.mktemp("keys")
    # make_env's GAZETTE_FROM_ADDRESS is digest@news.example.org: its parent's key signs it.
    return make_key(folder, "example.org", "gz2026"), make_key(
        folder, "other.example", "ed1", "ed25519"
    )


def _cli(tmp_path: Path, database_url: str, *keys: TestKey) -> NewsletterCli:
    entries = ",".join(key.entry for key in keys)
    return NewsletterCli(
        tmp_path, make_env(tmp_path, database_url, dkim_keys=entries), database_url
    )


def _issues(cli: NewsletterCli, slug: str) -> int:
    with cli.session() as session:
        return session.scalar(
            select(func.count()).select_from(Issue).join(Newsletter).where(Newsletter.slug == slug)
        ) or 0  # fmt: skip


def test_each_newsletter_is_signed_for_its_from_domain_and_one_without_a_key_refused(
    tmp_path: Path, database_url: str, keys: tuple[TestKey, TestKey]
) -> None:
    rsa_key, ed_key = keys
    cli = _cli(tmp_path, database_url, rsa_key, ed_key)
    cli.ok("db", "upgrade")
    cli.ok("newsletters", "add", "weekly", "--name", "The Weekly")  # GAZETTE_FROM_ADDRESS
    cli.ok(
        "newsletters", "add", "other", "--name", "Other",
        "--from-address", "Other News <news@lists.other.example>",
    )  # fmt: skip

    # A From domain with no key: not added, not changed, with the domain and the setting.
    refused = cli(
        "newsletters", "add", "third", "--name", "Third", "--from-address", "n@third.example"
    )
    assert refused.returncode == 1
    sentence = one_sentence(refused)
    assert "n@third.example" in sentence
    assert "third.example:SELECTOR:/path/to/key.pem to GAZETTE_DKIM_KEYS" in sentence
    listed = json.loads(cli.ok("newsletters", "list", "--json").stdout)["newsletters"]
    assert sorted(n["slug"] for n in listed) == ["other", "weekly"]
    edit = cli("newsletters", "edit", "weekly", "--from-address", "n@third.example", "--name", "X")
    assert edit.returncode == 1
    assert "n@third.example" in one_sentence(edit)
    shown = cli.show("weekly")
    assert (shown["from_address"], shown["name"]) == (None, "The Weekly")

    cli.ok("subscribers", "add", "reader@example.com", "--confirmed", "--newsletter", "weekly")
    cli.ok("subscribers", "add", "reader@example.com", "--confirmed", "--newsletter", "other")
    cli.ok("articles", "add", "--title", "Grid storage", "--url", "https://example.org/grid")
    cli.ok("digest", "send", "weekly", "--now")
    cli.ok("digest", "send", "other", "--now")
    messages = [path.read_bytes() for path in cli.outbox()]
    assert len(messages) == 2
    signed_for = {}
    for data in messages:
        assert dkim.verify(data, dnsfunc=dns_for(rsa_key, ed_key)) is True
        tags = dkim_tags(parse(data))
        signed_for[parse(data)["From"].addresses[0].domain] = (tags["d"], tags["a"])
    assert signed_for == {
        "news.example.org": ("example.org", "rsa-sha256"),
        "lists.other.example": ("other.example", "ed25519-sha256"),
    }

    # The key of other.example withdrawn: its next send is refused before planning.
    without = _cli(tmp_path, database_url, rsa_key)
    before = _issues(without, "other")
    cli.ok("articles", "add", "--title", "Tidal power", "--url", "https://example.org/tide")
    result = without("digest", "send", "other", "--now")
    assert result.returncode == 1
    sentence = one_sentence(result)
    assert "news@lists.other.example" in sentence
    assert "GAZETTE_DKIM_KEYS" in sentence
    assert _issues(without, "other") == before  # nothing planned
    assert len(cli.outbox()) == 2


def test_a_worker_refuses_the_batch_before_claiming_a_row(
    tmp_path: Path, database_url: str, keys: tuple[TestKey, TestKey]
) -> None:
    rsa_key, _ed_key = keys
    with installed_runtime(tmp_path, database_url, dkim_keys=rsa_key.entry) as rt:
        with transaction(rt.sessions) as session:
            # Written past the CLI's check, as a newsletter whose key was withdrawn since.
            newsletter_id = create_newsletter(
                session, SLUG, "The Weekly", from_address="news@other.example"
            )
        add_articles(rt, [ArticleSpec("Grid storage", "https://example.org/grid", 1)])
        add_readers(rt, [(f"r{n}@example.com", "R", "en") for n in range(3)])
        issue_id, _public_id, _status = plan(rt, newsletter_id)
        with pytest.raises(MissingDkimKeyError) as refused:
            rt.dispatcher.enqueue_issue(issue_id)  # what `digest retry` and a tick call
        assert "news@other.example" in str(refused.value)
        with pytest.raises(MissingDkimKeyError):
            sending.send_batch(rt.sessions, rt.send_context, issue_id, 0, 10**9)
        with rt.sessions() as session:
            rows = session.scalars(select(Delivery).where(Delivery.issue_id == issue_id)).all()
            issue = session.get_one(Issue, issue_id)
        assert [(r.status, r.attempts) for r in rows] == [(DeliveryStatus.PENDING, 0)] * 3
        assert issue.status is IssueStatus.PLANNED


def test_a_sign_up_for_a_newsletter_without_a_key_is_saved_and_nothing_unsigned_is_sent(
    make_site: SiteFactory, keys: tuple[TestKey, TestKey], caplog: pytest.LogCaptureFixture
) -> None:
    # Only other.example has a key; the site's newsletter sends from news.example.org.
    site = make_site(dkim_keys=keys[1].entry)
    browser = site.browser()
    page, _ = subscribe_form(browser)
    with caplog.at_level(logging.WARNING, logger="gazette.web.app"):
        response = browser.submit(page.form("/subscribe"), email=EMAIL)
    assert response.status == 200
    assert "Traceback" not in response.text
    assert title_of(response) == SENT_TITLE
    assert status_of(site.runtime, EMAIL) == SubscriptionStatus.PENDING
    assert site.smtp.messages == []
    assert any(
        "No DKIM key signs mail from digest@news.example.org" in r.message for r in caplog.records
    )
