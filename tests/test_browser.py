"""The subscribe flow clicked through in a real browser: headless Chromium via selenium.

The app is served by waitress on loopback, mail goes to a real SMTP server (aiosmtpd),
and every check reads what a reader would see: the page, the message, the database.
Screenshots of each page land in artifacts/browser/ (or $GAZETTE_ARTIFACTS/browser/).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select
from sqlalchemy.engine import make_url

from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Newsletter, Subscriber, Subscription, SubscriptionStatus
from gazette.tokens import Purpose
from gazette.web import create_app, server_options
from tests.support.digests import chromium_session
from tests.support.env import installed_runtime
from tests.support.http import serve
from tests.support.smtp import SMTPServer, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[1]
SLUG = "weekly"
NEWSLETTER = "The Weekly"
WAIT = 15.0

_missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
if _missing:
    _why = (
        f"{' and '.join(_missing)} not found: install Debian's chromium and "
        "chromium-driver packages to run the browser tests"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{_why} (CI installs them, so this is a broken CI image).", pytrace=False)
    pytest.skip(_why, allow_module_level=True)


def artifacts_dir() -> Path:
    """$GAZETTE_ARTIFACTS/browser, a relative path being read from the repository root."""
    base = Path(os.environ.get("GAZETTE_ARTIFACTS", "artifacts"))
    folder = (base if base.is_absolute() else REPO / base) / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Site:
    """The served app and what a test needs to look behind it."""

    base_url: str
    runtime: Runtime
    smtp: SMTPServer
    backend: str

    def shot(self, driver: WebDriver, name: str) -> Path:
        """Save a screenshot of the current page as <backend>-<name>.png."""
        path = artifacts_dir() / f"{self.backend}-{name}.png"
        assert driver.save_screenshot(str(path)), f"no screenshot saved at {path}"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        return path

    def said(self, language: str, message: str, **values: str) -> str:
        """``message`` (with ``values``) as the app's own catalogue words it in ``language``."""
        environment = self.runtime.renderer.environment(language)
        return environment.from_string("{{ _(message, **values) }}").render(
            message=message, values=values
        )

    def subscription(self, email: str) -> tuple[Subscriber, SubscriptionStatus]:
        """The reader with ``email`` and the status of their subscription to SLUG."""
        with self.runtime.sessions() as session:
            row = session.execute(
                select(Subscriber, Subscription.status)
                .join(Subscription, Subscription.subscriber_id == Subscriber.id)
                .join(Newsletter, Newsletter.id == Subscription.newsletter_id)
                .where(Subscriber.email == email, Newsletter.slug == SLUG)
            ).one_or_none()
        assert row is not None, f"{email} has no subscription to {SLUG}"
        return row[0], row[1]


@pytest.fixture
def site(tmp_path: Path, database_url: str, smtp_server: SMTPServer) -> Iterator[Site]:
    """gazette.web served by waitress on 127.0.0.1 in a daemon thread."""
    # The links in mail name the base URL, so the port is chosen before the app is built.
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with installed_runtime(
        tmp_path, database_url, smtp_url=smtp_server.url, base_url=base_url
    ) as built:
        with transaction(built.sessions) as session:
            create_newsletter(session, SLUG, NEWSLETTER)
        app = create_app(built)
        with serve(app, port=port, **server_options(built.settings)) as server:
            assert server.port == port
            yield Site(base_url, built, smtp_server, make_url(database_url).get_backend_name())


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """Headless Chromium from /usr/bin; selenium is never allowed to fetch a driver."""
    monkeypatch.setenv("SE_OFFLINE", "true")
    # The pages fall back on Accept-Language; pin it so the run does not depend on the host.
    with chromium_session(
        tmp_path / "chromium-profile",
        window="1024,900",
        prefs={"intl.accept_languages": "en-US,en"},
    ) as driver:
        yield driver


def heading(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "h1").text.strip()


def wait_for_heading(driver: WebDriver, expected: str) -> None:
    """Wait until the page's <h1> reads ``expected``; fail showing what the page says."""
    try:
        WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException]).until(
            lambda d: d.find_elements(By.TAG_NAME, "h1") and heading(d) == expected
        )
    except TimeoutException:
        shown = driver.find_element(By.TAG_NAME, "body").text[:500]
        pytest.fail(f"expected a page titled {expected!r} at {driver.current_url}, got: {shown}")


def page_language(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "html").get_attribute("lang"))


def submit(driver: WebDriver) -> None:
    """Press the form's button and wait until the browser has loaded the next page.

    The old document carries a mark the next one cannot have. Polling an element of
    the old page instead races the navigation: chromedriver may answer "node does not
    belong to the document" (an unknown error, not a stale element) mid-unload.
    """
    driver.execute_script("window.gazetteOldPage = true")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, WAIT, ignored_exceptions=[WebDriverException]).until(
        lambda d: d.execute_script(
            "return window.gazetteOldPage === undefined && document.readyState === 'complete'"
        )
    )


def test_subscribe_confirm_and_unsubscribe_in_chromium(site: Site, browser: WebDriver) -> None:
    email, name = "oksana@example.org", "Оксана Коваленко"

    # The form.
    browser.get(f"{site.base_url}/subscribe")
    form_language = page_language(browser)
    wait_for_heading(browser, site.said(form_language, "Subscribe to %(name)s", name=NEWSLETTER))
    newsletter = browser.find_element(By.CSS_SELECTOR, "input[type=hidden][name=newsletter]")
    assert newsletter.get_attribute("value") == SLUG
    browser.find_element(By.ID, "email").send_keys(email)
    browser.find_element(By.ID, "name").send_keys(name)
    Select(browser.find_element(By.ID, "language")).select_by_value("uk")
    site.shot(browser, "01-subscribe")
    submit(browser)

    wait_for_heading(browser, site.said(page_language(browser), "Check your inbox"))
    assert browser.current_url == f"{site.base_url}/subscribe"
    site.shot(browser, "02-check-your-inbox")
    subscriber, status = site.subscription(email)
    assert status == SubscriptionStatus.PENDING
    assert (subscriber.name, subscriber.language) == (name, "uk")
    assert subscriber.confirmed_at is None

    # The confirmation message, as the SMTP server received it.
    assert len(site.smtp.messages) == 1, [m.recipients for m in site.smtp.messages]
    received = site.smtp.messages[0]
    assert received.recipients == [email]
    message = received.parsed()
    assert message.defects == []
    assert message["To"].addresses[0].addr_spec == email
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None
    assert html is not None
    text = plain.get_content()
    assert f"Вітаємо, {name}!" in text  # written in the language chosen on the form
    links = re.findall(re.escape(site.base_url) + r"/confirm/[A-Za-z0-9_.\-]+", text)
    assert len(links) == 1, text
    confirm_url = links[0]
    assert f'href="{confirm_url}"' in html.get_content()

    # Opening the link shows a button and changes nothing yet (link scanners only GET).
    browser.get(confirm_url)
    wait_for_heading(browser, site.said("uk", "Confirm your subscription"))
    assert page_language(browser) == "uk"
    site.shot(browser, "03-confirm")
    assert site.subscription(email)[1] == SubscriptionStatus.PENDING
    submit(browser)

    wait_for_heading(browser, site.said("uk", "You are subscribed"))
    assert page_language(browser) == "uk"
    site.shot(browser, "04-confirmed")
    subscriber, status = site.subscription(email)
    assert status == SubscriptionStatus.ACTIVE
    assert subscriber.confirmed_at is not None
    assert (subscriber.consent_source, subscriber.consent_ip) == ("web", "127.0.0.1")
    # Confirming brings the welcome, in the reader's language.
    assert len(site.smtp.messages) == 2
    welcome = site.smtp.messages[1].parsed()
    assert welcome["Subject"] == site.said("uk", "Welcome to %(name)s", name=NEWSLETTER)

    # An unsubscribe link, as the footer of every issue carries one.
    token = site.runtime.tokens.mint(Purpose.UNSUBSCRIBE, subscriber.public_id, SLUG)
    browser.get(f"{site.base_url}/unsubscribe/{token}")
    wait_for_heading(browser, site.said("uk", "Unsubscribe"))
    assert heading(browser) == "Відписатися"  # this string has a Ukrainian translation
    site.shot(browser, "05-unsubscribe")
    assert site.subscription(email)[1] == SubscriptionStatus.ACTIVE
    submit(browser)

    wait_for_heading(browser, site.said("uk", "You are unsubscribed"))
    site.shot(browser, "06-unsubscribed")
    assert site.subscription(email)[1] == SubscriptionStatus.UNSUBSCRIBED
    assert len(site.smtp.messages) == 2  # nothing more was sent


@pytest.mark.parametrize("state", ["blank", "error-for-a-long-address"])
def test_subscribe_page_fits_a_375px_wide_screen(
    site: Site, browser: WebDriver, state: str
) -> None:
    browser.set_window_size(375, 812)
    browser.get(f"{site.base_url}/subscribe")
    wait_for_heading(
        browser, site.said(page_language(browser), "Subscribe to %(name)s", name=NEWSLETTER)
    )
    assert browser.execute_script("return window.innerWidth") == 375
    if state != "blank":
        # Passes the browser's own check (HTML allows two dots in a row), fails the
        # server's: the form comes back with the whole address quoted in the error.
        address = "a" * 60 + ".." + "b" * 30 + "@example.org"
        browser.find_element(By.ID, "email").send_keys(address)
        submit(browser)
        wait_for_heading(
            browser, site.said(page_language(browser), "Subscribe to %(name)s", name=NEWSLETTER)
        )
        assert address in browser.find_element(By.CSS_SELECTOR, ".error[role=alert]").text
        assert site.smtp.messages == []
    site.shot(browser, f"subscribe-375px-{state}")
    scroll_width = browser.execute_script("return document.documentElement.scrollWidth")
    inner_width = browser.execute_script("return window.innerWidth")
    assert scroll_width <= inner_width, (
        f"the page is {scroll_width}px wide in a {inner_width}px window: it scrolls sideways"
    )
