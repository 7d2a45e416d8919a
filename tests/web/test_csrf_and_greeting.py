"""The CSRF token's lifetime and cookie, and the confirmation mail's greeting (issue 16)."""

from __future__ import annotations

import html
from email.message import EmailMessage

import pytest
from itsdangerous.timed import TimestampSigner

from gazette.store.models import SubscriptionStatus
from gazette.web.csrf import COOKIE, SECURE_COOKIE
from gazette.web.csrf import LIFETIME as CSRF_LIFETIME
from tests.support.web import (
    ACTIVE_EMAIL,
    EMAIL,
    Site,
    SiteFactory,
    find_subscriber,
    plain_body,
    status_of,
    subscribe_form,
    title_of,
)


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
