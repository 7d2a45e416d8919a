"""Only POST changes state: every route, every other method, through the real HTTP server.

The routes are read from the app's own URL map, so a route added later is covered
without touching this file (a route with a new kind of argument fails here until a
valid value for it is named below). Each request carries everything that would make
a POST act: a valid token for the route, the CSRF cookie and its form token, the
one-click field, an address to subscribe. The whole database, every table and row,
must be the same afterwards, on SQLite and PostgreSQL, and no mail may leave.
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

from gazette.newsletters import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Base, IssueStatus, Subscriber
from gazette.subscribers import Origin, subscribe
from gazette.tokens import Purpose
from gazette.web import create_app, server_options
from gazette.web.csrf import FIELD
from tests.digest_helpers import (
    SLUG,
    ArticleSpec,
    add_articles,
    add_readers,
    installed_runtime,
    maildir_messages,
    plan,
    send,
)
from tests.http import Browser, LiveServer, serve

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
            newsletter_id = create_newsletter(session, SLUG, NAME)
        add_articles(
            runtime,
            [ArticleSpec("Grid storage", "https://blog.example.com/grid", 2, topics=("Energy",))],
        )
        active = add_readers(runtime, [(ACTIVE, "Ada", "en")])[ACTIVE].public_id
        issue_id, issue_public_id, _ = plan(runtime, newsletter_id)
        assert send(runtime, issue_id).status == IssueStatus.SENT
        with transaction(runtime.sessions) as session:
            result = subscribe(session, PENDING, SLUG, Origin("cli"), confirmed=False)
        with runtime.sessions() as session:
            pending = session.get_one(Subscriber, result.subscriber_id).public_id
        tokens = runtime.tokens
        arguments = {
            ("confirm", "token"): tokens.mint(Purpose.CONFIRM, pending, SLUG),
            ("unsubscribe", "token"): tokens.mint(Purpose.UNSUBSCRIBE, active, SLUG),
            ("preferences", "token"): tokens.mint(Purpose.PREFERENCES, active, SLUG),
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
        ("email", NEWCOMER), ("name", "New Reader"), ("newsletter", SLUG),
        ("language", "ja"), ("topic", "energy"), ("frequency", ""),
    ]  # fmt: skip


def test_no_method_but_post_changes_anything_on_any_route(seeded: Seeded) -> None:
    rt = seeded.runtime
    browser = Browser(seeded.server)
    form = browser.get("/subscribe")
    assert form.status == 200
    csrf = form.form("/subscribe").value(FIELD)
    rules = [r for r in seeded.app.url_map.iter_rules() if r.endpoint != "static"]
    # The map is the app's own: Flask adds OPTIONS to every route and HEAD to every GET.
    endpoints = {r.endpoint for r in rules}
    assert {"confirm", "unsubscribe", "preferences", "subscribe_post"} <= endpoints
    assert all("OPTIONS" in (r.methods or ()) for r in rules)
    assert all("HEAD" in (r.methods or ()) for r in rules if "GET" in (r.methods or ()))
    before = database_state(rt)
    mails_before = len(maildir_messages(rt))
    assert before["delivery"], "the sent issue's ledger is part of what must not change"

    answered: dict[tuple[str, str, str], int] = {}
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
                assert response.status < 500, (rule.rule, method, response.text)
                if method == "HEAD":
                    assert response.body == b"", (rule.rule, method)
    assert database_state(rt) == before
    assert len(maildir_messages(rt)) == mails_before
    # HEAD is answered like GET wherever GET is; the other methods are refused.
    for (rule_path, method, _action), status in answered.items():
        if method in ("PUT", "PATCH", "DELETE"):
            assert status == 405, (rule_path, method, status)
        if method == "OPTIONS":
            assert status == 200, (rule_path, method, status)

    # The same fields POSTed do act, so the comparison above can see a change.
    unsubscribe = path_of(
        next(r for r in rules if r.endpoint == "unsubscribe" and "POST" in (r.methods or ())),
        seeded.arguments,
    )
    assert browser.post(unsubscribe, acting_fields(csrf, "save")).status == 200
    assert database_state(rt) != before
