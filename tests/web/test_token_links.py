"""Token links: bad and expired tokens, forgotten readers, old confirm links after unsubscribing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from itsdangerous.timed import TimestampSigner

from gazette.store.db import transaction
from gazette.store.models import SubscriptionStatus
from gazette.subscribers.service import Origin
from gazette.subscribers.unsubscribing import forget
from gazette.tokens import Purpose
from gazette.web.csrf import FIELD
from tests.support import web
from tests.web.helpers import tamper


@pytest.mark.parametrize("kind", ["tampered", "truncated", "wrong-purpose", "garbage"])
def test_bad_tokens_get_a_400_page_for_get_and_post(site: web.Site, kind: str) -> None:
    rt = site.runtime
    victim = web.add_reader(rt, web.EMAIL, confirmed=False)
    attacker = web.add_reader(rt, web.ACTIVE_EMAIL, confirmed=True)
    wrong = {
        Purpose.CONFIRM: Purpose.UNSUBSCRIBE,
        Purpose.UNSUBSCRIBE: Purpose.CONFIRM,
        Purpose.PREFERENCES: Purpose.UNSUBSCRIBE,
    }
    browser = site.browser()
    _, csrf = web.subscribe_form(browser)
    before = web.snapshot(rt)
    for purpose in Purpose:
        good = rt.tokens.mint(purpose, attacker, web.SLUG)
        token = {
            "tampered": tamper(good, rt.tokens.mint(purpose, victim, web.SLUG)),
            "truncated": good[:-6],
            "wrong-purpose": rt.tokens.mint(wrong[purpose], victim, web.SLUG),
            "garbage": "definitely-not-a-token",
        }[kind]
        assert token != good
        url = f"/{purpose.value}/{token}"
        for response in (
            browser.get(url),
            browser.post(url, {FIELD: csrf, "List-Unsubscribe": "One-Click", "language": "ja"}),
        ):
            assert response.status == 400, (url, response.status, response.text)
            assert web.title_of(response) == "This link does not work"
            assert "This link is not valid." in response.text
            assert "Traceback" not in response.text
            assert "itsdangerous" not in response.text
            assert response.forms() == []
    assert web.snapshot(rt) == before


def test_confirm_links_expire_and_unsubscribe_links_do_not(
    site: web.Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = site.runtime
    public_id = web.add_reader(rt, web.EMAIL, confirmed=False)
    now = [1_714_550_400]  # 2024-05-01
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _self: now[0])
    confirm = f"/confirm/{rt.tokens.mint(Purpose.CONFIRM, public_id, web.SLUG)}"
    unsubscribe = f"/unsubscribe/{rt.tokens.mint(Purpose.UNSUBSCRIBE, public_id, web.SLUG)}"
    browser = site.browser()
    form = browser.get(confirm).form(confirm)

    now[0] += int(timedelta(days=8).total_seconds())
    for response in (browser.get(confirm), browser.submit(form)):
        assert response.status == 400, response.text
        assert "This link has expired." in response.text
    assert web.status_of(rt, web.EMAIL) == SubscriptionStatus.PENDING

    now[0] += int(timedelta(days=3650).total_seconds())
    done = site.browser(cookies=False).post(unsubscribe, {"List-Unsubscribe": "One-Click"})
    assert done.status == 200, done.text
    assert web.status_of(rt, web.EMAIL) == SubscriptionStatus.UNSUBSCRIBED


def test_links_of_a_forgotten_reader_get_a_404_page(site: web.Site) -> None:
    rt = site.runtime
    public_id = web.add_reader(rt, web.EMAIL, confirmed=True)
    tokens = {purpose: rt.tokens.mint(purpose, public_id, web.SLUG) for purpose in Purpose}
    with transaction(rt.sessions) as session:
        forget(session, web.EMAIL, Origin("cli"))
    browser = site.browser()
    _, csrf = web.subscribe_form(browser)
    before = web.snapshot(rt)
    responses = {
        "confirm POST": browser.post(f"/confirm/{tokens[Purpose.CONFIRM]}", {FIELD: csrf}),
        "one-click POST": site.browser(cookies=False).post(
            f"/unsubscribe/{tokens[Purpose.UNSUBSCRIBE]}", {"List-Unsubscribe": "One-Click"}
        ),
        "preferences GET": browser.get(f"/preferences/{tokens[Purpose.PREFERENCES]}"),
        "preferences POST": browser.post(
            f"/preferences/{tokens[Purpose.PREFERENCES]}",
            {FIELD: csrf, "language": "ja", "action": "save"},
        ),
        "unsubscribe-all POST": browser.post(
            f"/preferences/{tokens[Purpose.PREFERENCES]}",
            {FIELD: csrf, "action": "unsubscribe-all"},
        ),
    }
    for name, response in responses.items():
        assert response.status == 404, (name, response.text)
        assert web.title_of(response) == "Not found", name
        assert "no longer exists" in response.text, name
        assert "Traceback" not in response.text, name
        assert web.EMAIL not in response.text, name
    assert web.snapshot(rt) == before
    assert web.subscriber_count(rt) == 0


def test_confirm_post_without_csrf_is_refused(site: web.Site) -> None:
    rt = site.runtime
    public_id = web.add_reader(rt, web.EMAIL, confirmed=False)
    url = f"/confirm/{rt.tokens.mint(Purpose.CONFIRM, public_id, web.SLUG)}"
    browser = site.browser()
    form = browser.get(url).form(url)
    response = browser.post(url, [(k, v) for k, v in form.fields if k != FIELD])
    assert response.status == 403, response.text
    assert web.title_of(response) == "Form expired"
    cookieless = site.browser(cookies=False).post(url, form.fields)
    assert cookieless.status == 403
    assert web.status_of(rt, web.EMAIL) == SubscriptionStatus.PENDING
    assert web.events(rt)["confirmed"] == 0


def test_an_old_confirm_link_does_not_undo_an_unsubscribe(site: web.Site) -> None:
    rt = site.runtime
    browser = site.browser()
    page, _ = web.subscribe_form(browser)
    browser.submit(page.form("/subscribe"), email=web.EMAIL)
    path = web.confirm_path(site.smtp.messages[0])
    landing = browser.get(path)
    assert browser.submit(landing.form(path)).status == 200
    assert web.status_of(rt, web.EMAIL) == SubscriptionStatus.ACTIVE

    subscriber = web.find_subscriber(rt, web.EMAIL)
    assert subscriber is not None
    token = rt.tokens.mint(Purpose.UNSUBSCRIBE, subscriber.public_id, web.SLUG)
    unsubscribed = site.browser(cookies=False).post(
        f"/unsubscribe/{token}", {"List-Unsubscribe": "One-Click"}
    )
    assert unsubscribed.status == 200
    assert web.status_of(rt, web.EMAIL) == SubscriptionStatus.UNSUBSCRIBED

    # Days later the reader finds the confirmation mail and presses the button again.
    before = web.snapshot(rt)
    old = browser.get(path)
    assert old.status == 200
    response = browser.submit(old.form(path))
    assert response.status == 404, response.text
    assert "subscribe again" in response.text
    assert web.status_of(rt, web.EMAIL) == SubscriptionStatus.UNSUBSCRIBED
    assert web.snapshot(rt) == before
