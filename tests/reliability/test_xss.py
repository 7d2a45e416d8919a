"""Scenario 8: XSS through the web form and the digest stays text."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import select

from gazette.articles.service import ArticleInput, upsert_article
from gazette.digests.planning import plan_issue
from gazette.newsletters.service import create_newsletter
from gazette.rendering import ArticleView, IssueView
from gazette.store.db import transaction
from gazette.store.models import Subscriber, utcnow
from gazette.subscribers.notices import greeting_name
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from gazette.text import clean_line
from gazette.tokens import Purpose
from tests.reliability.helpers import (
    BASE_URL,
    MARKER,
    SUMMARY_TAGS,
    form_token,
    html_part,
    site,
    text_part,
    visible,
)
from tests.support.env import installed_env
from tests.support.figures import record
from tests.support.http import Page
from tests.support.messages import parse
from tests.support.reliability import SLUG, injected, load_issue, scenario, xss_payloads

# The fault and hostile-input suite: `make reliability` runs it and writes its report.
pytestmark = pytest.mark.reliability


@pytest.mark.slow
def test_reliability_xss_in_names_and_articles_stays_text(
    tmp_path: Path, database_url: str
) -> None:
    from worker.tasks import enqueue_issue

    payloads = xss_payloads()
    # Valid local parts that carry characters HTML cares about: the preferences page shows them.
    hostile_locals = ["o'neil&co", "x=y+z", "{a}|~`!#$%^*", "'-alert-'", "amp&amp&#39"]
    with site(tmp_path, database_url, subscribe_limit_per_ip="100000") as web:
        rt = web.runtime
        browser = web.browser()
        fields = form_token(browser)
        problems: list[str] = []

        def post(**changes: str) -> Page:
            values = dict(fields) | changes
            return browser.post("/subscribe", list(values.items()))

        # Baselines: the same pages and mails for harmless input.
        sent_baseline = post(email="plain.reader@example.org", name="Plain Reader")
        error_baseline = post(email="not-an-address", name="Plain Reader")
        assert (sent_baseline.status, error_baseline.status) == (200, 400)
        confirm_baseline = html_part(web.smtp.messages[-1].parsed())

        # Every payload as a name (with a good address) and as both name and address.
        emails: dict[str, str] = {}
        for n, payload in enumerate(payloads):
            email = f"{hostile_locals[n % len(hostile_locals)]}.{n}@example.org"
            emails[email] = payload
            sent = post(email=email, name=payload, language=("en", "uk", "ja")[n % 3])
            # (A NUL in the address is test_reliability_hostile_addresses_*'s business.)
            refused = post(email=payload.replace("\x00", ""), name=payload)
            if sent.status != 200 or refused.status != 400:
                problems.append(f"{n}: statuses {sent.status}/{refused.status}")
                continue
            for what, page, baseline in (
                ("sent page", sent, sent_baseline),
                ("error page", refused, error_baseline),
            ):
                problems += [f"{n} {what}: {p}" for p in injected(page.text, baseline.text)]
            # The error page does echo the input, as text: the name and the address.
            form = refused.form("/subscribe")
            echoed = (form.value("name"), form.value("email"))
            if echoed != (payload, payload.replace("\x00", "")):
                problems.append(f"{n}: the error page did not give the input back")
        # Confirmation mails greet each reader by name.
        confirmations = {
            m.recipients[0]: m.parsed() for m in web.smtp.messages if m.recipients[0] in emails
        }
        assert len(confirmations) == len(payloads)
        for email, message in confirmations.items():
            # The greeting quotes a name only when it looks like one (notices.greeting_name);
            # a payload that does not is greeted with no name, which is what must hold.
            name = greeting_name(clean_line(emails[email], 200))
            body = html_part(message)
            problems += [f"{email} confirmation: {p}" for p in injected(body, confirm_baseline)]
            if (
                name
                and MARKER not in name
                and (name not in visible(body) or name not in text_part(message))
            ):
                problems.append(f"{email} confirmation: the name is not shown as text")
            if [a.addr_spec for a in message["To"].addresses] != [email]:
                problems.append(f"{email} confirmation: To is {message['To']!r}")

        # The same payloads as article titles and summaries, in one digest to all of them.
        now = utcnow()
        with transaction(rt.sessions) as session:
            for n, payload in enumerate(payloads):
                upsert_article(
                    session,
                    ArticleInput(
                        title=f"Item {n} {payload}",
                        url=f"https://example.org/item/{n}",
                        summary=payload if n % 2 else f"<p>Body {n}</p>{payload}",
                        published_at=now - timedelta(minutes=n + 1),
                    ),
                )
            for email in emails:
                subscribe(session, email, SLUG, Origin("cli"), confirmed=True)
        with transaction(rt.sessions) as session:
            plan = plan_issue(session, web.newsletter_id, now)
        assert plan.articles == len(payloads)
        mailed = len(web.smtp.messages)
        enqueue_issue(plan.issue_id)
        digests = web.smtp.messages[mailed:]
        assert len(digests) == len(emails)
        baselines = {
            language: rt.renderer.render_issue(
                IssueView(
                    newsletter_name="The Weekly",
                    date=now,
                    archive_url=f"{BASE_URL}/archive/x",
                    articles=tuple(
                        ArticleView(
                            title=f"Item {n}", url=f"https://example.org/item/{n}",
                            summary_html=f"<p>Body {n}</p>", summary_text=f"Body {n}",
                            author="", published_at=now,
                        )
                        for n in range(len(payloads))
                    ),
                ),
                language,
            ).personalise("Plain Reader", f"{BASE_URL}/u", f"{BASE_URL}/p")[1]
            for language in ("en", "uk", "ja")
        }  # fmt: skip
        # Titles that carry a personalisation marker are test_reliability_markers_*'s business.
        article_titles = [
            title
            for n, p in enumerate(payloads)
            if MARKER not in (title := clean_line(f"Item {n} {p}"))
        ]
        for received in digests:
            message = received.parsed()
            email = received.recipients[0]
            # The greeting quotes a name only when it looks like one (notices.greeting_name);
            # a payload that does not is greeted with no name, which is what must hold.
            name = greeting_name(clean_line(emails[email], 200))
            body = html_part(message)
            language = message["Content-Language"] or ""
            expected = baselines.get(language[:2], baselines["en"])
            problems += [f"{email} digest: {p}" for p in injected(body, expected, SUMMARY_TAGS)]
            shown = visible(body)
            text = text_part(message)
            if MARKER not in name and (name not in shown or name not in text):
                problems.append(f"{email} digest: the greeting does not show the name as text")
            missing = [t for t in article_titles if t not in shown]
            if missing:
                problems.append(f"{email} digest: {len(missing)} title(s) not shown as text")

        # The archive shows the issue's articles; the preferences page shows the address.
        issue = load_issue(rt, plan.issue_id)
        not_found = browser.get("/archive/no-such-issue")
        archive_issue = browser.get(f"/archive/{issue.public_id}")
        assert (not_found.status, archive_issue.status) == (404, 200)
        problems += [
            f"archive issue: {p}"
            for p in injected(
                archive_issue.text, not_found.text, SUMMARY_TAGS | {"article", "h2", "div"}
            )
        ]
        missing = [t for t in article_titles if t not in visible(archive_issue.text)]
        if missing:
            problems.append(f"archive issue: {len(missing)} title(s) not shown as text")
        archive = browser.get("/archive")
        problems += [
            f"archive: {p}"
            for p in injected(
                archive.text, not_found.text, frozenset({"link", "ul", "li", "a", "br", "small"})
            )
        ]
        feed = browser.get("/archive.xml")
        entries = ET.fromstring(feed.body).findall("{http://www.w3.org/2005/Atom}entry")
        assert entries
        for entry in entries:
            for child in entry:
                if len(child):
                    problems.append(f"archive.xml: markup inside <{child.tag}>")
        with rt.sessions() as session:
            people = dict(session.execute(select(Subscriber.email, Subscriber.public_id)).all())

        def preferences_page(email: str) -> Page:
            token = rt.tokens.mint(Purpose.PREFERENCES, people[email], SLUG)
            return browser.get(f"/preferences/{token}")

        prefs_baseline = preferences_page("plain.reader@example.org")
        assert prefs_baseline.status == 200
        for email in emails:
            page = preferences_page(email)
            if page.status != 200 or email not in visible(page.text):
                problems.append(f"{email} preferences: {page.status}, address not shown as text")
                continue
            problems += [
                f"{email} preferences: {p}" for p in injected(page.text, prefs_baseline.text)
            ]
    checked = 2 * len(payloads) + len(confirmations) + len(digests) + len(emails) + 3
    assert problems == []
    record(
        scenario("XSS in names and articles", database_url),
        f"{len(payloads)} XSS payloads as reader names through the subscribe form over HTTP "
        "(and as the address, to reach the error page that echoes both) and as article "
        "titles and summaries in one digest to those readers; pages, confirmation mails, "
        "digests (text and HTML), archive pages and preferences parsed with html.parser",
        f"{len(problems)} payload(s) reached markup in {checked} pages and mails",
        "0 script/iframe/svg/object/... elements, on* attributes or javascript: URLs from input",
    )


def test_reliability_xss_in_echoed_parameters(tmp_path: Path, database_url: str) -> None:
    """Error pages that name what was asked for must show it as text, never as markup."""
    payloads = xss_payloads()
    with site(tmp_path, database_url, subscribe_limit_per_ip="100000") as web:
        browser = web.browser()
        fields = form_token(browser)
        baseline = browser.get("/subscribe?newsletter=no-such-list")
        assert baseline.status == 404
        problems: list[str] = []
        statuses: Counter[int] = Counter()
        for n, payload in enumerate(payloads):
            got = browser.get(f"/subscribe?newsletter={quote(payload)}")
            posted = browser.post(
                "/subscribe",
                [*(f for f in fields if f[0] != "newsletter"), ("newsletter", payload),
                 ("email", f"reader{n}@example.org")],
            )  # fmt: skip
            for what, page in (("GET", got), ("POST", posted)):
                statuses[page.status] += 1
                if page.status != 404:
                    problems.append(f"{n} {what}: status {page.status}")
                    continue
                problems += [f"{n} {what}: {p}" for p in injected(page.text, baseline.text)]
                if "There is no newsletter" not in visible(page.text):
                    problems.append(f"{n} {what}: not the page naming the newsletter asked for")
    assert problems == [], f"{len(problems)} problem(s), statuses {dict(statuses)}"
    record(
        scenario("XSS in echoed parameters", database_url),
        f"{len(payloads)} XSS payloads as the newsletter= of GET and POST /subscribe, whose "
        "404 page names the newsletter asked for",
        f"{len(problems)} problem(s) in {2 * len(payloads)} pages; statuses "
        + ", ".join(f"{s}: {c}" for s, c in sorted(statuses.items())),
        "every page 404 with the value shown as text; 0 elements or handlers from input",
    )


def test_reliability_markers_in_names_and_articles_stay_literal(
    tmp_path: Path, database_url: str
) -> None:
    """Text that happens to spell a personalisation marker is shown as typed.

    Rendering leaves markers where each reader's greeting and links go and fills them in
    per message; a name, a title or a summary that contains a marker must not be filled in.
    """
    from worker.tasks import enqueue_issue

    name = "Ann @@GAZETTE:UNSUBSCRIBE_URL@@ @@GAZETTE:GREETING@@"
    title = "Read @@GAZETTE:PREFERENCES_URL@@ now"
    summary = "<p>More: @@GAZETTE:UNSUBSCRIBE_URL@@ and @@GAZETTE:GREETING@@</p>"
    with installed_env(tmp_path, database_url) as (_env, runtime):  # mail goes to a Maildir
        now = utcnow()
        with transaction(runtime.sessions) as session:
            newsletter_id = create_newsletter(session, SLUG, "The Weekly")
            subscribe(session, "ann@example.org", SLUG, Origin("cli"), name=name, confirmed=True)
            upsert_article(
                session,
                ArticleInput(
                    title=title,
                    url="https://example.org/markers",
                    summary=summary,
                    published_at=now - timedelta(minutes=1),
                ),
            )
            plan = plan_issue(session, newsletter_id, now)
        enqueue_issue(plan.issue_id)
        outbox = runtime.settings.smtp.path
        assert outbox is not None
        files = list((outbox / "new").iterdir())
    assert len(files) == 1
    message = parse(files[0])
    assert isinstance(message, EmailMessage)
    text, shown = text_part(message), visible(html_part(message))
    wanted = {"name": name, "title": title, "summary": "More: @@GAZETTE:UNSUBSCRIBE_URL@@"}
    literal = {what: value in text and value in shown for what, value in wanted.items()}
    links = text.count("/unsubscribe/")
    assert literal == dict.fromkeys(wanted, True)
    assert links == 1
    record(
        scenario("Personalisation markers in content", database_url),
        "a reader name, an article title and a summary that contain the markers rendering "
        "uses for each reader's greeting, unsubscribe and preferences links",
        f"shown as typed: {', '.join(k for k, v in literal.items() if v) or 'none'}; "
        f"filled in: {', '.join(k for k, v in literal.items() if not v) or 'none'}; "
        f"{links} unsubscribe link(s) in the text part",
        "every value shown as typed; one unsubscribe link (the footer's)",
    )
