"""Fixtures of the digest tests: a runtime sending to the SMTP sink, a DKIM key, the archive."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from gazette.runtime import Runtime
from gazette.store.models import IssueStatus, utcnow
from gazette.web import create_app, server_options
from tests.digests.helpers import ARCHIVED, Archive, new_newsletter
from tests.support.digests import RsaKey, add_articles, add_readers, generate_rsa_key, plan, send
from tests.support.http import serve


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> RsaKey:
    return generate_rsa_key(tmp_path_factory.mktemp("dkim"))


@pytest.fixture
def archive(runtime: Runtime) -> Iterator[Archive]:
    now = utcnow()
    newsletter_id = new_newsletter(runtime)
    add_articles(runtime, ARCHIVED, now)
    add_readers(runtime, [("a@example.com", "A", "en"), ("b@example.com", "B", "uk")])
    first, first_id, _ = plan(runtime, newsletter_id, now - timedelta(hours=48), "p1")
    assert send(runtime, first).status == IssueStatus.SENT
    second, second_id, _ = plan(runtime, newsletter_id, now - timedelta(hours=24), "p2")
    assert send(runtime, second).status == IssueStatus.SENT
    _skipped, skipped_id, status = plan(runtime, newsletter_id, now - timedelta(hours=12), "p3")
    assert status == IssueStatus.SKIPPED
    _planned, planned_id, status = plan(runtime, newsletter_id, now, "p4")
    assert status == IssueStatus.PLANNED
    with serve(create_app(runtime), **server_options(runtime.settings)) as server:
        yield Archive(server, [second_id, first_id], [skipped_id, planned_id])
