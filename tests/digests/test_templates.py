"""Templates: a template folder overrides one template and keeps the rest; titles are
escaped in HTML and left alone in text.
"""

from __future__ import annotations

from pathlib import Path

from gazette.runtime import Runtime
from tests.digests.helpers import BIG_ISSUE, new_newsletter
from tests.support.digests import (
    BASE_URL,
    NAME,
    WORDS,
    ArticleSpec,
    add_articles,
    add_readers,
    greeting,
    maildir_messages,
    plan,
    send,
)
from tests.support.env import installed_runtime
from tests.support.messages import HtmlDocument, listed_titles, parse, parts


def test_a_template_folder_overrides_one_template_and_keeps_the_rest(
    tmp_path: Path, database_url: str
) -> None:
    theme = tmp_path / "theme"
    (theme / "email").mkdir(parents=True)
    (theme / "email" / "digest.subject.j2").write_text(
        '[{{ _("Archive") }}] {{ issue.newsletter_name }}: {{ issue.articles|length }} new\n',
        encoding="utf-8",
    )
    with installed_runtime(tmp_path, database_url, template_dir=str(theme)) as rt:
        newsletter_id = new_newsletter(rt)
        articles = BIG_ISSUE[1:3]
        add_articles(rt, articles)
        readers = add_readers(
            rt, [("en@example.com", "Ada", "en"), ("uk@example.com", "Оксана", "uk")]
        )
        issue_id, issue_public_id, _status = plan(rt, newsletter_id)
        send(rt, issue_id)
        messages = [parse(data) for data in maildir_messages(rt)]

    assert [p.relative_to(theme).as_posix() for p in theme.rglob("*") if p.is_file()] == [
        "email/digest.subject.j2"
    ]
    subjects = {m["To"].addresses[0].addr_spec: str(m["Subject"]) for m in messages}
    # The operator's template, translated like the built-in ones.
    assert subjects == {
        "en@example.com": f"[Archive] {NAME}: 2 new",
        "uk@example.com": f"[Архів] {NAME}: 2 new",
    }
    for message in messages:
        reader = readers[message["To"].addresses[0].addr_spec]
        words = WORDS[reader.language]
        text, html = parts(message)
        # Text and HTML still come from the built-in theme.
        assert greeting(reader.language, reader.name) in text
        assert listed_titles(text) == [a.title for a in articles]
        assert f"{words.read}: {articles[0].url}" in text
        doc = HtmlDocument(html)
        assert doc.hidden_text.startswith(words.preheader(2))
        assert doc.hrefs(words.view) == [f"{BASE_URL}/archive/{issue_public_id}"]
        assert len(doc.hrefs(words.unsubscribe)) == 1


def test_titles_are_escaped_in_html_and_left_alone_in_text(runtime: Runtime) -> None:
    title = "<b>x</b> & <script>"
    newsletter_id = new_newsletter(runtime)
    add_articles(
        runtime,
        [ArticleSpec(title, "https://blog.example.com/x?a=1&b=2", 1,
                     '<p>A <b>bold</b> move<script>alert(1)</script></p>')],
    )  # fmt: skip
    add_readers(runtime, [("reader@example.com", "<i>Eve</i> & Co", "en")])
    issue_id, _public_id, _status = plan(runtime, newsletter_id)
    send(runtime, issue_id)

    [data] = maildir_messages(runtime)
    message = parse(data)
    text, html = parts(message)
    assert message["Subject"] == f"{NAME}: {title}"

    assert "&lt;b&gt;x&lt;/b&gt; &amp; &lt;script&gt;" in html
    assert "<script" not in html.lower()
    assert "&lt;i&gt;Eve&lt;/i&gt; &amp; Co" in html
    assert "<i>" not in html
    doc = HtmlDocument(html)
    assert ("https://blog.example.com/x?a=1&b=2", title) in doc.links
    assert "Hello, <i>Eve</i> & Co!" in doc.text
    assert "b" in doc.tags  # the sanitised summary keeps its own markup
    assert "A bold move" in doc.text
    assert "alert(1)" not in html

    assert f"1. {title}" in text
    assert "Hello, <i>Eve</i> & Co!" in text
    assert "&lt;" not in text
    assert "&amp;" not in text
    assert "Read the article: https://blog.example.com/x?a=1&b=2" in text
