"""``gazette newsletters``: what the publisher sends, and when."""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from gazette.cli.app import console, main, print_json, runtime
from gazette.cli.presentation import presentation_changes, presentation_options
from gazette.digests.envelopes import require_dkim_key
from gazette.digests.planning import NextIssue, next_issue
from gazette.errors import GazetteError
from gazette.newsletters.brand import (
    apply_presentation,
    brand_for,
    describe_presentation,
    embed_snippet,
)
from gazette.newsletters.pausing import pause_sentence
from gazette.newsletters.service import (
    ARTICLE_LANGUAGES,
    CONTENT_MODES,
    NewsletterChanges,
    create_newsletter,
    list_newsletters,
    newsletter_by_slug,
    retire_newsletter,
    update_newsletter,
)
from gazette.store.db import transaction
from gazette.store.models import Newsletter, utcnow

# The keys the text output of `show` says in one sentence instead of one line each.
NEXT_ISSUE_KEYS = (
    "next_send_at", "next_send_due", "waiting_articles", "next_issue_articles", "paused",
)  # fmt: skip

MAX_AGE_HELP = (
    "Look-back window in days: an article published within it that the newsletter "
    "has not sent yet goes in the next issue (late or overflowing ones roll over)."
)
CONTENT_HELP = (
    "excerpt: each article carries its excerpt (the feed's, or its first words); "
    "full: the whole post. Either way a digest is shortened to stay under Gmail's limit."
)
EXCERPT_WORDS_HELP = "Near how many words an excerpt made from the post is cut (10-1000)."
IMAGES_HELP = "Show each article's featured image and the images in its text."
LANGUAGES_HELP = (
    "all: every reader gets every article; own: each reader gets the articles in "
    "their languages plus those with none (--max-articles then caps each language)."
)


def _describe(newsletter: Newsletter) -> dict[str, Any]:
    return {
        "slug": newsletter.slug,
        "name": newsletter.name,
        "schedule": newsletter.schedule_cron,
        "timezone": newsletter.timezone,
        "min_articles": newsletter.min_articles,
        "max_articles": newsletter.max_articles,
        "from_address": newsletter.from_address,
        "list_id": newsletter.list_id,
        "topics": sorted(t.slug for t in newsletter.topics),
        "allow_frequency": newsletter.allow_frequency,
        "template_set": newsletter.template_set,
        "max_age_days": newsletter.max_age_days,
        "article_languages": newsletter.article_languages,
        "content": newsletter.content_mode,
        "excerpt_words": newsletter.excerpt_words,
        "images": newsletter.images,
        "retired_at": newsletter.retired_at.isoformat() if newsletter.retired_at else None,
    }


@main.group()
def newsletters() -> None:
    """Create and inspect newsletters.

    \b
    Example:
      gazette newsletters add weekly --name "The Weekly" \\
        --schedule "0 8 * * 1" --timezone Europe/Kyiv
    """


@newsletters.command()
@click.argument("slug")
@click.option("--name", required=True, help="The name readers see.")
@click.option("--schedule", default="0 8 * * 1", show_default=True, help="Cron expression.")
@click.option(
    "--timezone", default="UTC", show_default=True, help="IANA zone the schedule is read in."
)
@click.option("--min-articles", default=1, show_default=True, type=click.IntRange(1))
@click.option("--max-articles", default=20, show_default=True, type=click.IntRange(1))
@click.option(
    "--from-address",
    help='Sender: news@example.org or "Name <news@example.org>" (default: GAZETTE_FROM_ADDRESS).',
)
@click.option("--list-id", help="List-Id header value.")
@click.option(
    "--allow-frequency",
    is_flag=True,
    help="Readers may choose every issue or a weekly summary (schedule more often than weekly).",
)
@click.option("--max-age", default=14, show_default=True, type=click.IntRange(1), help=MAX_AGE_HELP)
@click.option(
    "--article-languages",
    type=click.Choice(ARTICLE_LANGUAGES),
    default="all",
    show_default=True,
    help=LANGUAGES_HELP,
)
@click.option(
    "--content", "content_mode", type=click.Choice(CONTENT_MODES), default="excerpt",
    show_default=True, help=CONTENT_HELP,
)  # fmt: skip
@click.option(
    "--excerpt-words", default=60, show_default=True, type=click.IntRange(10, 1000),
    help=EXCERPT_WORDS_HELP,
)  # fmt: skip
@click.option("--images/--no-images", default=True, show_default=True, help=IMAGES_HELP)
@presentation_options
def add(
    slug: str, name: str, schedule: str, timezone: str, min_articles: int, max_articles: int,
    from_address: str | None, list_id: str | None, allow_frequency: bool, max_age: int,
    article_languages: str, content_mode: str, excerpt_words: int, images: bool,
    **presentation: Any,
) -> None:  # fmt: skip
    """Add a newsletter.

    \b
    Example:
      gazette newsletters add weekly --name "The Weekly" \\
        --schedule "0 8 * * 1" --timezone Europe/Kyiv --max-age 14
    """
    rt = runtime()
    look = presentation_changes(presentation)
    with transaction(rt.sessions) as session:
        newsletter_id = create_newsletter(
            session, slug, name, cron=schedule, timezone=timezone, min_articles=min_articles,
            max_articles=max_articles, from_address=from_address, list_id=list_id,
            allow_frequency=allow_frequency, max_age_days=max_age,
            article_languages=article_languages,
            content_mode=content_mode, excerpt_words=excerpt_words, images=images,
        )  # fmt: skip
        added = session.get_one(Newsletter, newsletter_id)
        apply_presentation(added, look)
        # A newsletter whose From domain has no DKIM key could not be sent: not added.
        require_dkim_key(rt.send_context, added)
    click.echo(f"Newsletter {slug} added: {schedule} ({timezone}).")


@newsletters.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def list_(as_json: bool) -> None:
    """List newsletters.

    \b
    Example:
      gazette newsletters list --json
    """
    with runtime().sessions() as session:
        rows = [_describe(n) for n in list_newsletters(session)]
    if as_json:
        print_json({"newsletters": rows})
        return
    table = Table("slug", "name", "schedule", "timezone", "articles", "retired")
    for row in rows:
        table.add_row(
            row["slug"], row["name"], row["schedule"], row["timezone"],
            f"{row['min_articles']}-{row['max_articles']}", (row["retired_at"] or "")[:10],
        )  # fmt: skip
    console().print(table)


@newsletters.command()
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def show(slug: str, as_json: bool) -> None:
    """Show one newsletter's settings and how many articles wait for its next issue.

    \b
    Example:
      gazette newsletters show weekly
    """
    rt = runtime()
    with rt.sessions() as session:
        newsletter = newsletter_by_slug(session, slug)
        document = _describe(newsletter)
        coming = next_issue(session, newsletter.id, utcnow())
        document.update(describe_presentation(newsletter, rt.send_context.brand))
    document.update(
        next_send_at=coming.send.at.isoformat() if coming.send else None,
        next_send_due=coming.send.due_now if coming.send else False,
        waiting_articles=coming.waiting,
        next_issue_articles=coming.carried,
        paused=newsletter.pause_reason if newsletter.paused_at else None,
    )
    if as_json:
        print_json(document)
        return
    for key, value in document.items():
        if key not in NEXT_ISSUE_KEYS:
            console().print(f"{key}: {value}")
    if newsletter.paused_at is not None:  # not scheduled while paused: say why instead
        click.echo(pause_sentence(slug, newsletter.pause_reason or "paused"))
        return
    click.echo(next_issue_sentence(slug, newsletter.timezone, coming))


def _when(at: datetime, timezone: str) -> str:
    """``Monday 7 December 2026 07:00 UTC``, and the newsletter's own time when not UTC."""
    said = f"{at:%A} {at.day} {at:%B %Y %H:%M} UTC"
    if timezone != "UTC":
        said += f" ({at.astimezone(zoneinfo.ZoneInfo(timezone)):%a %H:%M} {timezone})"
    return said


def next_issue_sentence(slug: str, timezone: str, coming: NextIssue) -> str:
    """The text output's one sentence on the next issue: when, and how many articles wait."""
    send = coming.send
    if send is None:
        return f"Next issue: not scheduled; {slug} is retired and is no longer sent."
    when = _when(send.at, timezone)
    if send.due_now:
        when = f"due now at the scheduler's next tick, for {when}"
    waiting = f"{coming.waiting} article{'' if coming.waiting == 1 else 's'} waiting"
    if coming.carried < coming.waiting:
        waiting += f" ({coming.carried} go in it, the rest roll over)"
    elif coming.waiting < coming.min_articles:
        waiting += f" (fewer than the minimum of {coming.min_articles}: it would be skipped)"
    return f"Next issue: {when}, {waiting}."


@newsletters.command()
@click.argument("slug")
@click.option("--name")
@click.option("--schedule", help="Cron expression.")
@click.option("--timezone", help="IANA zone the schedule is read in.")
@click.option("--min-articles", type=click.IntRange(1))
@click.option("--max-articles", type=click.IntRange(1))
@click.option("--from-address")
@click.option("--list-id")
@click.option(
    "--topic", "topics", multiple=True, help="Only articles with this topic (repeatable)."
)
@click.option("--all-topics", is_flag=True, help="Remove the topic filter.")
@click.option(
    "--allow-frequency/--no-allow-frequency",
    default=None,
    help="Readers may pick every issue or a weekly summary.",
)
@click.option("--template-set", help="Email templates to use: email/<NAME>.{subject,txt,html}.j2.")
@click.option("--max-age", type=click.IntRange(1), help=MAX_AGE_HELP)
@click.option("--article-languages", type=click.Choice(ARTICLE_LANGUAGES), help=LANGUAGES_HELP)
@click.option("--content", "content_mode", type=click.Choice(CONTENT_MODES), help=CONTENT_HELP)
@click.option("--excerpt-words", type=click.IntRange(10, 1000), help=EXCERPT_WORDS_HELP)
@click.option("--images/--no-images", default=None, help=IMAGES_HELP)
@presentation_options
def edit(
    slug: str, name: str | None, schedule: str | None, timezone: str | None,
    min_articles: int | None, max_articles: int | None, from_address: str | None,
    list_id: str | None, topics: tuple[str, ...], all_topics: bool, allow_frequency: bool | None,
    template_set: str | None, max_age: int | None, article_languages: str | None,
    content_mode: str | None, excerpt_words: int | None, images: bool | None,
    **presentation: Any,
) -> None:  # fmt: skip
    """Change a newsletter's settings; options not given stay as they are.

    \b
    Example:
      gazette newsletters edit weekly --schedule "0 7 * * 1" --topic Energy --topic Cities
    """
    if topics and all_topics:
        raise click.UsageError("--topic and --all-topics contradict each other.")
    rt = runtime()
    if template_set is not None and not rt.renderer.has_template_set(template_set):
        raise GazetteError(
            f"There is no template set {template_set!r}: email/{template_set}.subject.j2, "
            ".txt.j2 and .html.j2 must exist in GAZETTE_TEMPLATE_DIR or the built-in theme."
        )
    changes = NewsletterChanges(
        name=name, cron=schedule, timezone=timezone, min_articles=min_articles,
        max_articles=max_articles, from_address=from_address, list_id=list_id,
        allow_frequency=allow_frequency, template_set=template_set,
        topics=[] if all_topics else (list(topics) if topics else None),
        max_age_days=max_age, article_languages=article_languages,
        content_mode=content_mode, excerpt_words=excerpt_words, images=images,
    )  # fmt: skip
    look = presentation_changes(presentation)
    with transaction(rt.sessions) as session:
        update_newsletter(session, slug, changes)
        edited = newsletter_by_slug(session, slug)
        apply_presentation(edited, look)
        if from_address is not None:
            require_dkim_key(rt.send_context, edited)  # nothing changed when refused
    click.echo(f"Newsletter {slug} updated.")


@newsletters.command()
@click.argument("slug")
def retire(slug: str) -> None:
    """Retire a newsletter: no longer offered on the subscribe form or scheduled.

    Its issues, ledger and archive pages are kept.

    \b
    Example:
      gazette newsletters retire monthly-brief
    """
    rt = runtime()
    with transaction(rt.sessions) as session:
        done = retire_newsletter(session, slug, utcnow())
    click.echo(f"Newsletter {slug} retired." if done else f"Newsletter {slug} was already retired.")


@newsletters.command()
@click.argument("slug")
@click.option("--language", default=None, help="Language of the form (default: the newsletter's).")
def embed(slug: str, language: str | None) -> None:
    """Print an HTML subscribe form to paste into the publisher's own site.

    It posts to this installation's /subscribe/embed. Set --website first: only
    posts from that site's origin subscribe at once; from anywhere else the reader
    confirms on this site's own form.

    \b
    Example:
      gazette newsletters embed weekly > subscribe-form.html
    """
    rt = runtime()
    with rt.sessions() as session:
        newsletter = newsletter_by_slug(session, slug)
        brand = brand_for(newsletter, rt.send_context.brand)
        chosen = language or newsletter.default_language
        snippet = embed_snippet(
            newsletter, brand, rt.settings.base_url,
            lambda message: rt.renderer.translate(chosen, message), chosen,
        )  # fmt: skip
    if not brand.website:
        click.echo(
            f"gazette: {slug} has no website (--website): every post from this form will ask "
            "the reader to confirm on this site's form.",
            err=True,
        )
    click.echo(snippet, nl=False)
