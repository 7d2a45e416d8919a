"""How a newsletter presents itself: the publisher's brand, the welcome, campaign tags.

The installation's ``GAZETTE_PUBLISHER`` and friends are every newsletter's defaults;
a newsletter's own value (a column that is not NULL) overrides its default. Emails and
web pages receive the merged :class:`Brand`.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sqlalchemy import Row

from gazette.config import Brand, check_colour, check_http_url
from gazette.errors import ConfigError
from gazette.store.models import Newsletter
from gazette.text import clean_line

POSTAL_ADDRESS_MAX = 500
UTM_MAX = 100
INTRO_MAX = 5000  # characters of Markdown: a note, not an article
# The consent sentence beside the subscribe button (translated in templates/locale).
CONSENT = (
    "By subscribing you agree to receive %(name)s from %(publisher)s by email. "
    "You can unsubscribe at any time."
)


BRAND_FIELDS = tuple(f.name for f in fields(Brand))


def brand_for(newsletter: Newsletter | Row[Any], default: Brand) -> Brand:
    """The newsletter's brand: each value it sets itself, else the installation's.

    ``newsletter`` may be a row holding only the brand columns (a one-click answer's).
    """
    values = {}
    for name in BRAND_FIELDS:
        own = getattr(newsletter, name)
        values[name] = own if own is not None else getattr(default, name)
    return Brand(**values)


@dataclass(frozen=True)
class PresentationChanges:
    """Brand, welcome, campaign and note settings to change; None leaves one as it is.

    An empty string returns a brand value to the installation's default and removes a
    campaign tag.
    """

    publisher: str | None = None
    website: str | None = None
    logo_url: str | None = None
    accent_colour: str | None = None
    postal_address: str | None = None
    privacy_url: str | None = None
    welcome: bool | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    # The editor's standing note (Markdown) for ``intro_language`` ("" for every language).
    intro: str | None = None
    intro_language: str = ""


def _postal_address(raw: str) -> str:
    lines = [clean_line(line, POSTAL_ADDRESS_MAX) for line in raw.replace("\\n", "\n").splitlines()]
    value = "\n".join(line for line in lines if line)
    if len(value) > POSTAL_ADDRESS_MAX:
        raise ConfigError(
            f"The postal address is {len(value)} characters long; at most "
            f"{POSTAL_ADDRESS_MAX} fit in a footer."
        )
    return value


def _utm(raw: str, option: str) -> str:
    value = clean_line(raw, 1000)
    if len(value) > UTM_MAX:
        raise ConfigError(f"{option}={raw!r} is longer than {UTM_MAX} characters.")
    if option == "--utm-campaign":
        leftover = value.replace("{date}", "")
        if "{" in leftover or "}" in leftover:
            raise ConfigError(
                f"{option}={raw!r} has a placeholder other than {{date}} (the issue's date)."
            )
    return value


def checked_changes(changes: PresentationChanges) -> dict[str, object]:
    """The column values ``changes`` sets, each checked; ConfigError names a bad one.

    Every value is checked before any is written, so a bad one changes nothing.
    """
    values: dict[str, object] = {}
    if changes.publisher is not None:
        publisher = clean_line(changes.publisher, 1000)
        if len(publisher) > 200:
            raise ConfigError(f"--publisher={changes.publisher!r} is longer than 200 characters.")
        values["publisher"] = publisher or None
    for name, option in (("website", "--website"), ("logo_url", "--logo"),
                         ("privacy_url", "--privacy-url")):  # fmt: skip
        raw = getattr(changes, name)
        if raw is not None:
            values[name] = check_http_url(raw, option) if raw.strip() else None
    if changes.accent_colour is not None:
        raw = changes.accent_colour
        values["accent_colour"] = check_colour(raw, "--accent-colour") if raw.strip() else None
    if changes.postal_address is not None:
        values["postal_address"] = _postal_address(changes.postal_address) or None
    if changes.welcome is not None:
        values["welcome"] = changes.welcome
    for name in ("utm_source", "utm_medium", "utm_campaign"):
        raw = getattr(changes, name)
        if raw is not None:
            values[name] = _utm(raw, "--" + name.replace("_", "-")) or None
    return values


def check_intro_language(language: str) -> str:
    """The note's language key: "" (every language) or one the templates speak."""
    from gazette.rendering import LANGUAGES  # rendering imports this module

    code = language.strip().lower()
    if code and code not in LANGUAGES:
        raise ConfigError(
            f"--language={language!r}: a note can be given in {', '.join(LANGUAGES)}, "
            "or without --language for every language."
        )
    return code


def read_intro_file(path: Path) -> str:
    """The Markdown of an editor's note file; ConfigError names a file that will not do."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise ConfigError(
            f"--intro-file {str(path)!r} cannot be read ({error.strerror})."
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"--intro-file {str(path)!r} is not UTF-8 text.") from None
    text = text.strip()
    if len(text) > INTRO_MAX:
        raise ConfigError(
            f"--intro-file {str(path)!r} holds {len(text)} characters; a note may hold "
            f"at most {INTRO_MAX}."
        )
    return text


def apply_presentation(newsletter: Newsletter, changes: PresentationChanges) -> None:
    """Check every value of ``changes``, then write them to the newsletter."""
    values = checked_changes(changes)
    language = check_intro_language(changes.intro_language)
    for name, value in values.items():
        setattr(newsletter, name, value)
    if changes.intro is not None:
        intro = dict(newsletter.intro or {})
        if changes.intro:
            intro[language] = changes.intro
        else:
            intro.pop(language, None)
        # A new dict, so the JSON column is seen as changed.
        newsletter.intro = intro


def describe_presentation(newsletter: Newsletter, default: Brand) -> dict[str, object]:
    """The newsletter's brand (as readers see it), welcome, campaign tags and notes."""
    brand = brand_for(newsletter, default)
    return {
        **{name: getattr(brand, name) for name in BRAND_FIELDS},
        "welcome": newsletter.welcome,
        "utm_source": newsletter.utm_source,
        "utm_medium": newsletter.utm_medium,
        "utm_campaign": newsletter.utm_campaign,
        "intro": dict(newsletter.intro or {}),
    }


def embed_snippet(
    newsletter: Newsletter,
    brand: Brand,
    base_url: str,
    translate: Callable[[str], str],
    language: str = "en",
) -> str:
    """An HTML form to paste into the publisher's own site; it posts to /subscribe/embed.

    It carries no CSRF token (a page on another site cannot hold one): the endpoint
    accepts it directly only from the newsletter's website's origin, and asks anyone
    else to press Subscribe once more on Gazette's own page.
    """
    e, _ = html.escape, translate
    consent = _(CONSENT) % {
        "name": newsletter.name,
        "publisher": brand.publisher or newsletter.name,
    }
    action = f"{base_url}/subscribe/embed"
    privacy = (
        f' <a href="{e(brand.privacy_url)}">{e(_("Privacy policy"))}</a>'
        if brand.privacy_url
        else ""
    )
    return (
        f'<form class="gazette-subscribe" method="post" action="{e(action)}" '
        'accept-charset="utf-8">\n'
        f'  <input type="hidden" name="newsletter" value="{e(newsletter.slug)}">\n'
        f'  <input type="hidden" name="language" value="{e(language)}">\n'
        f'  <label for="gazette-email-{e(newsletter.slug)}">{e(_("Email address"))}</label>\n'
        f'  <input id="gazette-email-{e(newsletter.slug)}" type="email" name="email" '
        'required autocomplete="email">\n'
        '  <div style="position:absolute;left:-10000px" aria-hidden="true">'
        '<input type="text" name="website" tabindex="-1" autocomplete="off"></div>\n'
        f"  <p>{e(consent)}{privacy}</p>\n"
        f'  <button type="submit">{e(_("Subscribe"))}</button>\n'
        "</form>\n"
    )
