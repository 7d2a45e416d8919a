"""Article HTML for mail: cleaning, absolute URLs, WordPress tidying, excerpts (issue 15).

Pure functions on strings, plus the newsletter's content options through the real CLI
(`python -m gazette` on a SQLite installation).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from gazette.articles.html import (
    clean_article_html,
    first_image,
    make_excerpt,
    styled_for_mail,
    tidy_wordpress,
    without_images,
    word_count,
)
from gazette.digests.content import ContentChoice, article_body
from gazette.store.models import Article
from tests.support.env import make_env
from tests.support.messages import fed

BASE = "https://lab.example.org/2026/12/grid-brief/"


class Balance(HTMLParser):
    """Checks that every element is closed in order, and collects the text."""

    VOID = frozenset({"br", "img"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.balanced = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.balanced = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def read(html: str) -> Balance:
    return fed(Balance(), html)


# --- cleaning --------------------------------------------------------------------------


def test_relative_links_and_images_become_absolute_against_the_article() -> None:
    cleaned = clean_article_html(
        '<p><a href="/research/grid/">grid</a> <a href="notes">notes</a></p>'
        '<img src="/wp-content/uploads/a.jpg" alt="A">',
        BASE,
    )
    assert 'href="https://lab.example.org/research/grid/"' in cleaned
    assert 'href="https://lab.example.org/2026/12/grid-brief/notes"' in cleaned
    assert 'src="https://lab.example.org/wp-content/uploads/a.jpg"' in cleaned


@pytest.mark.parametrize(
    ("raw", "gone"),
    [
        ('<img src="https://x.example/a.jpg" srcset="a.jpg 1x, b.jpg 2x" alt="A">', "srcset"),
        ('<img src="https://t.example/p.gif" width="1" height="1">', "p.gif"),
        ('<img src="https://t.example/p.gif" width="1px" height="0">', "p.gif"),
        ('<img src="http://plain.example/a.jpg" alt="A">', "<img"),
        ('<img src="data:image/png;base64,AAAA" alt="A">', "<img"),
        ('<a href="javascript:alert(1)">x</a>', "javascript"),
        ('<a href="ftp://files.example/x">x</a>', "ftp:"),
    ],
)
def test_what_mail_cannot_use_is_dropped(raw: str, gone: str) -> None:
    cleaned = clean_article_html(f"<p>Text</p>{raw}", BASE)
    assert gone not in cleaned
    assert "<p>Text</p>" in cleaned


def test_mailto_links_and_https_images_stay() -> None:
    cleaned = clean_article_html(
        '<p><a href="mailto:press@example.org">press</a></p>'
        '<figure><img src="https://cdn.example.org/a.jpg" alt="Kyiv"><figcaption>Photo: Kyiv'
        "</figcaption></figure>",
        BASE,
    )
    assert 'href="mailto:press@example.org"' in cleaned
    assert first_image(cleaned) == ("https://cdn.example.org/a.jpg", "Kyiv")
    assert "<figcaption>Photo: Kyiv</figcaption>" in cleaned


@pytest.mark.parametrize(
    "raw",
    [
        "<p>The grid added storage [&#8230;]</p>",
        "<p>The grid added storage [&hellip;]</p>",
        "<p>The grid added storage […]</p>",
        "<p>The grid added storage [...]</p>",
    ],
)
def test_wordpress_ellipsis_becomes_a_plain_one(raw: str) -> None:
    assert clean_article_html(raw, BASE) == "<p>The grid added storage…</p>"


def test_wordpress_footer_and_continue_reading_are_removed() -> None:
    raw = (
        "<p>Storage is changing the evening peak.</p>"
        '<p>The post <a href="/grid/">Grid storage</a> appeared first on '
        '<a href="/">Policy Lab</a>.</p>'
        '<p><a class="more-link" href="/grid/">Continue reading <span>Grid storage</span>'
        " &rarr;</a></p>"
    )
    assert clean_article_html(raw, BASE) == "<p>Storage is changing the evening peak.</p>"
    plain = "Storage is changing. The post Grid storage appeared first on Policy Lab."
    assert tidy_wordpress(plain).strip() == "Storage is changing."


def test_mail_styles_size_images_to_the_column_and_draw_table_cells() -> None:
    cleaned = clean_article_html(
        '<img src="https://cdn.example.org/a.jpg" alt="A" width="1600" height="900">'
        "<table><tr><th>Time</th></tr><tr><td>10:00</td></tr></table>",
        BASE,
    )
    styled = styled_for_mail(cleaned)
    assert 'width="1600"' not in styled
    assert "max-width:100%;height:auto" in styled
    assert re.search(r'<td style="[^"]*border:1px solid', styled)
    assert without_images(cleaned).startswith("<table>")


# --- excerpts ---------------------------------------------------------------------------

LONG = "".join(
    f"<p>Paragraph {p} opens here. It has a second sentence with <em>some</em> words. "
    f'And a third with <a href="https://x.example/{p}">a link</a> in it.</p>'
    for p in range(40)
)


def test_an_excerpt_ends_at_a_block_near_the_word_count() -> None:
    excerpt = make_excerpt(LONG, 60)
    parsed = read(excerpt)
    assert parsed.balanced
    assert not parsed.stack
    words = word_count("".join(parsed.text))
    assert 40 <= words <= 90, words
    assert excerpt.endswith("</p>")
    assert "Paragraph 39" not in excerpt
    assert LONG.startswith(excerpt)  # whole blocks, as they were


def test_one_long_paragraph_is_cut_at_a_sentence() -> None:
    text = " ".join(f"Sentence {n} has exactly six words." for n in range(50))
    excerpt = make_excerpt(f"<p><strong>{text}</strong></p>", 30)
    assert excerpt.startswith("<p><strong>Sentence 0")
    assert excerpt.endswith("words.</strong></p>")
    assert 15 <= word_count(re.sub(r"<[^>]+>", "", excerpt)) <= 30


def test_a_paragraph_without_sentences_is_cut_between_words() -> None:
    excerpt = make_excerpt("<p>" + " ".join(f"word{n}" for n in range(200)) + "</p>", 20)
    text = re.sub(r"<[^>]+>", "", excerpt)
    assert text.endswith("…")
    assert all(re.fullmatch(r"word\d+", w) for w in text.rstrip("…").split())


def test_japanese_excerpts_end_at_a_full_stop() -> None:
    sentence = "この冬、電力網は1,200メガワットの蓄電池を追加した。"
    excerpt = make_excerpt(f"<p>{sentence * 30}</p>", 60)
    text = re.sub(r"<[^>]+>", "", excerpt)
    assert text.endswith("。")
    assert text.count("1,200") == text.count("メガワット")
    # Two CJK characters count as a word: 60 words is about 120 characters.
    assert 60 <= len(text) <= 130, len(text)


def test_figures_are_left_out_and_small_tables_kept_whole() -> None:
    html = (
        '<figure><img src="https://cdn.example.org/a.jpg" alt="A"><figcaption>Photo</figcaption>'
        "</figure><p>Programme.</p><table><tr><td>10:00</td><td>Opening</td></tr></table>" + LONG
    )
    excerpt = make_excerpt(html, 30)
    assert "<figure" not in excerpt
    assert "<img" not in excerpt
    assert "<td>10:00</td><td>Opening</td>" in excerpt
    big_table = "<table>" + "<tr><td>cell words here</td></tr>" * 40 + "</table>"
    assert "<table" not in make_excerpt(big_table + LONG, 30)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.text(
            alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=80
        ),
        min_size=1,
        max_size=12,
    ),
    st.integers(min_value=10, max_value=80),
)
def test_excerpts_are_well_formed_prefixes(paragraphs: list[str], words: int) -> None:
    html = clean_article_html("".join(f"<p>{p}</p>" for p in paragraphs))
    excerpt = make_excerpt(html, words)
    parsed = read(excerpt)
    assert parsed.balanced
    assert not parsed.stack
    source_text = "".join(read(html).text)
    excerpt_text = "".join(parsed.text).removesuffix("…")
    # Nothing invented: the excerpt's text is the start of the source's, blocks apart.
    assert source_text.replace(" ", "").startswith(excerpt_text.replace(" ", "").rstrip())


# --- what a newsletter carries ----------------------------------------------------------


def article(summary: str, content: str) -> Article:
    return Article(summary=summary, content=content)


def test_excerpt_mode_uses_the_feeds_excerpt_and_full_mode_the_post() -> None:
    stored = article("<p>The feed's own excerpt.</p>", LONG)
    assert article_body(stored, ContentChoice()) == "<p>The feed's own excerpt.</p>"
    assert "Paragraph 39" in article_body(stored, ContentChoice(mode="full"))


def test_a_made_excerpt_follows_the_newsletters_length() -> None:
    stored = article(make_excerpt(LONG), LONG)
    short = article_body(stored, ContentChoice(excerpt_words=20))
    long = article_body(stored, ContentChoice(excerpt_words=200))
    assert len(short) < len(stored.summary) < len(long)


def test_images_off_leaves_no_image() -> None:
    stored = article('<p>Hi</p><img src="https://cdn.example.org/a.jpg" alt="A">', "")
    assert "<img" not in article_body(stored, ContentChoice(images=False))
    assert "<img" in article_body(stored, ContentChoice(images=True))


# --- the CLI ----------------------------------------------------------------------------


def gazette(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
    env.update(make_env(folder, f"sqlite:///{folder / 'cli.db'}"))
    return subprocess.run(
        [sys.executable, "-m", "gazette", *args], cwd=folder, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def test_newsletter_content_options_from_the_command_line(tmp_path: Path) -> None:
    assert gazette(tmp_path, "db", "upgrade").returncode == 0
    added = gazette(tmp_path, "newsletters", "add", "weekly", "--name", "Weekly")
    assert added.returncode == 0, added.stderr
    shown = json.loads(gazette(tmp_path, "newsletters", "show", "weekly", "--json").stdout)
    assert (shown["content"], shown["excerpt_words"], shown["images"]) == ("excerpt", 60, True)

    edited = gazette(
        tmp_path, "newsletters", "edit", "weekly", "--content", "full", "--excerpt-words", "80",
        "--no-images",
    )  # fmt: skip
    assert edited.returncode == 0, edited.stderr
    shown = json.loads(gazette(tmp_path, "newsletters", "show", "weekly", "--json").stdout)
    assert (shown["content"], shown["excerpt_words"], shown["images"]) == ("full", 80, False)

    refused = gazette(tmp_path, "newsletters", "edit", "weekly", "--excerpt-words", "5")
    assert refused.returncode != 0
    assert "5" in refused.stderr
    shown = json.loads(gazette(tmp_path, "newsletters", "show", "weekly", "--json").stdout)
    assert shown["excerpt_words"] == 80  # nothing half-written


def test_articles_add_takes_the_whole_post_from_a_file(tmp_path: Path) -> None:
    assert gazette(tmp_path, "db", "upgrade").returncode == 0
    post = tmp_path / "post.html"
    post.write_text(LONG.replace('href="https://x.example/', 'href="/notes/'), encoding="utf-8")
    added = gazette(
        tmp_path, "articles", "add", "--title", "Grid storage", "--url",
        "https://lab.example.org/grid/", "--content-file", str(post),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    engine = create_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    with Session(engine) as session:
        stored = session.scalars(select(Article)).one()
    engine.dispose()
    assert "Paragraph 39" in stored.content
    assert 'href="https://lab.example.org/notes/0"' in stored.content  # made absolute
    assert stored.summary == make_excerpt(stored.content)  # the excerpt made from it

    missing = gazette(
        tmp_path, "articles", "add", "--title", "Other", "--url", "https://lab.example.org/o/",
        "--content-file", str(tmp_path / "nowhere.html"),
    )  # fmt: skip
    assert missing.returncode != 0
    assert "nowhere.html does not exist." in missing.stderr
