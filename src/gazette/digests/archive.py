"""The public archive: issues that went out, newest first, as pages and an Atom feed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gazette.digests.composer import SendContext, prepare_issue
from gazette.errors import GazetteError
from gazette.newsletters.service import newsletter_by_slug
from gazette.rendering import IssueView
from gazette.store.models import Edition, Issue, IssueStatus, Newsletter

PUBLISHED = (IssueStatus.SENDING, IssueStatus.SENT)


@dataclass(frozen=True)
class ArchivedIssue:
    """One entry of the archive: where it lives, when, and what it carried."""

    public_id: str
    newsletter_slug: str
    newsletter_name: str
    date: datetime
    view: IssueView
    # The languages the page was narrowed to (a reader's own edition); None: all.
    languages: frozenset[str] | None = None


def list_archive(
    session: Session,
    ctx: SendContext,
    newsletter_slug: str | None = None,
    limit: int = 50,
    languages: frozenset[str] | None = None,
) -> list[ArchivedIssue]:
    """Issues that were sent (or are going out), newest first.

    Weekly summaries repeat the week's issues, so the list leaves them out; each still
    has its page, which its "view in browser" link opens. With ``languages`` each issue
    is narrowed to that reader's edition, as on its own page.
    """
    query = (
        select(Issue, Newsletter)
        .join(Newsletter, Newsletter.id == Issue.newsletter_id)
        .where(Issue.status.in_(PUBLISHED), Issue.edition == Edition.REGULAR)
        .order_by(Issue.cutoff_at.desc(), Issue.id.desc())
        .limit(limit)
    )
    if newsletter_slug:
        query = query.where(Issue.newsletter_id == newsletter_by_slug(session, newsletter_slug).id)
    rows = session.execute(query).all()
    return [
        _narrowed(_archived(session, ctx, issue, newsletter), languages)
        for issue, newsletter in rows
    ]


def archived_issue(
    session: Session,
    ctx: SendContext,
    public_id: str,
    languages: frozenset[str] | None = None,
) -> ArchivedIssue:
    """One issue of the archive, or GazetteError when there is no such published issue.

    With ``languages`` (from a reader's "view in your browser" link), only the articles
    in those languages and those without one: the edition that reader received.
    """
    row = session.execute(
        select(Issue, Newsletter)
        .join(Newsletter, Newsletter.id == Issue.newsletter_id)
        .where(Issue.public_id == public_id, Issue.status.in_(PUBLISHED))
    ).first()
    if row is None:
        raise GazetteError("There is no such issue in the archive.")
    issue, newsletter = row
    return _narrowed(_archived(session, ctx, issue, newsletter), languages)


def _narrowed(item: ArchivedIssue, languages: frozenset[str] | None) -> ArchivedIssue:
    """The issue with only the articles in ``languages`` and those without one; all when None."""
    if languages is None:
        return item
    articles = tuple(a for a in item.view.articles if a.language is None or a.language in languages)
    return replace(item, view=replace(item.view, articles=articles), languages=languages)


def _archived(
    session: Session, ctx: SendContext, issue: Issue, newsletter: Newsletter
) -> ArchivedIssue:
    view = prepare_issue(session, issue.id, ctx).view
    return ArchivedIssue(issue.public_id, newsletter.slug, newsletter.name, issue.cutoff_at, view)
