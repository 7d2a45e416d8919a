"""Topic curation: `gazette topics`, the offered/hidden rule, labels on the preferences page.

The CLI runs through click's runner in this process (the real command tree, its error
handling and exit codes) on each database backend; feeds come from a real HTTP server
on loopback; the preferences page is served by waitress and read over HTTP.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from gazette.cli import main
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime, current_runtime, use_runtime
from gazette.store.db import transaction
from gazette.store.models import (
    Article,
    Feed,
    Newsletter,
    Subscriber,
    Subscription,
    Topic,
    TopicAlias,
)
from gazette.subscribers.preferences import update_preferences
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from gazette.tokens import Purpose
from gazette.web import create_app, server_options
from tests.support.env import make_env
from tests.support.feedserver import FeedServer, rss, rss_item
from tests.support.http import Browser, LiveServer, serve

SLUG = "weekly"
READERS = {"en": "ada@example.org", "uk": "oksana@example.org", "ja": "taro@example.org"}
NO_TOPIC = "There is no topic 'nope'; `gazette topics list --all` shows the slugs."


@pytest.fixture
def env(runtime: Runtime, tmp_path: Path, database_url: str) -> dict[str, str]:
    """A migrated database with one newsletter and a reader per language."""
    with transaction(runtime.sessions) as session:
        create_newsletter(session, SLUG, "Weekly")
        for language, email in READERS.items():
            subscribe(session, email, SLUG, Origin("cli"), language=language, confirmed=True)
    return make_env(tmp_path, database_url)


@pytest.fixture
def site(runtime: Runtime, env: dict[str, str]) -> Iterator[LiveServer]:
    """The web app on the test database, served by waitress on loopback."""
    with serve(create_app(runtime), **server_options(runtime.settings)) as server:
        yield server


class Gazette:
    """The `gazette` command tree, run by click's runner against the test database."""

    def __init__(self, runtime: Runtime, env: dict[str, str]) -> None:
        self.runtime, self.env = runtime, env

    def __call__(self, *args: str) -> Result:
        """Run one command; dispose of the runtime it built and put the test's back."""
        try:
            return CliRunner().invoke(main, list(args), env=self.env)
        finally:
            built = current_runtime()
            if built is not self.runtime:
                built.engine.dispose()
            use_runtime(self.runtime)

    def ok(self, *args: str) -> str:
        """Run a command that must succeed; return its stdout."""
        result = self(*args)
        assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}"
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result.stdout

    def refused(self, *args: str) -> str:
        """Run a command that must fail with one sentence on stderr; return the sentence."""
        result = self(*args)
        assert result.exit_code != 0, f"{args} succeeded: {result.stdout}"
        assert isinstance(result.exception, SystemExit), result.exception
        assert result.stdout == "", result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("gazette: "), lines[0]
        return lines[0].removeprefix("gazette: ")

    def topics(self, *flags: str) -> dict[str, dict[str, Any]]:
        """`topics list --json` as {slug: row}."""
        rows = json.loads(self.ok("topics", "list", "--json", *flags))["topics"]
        return {row["slug"]: row for row in rows}


@pytest.fixture
def gazette(runtime: Runtime, env: dict[str, str]) -> Gazette:
    return Gazette(runtime, env)


def offered_on_page(runtime: Runtime, server: LiveServer, email: str) -> dict[str, str]:
    """The topic checkboxes the reader's preferences page shows: {slug: label}."""
    with runtime.sessions() as session:
        public_id = session.scalar(select(Subscriber.public_id).where(Subscriber.email == email))
    assert public_id is not None
    path = f"/preferences/{runtime.tokens.mint(Purpose.PREFERENCES, public_id, SLUG)}"
    page = Browser(server).get(path)
    assert page.status == 200, page.text
    found = re.findall(
        r'<input type="checkbox" name="topic" value="([^"]*)"[^>]*>\s*([^<]*)</label>', page.text
    )
    return {html.unescape(slug): html.unescape(label).strip() for slug, label in found}


def newsletter_topics(runtime: Runtime) -> set[str]:
    """The slugs of the newsletter's topic filter, from the database."""
    with runtime.sessions() as session:
        newsletter = session.scalars(select(Newsletter).where(Newsletter.slug == SLUG)).one()
        return {t.slug for t in newsletter.topics}


# --- who is offered what -------------------------------------------------------------


def test_feed_categories_start_unoffered_and_the_operators_topics_offered(
    gazette: Gazette, runtime: Runtime, feeds: FeedServer, site: LiveServer
) -> None:
    url = feeds.static(
        "/feed.xml",
        rss(
            rss_item(1, "Grid storage", categories=("Featured", "Energy")),
            rss_item(2, "Kyiv by night", categories=("Україна", "Long read")),
        ),
    )
    gazette.ok("feeds", "add", url, "--topic", "Research")
    gazette.ok("feeds", "poll", "--all")
    gazette.ok("articles", "add", "--title", "Night trains", "--url",
               "https://example.org/night-trains", "--topic", "Transport")  # fmt: skip

    listed = gazette.topics()
    assert {slug: row["offered"] for slug, row in listed.items()} == {
        "energy": False, "featured": False, "long-read": False, "україна": False,
        "research": True, "transport": True,
    }  # fmt: skip
    assert listed["research"]["feeds"] == 1
    assert listed["research"]["articles"] == 2  # the feed's own topic, on both items
    assert listed["energy"]["articles"] == 1
    for email in READERS.values():
        assert offered_on_page(runtime, site, email) == {
            "research": "Research",
            "transport": "Transport",
        }

    # An unoffered category still filters: a newsletter may be limited to it, and then
    # its readers are offered nothing to choose from (the fieldset is not shown).
    gazette.ok("newsletters", "edit", SLUG, "--topic", "Energy")
    assert newsletter_topics(runtime) == {"energy"}
    assert offered_on_page(runtime, site, READERS["en"]) == {}

    assert gazette.ok("topics", "offer", "energy") == "Topic energy is offered to readers.\n"
    assert offered_on_page(runtime, site, READERS["en"]) == {"energy": "Energy"}

    # Renaming the feed's own topic keeps it the feed's: the next item lands on it and
    # no topic of the new name appears.
    gazette.ok("topics", "rename", "research", "--label", "Policy research")
    feeds.static("/feed.xml", rss(rss_item(3, "Heat pumps", categories=("Energy",))))
    gazette.ok("feeds", "poll", "--all")
    after = gazette.topics()
    assert set(after) == set(listed)
    assert (after["research"]["name"], after["research"]["articles"]) == ("Policy research", 3)


def test_labels_follow_the_readers_language_and_hidden_topics_are_not_offered(
    gazette: Gazette, runtime: Runtime, site: LiveServer
) -> None:
    for name in ("Energy", "Cities", "Featured"):
        gazette.ok("articles", "add", "--title", f"On {name}", "--url",
                   f"https://example.org/{name.lower()}", "--topic", name)  # fmt: skip
    assert gazette.ok("topics", "rename", "Energy", "--label", "Energy and grids") == (
        "Topic energy is now called 'Energy and grids'.\n"
    )
    labelled = gazette.ok("topics", "rename", "energy", "--language", "uk", "--label", "Енергетика")
    assert labelled == "Topic energy is labelled 'Енергетика' for readers in uk.\n"
    gazette.ok("topics", "rename", "energy", "--language", "ja-JP", "--label", "エネルギー")
    gazette.ok("topics", "rename", "cities", "--language", "uk", "--label", "Міста")
    assert gazette.ok("topics", "hide", "featured") == (
        "Topic featured is hidden (readers do not see it; `gazette topics show` undoes that).\n"
    )

    assert offered_on_page(runtime, site, READERS["en"]) == {
        "cities": "Cities", "energy": "Energy and grids",
    }  # fmt: skip
    assert offered_on_page(runtime, site, READERS["uk"]) == {
        "energy": "Енергетика", "cities": "Міста",
    }  # fmt: skip
    # No Japanese label for cities: the name is the fallback.
    assert offered_on_page(runtime, site, READERS["ja"]) == {
        "cities": "Cities", "energy": "エネルギー",
    }  # fmt: skip
    # Labels sort in the reader's language: Енергетика before Міста.
    assert list(offered_on_page(runtime, site, READERS["uk"])) == ["energy", "cities"]

    assert set(gazette.topics()) == {"cities", "energy"}
    everything = gazette.topics("--all")
    assert everything["featured"]["hidden"] is True
    assert everything["energy"]["labels"] == {"ja": "エネルギー", "uk": "Енергетика"}
    assert everything["energy"]["name"] == "Energy and grids"

    # An empty label removes that language's label; unoffer takes a topic off the page.
    gazette.ok("topics", "rename", "energy", "--language", "uk", "--label", "")
    gazette.ok("topics", "unoffer", "cities")
    assert offered_on_page(runtime, site, READERS["uk"]) == {"energy": "Energy and grids"}
    gazette.ok("topics", "show", "featured")
    gazette.ok("topics", "offer", "cities")
    assert set(offered_on_page(runtime, site, READERS["en"])) == {"cities", "energy", "featured"}


def test_a_reader_cannot_choose_a_hidden_topic_and_saving_keeps_only_what_was_shown(
    gazette: Gazette, runtime: Runtime, site: LiveServer
) -> None:
    for name in ("Energy", "Featured"):
        gazette.ok("articles", "add", "--title", f"On {name}", "--url",
                   f"https://example.org/{name.lower()}", "--topic", name)  # fmt: skip
    email = READERS["en"]
    public_id = choose(runtime, email, "energy", "featured")
    gazette.ok("topics", "hide", "featured")
    path = f"/preferences/{runtime.tokens.mint(Purpose.PREFERENCES, public_id, SLUG)}"
    browser = Browser(site)
    form = browser.get(path).form(path)
    assert [v for k, v in form.fields if k == "topic"] == ["energy"]

    # A form that names the hidden topic was not made by this page: refused, nothing saved.
    refused = browser.post(path, form.filled(topic="featured", action="save"))
    assert refused.status == 400
    assert "Topic &#39;featured&#39; is not offered by Weekly." in refused.text
    assert chosen(runtime, email) == {"energy", "featured"}  # hidden, yet still filtering

    saved = browser.post(path, form.filled(action="save"))
    assert saved.status == 200, saved.text
    assert chosen(runtime, email) == {"energy"}


def choose(runtime: Runtime, email: str, *slugs: str) -> str:
    """Save the reader's topic choice as the preferences form does; return their public id."""
    with transaction(runtime.sessions) as session:
        public_id = session.scalar(select(Subscriber.public_id).where(Subscriber.email == email))
        assert public_id is not None
        update_preferences(session, public_id, SLUG, Origin("cli"), language="en",
                           topics=list(slugs), frequency=None)  # fmt: skip
        return public_id


def chosen(runtime: Runtime, email: str) -> set[str]:
    """The topics the reader chose on SLUG, from the database."""
    with runtime.sessions() as session:
        subscription = session.scalars(
            select(Subscription)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscriber.email == email)
        ).one()
        return {t.slug for t in subscription.topics}


# --- merge ----------------------------------------------------------------------------


def test_merge_moves_articles_feeds_newsletters_and_choices_then_keeps_an_alias(
    gazette: Gazette, runtime: Runtime, feeds: FeedServer
) -> None:
    url = feeds.static(
        "/uk.xml",
        rss(
            rss_item(1, "Київ уночі", categories=("Україна",)),
            rss_item(2, "Зерновий коридор", categories=("Україна", "Ukraine")),
        ),
    )
    gazette.ok("feeds", "add", url)
    gazette.ok("feeds", "add", feeds.static("/other.xml", rss()), "--topic", "Україна")
    gazette.ok("feeds", "poll", "--all")
    gazette.ok("articles", "add", "--title", "Grain", "--url", "https://example.org/grain",
               "--topic", "Ukraine")  # fmt: skip
    gazette.ok("topics", "offer", "україна")
    gazette.ok("topics", "offer", "ukraine")
    gazette.ok("topics", "rename", "україна", "--language", "uk", "--label", "Україна")
    gazette.ok("newsletters", "edit", SLUG, "--topic", "Україна", "--topic", "Ukraine")
    choose(runtime, READERS["uk"], "україна")
    choose(runtime, READERS["en"], "україна", "ukraine")

    out = gazette.ok("topics", "merge", "україна", "ukraine")

    assert out == (
        "Merged topic україна into ukraine: moved 2 article(s), 1 feed(s), 1 newsletter "
        "filter(s) and 2 reader choice(s); україна is deleted.\n"
    )
    with runtime.sessions() as session:
        assert list(session.scalars(select(Topic.slug))) == ["ukraine"]
        ukraine = session.scalars(select(Topic)).one()
        assert ukraine.labels == {"uk": "Україна"}  # the source's labels it lacked
        assert ukraine.offered is True
        assert [(a.slug, a.topic_id) for a in session.scalars(select(TopicAlias))] == [
            ("україна", ukraine.id)
        ]
        # Every article once on the kept topic, the one that had both not doubled.
        articles = {a.title: [t.slug for t in a.topics] for a in session.scalars(select(Article))}
        assert articles == {"Київ уночі": ["ukraine"], "Зерновий коридор": ["ukraine"],
                            "Grain": ["ukraine"]}  # fmt: skip
        assert [f.topic_id for f in session.scalars(select(Feed).order_by(Feed.id))] == [
            None, ukraine.id,
        ]  # fmt: skip
    assert newsletter_topics(runtime) == {"ukraine"}
    assert chosen(runtime, READERS["uk"]) == {"ukraine"}
    assert chosen(runtime, READERS["en"]) == {"ukraine"}

    # The feed still says "Україна": its next item lands on the kept topic, and no
    # topic of the old name comes back.
    feeds.static("/uk.xml", rss(rss_item(3, "Одеса", categories=("Україна",))))
    gazette.ok("feeds", "poll", "--all")
    with runtime.sessions() as session:
        odesa = session.scalars(select(Article).where(Article.title == "Одеса")).one()
        assert [t.slug for t in odesa.topics] == ["ukraine"]
        assert list(session.scalars(select(Topic.slug))) == ["ukraine"]
    assert gazette.topics()["ukraine"]["aliases"] == ["україна"]
    # The old slug still names the topic for the operator.
    assert gazette.ok("topics", "hide", "україна").startswith("Topic ukraine is hidden")


# --- refusals -------------------------------------------------------------------------


def test_bad_slugs_and_languages_are_one_sentence_each_and_change_nothing(
    gazette: Gazette,
) -> None:
    gazette.ok("articles", "add", "--title", "Grid", "--url", "https://example.org/grid",
               "--topic", "Energy")  # fmt: skip
    before = gazette.topics("--all")

    for command in (("offer",), ("unoffer",), ("hide",), ("show",)):
        assert gazette.refused("topics", *command, "nope") == NO_TOPIC
    assert gazette.refused("topics", "rename", "nope", "--label", "X") == NO_TOPIC
    assert gazette.refused("topics", "merge", "nope", "energy") == NO_TOPIC
    assert gazette.refused("topics", "merge", "energy", "nope") == NO_TOPIC
    assert gazette.refused("topics", "merge", "energy", "Energy") == (
        "Topic 'energy' and 'Energy' are the same topic."
    )
    assert gazette.refused("topics", "rename", "energy", "--language", "fr", "--label", "X") == (
        "Language 'fr' is not one readers can choose; use one of en, uk, ja."
    )
    assert gazette.refused("topics", "rename", "energy", "--label", "  ") == (
        "The name of topic 'energy' cannot be empty."
    )
    assert gazette.topics("--all") == before
