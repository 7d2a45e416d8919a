"""POST /subscribe: CSRF, the honeypot, bad input, rate limits, one confirmation per address."""

from __future__ import annotations

import html
import re
from collections import Counter
from functools import partial

import pytest
from sqlalchemy import select

from gazette.newsletters.service import create_newsletter
from gazette.store.db import transaction
from gazette.store.models import Event, Subscriber, SubscriptionStatus
from gazette.tokens import Purpose
from gazette.web.csrf import FIELD, SECURE_COOKIE
from tests.support.concurrency import at_once
from tests.support.http import Page
from tests.support.web import (
    ACTIVE_EMAIL,
    EMAIL,
    NAME,
    OTHER_NAME,
    OTHER_SLUG,
    SENT_TITLE,
    SLUG,
    Site,
    SiteFactory,
    add_reader,
    events,
    find_subscriber,
    snapshot,
    status_of,
    subscribe_form,
    subscriber_count,
    title_of,
    visible_text,
)


@pytest.mark.parametrize("case", ["no-token", "token-of-another-cookie", "no-cookie"])
def test_subscribe_without_a_matching_csrf_token_is_refused(site: Site, case: str) -> None:
    rt = site.runtime
    browser = site.browser()
    page, token = subscribe_form(browser)
    fields = page.form("/subscribe").filled(email=EMAIL)
    if case == "no-token":
        response = browser.post("/subscribe", [(k, v) for k, v in fields if k != FIELD])
    elif case == "token-of-another-cookie":
        other = site.browser()
        _, other_token = subscribe_form(other)
        assert other_token != token
        assert other.cookie(SECURE_COOKIE) != browser.cookie(SECURE_COOKIE)
        swapped = [(k, other_token if k == FIELD else v) for k, v in fields]
        response = browser.post("/subscribe", swapped)
    else:
        response = site.browser(cookies=False).post("/subscribe", fields)
    assert response.status == 403, response.text
    assert title_of(response) == "Form expired"
    assert subscriber_count(rt) == 0
    assert events(rt) == Counter()
    assert site.smtp.messages == []


def test_honeypot_gets_the_usual_page_and_nothing_happens(site: Site) -> None:
    rt = site.runtime
    browser = site.browser()
    page, _ = subscribe_form(browser)
    form = page.form("/subscribe")
    assert form.value("website") == ""  # people leave the hidden field empty

    bot = browser.submit(form, email=EMAIL, website="https://spam.example.com")
    assert bot.status == 200
    assert title_of(bot) == SENT_TITLE
    assert subscriber_count(rt) == 0
    assert events(rt) == Counter()
    assert site.smtp.messages == []

    # A person gets byte for byte the same page.
    person = browser.submit(form, email=ACTIVE_EMAIL)
    assert person.status == 200
    assert person.body == bot.body
    assert status_of(rt, ACTIVE_EMAIL) == SubscriptionStatus.PENDING
    assert [m.recipients for m in site.smtp.messages] == [[ACTIVE_EMAIL]]


def test_invalid_address_shows_the_form_again_naming_it(site: Site) -> None:
    browser = site.browser()
    page, _ = subscribe_form(browser)
    bad = "oksana.kovalenko@@example"
    response = browser.submit(page.form("/subscribe"), email=bad, name="Oksana")
    assert response.status == 400, response.text
    form = response.form("/subscribe")
    assert (form.value("email"), form.value("name")) == (bad, "Oksana")
    assert form.value(FIELD)
    error = re.search(r'<p class="error" role="alert">(.*?)</p>', response.text, re.S)
    assert error is not None
    assert f"{bad!r} is not a valid email address" in html.unescape(error.group(1))
    assert subscriber_count(site.runtime) == 0
    assert events(site.runtime) == Counter()
    assert site.smtp.messages == []


def test_unknown_newsletter_is_an_error_page(site: Site) -> None:
    browser = site.browser()
    page, _ = subscribe_form(browser)
    response = browser.submit(page.form("/subscribe"), email=EMAIL, newsletter="no-such-list")
    assert response.status == 404, response.text
    assert title_of(response) == "Not found"
    assert "There is no newsletter 'no-such-list'." in visible_text(response)
    assert response.forms() == []
    assert subscriber_count(site.runtime) == 0
    assert events(site.runtime) == Counter()
    assert site.smtp.messages == []


def test_the_form_offers_every_newsletter_or_the_one_asked_for(site: Site) -> None:
    with transaction(site.runtime.sessions) as session:
        create_newsletter(session, OTHER_SLUG, OTHER_NAME)
    browser = site.browser()

    every, _ = subscribe_form(browser)
    options = re.findall(r'<option value="([^"]*)">([^<]*)</option>', every.text)
    assert (SLUG, NAME) in options
    assert (OTHER_SLUG, OTHER_NAME) in options
    assert 'type="hidden" name="newsletter"' not in every.text

    chosen, _ = subscribe_form(browser, f"?newsletter={OTHER_SLUG}")
    assert chosen.form("/subscribe").value("newsletter") == OTHER_SLUG
    assert 'type="hidden" name="newsletter"' in chosen.text

    unknown = browser.get("/subscribe?newsletter=no-such-list")
    assert unknown.status == 404
    assert "There is no newsletter 'no-such-list'." in visible_text(unknown)
    assert unknown.forms() == []


def test_an_active_address_gets_the_same_response_and_no_mail(site: Site) -> None:
    rt = site.runtime
    add_reader(rt, ACTIVE_EMAIL, confirmed=True)
    browser = site.browser()
    page, _ = subscribe_form(browser)
    form = page.form("/subscribe")

    new = browser.submit(form, email=EMAIL)
    known = browser.submit(form, email=ACTIVE_EMAIL)

    assert (new.status, known.status) == (200, 200)
    assert known.body == new.body
    assert title_of(known) == SENT_TITLE

    def shown(page: Page) -> list[tuple[str, str]]:
        return sorted((k, v) for k, v in page.headers.items() if k != "Date")

    assert shown(known) == shown(new)
    assert [m.recipients for m in site.smtp.messages] == [[EMAIL]]
    assert status_of(rt, ACTIVE_EMAIL) == SubscriptionStatus.ACTIVE


def test_many_requests_for_one_address_send_one_confirmation(make_site: SiteFactory) -> None:
    site = make_site(subscribe_limit_per_ip="1000")
    browser = site.browser()
    page, _ = subscribe_form(browser)
    form = page.form("/subscribe")
    # The same address as a bot might vary it: domain case and surrounding space.
    variants = [EMAIL, EMAIL.replace("example.org", "EXAMPLE.org"), f"  {EMAIL} "]
    bodies = set()
    for n in range(20):
        response = browser.submit(form, email=variants[n % len(variants)])
        assert response.status == 200, (n, response.text)
        bodies.add(response.body)
    assert len(bodies) == 1
    assert [m.recipients for m in site.smtp.messages] == [[EMAIL]]
    assert subscriber_count(site.runtime) == 1
    assert events(site.runtime)["confirmation_sent"] == 1


def test_concurrent_requests_for_one_new_address_send_one_confirmation(
    make_site: SiteFactory,
) -> None:
    """A double-clicked button or a bot: simultaneous POSTs for the same new address.

    Several rounds, each with a new address, so the race is met on every run.
    """
    site = make_site(subscribe_limit_per_ip="1000")
    browser = site.browser()
    page, _ = subscribe_form(browser)
    form = page.form("/subscribe")
    addresses = [f"double.click{n}@example.org" for n in range(5)]

    def subscribe_status(address: str) -> int:
        return browser.submit(form, email=address).status

    statuses = {address: at_once(4, partial(subscribe_status, address)) for address in addresses}
    assert statuses == {address: [200] * 4 for address in addresses}
    assert subscriber_count(site.runtime) == len(addresses)
    for address in addresses:
        assert status_of(site.runtime, address) == SubscriptionStatus.PENDING
    assert sorted(m.recipients[0] for m in site.smtp.messages) == addresses


def test_simultaneous_one_click_posts_unsubscribe_once(site: Site) -> None:
    """A mail provider retrying a one-click POST while the first is still running."""
    rt = site.runtime
    readers = {
        f"one.click{n}@example.org": add_reader(rt, f"one.click{n}@example.org", confirmed=True)
        for n in range(5)
    }
    browser = site.browser(cookies=False)

    def one_click_status(public_id: str) -> int:
        path = f"/unsubscribe/{rt.tokens.mint(Purpose.UNSUBSCRIBE, public_id, SLUG)}"
        return browser.post(path, [("List-Unsubscribe", "One-Click")]).status

    statuses: list[int] = []
    for public_id in readers.values():
        statuses += at_once(4, partial(one_click_status, public_id))
    assert statuses == [200] * 4 * len(readers)
    after = snapshot(rt)
    assert {after.statuses[(email, SLUG)] for email in readers} == {SubscriptionStatus.UNSUBSCRIBED}
    # One event per reader, however many of their POSTs raced.
    assert after.events["unsubscribed"] == len(readers)


@pytest.mark.parametrize("slug", ["gone-list", "Not A Slug!"])
def test_a_signed_link_to_a_newsletter_that_is_gone_changes_nothing(site: Site, slug: str) -> None:
    """A real reader's token naming a newsletter that no longer exists (or never could)."""
    rt = site.runtime
    public_id = add_reader(rt, "still.here@example.org", confirmed=True)
    before = snapshot(rt)
    path = f"/unsubscribe/{rt.tokens.mint(Purpose.UNSUBSCRIBE, public_id, slug)}"
    response = site.browser(cookies=False).post(path, [("List-Unsubscribe", "One-Click")])
    assert response.status == 404, response.text
    assert f"There is no newsletter {slug!r}." in visible_text(response)
    assert snapshot(rt) == before


def test_a_confirmation_that_failed_to_send_can_be_asked_for_again(site: Site) -> None:
    """The relay refuses the first confirmation for a moment; the reader tries again."""
    site.smtp.handler.data_script = lambda _rcpt, count: (
        "451 4.3.0 Temporary failure, try again" if count == 1 else None
    )
    browser = site.browser()
    page, _ = subscribe_form(browser)
    form = page.form("/subscribe")
    first = browser.submit(form, email=EMAIL)
    assert "Traceback" not in first.text
    assert site.smtp.messages == []
    assert status_of(site.runtime, EMAIL) == SubscriptionStatus.PENDING

    again = browser.submit(form, email=EMAIL)
    assert again.status == 200
    assert title_of(again) == SENT_TITLE
    # Nothing reached the reader yet, so asking again must send the confirmation.
    assert [m.recipients for m in site.smtp.messages] == [[EMAIL]]
    assert events(site.runtime)["confirmation_sent"] == 1


def test_per_ip_limit_answers_429_after_the_limit(make_site: SiteFactory) -> None:
    site = make_site(subscribe_limit_per_ip="5")
    browser = site.browser()
    page, _ = subscribe_form(browser)
    form = page.form("/subscribe")
    addresses = [f"reader{n}@example.org" for n in range(6)]
    # With no proxy configured, a forged X-Forwarded-For does not make a new client
    # (waitress drops the header, and the app reads only the peer's address).
    for n, address in enumerate(addresses[:5]):
        response = browser.post(
            "/subscribe", form.filled(email=address), {"X-Forwarded-For": f"203.0.113.{n}"}
        )
        assert response.status == 200, (address, response.text)
    refused = browser.post(
        "/subscribe", form.filled(email=addresses[5]), {"X-Forwarded-For": "203.0.113.99"}
    )
    assert refused.status == 429, refused.text
    assert title_of(refused) == "Too many requests"
    assert find_subscriber(site.runtime, addresses[5]) is None
    assert subscriber_count(site.runtime) == 5
    assert sorted(m.recipients[0] for m in site.smtp.messages) == addresses[:5]


def test_behind_a_proxy_limits_and_logs_the_readers_address(make_site: SiteFactory) -> None:
    """GAZETTE_PROXY_HOPS=1 behind one proxy, served as ``gazette serve`` serves it.

    The fixture serves with the waitress options ``gazette serve`` uses; the proxy in
    front passes each reader's address in X-Forwarded-For.
    """
    site = make_site(proxy_hops="1", subscribe_limit_per_ip="2")
    browser = site.browser()
    page, _ = subscribe_form(browser)
    form = page.form("/subscribe")
    readers = {f"reader{n}@example.org": f"203.0.113.{n + 1}" for n in range(4)}
    for address, ip in readers.items():
        response = browser.post("/subscribe", form.filled(email=address), {"X-Forwarded-For": ip})
        # Four readers, one request each from their own address: none is over two per IP.
        assert response.status == 200, (address, ip, response.status)
    with site.runtime.sessions() as session:
        logged = session.execute(
            select(Subscriber.email, Event.ip)
            .join(Event, Event.subscriber_id == Subscriber.id)
            .where(Event.kind == "subscribed")
        ).all()
    assert dict(logged) == readers
