"""Readers' topics choose their articles; each distinct edition is rendered once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gazette.articles.service import topic_for
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import DeliveryStatus, IssueStatus
from gazette.tokens import Purpose
from tests.digests.helpers import BIG_ISSUE, LANGUAGES, TOPIC_ISSUE, new_newsletter
from tests.support.digests import (
    BASE_URL,
    NAME,
    WORDS,
    add_articles,
    add_readers,
    choose_topics,
    count_renders,
    deliveries,
    expected_subject,
    greeting,
    maildir_messages,
    plan,
    send,
)
from tests.support.env import installed_runtime
from tests.support.messages import HtmlDocument, listed_titles, parse, parts
from worker import tasks


def test_readers_who_chose_topics_get_only_those_and_equal_choices_share_a_render(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    newsletter_id = new_newsletter(runtime)
    add_articles(runtime, TOPIC_ISSUE)
    with transaction(runtime.sessions) as session:
        topic_for(session, "Gardening")  # offered, but no article of this issue has it
    seeded = add_readers(
        runtime,
        [
            ("sci1@example.com", "Sci One", "en"),
            ("sci2@example.com", "Sci Two", "en"),
            ("sci3@example.com", "Наука Три", "uk"),
            ("arts@example.com", "Culture Sport", "en"),
            ("garden@example.com", "Gardener", "en"),
            ("all1@example.com", "All One", "en"),
            ("all2@example.com", "All Two", "en"),
        ],
    )
    chosen = {
        "sci1@example.com": ["science"],
        "sci2@example.com": ["science"],
        "sci3@example.com": ["science"],
        "arts@example.com": ["culture", "sport"],
        "garden@example.com": ["gardening"],
    }
    readers = {
        email: choose_topics(runtime, reader, chosen[email]) if email in chosen else reader
        for email, reader in seeded.items()
    }
    renders = count_renders(monkeypatch, runtime)
    issue_id, issue_public_id, _status = plan(runtime, newsletter_id)

    issue = send(runtime, issue_id)

    titles = [a.title for a in TOPIC_ISSUE]
    science = [titles[0], titles[2]]
    culture_sport = [titles[1], titles[2], titles[3]]
    expected = {
        "sci1@example.com": science,
        "sci2@example.com": science,
        "sci3@example.com": science,
        "arts@example.com": culture_sport,
        "all1@example.com": titles,
        "all2@example.com": titles,
    }
    received: dict[str, list[str]] = {}
    for data in maildir_messages(runtime):
        message = parse(data)
        address = message["To"].addresses[0].addr_spec
        text, html = parts(message)
        received[address] = listed_titles(text)
        reader = readers[address]
        assert greeting(reader.language, reader.name) in text
        assert message["Subject"] == expected_subject(NAME, expected[address], reader.language)
        doc = HtmlDocument(html)
        assert doc.hrefs(WORDS[reader.language].read) == [
            a.url for a in TOPIC_ISSUE if a.title in expected[address]
        ]
        assert doc.hidden_text.startswith(WORDS[reader.language].preheader(len(expected[address])))
        assert doc.hrefs(WORDS[reader.language].view) == [f"{BASE_URL}/archive/{issue_public_id}"]
    assert received == expected

    rows = deliveries(runtime, issue_id)
    assert rows["garden@example.com"].status == DeliveryStatus.SKIPPED
    assert rows["garden@example.com"].last_error == "no article matches the reader's topics"
    assert rows["garden@example.com"].message_id is None
    assert {email for email, row in rows.items() if row.status == DeliveryStatus.SENT} == set(
        expected
    )
    assert (issue.status, issue.sent_count, issue.skipped_count) == (IssueStatus.SENT, 6, 1)
    # One render per (language, article set): sci1 and sci2 share, all1 and all2 share.
    assert sorted(renders.calls) == sorted(
        [
            ("en", tuple(science)),
            ("uk", tuple(science)),
            ("en", tuple(culture_sport)),
            ("en", tuple(titles)),
        ]
    )


def test_an_issue_is_rendered_once_per_language_not_once_per_reader(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with installed_runtime(tmp_path, database_url, batch_size="100") as rt:
        newsletter_id = new_newsletter(rt)
        add_articles(rt, BIG_ISSUE[:2])
        readers = add_readers(
            rt,
            [(f"r{n:03d}@example.com", f"Reader {n:03d}", LANGUAGES[n % 3]) for n in range(300)],
        )
        renders = count_renders(monkeypatch, rt)
        issue_id, _public_id, _status = plan(rt, newsletter_id)

        assert tasks.enqueue_issue(issue_id) == 3  # three batches, one process

        messages = maildir_messages(rt)
        assert len(messages) == 300
        assert Counter(language for language, _titles in renders.calls) == Counter(LANGUAGES)
        assert {titles for _language, titles in renders.calls} == {
            tuple(a.title for a in BIG_ISSUE[:2])
        }
        # Shared renders are still personalised: each reader's own name and links.
        seen = set()
        for data in messages:
            message = parse(data)
            reader = readers[message["To"].addresses[0].addr_spec]
            text, _html = parts(message)
            assert greeting(reader.language, reader.name) in text
            token = str(message["List-Unsubscribe"])[1:-1].rpartition("/")[2]
            assert rt.tokens.read(Purpose.UNSUBSCRIBE, token).subscriber == reader.public_id
            seen.add(reader.email)
        assert seen == set(readers)
