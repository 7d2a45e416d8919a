"""The whole flow over real HTTP: subscribe, confirm by mail, one-click unsubscribe."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from gazette.store.models import Event, SubscriptionStatus
from gazette.tokens import Purpose
from gazette.web.csrf import FIELD, SECURE_COOKIE
from tests.support.http import Page
from tests.support.web import (
    ACTIVE_EMAIL,
    EMAIL,
    NAME,
    SLUG,
    Site,
    add_reader,
    confirm_path,
    events,
    find_subscriber,
    snapshot,
    status_of,
    token_of,
)
from tests.web.helpers import add_topics


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_subscribe_confirm_then_one_click_unsubscribe(site: Site, encoding: str) -> None:
    rt = site.runtime
    browser = site.browser()

    # The form carries a hidden CSRF field and sets the cookie it is bound to.
    form_page = browser.get("/subscribe")
    assert form_page.status == 200
    form = form_page.form("/subscribe")
    assert form.input_types[FIELD] == "hidden"
    assert form.value(FIELD)
    assert form.value("newsletter") == SLUG
    cookie = browser.cookie(SECURE_COOKIE)  # the base URL is https: a __Host- cookie
    assert cookie
    set_cookie = form_page.headers["Set-Cookie"]
    assert set_cookie.startswith(f"{SECURE_COOKIE}=")
    assert "HttpOnly" in set_cookie
    assert "SameSite=Lax" in set_cookie
    assert "Secure" in set_cookie
    assert "Path=/;" in set_cookie or set_cookie.endswith("Path=/")
    assert "Domain" not in set_cookie

    sent = browser.submit(form, email=EMAIL, name="Oksana", language="uk")
    assert sent.status == 200
    assert "Set-Cookie" not in sent.headers  # the cookie is kept, not replaced
    assert status_of(rt, EMAIL) == SubscriptionStatus.PENDING
    subscriber = find_subscriber(rt, EMAIL)
    assert subscriber is not None
    assert (subscriber.name, subscriber.language) == ("Oksana", "uk")

    # Exactly one confirmation, whose link names this reader and newsletter.
    assert len(site.smtp.messages) == 1
    received = site.smtp.messages[0]
    assert received.recipients == [EMAIL]
    path = confirm_path(received)
    claims = rt.tokens.read(Purpose.CONFIRM, token_of(path))
    assert (claims.subscriber, claims.newsletter) == (subscriber.public_id, SLUG)
    assert events(rt)["confirmation_sent"] == 1

    # Following the link (as a link scanner would) only shows a button.
    before = snapshot(rt)
    landing = browser.get(path)
    assert landing.status == 200
    assert 'lang="uk"' in landing.text  # in the reader's language
    assert snapshot(rt) == before
    assert status_of(rt, EMAIL) == SubscriptionStatus.PENDING

    # Pressing it confirms; pressing it again is harmless.
    confirm_form = landing.form(path)
    assert confirm_form.value(FIELD)
    confirmed = browser.submit(confirm_form)
    assert confirmed.status == 200, confirmed.text
    assert status_of(rt, EMAIL) == SubscriptionStatus.ACTIVE
    again = browser.submit(confirm_form)
    assert again.status == 200
    assert again.body == confirmed.body
    assert events(rt)["confirmed"] == 1
    subscriber = find_subscriber(rt, EMAIL)
    assert subscriber is not None
    assert subscriber.confirmed_at is not None
    assert (subscriber.consent_source, subscriber.consent_ip) == ("web", "127.0.0.1")

    # RFC 8058 one-click: a mail provider POSTs without cookies and follows no redirect.
    token = rt.tokens.mint(Purpose.UNSUBSCRIBE, subscriber.public_id, SLUG)
    provider = site.browser(cookies=False)
    one_click = {"List-Unsubscribe": "One-Click"}

    def click() -> Page:
        if encoding == "multipart":
            return provider.post_multipart(f"/unsubscribe/{token}", one_click)
        return provider.post(f"/unsubscribe/{token}", one_click)

    done = click()
    assert done.status == 200, done.text
    assert "Location" not in done.headers
    # Nobody sees the answer: a line in the reader's language, and no cookie.
    assert done.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert done.text == "Ви більше не отримуватимете випусків цієї розсилки.\n"
    assert "Set-Cookie" not in done.headers
    assert status_of(rt, EMAIL) == SubscriptionStatus.UNSUBSCRIBED
    assert events(rt)["unsubscribed"] == 1
    with rt.sessions() as session:
        event = session.scalars(select(Event).where(Event.kind == "unsubscribed")).one()
    assert (event.subscriber_id, event.source, event.ip) == (subscriber.id, "web", "127.0.0.1")

    # A provider retrying the POST gets 200 again, and nothing more is recorded.
    repeated = click()
    assert repeated.status == 200
    assert "Location" not in repeated.headers
    assert status_of(rt, EMAIL) == SubscriptionStatus.UNSUBSCRIBED
    assert events(rt)["unsubscribed"] == 1
    # The confirmation, then the welcome (sent once, though confirmed twice); the
    # unsubscribes send nothing.
    assert len(site.smtp.messages) == 2
    welcome = site.smtp.messages[1].parsed()
    assert welcome["Subject"] == f"Ласкаво просимо до {NAME}"  # in the reader's language


def test_get_on_token_urls_changes_nothing(site: Site) -> None:
    rt = site.runtime
    add_topics(rt, "Energy")
    pending = add_reader(rt, EMAIL, confirmed=False, language="uk")
    active = add_reader(rt, ACTIVE_EMAIL, confirmed=True, language="ja")
    urls = {
        "confirm": f"/confirm/{rt.tokens.mint(Purpose.CONFIRM, pending, SLUG)}",
        "unsubscribe": f"/unsubscribe/{rt.tokens.mint(Purpose.UNSUBSCRIBE, active, SLUG)}",
        "preferences": f"/preferences/{rt.tokens.mint(Purpose.PREFERENCES, active, SLUG)}",
    }
    browser = site.browser()
    before = snapshot(rt)
    assert before.statuses == {
        (EMAIL, SLUG): SubscriptionStatus.PENDING,
        (ACTIVE_EMAIL, SLUG): SubscriptionStatus.ACTIVE,
    }
    for name, url in urls.items():
        for _ in range(3):
            page = browser.get(url)
            assert page.status == 200, (name, page.text)
            # Each page offers a form that POSTs back to the same URL.
            assert page.form(url).method == "post"
    assert snapshot(rt) == before
