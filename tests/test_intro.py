"""The editor's note: Markdown above the articles, sanitised, per language, frozen per issue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gazette.digests.intro import render_note
from gazette.digests.previews import preview
from gazette.newsletters.brand import PresentationChanges, apply_presentation
from gazette.newsletters.service import create_newsletter, newsletter_by_slug
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Issue, utcnow
from tests.support import digests
from tests.support.cli import NewsletterCli
from tests.support.env import installed_runtime, make_env
from tests.support.messages import parse, parts


def test_markdown_is_rendered_and_sanitised() -> None:
    note = render_note(
        "**This week** we cover [the grid](https://example.org/grid).\n\n"
        "<script>alert(1)</script> [bad](javascript:alert(1)) ![img](https://t.example/p.gif)"
    )
    assert "<strong>This week</strong>" in note.html
    assert '<a href="https://example.org/grid"' in note.html
    # Raw HTML is text, never markup; a javascript: link stays words, never a link.
    assert "<script>" not in note.html
    assert "&lt;script&gt;" in note.html
    assert 'href="javascript' not in note.html
    assert note.html.count("<a ") == 1
    assert note.text.startswith("This week we cover the grid <https://example.org/grid>.")
    assert "<script>alert(1)</script>" in note.text


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    with installed_runtime(tmp_path, database_url) as built:
        with transaction(built.sessions) as session:
            create_newsletter(session, "weekly", "The Weekly")
        digests.add_articles(
            built, [digests.ArticleSpec("Grid storage", "https://example.org/grid", 2)]
        )
        yield built


def set_note(runtime: Runtime, text: str, language: str = "") -> None:
    with transaction(runtime.sessions) as session:
        apply_presentation(
            newsletter_by_slug(session, "weekly"),
            PresentationChanges(intro=text, intro_language=language),
        )


def test_a_note_per_language_only_where_given(runtime: Runtime) -> None:
    set_note(runtime, "A note for *everyone*.")
    set_note(runtime, "Нотатка для *вас*.", "uk")
    digests.add_readers(
        runtime,
        [("en@example.org", "", "en"), ("uk@example.org", "", "uk"), ("ja@example.org", "", "ja")],
        slug="weekly",
    )
    seen = {}
    for language in ("en", "uk", "ja"):
        with runtime.sessions() as session:
            shown = preview(
                session,
                runtime.send_context,
                "weekly",
                utcnow(),
                as_email=f"{language}@example.org",
            )
        seen[language] = shown.personal
    assert "A note for <em>everyone</em>." in seen["en"].html
    assert "A note for everyone." in seen["en"].text
    assert "Нотатка для <em>вас</em>." in seen["uk"].html
    assert "Нотатка для вас." in seen["uk"].text
    assert "A note for" not in seen["uk"].text
    # Japanese was given no note of its own: the note for every language.
    assert "A note for everyone." in seen["ja"].text
    # Above the articles.
    assert seen["en"].text.index("A note for") < seen["en"].text.index("Grid storage")
    # Removing it: an empty note.
    set_note(runtime, "", "uk")
    with runtime.sessions() as session:
        assert newsletter_by_slug(session, "weekly").intro == {"": "A note for *everyone*."}


def test_the_note_is_frozen_when_the_issue_is_planned(runtime: Runtime) -> None:
    set_note(runtime, "Planned with this note.")
    digests.add_readers(runtime, [("en@example.org", "", "en")], slug="weekly")
    with runtime.sessions() as session:
        newsletter_id = newsletter_by_slug(session, "weekly").id
    issue_id, _public, _status = digests.plan(runtime, newsletter_id)
    set_note(runtime, "Changed after planning.")
    digests.send(runtime, issue_id)
    (message,) = digests.maildir_messages(runtime)
    text, html = parts(parse(message))
    assert "Planned with this note." in text
    assert "Planned with this note." in html
    assert "Changed after planning." not in text


def test_no_note_no_box(runtime: Runtime) -> None:
    with runtime.sessions() as session:
        shown = preview(session, runtime.send_context, "weekly", utcnow())
    assert 'class="note"' not in shown.personal.html


# --- the CLI --------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> NewsletterCli:
    runner = NewsletterCli(tmp_path, make_env(tmp_path, database_url), database_url)
    runner.ok("db", "upgrade")
    runner.ok("newsletters", "add", "weekly", "--name", "The Weekly")
    runner.ok("subscribers", "add", "uk@example.org", "--language", "uk", "--confirmed")
    runner.ok("articles", "add", "--title", "Grid storage", "--url", "https://example.org/grid")
    return runner


def test_digest_send_intro_file_and_standing_note(cli: NewsletterCli, tmp_path: Path) -> None:
    standing = tmp_path / "standing.md"
    standing.write_text("Щотижнева *нотатка*.", encoding="utf-8")
    cli.ok("newsletters", "edit", "weekly", "--intro-file", str(standing), "--language", "uk")
    assert cli.show()["intro"] == {"uk": "Щотижнева *нотатка*."}
    note = tmp_path / "NOTE.md"
    note.write_text("A **special** issue: the grid.\n", encoding="utf-8")
    cli.ok("digest", "send", "weekly", "--now", "--intro-file", str(note))
    (message,) = cli.messages()
    text, html = parts(message)
    # This issue's note replaces the standing one.
    assert "A <strong>special</strong> issue: the grid." in html
    assert "A special issue: the grid." in text
    assert "Щотижнева" not in text
    with cli.session() as session:
        issue = session.query(Issue).one()
        assert issue.intro == {"": "A **special** issue: the grid."}


def test_intro_errors_exit_2_and_write_nothing(cli: NewsletterCli, tmp_path: Path) -> None:
    before = cli.show()
    bad = tmp_path / "bad.md"
    bad.write_bytes(b"\xff\xfe not utf-8 \x80")
    for args, words in [
        (("--intro-file", str(tmp_path / "missing.md")), "missing.md' cannot be read"),
        (("--intro-file", str(bad)), "bad.md' is not UTF-8 text."),
    ]:
        result = cli("newsletters", "edit", "weekly", "--publisher", "X", *args)
        assert result.returncode == 2, result
        assert words in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    good = tmp_path / "good.md"
    good.write_text("Fine.", encoding="utf-8")
    result = cli("newsletters", "edit", "weekly", "--intro-file", str(good), "--language", "de")
    assert result.returncode == 2
    assert "a note can be given in en, uk, ja" in result.stderr
    assert cli.show() == before
    # An issue already planned keeps its note: exit 1, nothing changed.
    cli.ok("digest", "send", "weekly")
    again = cli("digest", "send", "weekly", "--intro-file", str(good))
    assert again.returncode == 1
    assert "was already planned, so its note cannot change" in again.stderr
