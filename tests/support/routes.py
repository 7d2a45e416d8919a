"""Every route of the app probed with every method but POST, and the state around it.

A seeded installation (pending, active and forgotten readers, so every token route has a
valid argument) is served over HTTP; the probe records each answer and the database
before and after, which the method tests and the side-door scenario compare.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from sqlalchemy import select
from werkzeug.routing import Rule

from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Base, IssueStatus, Subscriber
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from gazette.tokens import Purpose
from gazette.web import create_app, server_options
from gazette.web.csrf import FIELD
from tests.support import digests
from tests.support.env import installed_runtime
from tests.support.http import Browser, LiveServer, serve

NAME = "Test Weekly"
PENDING = "pending.reader@example.org"
ACTIVE = "active.reader@example.org"
NEWCOMER = "new.reader@example.org"


# Every method but POST; HEAD and OPTIONS are the ones Flask adds to each route itself.
SAFE_AND_OTHER = ("GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Seeded:
    runtime: Runtime
    app: Flask
    server: LiveServer
    arguments: dict[tuple[str, str], str]  # (endpoint, argument) -> a valid value


def database_state(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order: the whole state a request could change."""
    state: dict[str, list[tuple[Any, ...]]] = {}
    with runtime.sessions() as session:
        for table in Base.metadata.sorted_tables:
            rows = session.execute(select(table)).all()
            state[table.name] = sorted((tuple(map(repr, row)) for row in rows), key=repr)
    return state


@pytest.fixture
def seeded(tmp_path: Path, database_url: str) -> Iterator[Seeded]:
    """A pending and an active reader, a sent issue (with its ledger), the app served."""
    with installed_runtime(tmp_path, database_url) as runtime:
        with transaction(runtime.sessions) as session:
            newsletter_id = create_newsletter(session, digests.SLUG, NAME)
        digests.add_articles(
            runtime,
            [
                digests.ArticleSpec(
                    "Grid storage", "https://blog.example.com/grid", 2, topics=("Energy",)
                )
            ],
        )
        active = digests.add_readers(runtime, [(ACTIVE, "Ada", "en")])[ACTIVE].public_id
        issue_id, issue_public_id, _ = digests.plan(runtime, newsletter_id)
        assert digests.send(runtime, issue_id).status == IssueStatus.SENT
        with transaction(runtime.sessions) as session:
            result = subscribe(session, PENDING, digests.SLUG, Origin("cli"), confirmed=False)
        with runtime.sessions() as session:
            pending = session.get_one(Subscriber, result.subscriber_id).public_id
        tokens = runtime.tokens
        arguments = {
            ("confirm", "token"): tokens.mint(Purpose.CONFIRM, pending, digests.SLUG),
            ("unsubscribe", "token"): tokens.mint(Purpose.UNSUBSCRIBE, active, digests.SLUG),
            ("resubscribe", "token"): tokens.mint(Purpose.UNSUBSCRIBE, active, digests.SLUG),
            ("preferences", "token"): tokens.mint(Purpose.PREFERENCES, active, digests.SLUG),
            ("archive_issue", "public_id"): issue_public_id,
        }
        app = create_app(runtime)
        with serve(app, **server_options(runtime.settings)) as server:
            yield Seeded(runtime, app, server, arguments)


def path_of(rule: Rule, arguments: dict[tuple[str, str], str]) -> str:
    """The rule's path with a valid value for each argument."""
    values = {}
    for name in rule.arguments:
        key = (rule.endpoint, name)
        if key not in arguments:
            pytest.fail(f"route {rule.rule} ({rule.endpoint}) has argument {name!r}: "
                        "name a valid value for it in this test")  # fmt: skip
        values[name] = arguments[key]
    built = rule.build(values)
    assert built is not None
    return built[1]


def acting_fields(csrf: str, action: str) -> list[tuple[str, str]]:
    """Everything a POST to any route would need to change something."""
    return [
        (FIELD, csrf), ("List-Unsubscribe", "One-Click"), ("action", action),
        ("email", NEWCOMER), ("name", "New Reader"), ("newsletter", digests.SLUG),
        ("language", "ja"), ("topic", "energy"), ("frequency", ""),
    ]  # fmt: skip


@dataclass
class Probe:
    """Every method but POST sent to every route: the answers, and the state around them."""

    browser: Browser
    csrf: str
    rules: list[Rule]
    answered: dict[tuple[str, str, str], int]  # (route, method, action) -> status
    requests: int  # how many were sent (two rules may share a path, and a key above)
    before: dict[str, list[tuple[Any, ...]]]
    after: dict[str, list[tuple[Any, ...]]]
    mails: int  # messages written to the outbox meanwhile

    def post_that_acts(self, seeded: Seeded) -> dict[str, list[tuple[Any, ...]]]:
        """POST the same fields to the unsubscribe route, which does act; the state after."""
        rule = next(
            r for r in self.rules if r.endpoint == "unsubscribe" and "POST" in (r.methods or ())
        )
        response = self.browser.post(
            path_of(rule, seeded.arguments), acting_fields(self.csrf, "save")
        )
        assert response.status == 200, response.text
        return database_state(seeded.runtime)


def probe_every_route(seeded: Seeded) -> Probe:
    """Every method but POST, with all a POST would need, to every route; no server error."""
    rt = seeded.runtime
    browser = Browser(seeded.server)
    form = browser.get("/subscribe")
    assert form.status == 200
    csrf = form.form("/subscribe").value(FIELD)
    rules = [r for r in seeded.app.url_map.iter_rules() if r.endpoint != "static"]
    before = database_state(rt)
    mails_before = len(digests.maildir_messages(rt))
    answered: dict[tuple[str, str, str], int] = {}
    requests = 0
    for rule in rules:
        path = path_of(rule, seeded.arguments)
        for action in ("unsubscribe-all", "save"):
            fields = acting_fields(csrf, action)
            query = "?" + urlencode(fields)
            for method in SAFE_AND_OTHER:
                response = browser.request(
                    method, path + query, urlencode(fields).encode("ascii"),
                    {"Content-Type": "application/x-www-form-urlencoded"},
                )  # fmt: skip
                answered[(rule.rule, method, action)] = response.status
                requests += 1
                assert response.status < 500, (rule.rule, method, response.text)
                if method == "HEAD":
                    assert response.body == b"", (rule.rule, method)
    mails = len(digests.maildir_messages(rt)) - mails_before
    return Probe(browser, csrf, rules, answered, requests, before, database_state(rt), mails)
