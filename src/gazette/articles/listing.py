"""The operator's view of articles: the newest ones, and the issues that carried each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gazette.store.models import Article, Edition, Issue, IssueArticle, IssueStatus, Newsletter


@dataclass(frozen=True)
class Carried:
    """One issue that carried an article: its id, newsletter, edition and status."""

    issue_id: int
    newsletter_slug: str
    edition: Edition
    status: IssueStatus


def recent_articles(session: Session, since: datetime | None, limit: int) -> list[Article]:
    """The newest ``limit`` articles by publication date, at or after ``since`` when given."""
    query = select(Article).order_by(Article.published_at.desc()).limit(limit)
    if since is not None:
        query = query.where(Article.published_at >= since)
    return list(session.scalars(query))


def issues_carrying(session: Session, article_ids: list[int]) -> dict[int, list[Carried]]:
    """For each article id, the issues that carried it, oldest first (none: an empty list)."""
    carried: dict[int, list[Carried]] = {article_id: [] for article_id in article_ids}
    query = (
        select(IssueArticle.article_id, Issue.id, Newsletter.slug, Issue.edition, Issue.status)
        .join(Issue, Issue.id == IssueArticle.issue_id)
        .join(Newsletter, Newsletter.id == Issue.newsletter_id)
        .where(IssueArticle.article_id.in_(article_ids))
        .order_by(Issue.id)
    )
    for article_id, issue_id, slug, edition, status in session.execute(query):
        carried[article_id].append(Carried(issue_id, slug, edition, status))
    return carried
