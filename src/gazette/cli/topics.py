"""``gazette topics``: curate the topics readers choose from on the preferences page."""

from __future__ import annotations

from dataclasses import asdict

import click
from rich.table import Table
from rich.text import Text

from gazette.cli.app import console, main, print_json, runtime
from gazette.newsletters.topics import (
    check_label_language,
    list_topics,
    merge_topics,
    rename_topic,
    set_hidden,
    set_offered,
)
from gazette.store.db import transaction


@main.group()
def topics() -> None:
    """Name, offer, hide and merge the topics readers may choose.

    Topics first seen as a feed's categories are not offered to readers until you
    offer them (they still filter newsletters and readers' choices); topics you name
    yourself (`feeds add --topic`, `articles add --topic`) are offered at once.

    \b
    Example:
      gazette topics list
      gazette topics rename energy --label "Energy"
      gazette topics rename energy --language uk --label "Енергетика"
      gazette topics offer energy
    """


@topics.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--all", "show_all", is_flag=True, help="Include hidden topics.")
def list_(as_json: bool, show_all: bool) -> None:
    """List topics: slug, name, labels, whether offered, and what uses each.

    \b
    Example:
      gazette topics list --all --json
    """
    with runtime().sessions() as session:
        rows = list_topics(session, include_hidden=show_all)
    if as_json:
        print_json({"topics": [asdict(row) for row in rows]})
        return
    table = Table("slug", "name", "labels", "readers see it", "articles", "feeds", "newsletters",
                  "chosen by", "merged in")  # fmt: skip
    for row in rows:
        shown = "hidden" if row.hidden else ("offered" if row.offered else "not offered")
        labels = ", ".join(f"{code}: {text}" for code, text in row.labels.items())
        # Names come from feeds: printed as text, never as markup.
        table.add_row(
            Text(row.slug), Text(row.name), Text(labels), shown, str(row.articles),
            str(row.feeds), str(row.newsletters), str(row.subscriptions),
            Text(", ".join(row.aliases)),
        )  # fmt: skip
    console().print(table)


@topics.command()
@click.argument("slug")
@click.option("--label", "text", required=True, help="The new name, or the label in --language.")
@click.option("--language", help="Set the label readers of this language see (en, uk, ja).")
def rename(slug: str, text: str, language: str | None) -> None:
    """Rename a topic, or label it in one language; its slug stays.

    Without --language the name changes: readers whose language has no label see it.
    With --language only that language's label changes; an empty label removes it.

    \b
    Example:
      gazette topics rename energiia --label "Energy"
      gazette topics rename energiia --language uk --label "Енергетика"
    """
    with transaction(runtime().sessions) as session:
        topic = rename_topic(session, slug, text, language)
        slug, name, labels = topic.slug, topic.name, dict(topic.labels)
    if language is None:
        click.echo(f"Topic {slug} is now called {name!r}.")
    else:
        code = check_label_language(language)
        shown = labels.get(code, name)
        click.echo(f"Topic {slug} is labelled {shown!r} for readers in {code}.")


def _set_flag(slug: str, *, offered: bool | None = None, hidden: bool | None = None) -> None:
    """Set one curation flag in one transaction and say where the topic now stands."""
    with transaction(runtime().sessions) as session:
        if offered is not None:
            topic = set_offered(session, slug, offered)
        else:
            topic = set_hidden(session, slug, bool(hidden))
        slug, is_offered, is_hidden = topic.slug, topic.offered, topic.hidden
    if is_hidden:
        state = "is hidden (readers do not see it; `gazette topics show` undoes that)"
    elif is_offered:
        state = "is offered to readers"
    else:
        state = "is not offered to readers (`gazette topics offer` offers it)"
    click.echo(f"Topic {slug} {state}.")


@topics.command()
@click.argument("slug")
def offer(slug: str) -> None:
    """Offer a topic to readers on the preferences page.

    \b
    Example:
      gazette topics offer energy
    """
    _set_flag(slug, offered=True)


@topics.command()
@click.argument("slug")
def unoffer(slug: str) -> None:
    """Stop offering a topic to readers; it still filters for readers who chose it.

    \b
    Example:
      gazette topics unoffer long-read
    """
    _set_flag(slug, offered=False)


@topics.command()
@click.argument("slug")
def hide(slug: str) -> None:
    """Hide a topic from readers and from `topics list` (without --all); it still filters.

    \b
    Example:
      gazette topics hide featured
    """
    _set_flag(slug, hidden=True)


@topics.command()
@click.argument("slug")
def show(slug: str) -> None:
    """Undo `hide`: list the topic again, and offer it to readers if it is offered.

    \b
    Example:
      gazette topics show featured
    """
    _set_flag(slug, hidden=False)


@topics.command()
@click.argument("source")
@click.argument("target")
def merge(source: str, target: str) -> None:
    """Merge topic SOURCE into TARGET and delete SOURCE, in one transaction.

    Articles, feeds, newsletter filters and readers' choices move to TARGET; TARGET keeps
    its name and flags. SOURCE's slug stays an alias, so a feed that still says the old
    category files its new articles under TARGET.

    \b
    Example:
      gazette topics merge ukraina ukraine
    """
    with transaction(runtime().sessions) as session:
        moved = merge_topics(session, source, target)
    click.echo(
        f"Merged topic {moved.source} into {moved.target}: moved {moved.articles} article(s), "
        f"{moved.feeds} feed(s), {moved.newsletters} newsletter filter(s) and "
        f"{moved.subscriptions} reader choice(s); {moved.source} is deleted."
    )
