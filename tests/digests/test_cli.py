"""The digest command line: preview, test sends (each its own Message-ID) and status."""

from __future__ import annotations

import json
from pathlib import Path

from gazette.demo_publisher import NEWSLETTER as DEMO_SLUG
from gazette.demo_publisher import NEWSLETTER_NAME as DEMO_NAME
from gazette.demo_publisher import READERS as DEMO_READERS
from tests.digests.helpers import (
    NEW_TITLE,
    NEW_URL,
    OKSANA,
    State,
    cli,
    one_sentence_failure,
    state,
)
from tests.support.digests import WORDS, greeting
from tests.support.messages import HtmlDocument, check_wire_format, listed_titles, parse, parts


def test_preview_test_send_and_status_from_the_command_line(
    tmp_path: Path, database_url: str
) -> None:
    demo = cli(tmp_path, database_url, "demo")
    assert demo.returncode == 0, demo.stderr
    after_demo = state(tmp_path, database_url)
    assert (after_demo.issues, after_demo.deliveries, len(after_demo.outbox)) == (
        1, len(DEMO_READERS), len(DEMO_READERS),
    )  # fmt: skip
    html_file, eml_file = tmp_path / "preview.html", tmp_path / "preview.eml"
    preview_args = (
        "digest",
        "preview",
        DEMO_SLUG,
        "--as",
        OKSANA[0],
        "--html",
        str(html_file),
        "--eml",
        str(eml_file),
    )

    # Everything went out with the demo's issue: nothing to preview, send or test.
    one_sentence_failure(cli(tmp_path, database_url, *preview_args), "no articles waiting")
    assert not html_file.exists()
    assert not eml_file.exists()
    skipped = cli(tmp_path, database_url, "digest", "send", DEMO_SLUG, "--now")
    assert skipped.returncode == 0, skipped.stderr
    assert "nothing sent" in skipped.stdout
    after_skip = state(tmp_path, database_url)
    assert after_skip == State(after_demo.issues + 1, after_demo.deliveries, after_demo.outbox)

    added = cli(
        tmp_path,
        database_url,
        "articles",
        "add",
        "--title",
        NEW_TITLE,
        "--url",
        NEW_URL,
        "--summary",
        "<p>Sleeper trains are back &amp; busy.</p>",
    )
    assert added.returncode == 0, added.stderr
    assert "added" in added.stdout

    shown = cli(tmp_path, database_url, *preview_args)
    assert shown.returncode == 0, shown.stderr
    assert state(tmp_path, database_url) == after_skip  # a preview changes nothing
    data = eml_file.read_bytes()
    check_wire_format(data)
    message = parse(data)
    to = message["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == [(OKSANA[1], OKSANA[0])]
    assert message["Subject"] == f"{DEMO_NAME}: {NEW_TITLE}"
    assert shown.stdout.splitlines()[0] == f"Subject: {DEMO_NAME}: {NEW_TITLE}"
    text, html = parts(message)
    assert listed_titles(text) == [NEW_TITLE]
    assert greeting("uk", OKSANA[1]) in text
    assert greeting("uk", OKSANA[1]) in shown.stdout
    page = HtmlDocument(html_file.read_text(encoding="utf-8"))
    assert page.lang == "uk"
    assert greeting("uk", OKSANA[1]) in page.text
    assert (NEW_URL, NEW_TITLE) in page.links
    assert page.hidden_text.startswith(WORDS["uk"].preheader(1))
    assert HtmlDocument(html).links == page.links

    tested = cli(tmp_path, database_url, "digest", "test", DEMO_SLUG, "--to", "editor@example.org")
    assert tested.returncode == 0, tested.stderr
    assert "editor@example.org" in tested.stdout
    after_test = state(tmp_path, database_url)
    assert (after_test.issues, after_test.deliveries) == (after_skip.issues, after_skip.deliveries)
    [new_file] = after_test.outbox - after_skip.outbox
    test_data = (tmp_path / "var" / "outbox" / "new" / new_file).read_bytes()
    check_wire_format(test_data)
    test_message = parse(test_data)
    assert [a.addr_spec for a in test_message["To"].addresses] == ["editor@example.org"]
    assert test_message["Subject"] == f"{DEMO_NAME}: {NEW_TITLE}"
    test_text, _test_html = parts(test_message)
    assert WORDS["en"].anonymous in test_text
    assert listed_titles(test_text) == [NEW_TITLE]

    status = cli(tmp_path, database_url, "digest", "status", "--json")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)  # the whole output is one JSON document
    issues = document["issues"]
    assert [row["status"] for row in issues] == ["skipped", "sent"]  # newest first
    assert (issues[1]["newsletter"], issues[1]["sent"], issues[1]["pending"]) == (
        DEMO_SLUG, len(DEMO_READERS), 0,
    )  # fmt: skip
    assert (issues[0]["planned"], issues[0]["sent"]) == (0, 0)


def test_two_test_sends_are_two_messages_with_their_own_message_ids(
    tmp_path: Path, database_url: str
) -> None:
    # Gmail and others drop a message whose Message-ID they already hold: an editor who
    # sends a second test after fixing a typo must receive it.
    assert cli(tmp_path, database_url, "demo").returncode == 0
    added = cli(tmp_path, database_url, "articles", "add", "--title", NEW_TITLE, "--url", NEW_URL)
    assert added.returncode == 0, added.stderr
    before = state(tmp_path, database_url)
    for _ in range(2):
        result = cli(tmp_path, database_url, "digest", "test", DEMO_SLUG, "--to", "ed@example.org")
        assert result.returncode == 0, result.stderr
    new = sorted(state(tmp_path, database_url).outbox - before.outbox)
    assert len(new) == 2
    ids = [
        parse((tmp_path / "var" / "outbox" / "new" / name).read_bytes())["Message-ID"]
        for name in new
    ]
    demo_ids = {
        parse((tmp_path / "var" / "outbox" / "new" / name).read_bytes())["Message-ID"]
        for name in before.outbox
    }
    assert ids[0] != ids[1], ids
    assert not demo_ids & set(ids)
