"""Composing digest messages: one issue's shared parts, personalised per reader.

An issue is loaded and rendered once per process, language and article set (readers
who chose the same topics share a render); per reader only the greeting, the links and
the headers change. Sending, previews and test sends all compose through here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gazette.dkim_signing import DkimSigner
from gazette.mailer import Transport
from gazette.mime import Envelope, build_message
from gazette.ratelimit import Throttle
from gazette.rendering import ArticleView, IssueView, RenderedMessage, Renderer
from gazette.senders import split_sender
from gazette.store.models import Article, Issue, IssueArticle, Newsletter, Topic, article_topic
from gazette.text import html_to_text
from gazette.tokens import Purpose, Tokens


@dataclass(frozen=True)
class SendContext:
    """What composing and sending need besides the database: links, keys, templates."""

    base_url: str
    default_from: str
    tokens: Tokens
    renderer: Renderer
    transport: Transport
    lease: timedelta
    throttle: Throttle
    signer: DkimSigner | None = None
    # Issues already loaded in this process: every batch of an issue shares them.
    cache: dict[int, Composer] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Reader:
    """What a message needs to know about its reader."""

    public_id: str
    email: str
    name: str
    language: str
    topics: frozenset[str] = frozenset()  # chosen topic slugs; empty means everything


@dataclass(frozen=True)
class Personalised:
    """One reader's rendered message before it becomes MIME."""

    subject: str
    text: str
    html: str
    unsubscribe_url: str
    boundary: str


@dataclass(frozen=True)
class PreparedIssue:
    """The per-issue part of every message: sender, list, and the article views."""

    issue_public_id: str
    newsletter_slug: str
    list_id: str
    from_name: str
    from_address: str
    planned_at: datetime
    view: IssueView
    template_set: str = "digest"


def domain_of(address: str) -> str:
    """The domain part of an address (for Message-IDs and List-Id)."""
    return address.rpartition("@")[2]


def message_id(issue_public_id: str, subscriber_public_id: str, domain: str) -> str:
    """Deterministic per (issue, subscriber), so a resend is recognisably the same message."""
    return f"{issue_public_id}.{subscriber_public_id}@{domain}"


def article_views(session: Session, article_ids: list[int]) -> tuple[ArticleView, ...]:
    """Template views of the given articles, in the given order, with their topic slugs."""
    articles = {
        a.id: a for a in session.scalars(select(Article).where(Article.id.in_(article_ids)))
    }
    topics: dict[int, set[str]] = {}
    for article_id, slug in session.execute(
        select(article_topic.c.article_id, Topic.slug)
        .join(Topic, Topic.id == article_topic.c.topic_id)
        .where(article_topic.c.article_id.in_(article_ids))
    ):
        topics.setdefault(article_id, set()).add(slug)
    return tuple(
        ArticleView(
            title=a.title,
            url=a.url,
            summary_html=a.summary,
            summary_text=html_to_text(a.summary),
            author=a.author,
            published_at=a.published_at,
            topics=frozenset(topics.get(a.id, ())),
        )
        for a in (articles[i] for i in article_ids)
    )


def prepare(
    newsletter: Newsletter,
    ctx: SendContext,
    *,
    issue_public_id: str,
    date: datetime,
    planned_at: datetime,
    articles: tuple[ArticleView, ...],
) -> PreparedIssue:
    """Assemble the shared part of an issue's messages."""
    sender = split_sender(newsletter.from_address or ctx.default_from)
    from_address = sender.address
    # RFC 2919: the identifier stays plain; only the name before it may be encoded.
    list_id = (newsletter.list_id or f"{newsletter.slug}.{domain_of(from_address)}").strip("<>")
    return PreparedIssue(
        issue_public_id=issue_public_id,
        newsletter_slug=newsletter.slug,
        list_id=list_id,
        from_name=sender.name or newsletter.name,
        from_address=from_address,
        planned_at=planned_at,
        template_set=newsletter.template_set or "digest",
        view=IssueView(
            newsletter_name=newsletter.name,
            date=date,
            articles=articles,
            archive_url=f"{ctx.base_url}/archive/{issue_public_id}",
        ),
    )


def prepare_issue(session: Session, issue_id: int, ctx: SendContext) -> PreparedIssue:
    """Load a planned issue's newsletter and frozen articles."""
    issue = session.get_one(Issue, issue_id)
    newsletter = session.get_one(Newsletter, issue.newsletter_id)
    article_ids = list(
        session.scalars(
            select(IssueArticle.article_id)
            .where(IssueArticle.issue_id == issue_id)
            .order_by(IssueArticle.position)
        )
    )
    return prepare(
        newsletter, ctx, issue_public_id=issue.public_id, date=issue.cutoff_at,
        planned_at=issue.planned_at, articles=article_views(session, article_ids),
    )  # fmt: skip


class Composer:
    """Builds each reader's message from the issue's shared, pre-rendered parts."""

    def __init__(self, prepared: PreparedIssue, ctx: SendContext) -> None:
        self.prepared = prepared
        self._ctx = ctx
        self._rendered: dict[tuple[str, tuple[int, ...]], RenderedMessage] = {}

    def _parts(self, language: str, topics: frozenset[str]) -> RenderedMessage | None:
        articles = self.prepared.view.articles
        chosen = tuple(n for n, a in enumerate(articles) if not topics or a.topics & topics)
        if not chosen:
            return None
        key = (language, chosen)
        rendered = self._rendered.get(key)
        if rendered is None:
            view = self.prepared.view
            if len(chosen) != len(articles):
                view = IssueView(
                    newsletter_name=view.newsletter_name, date=view.date,
                    articles=tuple(articles[n] for n in chosen), archive_url=view.archive_url,
                )  # fmt: skip
            rendered = self._ctx.renderer.render_issue(view, language, self.prepared.template_set)
            self._rendered[key] = rendered
        return rendered

    def _links(self, reader: Reader) -> tuple[str, str]:
        """The reader's (unsubscribe URL, preferences URL), each with a signed token."""
        ctx, slug = self._ctx, self.prepared.newsletter_slug
        unsubscribe = ctx.tokens.mint(Purpose.UNSUBSCRIBE, reader.public_id, slug)
        preferences = ctx.tokens.mint(Purpose.PREFERENCES, reader.public_id, slug)
        return (
            f"{ctx.base_url}/unsubscribe/{unsubscribe}",
            f"{ctx.base_url}/preferences/{preferences}",
        )

    def personalise(self, reader: Reader) -> Personalised | None:
        """The reader's subject, text and HTML, or None when no article matches their topics."""
        parts = self._parts(reader.language, reader.topics)
        if parts is None:
            return None
        unsubscribe_url, preferences_url = self._links(reader)
        text, html = parts.personalise(reader.name, unsubscribe_url, preferences_url)
        return Personalised(parts.subject, text, html, unsubscribe_url, parts.boundary)

    def compose(self, reader: Reader, date: datetime) -> tuple[str, bytes] | None:
        """Return (Message-ID, message bytes), or None when no article matches their topics.

        The bytes are those of build_message over personalise()'s bodies, but only the
        lines holding the reader's greeting and links are encoded for this reader.
        """
        parts = self._parts(reader.language, reader.topics)
        if parts is None:
            return None
        unsubscribe_url, preferences_url = self._links(reader)
        text, html = parts.personalise_encoded(reader.name, unsubscribe_url, preferences_url)
        prepared = self.prepared
        mid = message_id(
            prepared.issue_public_id, reader.public_id, domain_of(prepared.from_address)
        )
        envelope = Envelope(
            from_name=prepared.from_name,
            from_address=prepared.from_address,
            to_name=reader.name,
            to_address=reader.email,
            subject=parts.subject,
            message_id=mid,
            date=date,
            list_id=prepared.list_id,
            list_name=prepared.from_name,
            unsubscribe_url=unsubscribe_url,
        )
        message: bytes = build_message(envelope, text, html, parts.boundary)
        if self._ctx.signer is not None:
            message = self._ctx.signer.sign(message)
        return mid, message


def composer_for(session: Session, ctx: SendContext, issue_id: int) -> Composer:
    """Return the issue's composer, loading the issue once per process and context."""
    composer = ctx.cache.get(issue_id)
    if composer is None:
        composer = Composer(prepare_issue(session, issue_id, ctx), ctx)
        if len(ctx.cache) >= 16:
            ctx.cache.clear()
        ctx.cache[issue_id] = composer
    return composer
