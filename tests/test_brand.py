"""The publisher's brand: installation defaults, per-newsletter overrides, the CLI that
sets them, and the header and footer of every digest and confirmation, in en, uk, ja.

The CLI runs as a real subprocess (`python -m gazette`) on each database backend;
messages are read from the installation's Maildir outbox.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gazette.config import load_settings
from gazette.digests.previews import preview
from gazette.errors import ConfigError
from gazette.rendering import LANGUAGES
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import utcnow
from tests.support.cli import NewsletterCli
from tests.support.digests import ArticleSpec, add_articles, add_readers
from tests.support.env import installed_runtime, make_env
from tests.support.messages import parts

ADDRESS = "Kyiv Policy Lab, vul. Khreshchatyk 1, Kyiv 01001, Ukraine"


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> NewsletterCli:
    runner = NewsletterCli(tmp_path, make_env(tmp_path, database_url), database_url)
    runner.ok("db", "upgrade")
    runner.ok("newsletters", "add", "weekly", "--name", "The Weekly")
    return runner


# --- settings -------------------------------------------------------------------------


def test_installation_brand_is_read_and_checked(tmp_path: Path) -> None:
    env = make_env(
        tmp_path, f"sqlite:///{tmp_path / 'x.db'}", publisher="  Kyiv   Policy Lab ",
        website="https://example.org", accent_colour="#0F766E",
        postal_address=r"vul. Khreshchatyk 1\nKyiv 01001", privacy_url="https://example.org/p",
        logo_url="https://example.org/logo.png",
    )  # fmt: skip
    brand = load_settings(env, cwd=tmp_path).brand
    assert brand.publisher == "Kyiv Policy Lab"
    assert brand.accent == "#0f766e"
    assert brand.address_lines == ["vul. Khreshchatyk 1", "Kyiv 01001"]
    assert (brand.website, brand.logo_url) == (
        "https://example.org",
        "https://example.org/logo.png",
    )


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("ACCENT_COLOUR", "teal", "is not a colour written as #rrggbb"),
        ("ACCENT_COLOUR", "#12345", "is not a colour written as #rrggbb"),
        ("WEBSITE", "javascript:alert(1)", "is not an http(s) URL"),
        ("LOGO_URL", "/logo.png", "is not an http(s) URL"),
        ("PRIVACY_URL", "https://exa mple.org/p", "is not an http(s) URL"),
    ],
)
def test_a_bad_brand_setting_is_named(tmp_path: Path, name: str, value: str, words: str) -> None:
    env = make_env(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", **{name.lower(): value})
    with pytest.raises(ConfigError) as caught:
        load_settings(env, cwd=tmp_path)
    assert str(caught.value) == f"GAZETTE_{name}={value!r} {words}."


# --- the CLI --------------------------------------------------------------------------


def test_edit_as_written_puts_the_address_in_both_parts_of_every_digest(cli: NewsletterCli) -> None:
    # The command exactly as the issue writes it.
    cli.ok(
        "newsletters", "edit", "weekly", "--publisher", "Kyiv Policy Lab",
        "--website", "https://example.org", "--postal-address", "…",
    )  # fmt: skip
    shown = cli.show()
    assert (shown["publisher"], shown["website"], shown["postal_address"]) == (
        "Kyiv Policy Lab", "https://example.org", "…",
    )  # fmt: skip
    cli.ok("newsletters", "edit", "weekly", "--postal-address", ADDRESS)
    for n, language in enumerate(LANGUAGES):
        cli.ok(
            "subscribers", "add", f"reader{n}@example.org", "--language", language, "--confirmed"
        )
    cli.ok("articles", "add", "--title", "Grid storage", "--url", "https://example.org/grid")
    cli.ok("digest", "send", "weekly", "--now")
    messages = cli.messages()
    assert len(messages) == len(LANGUAGES)
    for message in messages:
        text, html = parts(message)
        assert ADDRESS in text
        assert "Kyiv Policy Lab · https://example.org" in text
        assert ADDRESS in html
        assert '<a href="https://example.org"' in html
        assert "Kyiv Policy Lab" in html


def test_bad_values_exit_2_naming_them_and_change_nothing(cli: NewsletterCli) -> None:
    before = cli.show()
    for args, words in [
        (("--accent-colour", "blue"), "--accent-colour='blue' is not a colour written as #rrggbb."),
        (("--website", "example.org"), "--website='example.org' is not an http(s) URL."),
        (("--privacy-url", "javascript:x"), "--privacy-url='javascript:x' is not an http(s) URL."),
        (("--utm-campaign", "weekly-{week}"), "has a placeholder other than {date}"),
    ]:
        # The good --publisher given alongside must not be written either.
        result = cli("newsletters", "edit", "weekly", "--publisher", "Changed", *args)
        assert result.returncode == 2, result
        assert words in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert cli.show() == before


def test_show_gives_the_installation_default_until_overridden(cli: NewsletterCli) -> None:
    cli.env["GAZETTE_PUBLISHER"] = "Installation Press"
    cli.env["GAZETTE_ACCENT_COLOUR"] = "#0f766e"
    assert (cli.show()["publisher"], cli.show()["accent_colour"]) == (
        "Installation Press", "#0f766e",
    )  # fmt: skip
    cli.ok(
        "newsletters", "edit", "weekly", "--publisher", "Own Press", "--accent-colour", "#B91C1C"
    )
    shown = cli.show()
    assert (shown["publisher"], shown["accent_colour"]) == ("Own Press", "#b91c1c")
    # An empty value returns to the installation's.
    cli.ok("newsletters", "edit", "weekly", "--publisher", "")
    assert cli.show()["publisher"] == "Installation Press"


def test_add_takes_the_brand_options(cli: NewsletterCli) -> None:
    cli.ok(
        "newsletters", "add", "brief", "--name", "The Brief", "--publisher", "Lab",
        "--logo", "https://example.org/logo.png", "--no-welcome",
    )  # fmt: skip
    shown = cli.show("brief")
    assert (shown["publisher"], shown["logo_url"], shown["welcome"]) == (
        "Lab", "https://example.org/logo.png", False,
    )  # fmt: skip


# --- what readers see -----------------------------------------------------------------


@pytest.fixture
def branded(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    with installed_runtime(
        tmp_path, database_url, publisher="Kyiv Policy Lab", website="https://example.org",
        logo_url="https://example.org/logo.png", accent_colour="#0f766e",
        postal_address=ADDRESS, privacy_url="https://example.org/privacy",
    ) as runtime:  # fmt: skip
        from gazette.newsletters.service import create_newsletter

        with transaction(runtime.sessions) as session:
            create_newsletter(session, "weekly", "The Weekly")
        add_articles(runtime, [ArticleSpec("Grid storage", "https://example.org/grid", 2)])
        yield runtime


@pytest.mark.parametrize("language", LANGUAGES)
def test_digest_header_and_footer(branded: Runtime, language: str) -> None:
    add_readers(branded, [("r@example.org", "Oksana", language)], slug="weekly")
    with branded.sessions() as session:
        shown = preview(session, branded.send_context, "weekly", utcnow(), as_email="r@example.org")
    text, html = shown.personal.text, shown.personal.html
    # Header: the logo, its alt the publisher, linked to the website; the accent colour.
    assert (
        '<a href="https://example.org" style="color:#0f766e;text-decoration:none;">'
        '<img src="https://example.org/logo.png" alt="Kyiv Policy Lab"'
    ) in html
    assert re.search(r"border-top: ?4px solid #0f766e", html)
    # The article's title and its "Read the article" link take the accent too.
    read = branded.renderer.translate(language, "Read the article")
    assert '<a href="https://example.org/grid" style="color:#0f766e;text-decoration:none;">' in html
    assert f'<a href="https://example.org/grid" style="color:#0f766e;">{read}' in html
    assert "#1d4ed8" not in html  # the theme's blue is nowhere left
    # Footer: publisher, address, privacy policy and why, in both parts.
    privacy = branded.renderer.translate(language, "Privacy policy")
    why = branded.renderer.translate(
        language, "You receive %(name)s because you subscribed to it."
    ) % {"name": "The Weekly"}
    for part in (text, html):
        assert ADDRESS in part
        assert "Kyiv Policy Lab" in part
        assert privacy in part
        assert why in part
    assert "Kyiv Policy Lab · https://example.org\n" + ADDRESS in text


def test_without_a_brand_the_digest_names_nobody(tmp_path: Path, database_url: str) -> None:
    with installed_runtime(tmp_path, database_url) as runtime:
        from gazette.newsletters.service import create_newsletter

        with transaction(runtime.sessions) as session:
            create_newsletter(session, "weekly", "The Weekly")
        add_articles(runtime, [ArticleSpec("Grid storage", "https://example.org/grid", 2)])
        with runtime.sessions() as session:
            shown = preview(session, runtime.send_context, "weekly", utcnow())
    assert "<img" not in shown.personal.html
    assert "Privacy policy" not in shown.personal.text
    # The theme's blue stays the accent.
    assert re.search(r"border-top: ?4px solid #1d4ed8", shown.personal.html)


def test_newsletter_override_wins_over_installation(branded: Runtime) -> None:
    from gazette.newsletters.brand import PresentationChanges, apply_presentation
    from gazette.newsletters.service import newsletter_by_slug

    with transaction(branded.sessions) as session:
        apply_presentation(
            newsletter_by_slug(session, "weekly"),
            PresentationChanges(publisher="Other Lab", logo_url="", accent_colour="#b91c1c"),
        )
    with branded.sessions() as session:
        newsletter = newsletter_by_slug(session, "weekly")
        from gazette.newsletters.brand import brand_for

        brand = brand_for(newsletter, branded.send_context.brand)
    # "" is stored as NULL: the installation's logo comes back.
    assert (brand.publisher, brand.accent, brand.logo_url) == (
        "Other Lab", "#b91c1c", "https://example.org/logo.png",
    )  # fmt: skip
    assert brand.postal_address == ADDRESS


def test_every_template_sentence_is_translated_in_uk_and_ja() -> None:
    """The footer, welcome and page sentences, like all others, exist in each catalogue."""
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    from gazette.newsletters.brand import CONSENT
    from gazette.resources import shipped_dir

    templates = shipped_dir("templates")
    found = {
        (message if isinstance(message, str) else message[0])
        for _file, _line, message, _comments, _context in extract_from_dir(
            str(templates),
            method_map=[("**.j2", "jinja2.ext:babel_extract")],
            options_map={"**.j2": {"extensions": "jinja2.ext.i18n", "trim_blocks": "true"}},
        )
    }
    found |= {CONSENT, "Press Subscribe to confirm that you want it."}
    assert "Privacy policy" in found
    for language in ("uk", "ja"):
        with (templates / "locale" / language / "LC_MESSAGES" / "messages.po").open("rb") as fh:
            catalog = read_po(fh, locale=language)
        missing = sorted(m for m in found if not getattr(catalog.get(m), "string", ""))
        assert missing == [], f"{language}: {missing}"
