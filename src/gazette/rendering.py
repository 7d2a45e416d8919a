"""Rendering: the Jinja environment, translations, and per-subscriber personalisation.

The only module that knows Jinja. The shared body of an issue is rendered once per
language with markers where per-reader values go; personalising a message is then a
few string replacements, not a template render.
"""

from __future__ import annotations

import gettext
import html
import io
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, cached_property
from pathlib import Path

import css_inline
from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined

from gazette.config import Brand
from gazette.digests.intro import Note, note_for
from gazette.mail.mime import BodyTemplate, QuotedPrintable
from gazette.resources import shipped_dir
from gazette.text import wrap_text

LANGUAGES = ("en", "uk", "ja")
# Keep <style>: media queries cannot be inlined and clients that honour them need them.
_INLINER = css_inline.CSSInliner(keep_style_tags=True)


@dataclass(frozen=True)
class ArticleView:
    """An article as templates see it: clean title, link, summary in HTML and text."""

    title: str
    url: str
    summary_html: str
    summary_text: str
    author: str
    published_at: datetime
    topics: frozenset[str] = frozenset()
    language: str | None = None  # normalised primary subtag; None: for every reader
    # The featured image (absolute https URL) and its alt text; None when none is shown.
    image_url: str | None = None
    image_alt: str = ""


@dataclass(frozen=True)
class IssueView:
    """What a digest template renders: the newsletter, the issue's date and articles."""

    newsletter_name: str
    date: datetime
    articles: tuple[ArticleView, ...]
    archive_url: str
    brand: Brand = field(default_factory=Brand)
    # The editor's note per language ("" key: for every language), rendered.
    notes: Mapping[str, Note] = field(default_factory=dict)

    def note(self, language: str) -> Note | None:
        """The editor's note for a reader of ``language``, or None."""
        return note_for(self.notes, language)


@dataclass(frozen=True)
class Markers:
    """Placeholders for the per-reader values, filled in after rendering.

    Random for every render, so text from a feed or a reader's name cannot contain one
    and have a reader's own unsubscribe link pasted into it; they survive HTML escaping.
    """

    greeting: str
    unsubscribe_url: str
    preferences_url: str

    @classmethod
    def fresh(cls) -> Markers:
        """New unguessable markers."""
        tag = secrets.token_hex(8)
        return cls(f"@@{tag}:GREETING@@", f"@@{tag}:UNSUBSCRIBE@@", f"@@{tag}:PREFERENCES@@")


@dataclass(frozen=True)
class RenderedMessage:
    """A message's subject, text and HTML with markers for the per-reader values."""

    subject: str
    text: str
    html: str
    boundary: str
    greeting_named: str
    greeting_anonymous: str
    markers: Markers

    def personalise(self, name: str, unsubscribe_url: str, preferences_url: str) -> tuple[str, str]:
        """Return (text, html) for one reader: greeting and links filled in, HTML escaped."""
        text_values, html_values = self._values(name, unsubscribe_url, preferences_url)
        return _fill(self.text, text_values), _fill(self.html, html_values)

    def personalise_encoded(
        self, name: str, unsubscribe_url: str, preferences_url: str
    ) -> tuple[QuotedPrintable, QuotedPrintable]:
        """(text, html) as personalise() gives them, already quoted-printable encoded.

        The same bytes as encoding personalise()'s bodies, for a fraction of the work:
        only the few lines holding a marker are encoded per reader.
        """
        text_values, html_values = self._values(name, unsubscribe_url, preferences_url)
        text, html = self._encoded_bodies
        return (
            text.fill(lambda piece: _fill(piece, text_values)),
            html.fill(lambda piece: _fill(piece, html_values)),
        )

    @cached_property
    def _encoded_bodies(self) -> tuple[BodyTemplate, BodyTemplate]:
        # Once per render, on first use: confirmations and previews never need it.
        m = self.markers
        markers = (m.greeting, m.unsubscribe_url, m.preferences_url)
        return BodyTemplate.split(self.text, markers), BodyTemplate.split(self.html, markers)

    def _values(
        self, name: str, unsubscribe_url: str, preferences_url: str
    ) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
        """(marker, value) pairs for the text body, and HTML-escaped for the HTML body."""
        greeting = self.greeting_named % {"name": name} if name else self.greeting_anonymous
        m = self.markers
        text = (
            # The greeting stands on a line of its own: a long name wraps like the rest.
            (m.greeting, wrap_text(greeting)),
            (m.unsubscribe_url, unsubscribe_url),
            (m.preferences_url, preferences_url),
        )
        html_values = ((m.greeting, greeting), *text[1:])
        return text, tuple((marker, html.escape(value)) for marker, value in html_values)


def _fill(body: str, values: tuple[tuple[str, str], ...]) -> str:
    # In order, as one fixed sequence of replacements: the whole-body and the per-line
    # paths must substitute identically for their encodings to match.
    for marker, value in values:
        body = body.replace(marker, value)
    return body


@cache
def language_name(code: str) -> str:
    """A language's name for itself ("Deutsch", "Українська"), or its code if unknown.

    Forms list languages by their own names: a reader looks for the one they read.
    """
    try:
        locale = Locale.parse(code)
    except (UnknownLocaleError, ValueError, TypeError):
        return code
    name = locale.get_display_name(locale) or code
    return name[:1].upper() + name[1:]


def _autoescape(name: str | None) -> bool:
    # select_autoescape matches on the last suffix only, so ".html.j2" needs naming.
    return name is not None and name.endswith((".html.j2", ".html", ".xml.j2"))


@cache
def _translations(locale_dir: Path, language: str) -> gettext.NullTranslations:
    path = locale_dir / language / "LC_MESSAGES" / "messages.po"
    if not path.exists():
        return gettext.NullTranslations()
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    # Compiled in memory: the .po file is the only artefact, so no build step can drift.
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


class Renderer:
    """Renders the built-in theme, with the operator's template folder taking precedence."""

    def __init__(self, template_dir: Path | None = None) -> None:
        builtin = shipped_dir("templates")
        folders = [template_dir, builtin] if template_dir else [builtin]
        self._loader = ChoiceLoader([FileSystemLoader(str(f)) for f in folders])
        self._locale_dir = builtin / "locale"
        self._environments: dict[str, Environment] = {}

    def environment(self, language: str) -> Environment:
        """Return the Jinja environment for ``language``, with its translations installed."""
        language = language if language in LANGUAGES else "en"
        env = self._environments.get(language)
        if env is None:
            env = Environment(
                loader=self._loader,
                autoescape=_autoescape,  # noqa: S701 - on for every HTML template
                undefined=StrictUndefined,
                extensions=["jinja2.ext.i18n"],
                trim_blocks=True,
                lstrip_blocks=True,
                keep_trailing_newline=True,
                # Templates are read once per process: checking every file's mtime on each
                # page costs the web endpoint a few percent. Restart to pick up edits.
                auto_reload=False,
            )
            translations = _translations(self._locale_dir, language)
            env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
            env.filters["date"] = lambda value, fmt="long": format_date(
                value, format=fmt, locale=language
            )
            env.globals["language"] = language
            env.globals["language_name"] = language_name
            self._environments[language] = env
        return env

    def render(self, name: str, language: str, **context: object) -> RenderedMessage:
        """Render the subject/text/HTML trio ``name`` once for ``language``."""
        env = self.environment(language)
        markers = Markers.fresh()
        context = {
            "greeting": markers.greeting,
            "unsubscribe_url": markers.unsubscribe_url,
            "preferences_url": markers.preferences_url,
            **context,
        }
        subject = env.get_template(f"email/{name}.subject.j2").render(context).strip()
        translations = _translations(self._locale_dir, env.globals["language"])
        html = env.get_template(f"email/{name}.html.j2").render(context)
        return RenderedMessage(
            subject=" ".join(subject.split()),
            # Wrapped by display width (78 columns; CJK counts two), breaking only where
            # a line may break: templates and summaries cannot know the final widths.
            text=wrap_text(env.get_template(f"email/{name}.txt.j2").render(context)),
            # Gmail and Outlook drop or ignore <style>; inlining happens here, once per
            # issue, language and article set, never per reader.
            html=_INLINER.inline(html),
            boundary=f"=_gazette_{secrets.token_hex(12)}",
            greeting_named=translations.gettext("Hello, %(name)s!"),
            greeting_anonymous=translations.gettext("Hello!"),
            markers=markers,
        )

    def render_issue(
        self, view: IssueView, language: str, template_set: str = "digest"
    ) -> RenderedMessage:
        """Render an issue for one language: the shared part of every message."""
        return self.render(template_set, language, issue=view, brand=view.brand)

    def has_template_set(self, name: str) -> bool:
        """True when the subject, text and HTML templates of ``name`` all exist."""
        names = set(self._loader.list_templates())
        return all(f"email/{name}.{part}.j2" in names for part in ("subject", "txt", "html"))

    def load_catalogues(self) -> None:
        """Compile every language's message catalogue now, once per process.

        Web and worker processes call it as they start: compiled on first use, the first
        one-click POST or digest in each language of each process would wait for it.
        """
        for language in LANGUAGES:
            _translations(self._locale_dir, language)

    def translate(self, language: str, message: str) -> str:
        """``message`` in ``language`` when the catalogue has it, else as it is."""
        language = language if language in LANGUAGES else "en"
        return _translations(self._locale_dir, language).gettext(message)

    def render_page(
        self, template: str, language: str, suffix: str = "html", **context: object
    ) -> str:
        """Render one web template (templates/web/<template>.<suffix>.j2) in ``language``."""
        name = f"web/{template}.{suffix}.j2"
        return self.environment(language).get_template(name).render(context)
