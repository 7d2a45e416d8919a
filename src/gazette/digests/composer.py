"""Composing digest messages: one issue's shared parts, personalised per reader.

An issue is loaded and rendered once per process, language and article set (readers
who chose the same topics and read the same languages share a render); per reader only
the greeting, the links and the headers change, and which render a reader gets is one
dictionary lookup. Sending, previews and test sends all compose through here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gazette.config import Brand
from gazette.deliverability_settings import Deliverability
from gazette.digests.content import HTML_BUDGET, ContentChoice, article_views, shorten_longest
from gazette.digests.envelopes import domain_of, list_id_for, message_id, reader_links, sealed
from gazette.digests.intro import issue_notes
from gazette.digests.routing import (
    ALL,
    Route,
    carried_languages,
    link_languages,
    normalise_tag,
    route,
)
from gazette.mail.dkim import DkimSigner
from gazette.mail.mime import Envelope, quoted_printable
from gazette.mail.provider_headers import ProviderHeader
from gazette.mail.senders import split_sender
from gazette.mail.transports import Transport
from gazette.mail.verp import Verp
from gazette.newsletters.brand import brand_for
from gazette.newsletters.campaigns import tag_url
from gazette.ratelimit import Throttle
from gazette.rendering import LANGUAGES, ArticleView, IssueView, RenderedMessage, Renderer
from gazette.store.models import Issue, IssueArticle, Newsletter
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
    # The installation's brand (GAZETTE_PUBLISHER, ...): each newsletter's default.
    brand: Brand = field(default_factory=Brand)
    # GAZETTE_BOUNCE_ADDRESS and its signing keys; None: the From address is the sender.
    verp: Verp | None = None
    # GAZETTE_MAIL_PROVIDER's metadata header, carrying the VERP token; None: no provider.
    provider_header: ProviderHeader | None = None
    # Soft-bounce decay, the pause limits and the Feedback-ID's SenderId (GAZETTE_*).
    deliverability: Deliverability = field(default_factory=Deliverability)
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
    # Further languages read (normalised), for newsletters that route by language.
    extra_languages: frozenset[str] = frozenset()


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
    # Language routing: "all" or "own", the newsletter's default language, and the
    # languages it has published in (a reader reading none of them gets the default's).
    article_languages: str = ALL
    default_language: str = "en"
    published: frozenset[str] = frozenset()


def feedback_id(prepared: PreparedIssue, sender_id: str | None) -> str:
    """The Feedback-ID of every message of an issue: ``issue:newsletter:gazette:SenderId``.

    Google aggregates complaints per field, the right-most (SenderId, the setting or
    the From domain) mandatory; nothing in it names a reader, so it is one per issue.
    """
    sender = sender_id or domain_of(prepared.from_address)
    return f"{prepared.issue_public_id}:{prepared.newsletter_slug}:gazette:{sender}"


# The longest a reader's name can be (subscriber.name), in the widest characters once
# quoted-printable encoded, and the longest public id a link can carry.
_LONGEST_NAME = "語" * 200
_LONGEST_ID = "x" * 32


def prepare(
    newsletter: Newsletter,
    ctx: SendContext,
    *,
    issue_public_id: str,
    date: datetime,
    planned_at: datetime,
    articles: tuple[ArticleView, ...],
    published: frozenset[str] = frozenset(),
    intro: dict[str, str] | None = None,
) -> PreparedIssue:
    """Assemble the shared part of an issue's messages.

    ``published``: the languages the newsletter's earlier issues carried; this issue's
    own articles' languages are added. ``intro``: the issue's editor's note per
    language (None: the newsletter's standing note, as a preview shows it).
    """
    articles = tuple(replace(a, url=tag_url(a.url, newsletter, date)) for a in articles)
    sender = split_sender(newsletter.from_address or ctx.default_from)
    from_address = sender.address
    return PreparedIssue(
        issue_public_id=issue_public_id,
        newsletter_slug=newsletter.slug,
        list_id=list_id_for(newsletter, from_address),
        from_name=sender.name or newsletter.name,
        from_address=from_address,
        planned_at=planned_at,
        template_set=newsletter.template_set or "digest",
        article_languages=newsletter.article_languages or ALL,
        default_language=normalise_tag(newsletter.default_language) or "en",
        published=published | {a.language for a in articles if a.language},
        view=IssueView(
            newsletter_name=newsletter.name,
            date=date,
            articles=articles,
            archive_url=f"{ctx.base_url}/archive/{issue_public_id}",
            brand=brand_for(newsletter, ctx.brand),
            notes=issue_notes(newsletter.intro if intro is None else intro),
        ),
    )


def prepare_issue(session: Session, issue_id: int, ctx: SendContext) -> PreparedIssue:
    """Load a planned issue's newsletter, frozen articles and published languages."""
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
        planned_at=issue.planned_at,
        articles=article_views(session, article_ids, ContentChoice.of(newsletter)),
        published=carried_languages(session, newsletter.id, issue_id), intro=issue.intro or {},
    )  # fmt: skip


# What selects a reader's render: (language, further languages, topics).
_ReaderKey = tuple[str, frozenset[str], frozenset[str]]
# A render: (template language, article positions, languages named in the archive link).
_RenderKey = tuple[str, tuple[int, ...], tuple[str, ...]]
# Distinct reader keys are few (languages x topic choices); this only bounds a pathology.
_MAX_READER_KEYS = 4096


@dataclass(frozen=True)
class _Selection:
    """What one reader key receives: its route, and the positions of its articles."""

    route: Route
    in_languages: tuple[int, ...]
    chosen: tuple[int, ...]


class Composer:
    """Builds each reader's message from the issue's shared, pre-rendered parts."""

    def __init__(self, prepared: PreparedIssue, ctx: SendContext) -> None:
        self.prepared = prepared
        self._ctx = ctx
        self._present = frozenset(a.language for a in prepared.view.articles if a.language)
        self._rendered: dict[_RenderKey, RenderedMessage] = {}
        self._by_reader: dict[_ReaderKey, RenderedMessage | None] = {}
        self._feedback_id = feedback_id(prepared, ctx.deliverability.feedback_sender_id)

    @property
    def render_count(self) -> int:
        """How many distinct renders this issue has needed so far in this process."""
        return len(self._rendered)

    def _select(self, language: str, extra: frozenset[str], topics: frozenset[str]) -> _Selection:
        """The articles a reader key receives: by language route, then by topics."""
        prepared, articles = self.prepared, self.prepared.view.articles
        way = route(
            prepared.article_languages, language, extra, prepared.published,
            prepared.default_language,
        )  # fmt: skip
        in_languages = tuple(n for n, a in enumerate(articles) if way.admits(a.language))
        chosen = tuple(n for n in in_languages if not topics or articles[n].topics & topics)
        return _Selection(way, in_languages, chosen)

    def _render(self, language: str, selection: _Selection) -> RenderedMessage:
        """The shared render of one (language, article set): made once, then reused."""
        template_language = language if language in LANGUAGES else "en"
        link = link_languages(selection.route.wanted, self._present)
        key = (template_language, selection.chosen, link)
        rendered = self._rendered.get(key)
        if rendered is None:
            view, articles = self.prepared.view, self.prepared.view.articles
            if len(selection.chosen) != len(articles):
                view = replace(view, articles=tuple(articles[n] for n in selection.chosen))
            if link:
                # "View in your browser" opens the reader's own edition of the issue.
                view = replace(view, archive_url=f"{view.archive_url}?lang={','.join(link)}")
            rendered = self._within_budget(view, template_language)
            self._rendered[key] = rendered
        return rendered

    def sent_html_size(self, rendered: RenderedMessage) -> int:
        """Bytes of the HTML part as sent to the reader with the longest name and links."""
        tokens, slug, base = self._ctx.tokens, self.prepared.newsletter_slug, self._ctx.base_url
        unsubscribe = tokens.mint(Purpose.UNSUBSCRIBE, _LONGEST_ID, slug)
        preferences = tokens.mint(Purpose.PREFERENCES, _LONGEST_ID, slug)
        _text, html = rendered.personalise(
            _LONGEST_NAME, f"{base}/unsubscribe/{unsubscribe}", f"{base}/preferences/{preferences}"
        )
        return len(quoted_printable(html))

    def _within_budget(self, view: IssueView, language: str) -> RenderedMessage:
        """Render ``view``, shortening its longest summaries until the HTML fits HTML_BUDGET.

        The longest summaries are excerpted to one common size, so short articles keep
        their text; the footer, with the unsubscribe link, is always sent whole.
        """
        render = self._ctx.renderer.render_issue
        rendered = render(view, language, self.prepared.template_set)
        while (size := self.sent_html_size(rendered)) > HTML_BUDGET:
            shorter = shorten_longest(view, size - HTML_BUDGET)
            if shorter is None:
                break
            view = shorter
            rendered = render(view, language, self.prepared.template_set)
        return rendered

    def _parts(self, reader: Reader) -> RenderedMessage | None:
        """The reader's shared render, or None when none of the issue's articles is theirs."""
        key = (reader.language, reader.extra_languages, reader.topics)
        try:
            return self._by_reader[key]
        except KeyError:
            pass
        selection = self._select(*key)
        parts = self._render(reader.language, selection) if selection.chosen else None
        if len(self._by_reader) >= _MAX_READER_KEYS:
            self._by_reader.clear()
        self._by_reader[key] = parts
        return parts

    def articles_for(self, reader: Reader) -> tuple[ArticleView, ...]:
        """The articles of this issue the reader receives (by language, then topics)."""
        selection = self._select(reader.language, reader.extra_languages, reader.topics)
        return tuple(self.prepared.view.articles[n] for n in selection.chosen)

    def skip_reason(self, reader: Reader) -> str:
        """Why the reader receives nothing of this issue, for the ledger's last_error."""
        selection = self._select(reader.language, reader.extra_languages, reader.topics)
        topics = reader.topics
        if topics and not any(a.topics & topics for a in self.prepared.view.articles):
            return "no article matches the reader's topics"
        wanted = ", ".join(sorted(selection.route.wanted or ()))
        if not selection.in_languages:
            return f"no article in the reader's languages ({wanted})"
        return f"no article in the reader's languages ({wanted}) matches their topics"

    def _links(self, reader: Reader) -> tuple[str, str]:
        """The reader's (unsubscribe URL, preferences URL), each with a signed token."""
        return reader_links(self._ctx, reader.public_id, self.prepared.newsletter_slug)

    def personalise(self, reader: Reader) -> Personalised | None:
        """The reader's subject, text and HTML, or None when no article is theirs."""
        parts = self._parts(reader)
        if parts is None:
            return None
        unsubscribe_url, preferences_url = self._links(reader)
        text, html = parts.personalise(reader.name, unsubscribe_url, preferences_url)
        return Personalised(parts.subject, text, html, unsubscribe_url, parts.boundary)

    def compose(
        self, reader: Reader, date: datetime, delivery_id: int | None = None
    ) -> tuple[str, bytes] | None:
        """Return (Message-ID, message bytes), or None when no article is theirs (skip_reason).

        ``delivery_id``, the ledger row sent, puts its token in the provider's header.

        The bytes are those of build_message over personalise()'s bodies, but only the
        lines holding the reader's greeting and links are encoded for this reader.
        """
        parts = self._parts(reader)
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
            provider_header=self._provider_header(delivery_id),
            feedback_id=self._feedback_id,
        )
        return mid, sealed(self._ctx, envelope, text, html, parts.boundary)

    def _provider_header(self, delivery_id: int | None) -> str | None:
        """The provider's metadata header of a ledger row, or None (no provider, no row)."""
        header = self._ctx.provider_header
        return None if header is None or delivery_id is None else header.line(delivery_id)


def composer_for(session: Session, ctx: SendContext, issue_id: int) -> Composer:
    """Return the issue's composer, loading the issue once per process and context."""
    composer = ctx.cache.get(issue_id)
    if composer is None:
        composer = Composer(prepare_issue(session, issue_id, ctx), ctx)
        if len(ctx.cache) >= 16:
            ctx.cache.clear()
        ctx.cache[issue_id] = composer
    return composer
