"""Scenario 9: the subscribe endpoint under floods and hostile input."""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from sqlalchemy import func, select

from gazette.store.db import transaction
from gazette.store.models import Event, Subscriber, Subscription, SubscriptionStatus
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from gazette.tokens import Purpose
from gazette.web.csrf import FIELD, SECURE_COOKIE
from tests.reliability.helpers import BASE_URL, flood, form_token, site, visible
from tests.support.figures import record
from tests.support.http import Page
from tests.support.reliability import SLUG, scenario

# The fault and hostile-input suite: `make reliability` runs it and writes its report.
pytestmark = pytest.mark.reliability


@pytest.mark.slow
def test_reliability_one_address_from_fifty_ips_gets_one_confirmation(
    tmp_path: Path, database_url: str
) -> None:
    email = "oksana.kovalenko@example.org"
    variants = [email, email.replace("example.org", "EXAMPLE.org"), f"  {email} "]
    with site(tmp_path, database_url, proxy_hops="1", subscribe_limit_per_ip="100000") as web:
        browser = web.browser()
        fields = form_token(browser)
        cookie = {"Cookie": f"{SECURE_COOKIE}={browser.cookie(SECURE_COOKIE)}"}
        requests = [
            (
                [*fields, ("email", variants[n % 3])],
                cookie | {"X-Forwarded-For": f"198.51.100.{n % 50 + 1}"},
            )
            for n in range(1000)
        ]
        started = time.monotonic()
        pages = flood(web.server, requests)
        elapsed = time.monotonic() - started
        confirmations = [m for m in web.smtp.messages if m.recipients == [email]]
        with web.runtime.sessions() as session:
            subscribers = session.scalar(select(func.count()).select_from(Subscriber))
            kinds = Counter(session.scalars(select(Event.kind)))
            ips = set(session.scalars(select(Event.ip).where(Event.kind == "subscribed")))
    statuses = Counter(page.status for page in pages)
    assert statuses == {200: 1000}
    assert len({page.body for page in pages}) == 1  # the answer never tells
    assert len(confirmations) <= 1
    assert len(web.smtp.messages) == len(confirmations) == 1
    assert subscribers == 1
    assert (kinds["subscribed"], kinds["confirmation_sent"]) == (1, 1)
    assert len(ips) == 1
    assert ips <= {f"198.51.100.{n}" for n in range(1, 51)}
    record(
        scenario("Subscribe flood, one address", database_url),
        "1,000 POST /subscribe for one address (three spellings) from 50 client IPs "
        "(X-Forwarded-For behind one trusted proxy), eight at a time",
        f"{len(confirmations)} confirmation(s) sent; statuses "
        + ", ".join(f"{s}: {c}" for s, c in sorted(statuses.items()))
        + f"; {len({p.body for p in pages})} distinct answer(s); {elapsed:.1f} s",
        "at most one confirmation",
    )


@pytest.mark.slow
def test_reliability_many_addresses_from_one_ip_get_429_after_the_limit(
    tmp_path: Path, database_url: str
) -> None:
    limit = 50
    client_ip = "203.0.113.7"
    with site(tmp_path, database_url, proxy_hops="1", subscribe_limit_per_ip=str(limit)) as web:
        browser = web.browser()
        fields = form_token(browser)
        cookie = {"Cookie": f"{SECURE_COOKIE}={browser.cookie(SECURE_COOKIE)}"}
        # The client forges an X-Forwarded-For of its own; the proxy appends the real IP.
        requests = [
            (
                [*fields, ("email", f"reader{n}@example.org")],
                cookie | {"X-Forwarded-For": f"10.{n // 250}.{n % 250}.1, {client_ip}"},
            )
            for n in range(1000)
        ]
        started = time.monotonic()
        pages = flood(web.server, requests)
        elapsed = time.monotonic() - started
        with web.runtime.sessions() as session:
            subscribers = session.scalar(select(func.count()).select_from(Subscriber))
            ips = Counter(session.scalars(select(Event.ip).where(Event.kind == "subscribed")))
    statuses = Counter(page.status for page in pages)
    assert statuses == {200: limit, 429: 1000 - limit}
    assert subscribers == limit
    assert len(web.smtp.messages) == limit
    assert ips == {client_ip: limit}
    refused = next(page for page in pages if page.status == 429)
    assert "Too many requests" in visible(refused.text)
    record(
        scenario("Subscribe flood, one IP", database_url),
        f"1,000 POST /subscribe for different addresses from one client IP, each with a "
        f"forged X-Forwarded-For entry before the proxy's, eight at a time "
        f"(GAZETTE_SUBSCRIBE_LIMIT_PER_IP={limit})",
        f"{statuses[200]} answered 200, {statuses[429]} answered 429, "
        f"{len(web.smtp.messages)} confirmation(s); {elapsed:.1f} s",
        f"exactly {limit} succeed",
    )


def test_reliability_hostile_addresses_are_refused_not_failed(
    tmp_path: Path, database_url: str
) -> None:
    """Whatever a bot types as the address, the answer is the form again (400), never a 500."""
    hostile = {
        "NUL": "a\x00b@example.org",
        "500-character local part": "x" * 500 + "@example.org",
        "10 kB": "y" * 10_000 + "@example.org",
        "control characters": "a\x01\x1f@example.org",
        "CRLF and a header": "a@example.org\r\nBcc: evil@example.org",
        "right-to-left override": "a\u202eb@example.org",
        "emoji": "\U0001f600@example.org",
        "only spaces": "   ",
        "backslash escape": "a\\udc80@example.org",
    }
    with site(tmp_path, database_url, subscribe_limit_per_ip="1000") as web:
        browser = web.browser()
        fields = form_token(browser)
        pages = {
            what: browser.post("/subscribe", [*fields, ("email", value)])
            for what, value in hostile.items()
        }
        with web.runtime.sessions() as session:
            stored = session.scalar(select(func.count()).select_from(Subscriber))
    statuses = {what: page.status for what, page in pages.items()}
    assert statuses == dict.fromkeys(hostile, 400)
    assert stored == 0
    assert web.smtp.messages == []
    record(
        scenario("Hostile addresses", database_url),
        f"POST /subscribe with {len(hostile)} malformed addresses: " + ", ".join(hostile),
        ", ".join(f"{what}: {status}" for what, status in statuses.items()),
        "400 with the form again for every one; no 500, nothing stored, nothing mailed",
    )


def test_reliability_csrf_is_required_except_for_one_click(
    tmp_path: Path, database_url: str
) -> None:
    with site(tmp_path, database_url) as web:
        rt = web.runtime
        browser = web.browser()
        fields = form_token(browser)
        with_token = [*fields, ("email", "reader@example.org")]
        without = [f for f in with_token if f[0] != FIELD]
        forged = [(k, "x" + v if k == FIELD else v) for k, v in with_token]
        refused = {
            "no token": browser.post("/subscribe", without).status,
            "forged token": browser.post("/subscribe", forged).status,
            "no cookie": web.browser(cookies=False).post("/subscribe", with_token).status,
            "empty body": browser.post("/subscribe", []).status,
        }
        with rt.sessions() as session:
            stored_after_refusals = session.scalar(select(func.count()).select_from(Subscriber))
        mailed_after_refusals = len(web.smtp.messages)
        # A reader, and the one-click POST a mail provider makes without any cookie.
        with transaction(rt.sessions) as session:
            result = subscribe(
                session, "one.click@example.org", SLUG, Origin("cli"), confirmed=True
            )
            public_id = session.get_one(Subscriber, result.subscriber_id).public_id
        token = rt.tokens.mint(Purpose.UNSUBSCRIBE, public_id, SLUG)
        one_click = web.browser(cookies=False).post(
            f"/unsubscribe/{token}", {"List-Unsubscribe": "One-Click"}
        )
        prefs = rt.tokens.mint(Purpose.PREFERENCES, public_id, SLUG)
        prefs_without = browser.post(f"/preferences/{prefs}", {"action": "unsubscribe-all"})
        with rt.sessions() as session:
            status = session.scalar(
                select(Subscription.status).where(
                    Subscription.subscriber_id == result.subscriber_id
                )
            )
        accepted = browser.post("/subscribe", with_token).status
    assert refused == dict.fromkeys(refused, 403)
    assert stored_after_refusals == 0
    assert mailed_after_refusals == 0
    assert [m.recipients for m in web.smtp.messages] == [["reader@example.org"]]
    assert prefs_without.status == 403
    assert one_click.status == 200
    assert status == SubscriptionStatus.UNSUBSCRIBED
    assert accepted == 200  # the same form with its token is fine
    record(
        scenario("CSRF", database_url),
        "POST /subscribe without a token, with a forged one, without the cookie, empty; "
        "the one-click unsubscribe POST without cookies; preferences POST without a token",
        ", ".join(f"{k}: {v}" for k, v in refused.items())
        + f"; one-click: {one_click.status}; preferences without token: {prefs_without.status}",
        "403 without a valid token; the one-click POST needs none",
    )


def test_reliability_no_redirect_leaves_the_site(tmp_path: Path, database_url: str) -> None:
    evil = ["https://evil.example/", "//evil.example/", "/\\evil.example", "https:evil.example",
            "javascript:alert(1)", "%2F%2Fevil.example"]  # fmt: skip
    names = ["next", "redirect", "redirect_uri", "return_to", "returnTo", "url", "continue", "to"]
    with site(tmp_path, database_url, proxy_hops="1") as web:
        rt = web.runtime
        browser = web.browser()
        fields = form_token(browser)
        with transaction(rt.sessions) as session:
            result = subscribe(session, "reader@example.org", SLUG, Origin("cli"))
            public_id = session.get_one(Subscriber, result.subscriber_id).public_id
        links = {
            purpose.value: f"/{purpose.value}/{rt.tokens.mint(purpose, public_id, SLUG)}"
            for purpose in Purpose
        }
        paths = ["/subscribe", "/subscribe/", "/archive", "/archive/", "/healthz", *links.values()]
        pages: list[tuple[str, Page]] = []
        for path, name, target in itertools.product(paths, names, evil):
            query = f"?{name}={quote(target, safe='')}"
            pages.append((f"GET {path}{query}", browser.get(path + query)))
        for path, target in itertools.product(["/subscribe", *links.values()], evil):
            query = f"?next={quote(target, safe='')}"
            body = [*fields, ("email", "reader@example.org"), ("next", target), ("action", "save")]
            if path.startswith("/unsubscribe"):
                body = [("List-Unsubscribe", "One-Click"), ("next", target)]
            pages.append((f"POST {path}{query}", browser.post(path + query, body)))
        headers = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
        for path in ["/subscribe/", "/archive/", "//evil.example/", "/subscribe?next=/"]:
            pages.append((f"GET {path} as evil.example", browser.get(path, headers)))
    off_site: list[str] = []
    locations = 0
    for what, page in pages:
        location = page.headers.get("Location")
        if location is not None:
            locations += 1
            parts = urlsplit(location)
            local = (
                not parts.netloc
                and location.startswith("/")
                and not location.startswith(("//", "/\\"))
            )
            if not local and not location.startswith(BASE_URL + "/"):
                off_site.append(f"{what} -> {location}")
        refresh = re.search(r"<meta[^>]+http-equiv=.?refresh[^>]*>", page.text, re.I)
        if refresh:
            off_site.append(f"{what}: {refresh.group(0)}")
        if page.status >= 500:
            off_site.append(f"{what}: status {page.status}")
    assert off_site == []
    record(
        scenario("Open redirects", database_url),
        f"{len(pages)} requests with next=/redirect=/return_to=... pointing off-site, on every "
        "path, as GET and POST, and with a forged Host and X-Forwarded-Host",
        f"{locations} Location header(s), {len(off_site)} leaving the site or failing",
        "no Location header or meta refresh leaves the site",
    )
