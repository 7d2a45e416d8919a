"""What each article carries in a digest, and how summaries shrink to fit the mail.

A newsletter sends each article's excerpt (made again at its chosen length) or its
whole post, with or without images. Gmail clips an HTML part over 102 KB, hiding the
footer with the unsubscribe link: ``shorten_longest`` trims the longest summaries
until an issue fits HTML_BUDGET.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from gazette.articles.html import (
    DEFAULT_EXCERPT_WORDS,
    html_words,
    make_excerpt,
    styled_for_mail,
    without_images,
)
from gazette.digests.routing import normalise_tag
from gazette.mail.mime import quoted_printable
from gazette.rendering import ArticleView, IssueView
from gazette.store.models import Article, Newsletter, Topic, article_topic
from gazette.text import html_to_text

# Gmail clips a message whose HTML part is over 102 KB, hiding the footer with the
# unsubscribe link: every digest's HTML part stays under this many bytes as sent.
HTML_BUDGET = 100_000


@dataclass(frozen=True)
class ContentChoice:
    """What a newsletter's articles carry: excerpt or full post, excerpt length, images."""

    mode: str = "excerpt"
    excerpt_words: int = DEFAULT_EXCERPT_WORDS
    images: bool = True

    @classmethod
    def of(cls, newsletter: Newsletter) -> ContentChoice:
        """The choice a newsletter's settings make."""
        return cls(
            newsletter.content_mode or "excerpt",
            newsletter.excerpt_words or DEFAULT_EXCERPT_WORDS,
            bool(newsletter.images),
        )


def article_body(article: Article, choice: ContentChoice) -> str:
    """The HTML an article carries in a digest: its excerpt or its whole post.

    An excerpt made from the post at ingestion is made again at the newsletter's
    length; a feed's own excerpt much longer than that is cut too.
    """
    summary, content = article.summary or "", article.content or ""
    if choice.mode == "full":
        body = content or summary
    elif content and (not summary or summary == make_excerpt(content)):
        body = make_excerpt(content, choice.excerpt_words)
    elif html_words(summary) > choice.excerpt_words * 1.5:
        body = make_excerpt(summary, choice.excerpt_words)
    else:
        body = summary
    return styled_for_mail(body) if choice.images else without_images(body)


def article_views(
    session: Session, article_ids: list[int], choice: ContentChoice | None = None
) -> tuple[ArticleView, ...]:
    """Template views of the given articles, in the given order, with their topic slugs."""
    choice = choice or ContentChoice()
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
    views = []
    for article in (articles[i] for i in article_ids):
        body = article_body(article, choice)
        views.append(
            ArticleView(
                title=article.title,
                url=article.url,
                summary_html=body,
                summary_text=html_to_text(body),
                author=article.author,
                published_at=article.published_at,
                topics=frozenset(topics.get(article.id, ())),
                language=normalise_tag(article.language),
                image_url=(article.image_url or None) if choice.images else None,
                image_alt=article.image_alt or "",
            )
        )
    return tuple(views)


def shorten_longest(view: IssueView, excess: int) -> IssueView | None:
    """``view`` with its longest summaries excerpted to save about ``excess`` bytes.

    The summaries are cut down to one common size (the longest first, the short ones
    untouched), each at a block or sentence boundary; None when none can be shorter.
    """
    articles = list(view.articles)
    sizes = [len(quoted_printable(a.summary_html)) for a in articles]
    # Inlined styles and escaping make the sent bytes larger than the summary's own.
    need = excess + HTML_BUDGET // 20
    low, high = 0, max(sizes, default=0)
    while low < high:  # the largest common cap that saves what is needed
        cap = (low + high + 1) // 2
        if sum(max(0, size - cap) for size in sizes) >= need:
            low = cap
        else:
            high = cap - 1
    changed = False
    for n, (article, size) in enumerate(zip(articles, sizes, strict=True)):
        if size <= low or not article.summary_html:
            continue
        words = html_words(article.summary_html)
        target = int(words * low / size)
        summary = make_excerpt(article.summary_html, target) if target >= 10 else ""
        if summary == article.summary_html:
            summary = make_excerpt(summary, int(words / 2)) if words >= 20 else ""
        articles[n] = replace(article, summary_html=summary, summary_text=html_to_text(summary))
        changed = True
    return replace(view, articles=tuple(articles)) if changed else None
