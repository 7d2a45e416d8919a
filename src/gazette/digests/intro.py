"""The editor's note: a few lines of Markdown above a digest's articles.

Rendered with markdown-it (CommonMark, raw HTML off) and then through the same
sanitiser as article HTML, so a note can hold no more than a feed's summary can.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from markdown_it import MarkdownIt
from sqlalchemy.orm import Session

from gazette.articles.service import clean_html
from gazette.errors import GazetteError
from gazette.store.models import Issue
from gazette.text import html_to_text

# "commonmark" with html off: an editor's <script> becomes text, never markup.
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


@dataclass(frozen=True)
class Note:
    """A note rendered for both parts of a message."""

    html: str
    text: str


def render_note(markdown: str) -> Note:
    """The note's sanitised HTML and its plain text."""
    html = clean_html(_MARKDOWN.render(markdown)).strip()
    return Note(html=html, text=html_to_text(html))


def issue_notes(intro: Mapping[str, str] | None) -> dict[str, Note]:
    """Each language's rendered note ("" key: the note for every other language)."""
    return {language: render_note(text) for language, text in (intro or {}).items() if text}


def note_for(notes: Mapping[str, Note], language: str) -> Note | None:
    """The note a reader of ``language`` sees: theirs if given, else the one for all."""
    return notes.get(language) or notes.get("")


def give_issue_note(session: Session, issue_id: int, markdown: str, created: bool) -> None:
    """Put an editor's note (for every language) on a just-planned issue.

    Only on an issue this call planned: one already planned may be going out, and its
    readers must all get the same message.
    """
    issue = session.get_one(Issue, issue_id)
    if not created:
        raise GazetteError(
            f"Issue {issue_id} was already planned, so its note cannot change; "
            "use --now to plan an extra issue with this note."
        )
    issue.intro = {"": markdown} if markdown else {}
