"""The web endpoint over real HTTP: subscribe, confirm, one-click unsubscribe, preferences.

Every test serves ``gazette.web.create_app`` with waitress on loopback and talks to it
with urllib (a cookie jar where a browser would have one), on a real database (SQLite,
and PostgreSQL when configured). Confirmation mail goes to an aiosmtpd server on
loopback; tasks run in-process because no broker is configured.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from functools import partial
from pathlib import Path

import pytest
from itsdangerous.timed import TimestampSigner
from sqlalchemy import func, select

from gazette.articles import ArticleInput, upsert_article
from gazette.config import load_settings
from gazette.newsletters import NewsletterChanges, create_newsletter, update_newsletter
from gazette.runtime import Runtime, build_runtime, use_runtime
from gazette.store import migrate
from gazette.store.db import transaction
from gazette.store.models import (
    Event,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    utcnow,
)
from gazette.subscribers import Origin, forget, subscribe
from gazette.tokens import Purpose
from gazette.web import create_app, server_options
from gazette.web.csrf import COOKIE, FIELD, SECURE_COOKIE
from gazette.web.csrf import LIFETIME as CSRF_LIFETIME
from tests.concurrency import at_once
from tests.conftest import make_env
from tests.http import Browser, LiveServer, Page, serve
from tests.smtp import Received, RecordingHandler, SMTPServer
from worker.app import configure

SLUG = "test-weekly"
NAME = "Test Weekly"
OTHER_SLUG = "test-monthly"
OTHER_NAME = "Test Monthly"
BASE_URL = "https://news.example.org"
EMAIL = "oksana.kovalenko@example.org"
ACTIVE_EMAIL = "taro.yamada@example.org"
CONFIRM_LINK = re.compile(re.escape(BASE_URL) + r"(/confirm/[A-Za-z0-9_.-]+)")
SENT_TITLE = "Check your inbox"
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


# --- the site under test --------------------------------------------------------------


@dataclass
class Site:
    """A runtime on a fresh database, its app served on loopback, and the SMTP server."""

    runtime: Runtime
    smtp: SMTPServer
    server: LiveServer

    def browser(self, *, cookies: bool = True) -> Browser:
        return Browser(self.server, cookies=cookies)


SiteFactory = Callable[..., Site]


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    server = SMTPServer(RecordingHandler())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_site(tmp_path: Path, database_url: str, smtp_server: SMTPServer) -> Iterator[SiteFactory]:
    """Build the site with extra GAZETTE_* settings; one newsletter is seeded."""
    with ExitStack() as stack:

        def build(**extra: str) -> Site:
            env = make_env(tmp_path, database_url, smtp_url=smtp_server.url, **extra)
            settings = load_settings(env, cwd=tmp_path)
            runtime = build_runtime(settings)
            migrate.upgrade(runtime.engine)
            use_runtime(runtime)
            stack.callback(use_runtime, None)
            configure(settings)
            with transaction(runtime.sessions) as session:
                create_newsletter(session, SLUG, NAME)
            server = stack.enter_context(
                serve(create_app(runtime), **server_options(runtime.settings))
            )
            return Site(runtime, smtp_server, server)

        yield build


@pytest.fixture
def site(make_site: SiteFactory) -> Site:
    return make_site()


# --- database and mail helpers --------------------------------------------------------


def add_reader(
    runtime: Runtime,
    email: str,
    *,
    confirmed: bool,
    language: str = "en",
    slugs: tuple[str, ...] = (SLUG,),
) -> str:
    """Subscribe ``email`` directly (no web, no mail); return their public id."""
    with transaction(runtime.sessions) as session:
        for slug in slugs:
            result = subscribe(
                session, email, slug, Origin("cli"), language=language, confirmed=confirmed
            )
        subscriber = session.get_one(Subscriber, result.subscriber_id)
        return subscriber.public_id


def find_subscriber(runtime: Runtime, email: str) -> Subscriber | None:
    with runtime.sessions() as session:
        return session.scalar(select(Subscriber).where(Subscriber.email == email))


def subscriber_count(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Subscriber)) or 0


def status_of(runtime: Runtime, email: str, slug: str = SLUG) -> SubscriptionStatus | None:
    with runtime.sessions() as session:
        return session.scalar(
            select(Subscription.status)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .join(Newsletter, Newsletter.id == Subscription.newsletter_id)
            .where(Subscriber.email == email, Newsletter.slug == slug)
        )


def events(runtime: Runtime) -> Counter[str]:
    """How many events of each kind the log holds."""
    with runtime.sessions() as session:
        return Counter(session.scalars(select(Event.kind)))


@dataclass(frozen=True)
class Snapshot:
    """Everything a reader's link could change: statuses, languages, topics, events."""

    statuses: dict[tuple[str, str], SubscriptionStatus]
    languages: dict[str, str]
    topics: dict[tuple[str, str], frozenset[str]]
    events: Counter[str]


def snapshot(runtime: Runtime) -> Snapshot:
    with runtime.sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Newsletter.slug, Subscription)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .join(Newsletter, Newsletter.id == Subscription.newsletter_id)
        ).all()
        statuses = {(email, slug): sub.status for email, slug, sub in rows}
        topics = {(email, slug): frozenset(t.slug for t in sub.topics) for email, slug, sub in rows}
        languages = dict(session.execute(select(Subscriber.email, Subscriber.language)).all())
    return Snapshot(statuses, languages, topics, events(runtime))


def plain_body(received: Received) -> str:
    """The text part of a message, its quoted-printable decoded by the email package."""
    message = received.parsed()
    assert isinstance(message, EmailMessage)
    plain = message.get_body(("plain",))
    assert plain is not None
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    content = plain.get_content()
    assert isinstance(content, str)
    return content


def confirm_path(received: Received) -> str:
    """The path of the one confirm link in a confirmation message."""
    links = CONFIRM_LINK.findall(plain_body(received))
    assert len(links) == 1, links
    return str(links[0])


def token_of(path: str) -> str:
    return path.rsplit("/", 1)[1]


def title_of(page: Page) -> str:
    match = re.search(r"<h1>(.*?)</h1>", page.text, re.S)
    assert match is not None, page.text
    return html.unescape(match.group(1)).strip()


def visible_text(page: Page) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.text))


def subscribe_form(browser: Browser, query: str = "") -> tuple[Page, str]:
    """GET the subscribe form; return the page and its CSRF token."""
    page = browser.get("/subscribe" + query)
    assert page.status == 200, page.text
    return page, page.form("/subscribe").value(FIELD)


# --- the whole flow -------------------------------------------------------------------


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
    assert len(site.smtp.messages) == 1


def test_get_on_token_urls_changes_nothing(site: Site) -> None:
    rt = site.runtime
    with transaction(rt.sessions) as session:
        upsert_article(
            session,
            ArticleInput(
                title="Grid storage",
                url="https://blog.example.com/grid",
                published_at=utcnow(),
                topics=["Energy"],
            ),
        )
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


# --- POST /subscribe ------------------------------------------------------------------


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


# --- token links ----------------------------------------------------------------------


def tamper(token: str, other: str) -> str:
    """``token``'s timestamp and signature on ``other``'s payload: claims swapped."""
    payload = other.split(".")[0]
    return ".".join([payload, *token.split(".")[1:]])


@pytest.mark.parametrize("kind", ["tampered", "truncated", "wrong-purpose", "garbage"])
def test_bad_tokens_get_a_400_page_for_get_and_post(site: Site, kind: str) -> None:
    rt = site.runtime
    victim = add_reader(rt, EMAIL, confirmed=False)
    attacker = add_reader(rt, ACTIVE_EMAIL, confirmed=True)
    wrong = {
        Purpose.CONFIRM: Purpose.UNSUBSCRIBE,
        Purpose.UNSUBSCRIBE: Purpose.CONFIRM,
        Purpose.PREFERENCES: Purpose.UNSUBSCRIBE,
    }
    browser = site.browser()
    _, csrf = subscribe_form(browser)
    before = snapshot(rt)
    for purpose in Purpose:
        good = rt.tokens.mint(purpose, attacker, SLUG)
        token = {
            "tampered": tamper(good, rt.tokens.mint(purpose, victim, SLUG)),
            "truncated": good[:-6],
            "wrong-purpose": rt.tokens.mint(wrong[purpose], victim, SLUG),
            "garbage": "definitely-not-a-token",
        }[kind]
        assert token != good
        url = f"/{purpose.value}/{token}"
        for response in (
            browser.get(url),
            browser.post(url, {FIELD: csrf, "List-Unsubscribe": "One-Click", "language": "ja"}),
        ):
            assert response.status == 400, (url, response.status, response.text)
            assert title_of(response) == "This link does not work"
            assert "This link is not valid." in response.text
            assert "Traceback" not in response.text
            assert "itsdangerous" not in response.text
            assert response.forms() == []
    assert snapshot(rt) == before


def test_confirm_links_expire_and_unsubscribe_links_do_not(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = site.runtime
    public_id = add_reader(rt, EMAIL, confirmed=False)
    now = [1_714_550_400]  # 2024-05-01
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _self: now[0])
    confirm = f"/confirm/{rt.tokens.mint(Purpose.CONFIRM, public_id, SLUG)}"
    unsubscribe = f"/unsubscribe/{rt.tokens.mint(Purpose.UNSUBSCRIBE, public_id, SLUG)}"
    browser = site.browser()
    form = browser.get(confirm).form(confirm)

    now[0] += int(timedelta(days=8).total_seconds())
    for response in (browser.get(confirm), browser.submit(form)):
        assert response.status == 400, response.text
        assert "This link has expired." in response.text
    assert status_of(rt, EMAIL) == SubscriptionStatus.PENDING

    now[0] += int(timedelta(days=3650).total_seconds())
    done = site.browser(cookies=False).post(unsubscribe, {"List-Unsubscribe": "One-Click"})
    assert done.status == 200, done.text
    assert status_of(rt, EMAIL) == SubscriptionStatus.UNSUBSCRIBED


def test_links_of_a_forgotten_reader_get_a_404_page(site: Site) -> None:
    rt = site.runtime
    public_id = add_reader(rt, EMAIL, confirmed=True)
    tokens = {purpose: rt.tokens.mint(purpose, public_id, SLUG) for purpose in Purpose}
    with transaction(rt.sessions) as session:
        forget(session, EMAIL, Origin("cli"))
    browser = site.browser()
    _, csrf = subscribe_form(browser)
    before = snapshot(rt)
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
        assert title_of(response) == "Not found", name
        assert "no longer exists" in response.text, name
        assert "Traceback" not in response.text, name
        assert EMAIL not in response.text, name
    assert snapshot(rt) == before
    assert subscriber_count(rt) == 0


def test_confirm_post_without_csrf_is_refused(site: Site) -> None:
    rt = site.runtime
    public_id = add_reader(rt, EMAIL, confirmed=False)
    url = f"/confirm/{rt.tokens.mint(Purpose.CONFIRM, public_id, SLUG)}"
    browser = site.browser()
    form = browser.get(url).form(url)
    response = browser.post(url, [(k, v) for k, v in form.fields if k != FIELD])
    assert response.status == 403, response.text
    assert title_of(response) == "Form expired"
    cookieless = site.browser(cookies=False).post(url, form.fields)
    assert cookieless.status == 403
    assert status_of(rt, EMAIL) == SubscriptionStatus.PENDING
    assert events(rt)["confirmed"] == 0


def test_an_old_confirm_link_does_not_undo_an_unsubscribe(site: Site) -> None:
    rt = site.runtime
    browser = site.browser()
    page, _ = subscribe_form(browser)
    browser.submit(page.form("/subscribe"), email=EMAIL)
    path = confirm_path(site.smtp.messages[0])
    landing = browser.get(path)
    assert browser.submit(landing.form(path)).status == 200
    assert status_of(rt, EMAIL) == SubscriptionStatus.ACTIVE

    subscriber = find_subscriber(rt, EMAIL)
    assert subscriber is not None
    token = rt.tokens.mint(Purpose.UNSUBSCRIBE, subscriber.public_id, SLUG)
    unsubscribed = site.browser(cookies=False).post(
        f"/unsubscribe/{token}", {"List-Unsubscribe": "One-Click"}
    )
    assert unsubscribed.status == 200
    assert status_of(rt, EMAIL) == SubscriptionStatus.UNSUBSCRIBED

    # Days later the reader finds the confirmation mail and presses the button again.
    before = snapshot(rt)
    old = browser.get(path)
    assert old.status == 200
    response = browser.submit(old.form(path))
    assert response.status == 404, response.text
    assert "subscribe again" in response.text
    assert status_of(rt, EMAIL) == SubscriptionStatus.UNSUBSCRIBED
    assert snapshot(rt) == before


# --- preferences ----------------------------------------------------------------------


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


def test_preferences_page_shows_the_readers_address_and_language(site: Site) -> None:
    rt = site.runtime
    public_id = add_reader(rt, EMAIL, confirmed=True, language="uk")
    url = f"/preferences/{rt.tokens.mint(Purpose.PREFERENCES, public_id, SLUG)}"
    page = site.browser().get(url)
    assert page.status == 200
    assert EMAIL in page.text
    assert NAME in page.text
    assert '<html lang="uk">' in page.text
    form = page.form(url)
    assert form.value("language") == "uk"
    assert form.value(FIELD)


def test_preferences_post_saves_language_and_topics(site: Site) -> None:
    rt = site.runtime
    add_topics(rt, "Energy", "Climate")
    public_id = add_reader(rt, EMAIL, confirmed=True)
    url = f"/preferences/{rt.tokens.mint(Purpose.PREFERENCES, public_id, SLUG)}"
    browser = site.browser()
    page = browser.get(url)
    form = page.form(url)
    assert form.input_types["topic"] == "checkbox"
    assert [v for k, v in form.fields if k == "topic"] == []  # nothing chosen yet

    saved = browser.submit(form, language="ja", topic="energy", action="save")
    assert saved.status == 200, saved.text
    assert '<html lang="ja">' in saved.text
    assert 'class="notice"' in saved.text
    assert [v for k, v in saved.form(url).fields if k == "topic"] == ["energy"]
    after = snapshot(rt)
    assert after.languages[EMAIL] == "ja"
    assert after.topics[(EMAIL, SLUG)] == {"energy"}
    assert after.statuses[(EMAIL, SLUG)] == SubscriptionStatus.ACTIVE
    assert after.events["preferences"] == 1


def test_preferences_offer_a_frequency_only_where_the_newsletter_does(site: Site) -> None:
    rt = site.runtime
    public_id = add_reader(rt, EMAIL, confirmed=True)
    url = f"/preferences/{rt.tokens.mint(Purpose.PREFERENCES, public_id, SLUG)}"
    browser = site.browser()
    page = browser.get(url)
    assert 'name="frequency"' not in page.text
    # A newsletter sent every morning may offer a weekly summary instead.
    with transaction(rt.sessions) as session:
        update_newsletter(session, SLUG, NewsletterChanges(cron="0 7 * * *", allow_frequency=True))
    page = browser.get(url)
    assert ">Every issue</option>" in page.text
    assert ">Weekly summary</option>" in page.text
    saved = browser.submit(page.form(url), frequency="weekly", action="save")
    assert saved.status == 200, saved.text
    assert saved.form(url).value("frequency") == "weekly"
    with rt.sessions() as session:
        frequency = session.scalar(
            select(Subscription.frequency)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscriber.email == EMAIL)
        )
    assert frequency == "weekly"
    # A value the form never offers is refused with the reason, and nothing is saved.
    refused = browser.submit(saved.form(url), frequency="hourly", action="save")
    assert refused.status == 400, refused.text
    assert "Frequency &#39;hourly&#39; is not one of daily, weekly." in refused.text


def test_preferences_unsubscribe_all_ends_every_subscription(site: Site) -> None:
    rt = site.runtime
    with transaction(rt.sessions) as session:
        create_newsletter(session, OTHER_SLUG, OTHER_NAME)
    public_id = add_reader(rt, EMAIL, confirmed=True, slugs=(SLUG, OTHER_SLUG))
    add_reader(rt, ACTIVE_EMAIL, confirmed=True, slugs=(SLUG, OTHER_SLUG))
    url = f"/preferences/{rt.tokens.mint(Purpose.PREFERENCES, public_id, SLUG)}"
    browser = site.browser()
    form = browser.get(url).form(url)
    response = browser.submit(form, action="unsubscribe-all")
    assert response.status == 200, response.text
    assert "You are unsubscribed from every newsletter." in response.text
    after = snapshot(rt)
    assert after.statuses == {
        (EMAIL, SLUG): SubscriptionStatus.UNSUBSCRIBED,
        (EMAIL, OTHER_SLUG): SubscriptionStatus.UNSUBSCRIBED,
        (ACTIVE_EMAIL, SLUG): SubscriptionStatus.ACTIVE,
        (ACTIVE_EMAIL, OTHER_SLUG): SubscriptionStatus.ACTIVE,
    }
    assert after.events["unsubscribed"] == 2


def test_preferences_post_without_csrf_is_refused(site: Site) -> None:
    rt = site.runtime
    add_topics(rt, "Energy")
    public_id = add_reader(rt, EMAIL, confirmed=True)
    url = f"/preferences/{rt.tokens.mint(Purpose.PREFERENCES, public_id, SLUG)}"
    browser = site.browser()
    form = browser.get(url).form(url)
    before = snapshot(rt)
    for action in ("save", "unsubscribe-all"):
        fields = [(k, v) for k, v in form.filled(language="ja", topic="energy") if k != FIELD]
        response = browser.post(url, [*fields, ("action", action)])
        assert response.status == 403, response.text
        assert title_of(response) == "Form expired"
    assert snapshot(rt) == before


# --- the rest -------------------------------------------------------------------------


def test_healthz_answers_ok_as_json(site: Site) -> None:
    response = site.browser(cookies=False).get("/healthz")
    assert response.status == 200
    assert response.headers.get_content_type() == "application/json"
    assert json.loads(response.body) == {"status": "ok"}


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


def test_every_html_response_carries_the_security_headers(make_site: SiteFactory) -> None:
    for name, page in tour(make_site).items():
        assert page.headers.get_content_type() == "text/html", name
        for header, value in SECURITY_HEADERS.items():
            assert page.headers[header] == value, (name, header)
        policy = page.headers["Content-Security-Policy"]
        assert policy is not None, name
        directives = {d.strip().split()[0]: d.strip() for d in policy.split(";")}
        assert directives["default-src"] == "default-src 'none'", name
        assert directives["frame-ancestors"] == "frame-ancestors 'none'", name
        assert directives["form-action"] == "form-action 'self'", name
        assert "script-src" not in directives, name


def test_pages_work_without_javascript(make_site: SiteFactory) -> None:
    for name, page in tour(make_site).items():
        lowered = page.text.lower()
        assert "<script" not in lowered, name
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", lowered), name  # no inline handlers
        assert "javascript:" not in lowered, name
        # Every form posts with a plain submit button, no script needed.
        for form in page.forms():
            assert form.method == "post", name
            assert 'type="submit"' in page.text, name


# --- CSRF lifetime and cookie, the confirmation's greeting (issue 16) ------------------


def test_a_form_older_than_the_csrf_lifetime_is_refused(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_714_550_400]  # 2024-05-01
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _self: now[0])
    lifetime = int(CSRF_LIFETIME.total_seconds())
    browser = site.browser()

    page, _ = subscribe_form(browser)
    now[0] += lifetime - 60  # filled in slowly, still in time
    assert browser.submit(page.form("/subscribe"), email=EMAIL).status == 200

    page, _ = subscribe_form(browser)
    now[0] += lifetime + 1
    late = browser.submit(page.form("/subscribe"), email=ACTIVE_EMAIL)
    assert late.status == 403, late.text
    assert title_of(late) == "Form expired"
    assert find_subscriber(site.runtime, ACTIVE_EMAIL) is None
    # Reloading the page gives a fresh token for the same cookie, and it works.
    page, _ = subscribe_form(browser)
    assert browser.submit(page.form("/subscribe"), email=ACTIVE_EMAIL).status == 200
    assert status_of(site.runtime, ACTIVE_EMAIL) == SubscriptionStatus.PENDING


def test_over_plain_http_the_cookie_has_no_host_prefix(make_site: SiteFactory) -> None:
    """__Host- cookies must be Secure, which a plain-http site cannot set."""
    site = make_site(base_url="http://news.example.org")
    browser = site.browser()
    page, _ = subscribe_form(browser)
    set_cookie = page.headers["Set-Cookie"]
    assert set_cookie.startswith(f"{COOKIE}=")
    assert "Secure" not in set_cookie
    assert browser.cookie(SECURE_COOKIE) is None
    assert browser.submit(page.form("/subscribe"), email=EMAIL).status == 200
    assert status_of(site.runtime, EMAIL) == SubscriptionStatus.PENDING


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("Oksana", "Oksana"),
        ("Tom & Jerry <3", None),
        ("Tom & Jerry", "Tom & Jerry"),
        ("Win a prize at evil.example today", None),
        ("Claim: https://evil.example/x", None),
        ("admin@news.example.org says hi", None),
        (
            "María de los Ángeles Fernández de Córdoba y Sotomayor",
            "María de los Ángeles Fernández de",
        ),
        ("Dear customer " * 14, "Dear customer Dear customer Dear"),
        ("x" * 200, None),
        ("", None),
    ],
)
def test_the_confirmation_quotes_only_a_short_plain_name(
    site: Site, name: str, quoted: str | None
) -> None:
    """A stranger types the name and the mail goes out from the publisher's domain."""
    browser = site.browser()
    page, _ = subscribe_form(browser)
    assert browser.submit(page.form("/subscribe"), email=EMAIL, name=name).status == 200
    [received] = site.smtp.messages
    greeting = f"Hello, {quoted}!" if quoted else "Hello!"
    text = plain_body(received)
    assert greeting in text.splitlines()
    message = received.parsed()
    assert isinstance(message, EmailMessage)
    html_part = message.get_body(("html",))
    assert html_part is not None
    html_body = html_part.get_content()
    assert f'<p style="margin:16px 0;">{html.escape(greeting)}</p>' in html_body
    assert message["To"].addresses[0].display_name == (quoted or "")
    if name:
        # The stored name is untouched: only what the mail quotes is capped.
        subscriber = find_subscriber(site.runtime, EMAIL)
        assert subscriber is not None
        assert subscriber.name == name.strip()
