"""What the web tests share beyond tests/support/web.py: readers with topics, token tampering."""

from __future__ import annotations

from gazette.articles.service import ArticleInput, upsert_article
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import utcnow
from gazette.tokens import Purpose
from tests.support.http import Page
from tests.support.web import (
    ACTIVE_EMAIL,
    EMAIL,
    SLUG,
    SiteFactory,
    confirm_path,
    find_subscriber,
    subscribe_form,
)


def tamper(token: str, other: str) -> str:
    """``token``'s timestamp and signature on ``other``'s payload: claims swapped."""
    payload = other.split(".")[0]
    return ".".join([payload, *token.split(".")[1:]])


def add_topics(runtime: Runtime, *names: str) -> None:
    with transaction(runtime.sessions) as session:
        upsert_article(
            session,
            ArticleInput(
                title="Grid storage, explained",
                url="https://blog.example.com/grid-storage",
                published_at=utcnow(),
                topics=list(names),
            ),
        )


def tour(make_site: SiteFactory) -> dict[str, Page]:
    """Every kind of HTML page the site serves, success and error alike."""
    site = make_site(subscribe_limit_per_ip="2")
    rt = site.runtime
    add_topics(rt, "Energy")
    browser = site.browser()
    pages: dict[str, Page] = {}
    pages["subscribe form"], _ = subscribe_form(browser)
    form = pages["subscribe form"].form("/subscribe")
    pages["form for unknown newsletter"] = browser.get("/subscribe?newsletter=nope")
    pages["invalid address"] = browser.submit(form, email="<script>alert(1)</script>@x")
    pages["sent"] = browser.submit(form, email=EMAIL)
    pages["csrf refused"] = browser.post("/subscribe", {"email": EMAIL})
    pages["too many"] = browser.submit(form, email=ACTIVE_EMAIL)
    path = confirm_path(site.smtp.messages[0])
    pages["confirm"] = browser.get(path)
    pages["confirmed"] = browser.submit(pages["confirm"].form(path))
    subscriber = find_subscriber(rt, EMAIL)
    assert subscriber is not None
    prefs = f"/preferences/{rt.tokens.mint(Purpose.PREFERENCES, subscriber.public_id, SLUG)}"
    pages["preferences"] = browser.get(prefs)
    pages["preferences saved"] = browser.submit(pages["preferences"].form(prefs), topic="energy")
    unsubscribe = f"/unsubscribe/{rt.tokens.mint(Purpose.UNSUBSCRIBE, subscriber.public_id, SLUG)}"
    pages["unsubscribe"] = browser.get(unsubscribe)
    pages["unsubscribed"] = browser.submit(pages["unsubscribe"].form(unsubscribe))
    pages["old confirm link"] = browser.submit(pages["confirm"].form(path))
    pages["bad token"] = browser.get("/confirm/not-a-token")
    pages["no such page"] = browser.get("/admin")
    pages["wrong method"] = browser.post("/healthz", {})
    pages["too large"] = browser.post("/subscribe", {"email": "x" * 70_000})
    expected = {
        "subscribe form": 200, "form for unknown newsletter": 404, "invalid address": 400,
        "sent": 200, "csrf refused": 403, "too many": 429, "confirm": 200, "confirmed": 200,
        "preferences": 200, "preferences saved": 200, "unsubscribe": 200, "unsubscribed": 200,
        "old confirm link": 404, "bad token": 400, "no such page": 404, "wrong method": 405,
        "too large": 413,
    }  # fmt: skip
    assert {name: page.status for name, page in pages.items()} == expected
    return pages
