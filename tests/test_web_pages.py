"""Web pages that name the newsletter and its publisher: the subscribe form with its
consent sentence and privacy link, "subscribe again", the archive's subscribe link, and
the subscribe form embedded on the publisher's own site (posted from another origin).

Every request goes over real HTTP to the app served by waitress on loopback; the
cross-site form is also submitted by headless Chromium from a page on another origin.
"""

from __future__ import annotations

import html
import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from gazette.newsletters.brand import PresentationChanges, apply_presentation
from gazette.newsletters.service import create_newsletter, newsletter_by_slug
from gazette.store.db import transaction
from gazette.store.models import SubscriptionStatus
from gazette.tokens import Purpose
from gazette.web.csrf import FIELD
from tests.support.cli import NewsletterCli
from tests.support.digests import artifacts_dir
from tests.support.env import make_env
from tests.support.http import Browser, serve
from tests.support.web import (
    BASE_URL,
    EMAIL,
    NAME,
    OTHER_NAME,
    OTHER_SLUG,
    SLUG,
    Site,
    SiteFactory,
    add_reader,
    events,
    snapshot,
    status_of,
)

PUBLISHER = "Kyiv Policy Lab"
PRIVACY = "https://example.org/privacy"
CONSENT = (
    f"By subscribing you agree to receive {NAME} from {PUBLISHER} by email. "
    "You can unsubscribe at any time."
)
BRAND = {
    "publisher": PUBLISHER,
    "website": "https://example.org",
    "privacy_url": PRIVACY,
    "accent_colour": "#0f766e",
    "postal_address": "vul. Khreshchatyk 1, Kyiv 01001, Ukraine",
}


def words(page_text: str) -> str:
    """The page's visible text, tags dropped and spaces folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page_text)).split())


@pytest.fixture
def branded(make_site: SiteFactory) -> Site:
    return make_site(**BRAND)


# --- the subscribe form ---------------------------------------------------------------


def test_subscribe_form_names_newsletter_publisher_and_privacy(branded: Site) -> None:
    page = branded.browser().get(f"/subscribe?newsletter={SLUG}")
    assert page.status == 200
    assert f"<h1>Subscribe to {NAME}</h1>" in page.text
    text = words(page.text)
    assert f"{PUBLISHER} {NAME}" in text  # the masthead
    # The privacy policy is linked right beside the consent sentence, inside the form.
    assert f'{CONSENT} <a href="{PRIVACY}">Privacy policy</a></p>' in page.text
    form = page.text.split('<form method="post" action="/subscribe">')[1].split("</form>")[0]
    assert CONSENT in form
    assert "#0f766e" in page.text


def test_form_for_several_newsletters_without_a_brand(make_site: SiteFactory) -> None:
    site = make_site()
    with transaction(site.runtime.sessions) as session:
        create_newsletter(session, OTHER_SLUG, OTHER_NAME)
    page = site.browser().get("/subscribe")
    assert "<h1>Subscribe to our newsletter</h1>" in page.text
    assert (
        "By subscribing you agree to receive the newsletter you choose by email. "
        "You can unsubscribe at any time."
    ) in words(page.text)
    assert "Privacy policy" not in page.text
    assert 'class="masthead"' not in page.text


def test_subscribe_form_in_ukrainian(branded: Site) -> None:
    page = branded.browser().get(f"/subscribe?newsletter={SLUG}", headers={"Accept-Language": "uk"})
    assert f"Підписуючись, ви погоджуєтеся отримувати {NAME} від {PUBLISHER}" in words(page.text)
    assert "Політика конфіденційності" in page.text


# --- unsubscribed, and subscribing again ----------------------------------------------


def unsubscribed_page(site: Site, browser: Browser) -> tuple[str, str]:
    """Unsubscribe an active reader by the page's button; return the token and the answer."""
    public_id = add_reader(site.runtime, EMAIL, confirmed=True)
    token = site.runtime.tokens.mint(Purpose.UNSUBSCRIBE, public_id, SLUG)
    page = browser.submit(browser.get(f"/unsubscribe/{token}").form())
    assert page.status == 200
    assert status_of(site.runtime, EMAIL) == SubscriptionStatus.UNSUBSCRIBED
    return token, page.text


def test_a_mail_providers_one_click_post_gets_a_line_in_the_readers_language(
    site: Site,
) -> None:
    # RFC 8058: the provider POSTs without cookies and shows nobody the answer, so it
    # gets no page, no form to subscribe again and no cookie for that form.
    public_id = add_reader(site.runtime, EMAIL, confirmed=True, language="uk")
    token = site.runtime.tokens.mint(Purpose.UNSUBSCRIBE, public_id, SLUG)
    provider = site.browser(cookies=False)
    answer = provider.post(f"/unsubscribe/{token}", {"List-Unsubscribe": "One-Click"})
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.text == "Ви більше не отримуватимете випусків цієї розсилки.\n"
    assert "Set-Cookie" not in answer.headers
    assert answer.headers["Cache-Control"] == "no-store"
    assert status_of(site.runtime, EMAIL) == SubscriptionStatus.UNSUBSCRIBED


def test_unsubscribed_page_offers_subscribe_again(branded: Site) -> None:
    browser = branded.browser()
    token, body = unsubscribed_page(branded, browser)
    assert f"{PUBLISHER} {NAME}" in words(body)
    page_forms = re.findall(r'<form[^>]* action="([^"]+)">', body)
    assert page_forms == [f"/resubscribe/{token}"]
    assert f'name="{FIELD}"' in body
    assert "Subscribe again" in body


def resubscribe_form(site: Site, browser: Browser) -> tuple[str, list[tuple[str, str]]]:
    token, body = unsubscribed_page(site, browser)
    value = re.search(rf'name="{FIELD}" value="([^"]+)"', body)
    assert value is not None
    return token, [(FIELD, value.group(1))]


def test_subscribe_again_sends_a_confirmation(branded: Site) -> None:
    browser = branded.browser()
    token, fields = resubscribe_form(branded, browser)
    page = browser.post(f"/resubscribe/{token}", fields)
    assert page.status == 200
    assert "<h1>Check your inbox</h1>" in page.text
    assert status_of(branded.runtime, EMAIL) == SubscriptionStatus.PENDING
    assert events(branded.runtime)["resubscribed"] == 1
    assert [m.recipients for m in branded.smtp.messages] == [[EMAIL]]
    assert b"Confirm your subscription" in branded.smtp.messages[0].data


def test_subscribe_again_when_already_subscribed_says_so(branded: Site) -> None:
    browser = branded.browser()
    token, fields = resubscribe_form(branded, browser)
    # Subscribed again meanwhile, from the form and its confirmation.
    with transaction(branded.runtime.sessions) as session:
        from gazette.subscribers.service import Origin
        from gazette.subscribers.subscribing import subscribe

        subscribe(session, EMAIL, SLUG, Origin("web"), reader_request=True, confirmed=True)
    assert status_of(branded.runtime, EMAIL) == SubscriptionStatus.ACTIVE
    page = browser.post(f"/resubscribe/{token}", fields)
    assert page.status == 200
    assert "<h1>You are subscribed</h1>" in page.text
    assert branded.smtp.messages == []


def test_subscribe_again_without_the_form_token_changes_nothing(branded: Site) -> None:
    browser = branded.browser()
    token, _fields = resubscribe_form(branded, browser)
    before = snapshot(branded.runtime)
    page = browser.post(f"/resubscribe/{token}", {FIELD: "forged"})
    assert page.status == 403
    assert snapshot(branded.runtime) == before
    assert branded.smtp.messages == []


def test_subscribe_again_with_a_bad_token(branded: Site) -> None:
    browser = branded.browser()
    _token, fields = resubscribe_form(branded, browser)
    page = browser.post("/resubscribe/not-a-token", fields)
    assert page.status == 400
    assert "This link does not work" in page.text


def test_subscribe_again_only_by_post(branded: Site) -> None:
    browser = branded.browser()
    token, _fields = resubscribe_form(branded, browser)
    before = snapshot(branded.runtime)
    assert browser.get(f"/resubscribe/{token}").status == 405
    assert snapshot(branded.runtime) == before


# --- the archive ----------------------------------------------------------------------


def test_archive_links_to_the_subscribe_form(branded: Site) -> None:
    browser = branded.browser()
    everything = browser.get("/archive")
    assert '<a class="button" href="/subscribe">Subscribe to our newsletter</a>' in everything.text
    one = browser.get(f"/archive?newsletter={SLUG}")
    assert f'<a class="button" href="/subscribe?newsletter={SLUG}">Subscribe to {NAME}</a>' in (
        one.text
    )
    assert f"{PUBLISHER} {NAME}" in words(one.text)
    assert f'<a href="{PRIVACY}">Privacy policy</a>' in one.text


# --- the embedded form ----------------------------------------------------------------


def embedded_fields(slug: str = SLUG, email: str = EMAIL) -> dict[str, str]:
    return {"newsletter": slug, "email": email, "language": "en", "website": ""}


def test_embedded_form_from_the_publishers_site_subscribes(branded: Site) -> None:
    # No cookie and no form token: the publisher's page cannot hold one.
    browser = branded.browser(cookies=False)
    page = browser.post(
        "/subscribe/embed", embedded_fields(), headers={"Origin": "https://example.org"}
    )
    assert page.status == 200
    assert "<h1>Check your inbox</h1>" in page.text
    assert status_of(branded.runtime, EMAIL) == SubscriptionStatus.PENDING
    assert [m.recipients for m in branded.smtp.messages] == [[EMAIL]]


@pytest.mark.parametrize(
    "origin",
    [None, "https://evil.example", "null", "http://example.org", "https://example.org.evil"],
)
def test_embedded_form_from_elsewhere_asks_to_confirm_here(
    branded: Site, origin: str | None
) -> None:
    browser = branded.browser()
    before = snapshot(branded.runtime)
    headers = {"Origin": origin} if origin else {}
    page = browser.post("/subscribe/embed", embedded_fields(), headers=headers)
    assert page.status == 200
    assert snapshot(branded.runtime) == before
    assert branded.smtp.messages == []
    # The form comes back filled in, with a token of this site's, to be sent from here.
    assert "Press Subscribe to confirm that you want it." in page.text
    form = page.form("/subscribe")
    assert form.value("email") == EMAIL
    assert form.value("newsletter") == SLUG
    sent = browser.submit(form)
    assert "<h1>Check your inbox</h1>" in sent.text
    assert status_of(branded.runtime, EMAIL) == SubscriptionStatus.PENDING


def test_embedded_form_without_a_website_always_asks(make_site: SiteFactory) -> None:
    site = make_site()
    page = site.browser().post(
        "/subscribe/embed", embedded_fields(), headers={"Origin": "https://example.org"}
    )
    assert "Press Subscribe to confirm that you want it." in page.text
    assert status_of(site.runtime, EMAIL) is None


def test_embedded_form_for_an_unknown_newsletter(branded: Site) -> None:
    page = branded.browser().post(
        "/subscribe/embed", embedded_fields("nope"), headers={"Origin": "https://example.org"}
    )
    assert page.status == 404
    assert "There is no newsletter &#39;nope&#39;." in page.text


def test_embedded_form_has_the_honeypot(branded: Site) -> None:
    page = branded.browser(cookies=False).post(
        "/subscribe/embed",
        {**embedded_fields(), "website": "http://spam.example"},
        headers={"Origin": "https://example.org"},
    )
    assert "<h1>Check your inbox</h1>" in page.text
    assert status_of(branded.runtime, EMAIL) is None


def snippet_page(snippet: str) -> Any:
    """A WSGI app for the publisher's own site: one page holding the snippet."""
    body = f"<!DOCTYPE html><html lang='en'><body><h1>Our site</h1>{snippet}</body></html>"

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body.encode("utf-8")]

    return app


def test_embed_snippet_posted_cross_site_in_chromium(
    make_site: SiteFactory, tmp_path: Path, database_url: str, chromium: WebDriver
) -> None:
    site = make_site(publisher=PUBLISHER)
    # The snippet as the command prints it, run on the same installation.
    cli = NewsletterCli(
        tmp_path, make_env(tmp_path, database_url, publisher=PUBLISHER), database_url
    )
    snippet = cli.ok("newsletters", "embed", SLUG).stdout
    assert snippet.startswith('<form class="gazette-subscribe" method="post"')
    assert f'action="{BASE_URL}/subscribe/embed"' in snippet
    assert CONSENT in html.unescape(snippet)
    # Pointed at the served app (the installation's base URL is not this test's host).
    snippet = snippet.replace(BASE_URL, site.server.url)
    with serve(snippet_page(snippet)) as publisher:
        # "localhost" and 127.0.0.1 are different sites, not only different origins.
        publisher_url = f"http://localhost:{publisher.port}"
        with transaction(site.runtime.sessions) as session:
            apply_presentation(
                newsletter_by_slug(session, SLUG), PresentationChanges(website=publisher_url)
            )
        chromium.get(publisher_url + "/")
        chromium.find_element(By.NAME, "email").send_keys(EMAIL)
        chromium.find_element(By.CSS_SELECTOR, "form.gazette-subscribe button").click()
        WebDriverWait(chromium, 15).until(lambda d: "Check your inbox" in d.page_source)
    assert chromium.current_url == f"{site.server.url}/subscribe/embed"
    assert status_of(site.runtime, EMAIL) == SubscriptionStatus.PENDING
    assert [m.recipients for m in site.smtp.messages] == [[EMAIL]]


# --- screenshots ----------------------------------------------------------------------


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A plain one-colour PNG (a stand-in logo), made without an imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    row = b"\x00" + bytes(rgb) * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def full_page_shot(driver: WebDriver, url: str, width: int, path: Path) -> None:
    """Load ``url`` at ``width`` CSS pixels and save the whole page's height."""
    driver.set_window_size(width, 900)
    driver.get(url)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(width, min(max(height + 200, 600), 6000))
    assert driver.save_screenshot(str(path)), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_screenshots_of_the_branded_digest_and_pages(
    make_site: SiteFactory, chromium: WebDriver, tmp_path: Path
) -> None:
    """Writes artifacts/brand15/*.png: the digest and each changed page at 390 and 1200 px."""
    logo = png(160, 40, (15, 118, 110))

    def logo_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "image/png")])
        return [logo]

    folder = artifacts_dir("brand15")
    with serve(logo_app) as logo_server:
        site = make_site(**BRAND)
        rt = site.runtime
        note = "**This week:** two long reads on the grid, and our new [briefing](https://example.org/b)."
        with transaction(rt.sessions) as session:
            apply_presentation(
                newsletter_by_slug(session, SLUG),
                PresentationChanges(
                    logo_url=f"{logo_server.url}/logo.png", intro=note,
                    utm_source="gazette", utm_medium="email", utm_campaign="weekly-{date}",
                ),
            )  # fmt: skip
        from gazette.articles.service import ArticleInput, upsert_article
        from gazette.digests.previews import preview
        from gazette.store.models import utcnow

        with transaction(rt.sessions) as session:
            for n, title in enumerate(["Grid storage after the winter", "Night trains return"]):
                upsert_article(
                    session,
                    ArticleInput(
                        title=title, url=f"https://example.org/posts/{n}", published_at=utcnow(),
                        summary="<p>A long read about what the coming year holds.</p>",
                    ),
                )  # fmt: skip
        with rt.sessions() as session:
            shown = preview(session, rt.send_context, SLUG, utcnow())
        digest = tmp_path / "digest.html"
        digest.write_text(shown.personal.html, encoding="utf-8")
        public_id = add_reader(rt, "taro@example.org", confirmed=True)
        # A sent issue, for the archive's list and page.
        from tests.support.digests import plan, send

        with rt.sessions() as session:
            newsletter_id = newsletter_by_slug(session, SLUG).id
        issue_id, issue_public_id, _status = plan(rt, newsletter_id)
        send(rt, issue_id)
        # The welcome as a reader receives it.
        from gazette.store.models import Subscription
        from gazette.subscribers.notices import send_welcome

        with rt.sessions() as session:
            subscription = session.query(Subscription).one()
        before = len(site.smtp.messages)
        assert send_welcome(rt.sessions, rt.send_context, subscription.id)
        from tests.support.messages import parse, parts

        welcome = tmp_path / "welcome.html"
        welcome.write_text(parts(parse(site.smtp.messages[before].data))[1], encoding="utf-8")
        unsubscribe = rt.tokens.mint(Purpose.UNSUBSCRIBE, public_id, SLUG)
        confirm = rt.tokens.mint(Purpose.CONFIRM, public_id, SLUG)
        pages = {
            "digest": digest.as_uri(),
            "welcome": welcome.as_uri(),
            "subscribe": f"{site.server.url}/subscribe?newsletter={SLUG}",
            "confirm": f"{site.server.url}/confirm/{confirm}",
            "unsubscribe": f"{site.server.url}/unsubscribe/{unsubscribe}",
            "archive": f"{site.server.url}/archive?newsletter={SLUG}",
            "archive-issue": f"{site.server.url}/archive/{issue_public_id}",
        }
        for name, url in pages.items():
            for width in (390, 1200):
                full_page_shot(chromium, url, width, folder / f"{name}-{width}.png")
        # The unsubscribed page comes from a POST: press the button.
        for width in (390, 1200):
            with transaction(rt.sessions) as session:
                from gazette.subscribers.service import Origin
                from gazette.subscribers.subscribing import subscribe

                subscribe(session, "taro@example.org", SLUG, Origin("web"), reader_request=True,
                          confirmed=True)  # fmt: skip
            chromium.set_window_size(width, 900)
            chromium.get(pages["unsubscribe"])
            chromium.find_element(By.CSS_SELECTOR, "form button").click()
            WebDriverWait(chromium, 15).until(lambda d: "Subscribe again" in d.page_source)
            height = int(chromium.execute_script("return document.documentElement.scrollHeight"))
            chromium.set_window_size(width, max(height + 200, 600))
            assert chromium.save_screenshot(str(folder / f"unsubscribed-{width}.png"))
        # The preferences page with topics to choose, for an English and a Japanese reader
        # (the Japanese legend is the longest and must wrap at a sensible place).
        from gazette.store.models import Topic

        with transaction(rt.sessions) as session:
            session.add(Topic(slug="energy", name="Energy", labels={"ja": "エネルギー"}))
            session.add(Topic(slug="policy", name="Policy", labels={"ja": "政策"}))
        for reader, language in (("taro@example.org", "en"), ("hanako@example.org", "ja")):
            reader_id = add_reader(rt, reader, confirmed=True, language=language)
            token = rt.tokens.mint(Purpose.PREFERENCES, reader_id, SLUG)
            pages[f"preferences-{language}"] = f"{site.server.url}/preferences/{token}"
            for width in (390, 1200):
                name = f"preferences-{language}-{width}.png"
                full_page_shot(chromium, pages[f"preferences-{language}"], width, folder / name)
                labels = chromium.execute_script(
                    "return [...document.querySelectorAll('legend, label, .check input')]"
                    ".map(e => e.getBoundingClientRect().left)"
                )
                # Every label, legend and checkbox starts at the same left edge as the form's.
                assert len(set(labels)) == 1, (language, width, labels)
        # The page at 390 px does not scroll sideways.
        chromium.set_window_size(390, 900)
        for url in pages.values():
            chromium.get(url)
            overflow = chromium.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, (url, overflow)


@pytest.mark.parametrize(
    ("logo", "shown"),
    [
        (
            "https://example.org/logo.png",
            f'<img src="https://example.org/logo.png" alt="{PUBLISHER}">',
        ),
        # The pages allow https images only: an http logo would be a broken image.
        (
            "http://example.org/logo.png",
            f'<a class="publisher" href="https://example.org">{PUBLISHER}</a>',
        ),
    ],
)
def test_masthead_logo_only_over_https(make_site: SiteFactory, logo: str, shown: str) -> None:
    site = make_site(**BRAND, logo_url=logo)
    page = site.browser().get(f"/subscribe?newsletter={SLUG}")
    assert shown in re.sub(r">\s+", ">", re.sub(r"\s+<", "<", page.text))
    assert "img-src https:" in page.headers["Content-Security-Policy"]
