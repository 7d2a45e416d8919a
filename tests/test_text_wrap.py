"""The text part's wrapping by display width, and HTML read into text (issue 15)."""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gazette.text import display_width, html_to_text, wrap_line, wrap_text

JAPANESE = (
    "日本の電力網は2026年に1,200メガワットの新しい容量を追加し、「夕方のピーク」は遅くなった。"
)


def test_display_width_counts_wide_characters_twice() -> None:
    assert display_width("abc") == 3
    assert display_width("日本") == 4
    assert display_width("ｶﾀｶﾅ") == 4  # half-width katakana take one column
    assert display_width("Ｆｕｌｌ") == 8  # full-width Latin takes two
    assert display_width("e\u0301") == 1  # a combining accent takes none


def test_japanese_wraps_within_78_columns_and_keeps_numbers_whole() -> None:
    lines = wrap_line(JAPANESE * 6)
    assert len(lines) > 1
    assert all(display_width(line) <= 78 for line in lines)
    assert "".join(lines) == JAPANESE * 6  # no character lost or added
    for before, after in itertools.pairwise(lines):
        assert not (re.search(r"[\d,]$", before) and re.match(r"[\d,]", after)), (before, after)
        assert after[0] not in "、。」』）", after  # closing punctuation never starts a line
        assert before[-1] not in "「『（", before  # opening never ends one
    assert "".join(lines).count("1,200メガワット") == 6


def test_latin_words_are_never_split_and_indent_is_kept() -> None:
    text = "   " + " ".join(["interconnection"] * 20)
    lines = wrap_line(text)
    assert all(display_width(line) <= 78 for line in lines)
    assert all(line.startswith("   interconnection") for line in lines)
    assert " ".join(line.strip() for line in lines) == text.strip()


def test_list_items_hang_under_their_text() -> None:
    lines = wrap_line("12. " + "word " * 40)
    assert lines[0].startswith("12. word")
    assert all(line.startswith("    word") for line in lines[1:])


def test_a_line_long_only_for_its_url_is_kept_whole() -> None:
    url = "https://news.example.org/unsubscribe/" + "x" * 90
    assert wrap_line(f"Unsubscribe: {url}") == [f"Unsubscribe: {url}"]
    # In running text the URL is one piece: it moves to a line of its own, never split.
    lines = wrap_line("word " * 30 + f"<{url}> and more words after it")
    assert f"<{url}>" in lines
    assert all(display_width(line) <= 78 for line in lines if url not in line)


def test_tables_read_one_row_a_line_with_cells_apart() -> None:
    text = html_to_text(
        "<p>Programme:</p><table><tr><th>Time</th><th>Event</th></tr>"
        "<tr><td>10:00</td><td>Opening</td></tr><tr><td>10:15</td><td>Panel</td></tr></table>"
        "<p>After.</p>"
    )
    assert text == "Programme:\n\nTime | Event\n10:00 | Opening\n10:15 | Panel\n\nAfter."


def test_captions_stand_apart_and_links_show_their_address() -> None:
    text = html_to_text(
        '<figure><img src="https://cdn.example.org/a.jpg" alt="A"><figcaption>Photo: Kyiv'
        '</figcaption></figure><p>See <a href="https://x.example/b">the brief</a>.</p>'
    )
    assert text == "Photo: Kyiv\n\nSee the brief <https://x.example/b>."


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("abc xyz 1,200 日本語のテキスト。、「」ｶﾅ")), max_size=400
    )
)
def test_wrapping_loses_nothing_and_respects_the_width(text: str) -> None:
    wrapped = wrap_text(text).split("\n")
    for line in wrapped:
        # Only a piece that cannot break (a long word or number) may overflow, alone.
        if display_width(line) > 78:
            assert " " not in line.strip(), line
    # Nothing but spaces at the breaks is lost.
    assert "".join(wrapped).replace(" ", "") == text.replace(" ", "")
