"""Terminal output in which every value is printed as the characters it holds.

Names, titles, feed errors and addresses come from readers and from the web. Printed
through rich with its defaults, ``[/bold]`` in a name crashes the command (MarkupError)
and ``[link=...]`` prints a clickable link; ``:smile:`` becomes an emoji; an escape
character could drive the operator's terminal. This console turns all of that off in
one place: no markup, no emoji codes, no highlighting, and control and bidirectional
formatting characters shown as escapes. Styling is applied with ``rich.text.Text``
objects (see ``strong``), never by writing markup into a string.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console, HighlighterType, JustifyMethod, OverflowMethod
from rich.style import Style
from rich.text import Text

# C0 and C1 controls (a line break and a tab stay: they only move the cursor) and the
# bidirectional overrides and isolates, which reorder what the operator reads.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(value: str) -> str:
    """Return ``value`` with each unsafe character written as its escape, e.g. ``\\x1b``."""
    if not _UNSAFE.search(value):
        return value
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), value)


class LiteralConsole(Console):
    """A rich console that never interprets the text it prints, in tables or lines."""

    def __init__(self, **options: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **options)

    def render_str(
        self,
        text: str,
        *,
        style: str | Style = "",
        justify: JustifyMethod | None = None,
        overflow: OverflowMethod | None = None,
        emoji: bool | None = None,
        markup: bool | None = None,
        highlight: bool | None = None,
        highlighter: HighlighterType | None = None,
    ) -> Text:
        """Every string rich prints or puts in a table cell passes here: kept literal.

        A caller's ``markup=True`` or ``emoji=True`` is ignored on purpose: no string
        printed by the CLI is markup.
        """
        return super().render_str(
            visible(text), style=style, justify=justify, overflow=overflow, emoji=False,
            markup=False, highlight=False, highlighter=highlighter,
        )  # fmt: skip


def strong(value: str) -> Text:
    """``value`` in bold, literally (the way to style a value without markup)."""
    return Text(visible(value), style="bold")
