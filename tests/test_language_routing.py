"""Language routing at sending time: which of an issue's articles each reader receives.

Readers in en, uk, ja, de (a language the newsletter never published) and an en reader
who added uk get an issue with en, uk, ja and language-less articles over a real SMTP
server on loopback; the web pages (preferences, subscribe form, archive) are driven
through the app served by waitress. Every check reads what a reader would see.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import unescape
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from sqlalchemy import select, update

from gazette.articles.service import ArticleInput, upsert_article
from gazette.digests import previews
from gazette.digests.routing import (
    normalise_tag,
    parse_link_languages,
    published_languages,
    save_extra_languages,
)
from gazette.errors import GazetteError, InvalidChoiceError
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import (
    Article,
    DeliveryStatus,
    Event,
    Issue,
    IssueStatus,
    Newsletter,
    Subscriber,
    utcnow,
)
from gazette.subscribers.service import Origin
from gazette.tokens import Purpose
from gazette.web import create_app, server_options
from tests.support.digests import (
    BASE_URL,
    NAME,
    SLUG,
    WORDS,
    SeededReader,
    add_readers,
    artifacts_dir,
    deliveries,
    expected_subject,
    js,
    plan,
    send,
)
from tests.support.http import Browser, Page, serve
from tests.support.messages import HtmlDocument, listed_titles, parse, parts
from tests.support.reliability import parse_html
from tests.support.smtp import SMTPServer, by_recipient

# (title, language, hours ago): the newest is Ukrainian, so an English reader's subject
# would lead with it if routing did not narrow their edition.
ISSUE = [
    ("Київ відкриває нову бібліотеку", "uk", 1),
    ("City library opens its doors", "en", 2),
    ("東京の夜行列車が復活へ", "ja", 3),
    ("Editor's note: photos from the launch", None, 4),
    ("Енергетика: ціни взимку", "uk", 5),
    ("Budget vote in the council", "en-GB", 6),
]
TITLES = [title for title, _language, _hours in ISSUE]


def titles_in(*languages: str | None) -> list[str]:
    """The issue's titles (newest first) in the given languages, compared on primary tag."""
    wanted = {normalise_tag(code) for code in languages if code} | {None}
    return [title for title, language, _hours in ISSUE if normalise_tag(language) in wanted]


EN, UK, JA, DE, EN_UK = (
    "en@example.com",
    "uk@example.com",
    "ja@example.com",
    "de@example.com",
    "enuk@example.com",
)
READERS = [
    (EN, "Ada", "en"),
    (UK, "Оксана", "uk"),
    (JA, "山田", "ja"),
    (DE, "Dieter", "en"),  # made a "de" reader below
    (EN_UK, "Bilingual", "en"),
]
# What each reader receives with article_languages = own, and the language it is worded in.
OWN_EDITION = {
    EN: ("en", titles_in("en")),
    UK: ("uk", titles_in("uk")),
    JA: ("ja", titles_in("ja")),
    # None of the newsletter's articles is German: the default language's instead.
    DE: ("en", titles_in("en")),
    EN_UK: ("en", titles_in("en", "uk")),
}


# --- set-up ---------------------------------------------------------------------------


def new_newsletter(
    runtime: Runtime, routing: str, slug: str = SLUG, name: str = NAME, default: str = "en"
) -> int:
    """A newsletter routing by ``routing`` ("own" or "all") with ``default`` language."""
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, slug, name)
        newsletter = session.get_one(Newsletter, newsletter_id)
        newsletter.article_languages = routing
        newsletter.default_language = default
    return newsletter_id


def add_issue_articles(
    runtime: Runtime, now: datetime, articles: Sequence[tuple[str, str | None, float]]
) -> None:
    """Store the articles; a regional tag ("en-GB") is stored as it came, to be normalised."""
    with transaction(runtime.sessions) as session:
        for n, (title, language, hours) in enumerate(articles):
            result = upsert_article(
                session,
                ArticleInput(
                    title=title, url=f"https://blog.example.com/{language}/{n}-{hours}",
                    published_at=now - timedelta(hours=hours), language=language,
                ),
            )  # fmt: skip
            # Ingest keeps the primary tag today; an article stored with a regional tag
            # (an older row, another source) must still be routed by its primary tag.
            session.execute(
                update(Article).where(Article.id == result.article_id).values(language=language)
            )


def seed_readers(runtime: Runtime, slug: str = SLUG) -> dict[str, SeededReader]:
    """The five readers: the en+uk reader added uk (as "uk-UA") and the de reader is German."""
    seeded = add_readers(runtime, READERS, slug)
    with transaction(runtime.sessions) as session:
        # No form offers German here (nothing is published in it): a reader who came with
        # it from an import or an earlier version, which routing must still serve.
        session.execute(update(Subscriber).where(Subscriber.email == DE).values(language="de"))
        session.execute(
            update(Subscriber).where(Subscriber.email == EN_UK).values(extra_languages=["uk-UA"])
        )
    return seeded


@dataclass(frozen=True)
class Received:
    """One reader's message as their client shows it."""

    subject: str
    titles: list[str]
    preheader: str
    view_url: str
    lang: str | None


def received(smtp: SMTPServer) -> dict[str, Received]:
    """Every message the SMTP server accepted, by recipient; each recipient exactly once."""
    counts = by_recipient(smtp.messages)
    assert all(n == 1 for n in counts.values()), counts
    found: dict[str, Received] = {}
    for message in smtp.messages:
        parsed = parse(message.data)
        [address] = message.recipients
        text, html = parts(parsed)
        doc = HtmlDocument(html)
        language = doc.lang or "en"
        [view_url] = doc.hrefs(WORDS[language].view)
        titles = listed_titles(text)
        # The HTML part links the same articles, in the same order, as the text part.
        read = WORDS[language].read
        article_urls = set(doc.hrefs(read))
        linked = [label for href, label in doc.links if href in article_urls]
        assert [label for label in linked if not label.startswith(read)] == titles
        found[address] = Received(
            str(parsed["Subject"]), titles, doc.hidden_text, view_url, doc.lang
        )
    return found


def render_count(runtime: Runtime, issue_id: int) -> int:
    """How many shared renders the issue needed: the composer cached in the send context."""
    composer = runtime.send_context.cache[issue_id]
    return composer.render_count


# --- sending ----------------------------------------------------------------------------


def send_the_issue(
    runtime: Runtime, server: SMTPServer, mode: str
) -> tuple[int, str, Issue, dict[str, Received]]:
    """A newsletter routing by ``mode``, the issue's articles and readers; plan and send it.

    Returns the issue's id, its public id, the issue as it stands after sending, and what
    each reader received (checked to be every reader, once).
    """
    now = utcnow()
    newsletter_id = new_newsletter(runtime, mode)
    add_issue_articles(runtime, now, ISSUE)
    seed_readers(runtime)
    issue_id, public_id, _status = plan(runtime, newsletter_id, now)
    issue = send(runtime, issue_id)
    got = received(server)
    assert set(got) == set(OWN_EDITION)
    return issue_id, public_id, issue, got


def test_own_sends_each_reader_their_languages_once_from_one_render_per_edition(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    issue_id, public_id, issue, got = send_the_issue(smtp_runtime, smtp_server, "own")
    for address, (language, titles) in OWN_EDITION.items():
        message = got[address]
        assert message.titles == titles, address
        assert message.lang == language, address
        # Subject and preheader come from the reader's own articles, not the issue's.
        assert message.subject == expected_subject(NAME, titles, language), address
        assert message.preheader.startswith(WORDS[language].preheader(len(titles))), address
    assert got[EN].subject.startswith(f"{NAME}: City library")
    assert got[UK].subject.startswith(f"{NAME}: Київ")
    # "View in your browser" names the reader's languages the issue has.
    base = f"{BASE_URL}/archive/{public_id}"
    assert got[EN].view_url == f"{base}?lang=en"
    assert got[DE].view_url == f"{base}?lang=en"
    assert got[UK].view_url == f"{base}?lang=uk"
    assert got[JA].view_url == f"{base}?lang=ja"
    assert got[EN_UK].view_url == f"{base}?lang=en,uk"
    assert (issue.status, issue.sent_count, issue.skipped_count) == (IssueStatus.SENT, 5, 0)
    # One render per (language, article set): the de reader shares the en reader's.
    editions = {(language, tuple(titles)) for language, titles in OWN_EDITION.values()}
    assert len(editions) == 4
    assert render_count(smtp_runtime, issue_id) == len(editions)


def test_all_sends_every_reader_every_article(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    issue_id, public_id, issue, got = send_the_issue(smtp_runtime, smtp_server, "all")
    for address, (language, _own) in OWN_EDITION.items():
        assert got[address].titles == TITLES, address
        assert got[address].subject == expected_subject(NAME, TITLES, language)
        assert got[address].view_url == f"{BASE_URL}/archive/{public_id}"
    assert (issue.status, issue.sent_count, issue.skipped_count) == (IssueStatus.SENT, 5, 0)
    assert render_count(smtp_runtime, issue_id) == 3  # en (the de reader too), uk, ja


def test_a_reader_whose_edition_would_be_empty_is_skipped_and_recorded(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    now = utcnow()
    newsletter_id = new_newsletter(smtp_runtime, "own")
    add_issue_articles(smtp_runtime, now, [("First English", "en", 10), ("Перша", "uk", 11)])
    add_readers(smtp_runtime, [(EN, "Ada", "en"), (UK, "Оксана", "uk")])
    first, _public_id, _status = plan(smtp_runtime, newsletter_id, now - timedelta(hours=5), "p1")
    assert send(smtp_runtime, first).sent_count == 2
    smtp_server.messages.clear()
    add_issue_articles(smtp_runtime, now, [("Лише українською", "uk", 2)])
    second, _public_id, _status = plan(smtp_runtime, newsletter_id, now, "p2")

    issue = send(smtp_runtime, second)

    # English is published (the first issue carried it), so the en reader does not fall
    # back to the default language: this issue has nothing for them.
    got = received(smtp_server)
    assert set(got) == {UK}
    assert got[UK].titles == ["Лише українською"]
    rows = deliveries(smtp_runtime, second)
    assert rows[EN].status == DeliveryStatus.SKIPPED
    assert rows[EN].last_error == "no article in the reader's languages (en)"
    assert rows[EN].message_id is None
    assert rows[UK].status == DeliveryStatus.SENT
    assert (issue.status, issue.sent_count, issue.skipped_count) == (IssueStatus.SENT, 1, 1)


def test_preview_as_a_reader_shows_their_own_edition(smtp_runtime: Runtime) -> None:
    now = utcnow()
    new_newsletter(smtp_runtime, "own")
    add_issue_articles(smtp_runtime, now, ISSUE)
    seed_readers(smtp_runtime)
    with smtp_runtime.sessions() as session:
        for address, (language, titles) in OWN_EDITION.items():
            shown = previews.preview(
                session, smtp_runtime.send_context, SLUG, now, as_email=address
            )
            assert shown.personal.subject == expected_subject(NAME, titles, language)
            assert listed_titles(shown.personal.text) == titles
            assert shown.articles == len(titles)
            # A test send to someone else keeps the reader's edition.
            sent = previews.preview(
                session, smtp_runtime.send_context, SLUG, now, as_email=address,
                to="editor@example.org",
            )  # fmt: skip
            assert listed_titles(sent.personal.text) == titles


def test_tags_and_link_language_lists_are_normalised_and_checked() -> None:
    assert normalise_tag("en-US") == "en"
    assert normalise_tag("EN_gb") == "en"
    assert normalise_tag(" uk ") == "uk"
    assert normalise_tag("") is None
    assert normalise_tag("1x") is None
    assert parse_link_languages(None) is None
    assert parse_link_languages("") is None
    assert parse_link_languages("uk,en-US") == frozenset({"uk", "en"})
    with pytest.raises(GazetteError, match=r"'uk,<b>' is not a list of language codes"):
        parse_link_languages("uk,<b>")


# --- the web ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    runtime: Runtime
    browser: Browser
    smtp: SMTPServer
    issue_public_id: str


@pytest.fixture
def site(smtp_runtime: Runtime, smtp_server: SMTPServer) -> Iterator[Site]:
    """An own newsletter whose issue went out, served over real HTTP."""
    now = utcnow()
    newsletter_id = new_newsletter(smtp_runtime, "own")
    add_issue_articles(smtp_runtime, now, ISSUE)
    seed_readers(smtp_runtime)
    issue_id, public_id, _status = plan(smtp_runtime, newsletter_id, now)
    assert send(smtp_runtime, issue_id).status == IssueStatus.SENT
    app = create_app(smtp_runtime)
    with serve(app, **server_options(smtp_runtime.settings)) as server:
        yield Site(smtp_runtime, Browser(server), smtp_server, public_id)


def preferences_path(runtime: Runtime, email: str, slug: str = SLUG) -> str:
    with runtime.sessions() as session:
        public_id = session.scalar(select(Subscriber.public_id).where(Subscriber.email == email))
    assert public_id is not None
    return f"/preferences/{runtime.tokens.mint(Purpose.PREFERENCES, public_id, slug)}"


def extra_languages(runtime: Runtime, email: str) -> list[str]:
    with runtime.sessions() as session:
        stored = session.scalar(select(Subscriber.extra_languages).where(Subscriber.email == email))
    assert isinstance(stored, list)
    return stored


def offered_checkboxes(page: Page) -> list[str]:
    """The further languages the page offers, ticked or not (a form lists only ticked ones)."""
    return re.findall(r'<input type="checkbox" name="extra_language" value="([^"]+)"', page.text)


def article_titles(page: Page) -> list[str]:
    doc = HtmlDocument(page.text)
    return [label for href, label in doc.links if href.startswith("https://blog.example.com/")]


def test_the_preferences_page_saves_further_languages_on_post_only(site: Site) -> None:
    path = preferences_path(site.runtime, EN)
    page = site.browser.get(path)
    assert page.status == 200
    form = page.form()
    assert form.input_types.get("extra_language") == "checkbox"
    # Offered: what the newsletter published besides the reader's own language.
    assert offered_checkboxes(page) == ["uk", "ja"]
    assert [v for k, v in form.fields if k == "extra_language"] == []  # none ticked yet

    # GET with the form's fields in the query string saves nothing.
    query = urlencode([*form.fields, ("extra_language", "uk")])
    assert site.browser.get(f"{path}?{query}").status == 200
    assert extra_languages(site.runtime, EN) == []

    saved = site.browser.post(
        path, [*form.fields, ("extra_language", "uk"), ("extra_language", "ja")]
    )
    assert saved.status == 200, saved.text
    assert extra_languages(site.runtime, EN) == ["uk", "ja"]
    ticked = [v for k, v in saved.form().fields if k == "extra_language"]
    assert ticked == ["uk", "ja"]
    with site.runtime.sessions() as session:
        event = session.scalars(
            select(Event).where(Event.kind == "languages").order_by(Event.id.desc())
        ).first()
    assert event is not None
    assert event.detail["extra_languages"] == "uk,ja"

    # A language the newsletter never published: refused, nothing of the form saved.
    refused = site.browser.post(
        path, [*saved.form().filled(language="ja"), ("extra_language", "fr")]
    )
    assert refused.status == 400
    assert "Language 'fr' is not one Test Weekly publishes in." in HtmlDocument(refused.text).text
    assert extra_languages(site.runtime, EN) == ["uk", "ja"]
    with site.runtime.sessions() as session:
        language = session.scalar(select(Subscriber.language).where(Subscriber.email == EN))
    assert language == "en"

    # Unticking every box (the form still says it showed them) clears the choice.
    cleared_fields = [(k, v) for k, v in saved.form().fields if k != "extra_language"]
    assert site.browser.post(path, cleared_fields).status == 200
    assert extra_languages(site.runtime, EN) == []


def test_the_preferences_page_in_japanese_and_without_routing(site: Site) -> None:
    page = site.browser.get(preferences_path(site.runtime, JA))
    assert page.status == 200
    assert "次の言語の記事も受け取る" in page.text
    with transaction(site.runtime.sessions) as session:
        create_newsletter(session, "everything", "Everything")
    add_readers(site.runtime, [(JA, "山田", "ja")], "everything")
    page = site.browser.get(preferences_path(site.runtime, JA, "everything"))
    assert page.status == 200
    assert "extra_language" not in page.form().input_types
    assert "次の言語の記事も受け取る" not in page.text


def test_the_archive_page_shows_the_languages_its_link_names(site: Site) -> None:
    base = f"/archive/{site.issue_public_id}"
    assert article_titles(site.browser.get(base)) == TITLES
    page = site.browser.get(f"{base}?lang=uk")
    assert page.status == 200
    assert article_titles(page) == titles_in("uk")
    assert "Only the articles in your languages are shown." in page.text
    assert article_titles(site.browser.get(f"{base}?lang=uk,en-US")) == titles_in("en", "uk")
    bad = site.browser.get(f"{base}?lang=uk,%3Cscript%3E")
    assert bad.status == 400
    assert "<script>" not in bad.text
    # Each reader's "view in your browser" link opens exactly what their message held.
    for address, message in received(site.smtp).items():
        url = urlsplit(message.view_url)
        page = site.browser.get(f"{url.path}?{url.query}" if url.query else url.path)
        assert article_titles(page) == OWN_EDITION[address][1], address


def test_the_archive_index_keeps_the_languages_its_link_names(site: Site) -> None:
    """/archive?lang= narrows each issue's lead as the issue page does, and the links
    between the index and the issue keep it; without it nothing is narrowed."""
    issue = f"/archive/{site.issue_public_id}"
    index = site.browser.get("/archive?lang=uk", headers={"Accept-Language": "en"})
    assert index.status == 200
    assert "Only the articles in your languages are shown." in index.text
    links = dict(HtmlDocument(index.text).links)
    assert f"{issue}?lang=uk" in links
    # The lead is the issue's first Ukrainian title though the page is in English, and
    # the count is of the Ukrainian (and language-less) articles only.
    assert titles_in("uk")[0] in index.text
    assert f"and {len(titles_in('uk')) - 1} more" in index.text
    assert not any(title in index.text for title in TITLES if title not in titles_in("uk"))
    # The issue page's "Archive" link leads back to the same narrowed index.
    page = site.browser.get(f"{issue}?lang=uk")
    assert ("/archive?lang=uk", "Archive") in HtmlDocument(page.text).links
    # Without ?lang: every article counts and no link carries a language.
    plain = site.browser.get("/archive", headers={"Accept-Language": "en"})
    assert "Only the articles in your languages are shown." not in plain.text
    assert f"and {len(TITLES) - 1} more" in plain.text
    assert issue in dict(HtmlDocument(plain.text).links)
    assert not any("lang=" in href for href, _ in HtmlDocument(plain.text).links)
    assert ("/archive", "Archive") in HtmlDocument(site.browser.get(issue).text).links


def test_a_bad_language_list_on_the_archive_index_is_one_sentence(site: Site) -> None:
    bad = site.browser.get("/archive?lang=uk,%3Cscript%3E")
    assert bad.status == 400
    assert "The language list 'uk,<script>' is not a list of language codes." in unescape(bad.text)
    assert "<script>" not in bad.text


def test_the_archive_marks_each_article_s_language(site: Site) -> None:
    """Each article says its language (lang=), so a browser draws Japanese with Japanese
    glyphs and a screen reader picks the right voice; the notice names what is shown; the
    index leads with a title in the visitor's language rather than the first article."""
    page = site.browser.get(f"/archive/{site.issue_public_id}?lang=uk,ja")
    elements = parse_html(page.text).elements
    marked = [attributes.get("lang") for tag, attributes in elements if tag == "article"]
    assert marked == ["uk", "ja", None, "uk"]  # the issue's uk, ja and language-less ones
    assert "(日本語, Українська)" in "".join(parse_html(page.text).text)
    leads = {}
    for language in ("en", "uk", "ja"):
        index = site.browser.get("/archive", headers={"Accept-Language": language})
        [lead] = [a for tag, a in parse_html(index.text).elements if tag == "small" and "lang" in a]
        leads[language] = lead["lang"]
        assert titles_in(language)[0] in index.text
    assert leads == {"en": "en", "uk": "uk", "ja": "ja"}


def test_the_subscribe_form_offers_the_languages_the_newsletter_publishes(site: Site) -> None:
    now = utcnow()
    add_issue_articles(site.runtime, now, [("Neue Bibliothek", "de", 1)])
    with transaction(site.runtime.sessions) as session:
        newsletter = session.scalars(select(Newsletter).where(Newsletter.slug == SLUG)).one()
        assert published_languages(session, newsletter, now) == {"en", "uk", "ja", "de"}
    form_page = site.browser.get(f"/subscribe?newsletter={SLUG}")
    assert form_page.status == 200
    assert language_options(form_page) == ["en", "uk", "ja", "de"]
    assert "Deutsch" in form_page.text

    sent = site.browser.submit(
        form_page.form("/subscribe"), email="leser@example.com", language="de"
    )
    assert sent.status == 200, sent.text
    with site.runtime.sessions() as session:
        language = session.scalar(
            select(Subscriber.language).where(Subscriber.email == "leser@example.com")
        )
    assert language == "de"


def language_options(page: Page) -> list[str]:
    """The values of the page's language <select>, in order."""
    select_html = page.text.split('name="language"', 1)[1].split("</select>", 1)[0]
    return re.findall(r'<option value="([^"]+)"', select_html)


def test_a_newsletter_that_published_nothing_offers_the_site_languages(
    smtp_runtime: Runtime,
) -> None:
    new_newsletter(smtp_runtime, "own", slug="fresh", name="Fresh")
    with serve(create_app(smtp_runtime), **server_options(smtp_runtime.settings)) as server:
        page = Browser(server).get("/subscribe?newsletter=fresh")
    assert page.status == 200
    assert language_options(page) == ["en", "uk", "ja"]


def test_further_languages_are_checked_against_what_the_newsletter_publishes(
    smtp_runtime: Runtime,
) -> None:
    now = utcnow()
    new_newsletter(smtp_runtime, "own")
    add_issue_articles(smtp_runtime, now, ISSUE)
    seeded = add_readers(smtp_runtime, [(EN, "Ada", "en")])
    with transaction(smtp_runtime.sessions) as session:
        save_extra_languages(
            session, seeded[EN].public_id, SLUG, Origin("web"), ["uk-UA", "en", "UK"], now
        )
    assert extra_languages(smtp_runtime, EN) == ["uk"]  # own language and repeats dropped
    refused = pytest.raises(InvalidChoiceError, match=r"Language 'de' is not one Test Weekly")
    with refused, transaction(smtp_runtime.sessions) as session:
        save_extra_languages(session, seeded[EN].public_id, SLUG, Origin("web"), ["de"], now)
    assert extra_languages(smtp_runtime, EN) == ["uk"]


# --- in a browser -------------------------------------------------------------------------


def test_an_own_readers_digest_and_edition_page_in_chromium(
    site: Site, chromium: WebDriver, tmp_path: Path, database_url: str
) -> None:
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    shots = artifacts_dir("languages")
    [data] = [m.data for m in site.smtp.messages if m.recipients == [EN_UK]]
    _text, html = parts(parse(data))
    digest = tmp_path / "digest.html"
    digest.write_text(html, encoding="utf-8")
    view_url = urlsplit(received(site.smtp)[EN_UK].view_url)
    server = site.browser.server.url
    for width in (390, 1200):
        chromium.set_window_size(width, 900)
        chromium.get(digest.as_uri())
        assert js(chromium, "return window.innerWidth") == width
        shown = js(chromium, "return document.body.innerText")
        for title in titles_in("en", "uk"):
            assert title in shown
        assert "東京の夜行列車が復活へ" not in shown
        assert js(chromium, "return document.documentElement.scrollWidth") <= width
        shot = shots / f"{backend}-digest-en-uk-{width}.png"
        assert chromium.save_screenshot(str(shot))
        assert shot.read_bytes()[:4] == b"\x89PNG"

        chromium.get(f"{server}{view_url.path}?{view_url.query}")
        shown = js(chromium, "return document.body.innerText")
        assert "東京の夜行列車が復活へ" not in shown
        for title in titles_in("en", "uk"):
            assert title in shown
        assert js(chromium, "return document.documentElement.scrollWidth") <= width
        shot = shots / f"{backend}-archive-en-uk-{width}.png"
        assert chromium.save_screenshot(str(shot))
        assert shot.read_bytes()[:4] == b"\x89PNG"

        chromium.get(f"{server}{preferences_path(site.runtime, EN_UK)}")
        assert js(chromium, "return document.documentElement.scrollWidth") <= width
        shot = shots / f"{backend}-preferences-en-uk-{width}.png"
        assert chromium.save_screenshot(str(shot))
        assert shot.read_bytes()[:4] == b"\x89PNG"
