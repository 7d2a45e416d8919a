"""Options shared by ``newsletters add`` and ``edit``: brand, welcome, campaign tags, note."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from gazette.newsletters.brand import PresentationChanges, read_intro_file

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = (
    click.option(
        "--publisher", help="Who sends it, as readers see it (default: GAZETTE_PUBLISHER)."
    ),
    click.option("--website", help="The publisher's site; the header links to it (http(s) URL)."),
    click.option("--logo", "logo_url", help="Logo image URL shown in the header (https)."),
    click.option("--accent-colour", help="Colour of links and the header rule, as #rrggbb."),
    click.option(
        "--postal-address",
        help=r'Postal address for every footer (CAN-SPAM); "\n" starts a new line.',
    ),
    click.option("--privacy-url", help="Privacy policy, linked beside the consent sentence."),
    click.option(
        "--welcome/--no-welcome",
        default=None,
        help="Send a welcome after a reader confirms (on by default).",
    ),
    click.option("--utm-source", help="utm_source on article links (empty: none)."),
    click.option("--utm-medium", help="utm_medium on article links (empty: none)."),
    click.option(
        "--utm-campaign", help="utm_campaign on article links; {date} is the issue's date."
    ),
    click.option(
        "--intro-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Markdown note from the editor above every issue's articles (empty file: none).",
    ),
    click.option(
        "--language",
        "intro_language",
        default="",
        help="The note's language (en, uk, ja); without it the note is for every language.",
    ),
)


def presentation_options(command: F) -> F:
    """Add the brand, welcome, campaign and note options to a command."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def presentation_changes(options: dict[str, Any]) -> PresentationChanges:
    """The changes the options ask for; the note file is read (and checked) here."""
    intro_file: Path | None = options.pop("intro_file", None)
    intro = read_intro_file(intro_file) if intro_file is not None else None
    return PresentationChanges(**options, intro=intro)
