"""A thousand readers in three languages each get a well-formed digest; a List-Id stays plain."""

from __future__ import annotations

from collections import Counter

import pytest

from gazette.runtime import Runtime
from gazette.store.models import DeliveryStatus, IssueStatus
from tests.digests.helpers import BIG_ISSUE, LANGUAGES, check_digest, new_newsletter, reader_name
from tests.support.digests import (
    DOMAIN,
    FROM,
    SLUG,
    add_articles,
    add_readers,
    deliveries,
    maildir_messages,
    plan,
    send,
)
from tests.support.messages import parse, raw_header
from tests.support.smtp import SMTPServer


@pytest.mark.slow
def test_a_thousand_reader_issue_arrives_well_formed_in_every_language(
    smtp_runtime: Runtime, smtp_server: SMTPServer
) -> None:
    newsletter_id = new_newsletter(smtp_runtime)
    add_articles(smtp_runtime, BIG_ISSUE)
    readers = add_readers(
        smtp_runtime,
        [
            (f"reader{n:04d}@example.com", reader_name(n), LANGUAGES[n % len(LANGUAGES)])
            for n in range(1000)
        ],
    )
    issue_id, issue_public_id, status = plan(smtp_runtime, newsletter_id)
    assert status == IssueStatus.PLANNED

    issue = send(smtp_runtime, issue_id)

    assert (issue.status, issue.sent_count, issue.failed_count) == (IssueStatus.SENT, 1000, 0)
    assert len(smtp_server.messages) == 1000
    assert Counter(r for m in smtp_server.messages for r in m.recipients) == Counter(readers.keys())
    message_ids: set[str] = set()
    subjects: dict[str, set[str]] = {language: set() for language in LANGUAGES}
    for received in smtp_server.messages:
        assert received.sender == FROM
        reader = readers[received.recipients[0]]
        message_ids.add(
            check_digest(smtp_runtime, received.data, reader, issue_public_id, BIG_ISSUE)
        )
        subjects[reader.language].add(str(received.parsed()["Subject"]))
    assert len(message_ids) == 1000
    # One subject per language, each in that language.
    assert {language: len(found) for language, found in subjects.items()} == {
        "en": 1, "uk": 1, "ja": 1,
    }  # fmt: skip
    [english], [ukrainian], [japanese] = (subjects[language] for language in LANGUAGES)
    assert english.endswith(" and 4 more")
    assert ukrainian.endswith(" та ще 4")
    assert japanese.endswith(" ほか4件")
    assert {row.status for row in deliveries(smtp_runtime, issue_id).values()} == {
        DeliveryStatus.SENT
    }


def test_list_id_of_a_newsletter_with_a_non_ascii_name_keeps_its_identifier_plain(
    runtime: Runtime,
) -> None:
    # RFC 2919: List-Id is a phrase and "<list-id>"; only the phrase may be RFC 2047
    # encoded, or filters that read the raw header (Gmail, Sieve, procmail) find no list.
    name = "Щотижневик «Меридіан»"
    newsletter_id = new_newsletter(runtime, name)
    add_articles(runtime, BIG_ISSUE[:1])
    add_readers(runtime, [("reader@example.com", "Reader", "uk")])
    issue_id, _public_id, _status = plan(runtime, newsletter_id)
    send(runtime, issue_id)

    [data] = maildir_messages(runtime)
    message = parse(data)
    assert message["List-Id"] == f"{name} <{SLUG}.{DOMAIN}>"
    assert message["From"].addresses[0].display_name == name
    unfolded = b"".join(raw_header(data, "List-Id"))
    assert unfolded.endswith(f" <{SLUG}.{DOMAIN}>".encode()), unfolded
