"""`gazette subscribers`, run as a real subprocess on each database backend."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select, update
from sqlalchemy.orm import Session

from gazette.store.models import Event, Newsletter, Subscriber, Subscription
from tests.support.cli import SLUG, Cli, _not_utf8, _valid_rows, one_sentence, write_csv
from tests.support.env import make_env
from tests.support.messages import parse


def last_events(session: Session, count: int) -> list[tuple[object, str]]:
    """The ``count`` latest events as (kind, address), newest first."""
    rows = session.execute(
        select(Event.kind, Subscriber.email)
        .join(Subscriber, Subscriber.id == Event.subscriber_id)
        .order_by(Event.id.desc())
        .limit(count)
    )
    return [(kind, email) for kind, email in rows]


def summary(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stdout.splitlines() if line.startswith("Imported ")]
    assert len(lines) == 1, result.stdout
    return lines[0]


@pytest.fixture
def fresh(tmp_path: Path, database_url: str) -> Cli:
    """An installation whose database is empty: no schema yet."""
    return Cli(tmp_path, make_env(tmp_path, database_url), database_url)


@pytest.fixture
def cli(fresh: Cli) -> Cli:
    """An installation after `gazette init` with one newsletter, weekly."""
    fresh.ok("init")
    fresh.ok("newsletters", "add", SLUG, "--name", "Weekly")
    return fresh


# -- add -------------------------------------------------------------------------------


def test_add_confirmed_is_active_and_sends_nothing(cli: Cli) -> None:
    result = cli.ok("subscribers", "add", "ada@example.org", "--name", "Ada", "--confirmed")
    assert result.stdout.strip() == "ada@example.org is active on weekly."
    ada = cli.show("ada@example.org")
    assert ada["subscriptions"] == {SLUG: "active"}
    assert ada["name"] == "Ada"
    assert ada["confirmed_at"] is not None
    assert ada["consent"]["source"] == "cli"
    assert cli.outbox() == []


def test_add_without_confirmed_is_pending_and_mails_a_confirmation_link(cli: Cli) -> None:
    result = cli.ok("subscribers", "add", "bob@example.org", "--name", "Bob", "--language", "uk")
    assert "pending" in result.stdout
    bob = cli.show("bob@example.org")
    assert bob["subscriptions"] == {SLUG: "pending"}
    assert bob["confirmed_at"] is None
    assert bob["language"] == "uk"
    assert "confirmation_sent" in [event["kind"] for event in bob["events"]]

    files = cli.outbox()
    assert len(files) == 1
    message = parse(files[0])
    assert message.defects == []
    assert message["To"].addresses[0].addr_spec == "bob@example.org"
    plain = message.get_body(("plain",))
    assert plain is not None
    text = plain.get_content()
    assert re.search(r"https://news\.example\.org/confirm/[A-Za-z0-9_.\-]+", text), text
    assert "Вітаємо, Bob!" in text  # the reader's language


def test_add_with_a_bad_address_is_one_sentence_naming_it_and_exit_1(cli: Cli) -> None:
    before = cli.counts()
    for address in ("not-an-address", "two@@example.org", "dots..twice@example.org"):
        result = cli("subscribers", "add", address, "--confirmed")
        assert result.returncode == 1, result.stderr
        line = one_sentence(result)
        assert address in line
        assert line.endswith(".")
        assert result.stdout == ""
    assert cli.counts() == before
    assert cli.outbox() == []


def test_add_with_an_unknown_language_is_a_usage_error(cli: Cli) -> None:
    result = cli("subscribers", "add", "ada@example.org", "--language", "fr")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--language" in result.stderr
    assert "'fr'" in result.stderr
    assert cli.emails() == []


# -- list, show, remove, forget --------------------------------------------------------


def test_list_and_show_json_print_one_document_and_nothing_else(cli: Cli) -> None:
    cli.ok("subscribers", "add", "ada@example.org", "--name", "Ada", "--confirmed")
    cli.ok("subscribers", "add", "oksana@example.org", "--name", "Оксана", "--language", "uk")

    listed = cli.ok("subscribers", "list", "--json")
    document = json.loads(listed.stdout)  # the whole of stdout is one JSON document
    assert document["total"] == 2
    rows = document["subscribers"]
    assert [row["email"] for row in rows] == ["oksana@example.org", "ada@example.org"]
    assert rows[0]["name"] == "Оксана"
    assert rows[0]["subscriptions"] == {SLUG: "pending"}
    assert rows[1]["subscriptions"] == {SLUG: "active"}

    active = json.loads(cli.ok("subscribers", "list", "--json", "--status", "active").stdout)
    assert active["total"] == 1
    assert [row["email"] for row in active["subscribers"]] == ["ada@example.org"]

    shown = cli.ok("subscribers", "show", "ada@example.org", "--json")
    ada = json.loads(shown.stdout)
    assert ada["email"] == "ada@example.org"
    assert ada["subscriptions"] == {SLUG: "active"}
    assert [event["kind"] for event in ada["events"]] == ["created", "subscribed", "confirmed"]

    missing = cli("subscribers", "show", "nobody@example.org", "--json")
    assert missing.returncode == 1
    assert "nobody@example.org" in one_sentence(missing)
    assert missing.stdout == ""


def test_list_counts_each_reader_once_however_many_newsletters_they_read(cli: Cli) -> None:
    cli.ok("newsletters", "add", "daily", "--name", "Daily")
    for slug in (SLUG, "daily"):
        cli.ok("subscribers", "add", "ada@example.org", "--newsletter", slug, "--confirmed")
    for args in ([], ["--status", "active"], ["--newsletter", "daily"]):
        document = cli.listing(*args)
        assert [row["email"] for row in document["subscribers"]] == ["ada@example.org"], args
        assert document["total"] == 1, args
    assert cli.listing("--status", "pending")["total"] == 0


def test_remove_unsubscribes_and_keeps_the_record(cli: Cli) -> None:
    cli.ok("subscribers", "add", "ada@example.org", "--confirmed")
    result = cli.ok("subscribers", "remove", "ada@example.org")
    assert result.stdout.strip() == "ada@example.org: 1 subscription(s) ended."
    ada = cli.show("ada@example.org")
    assert ada["subscriptions"] == {SLUG: "unsubscribed"}
    assert ada["events"][-1]["kind"] == "unsubscribed"
    again = cli.ok("subscribers", "remove", "ada@example.org")
    assert again.stdout.strip() == "ada@example.org: 0 subscription(s) ended."


def test_forget_removes_the_address_everywhere_and_import_skips_it(cli: Cli) -> None:
    cli.ok("subscribers", "add", "ada@example.org", "--name", "Ada", "--confirmed")
    cli.ok("subscribers", "add", "bob@example.org", "--name", "Bob", "--confirmed")

    # Without --yes it asks; saying no keeps the reader.
    declined = cli("subscribers", "forget", "ada@example.org", input="n\n")
    assert declined.returncode == 1
    assert "ada@example.org" in cli.emails()

    cli.ok("subscribers", "forget", "ada@example.org", "--yes")
    assert cli.emails() == ["bob@example.org"]
    exported = cli.ok("subscribers", "export")
    assert "ada@example.org" not in exported.stdout
    assert "bob@example.org" in exported.stdout
    assert cli("subscribers", "show", "ada@example.org").returncode == 1
    listed = cli.listing()
    assert [row["email"] for row in listed["subscribers"]] == ["bob@example.org"]
    assert listed["total"] == 1

    readers = write_csv(
        cli.folder / "readers.csv",
        [["email", "name"], ["ada@example.org", "Ada"], ["carol@example.org", "Carol"]],
    )
    result = cli.ok("subscribers", "import", str(readers), "--confirmed")
    line = summary(result)
    assert "1 added" in line
    assert "1 skipped as forgotten or suppressed" in line
    assert sorted(cli.emails()) == ["bob@example.org", "carol@example.org"]


# -- import ----------------------------------------------------------------------------


def test_import_never_resubscribes_an_unsubscribed_reader(cli: Cli) -> None:
    cli.ok("subscribers", "add", "ada@example.org", "--confirmed")
    cli.ok("subscribers", "remove", "ada@example.org")
    readers = write_csv(cli.folder / "readers.csv", [["email"], ["ada@example.org"]])
    for flags in (["--send-confirmations", "--rate", "1000"], ["--confirmed"]):
        line = summary(cli.ok("subscribers", "import", str(readers), *flags))
        assert "0 added, 0 updated, 0 unchanged, 1 skipped as unsubscribed" in line
        assert cli.statuses() == {"ada@example.org": "unsubscribed"}
    assert cli.outbox() == []


def test_import_without_a_language_keeps_the_language_a_reader_chose(cli: Cli) -> None:
    cli.ok("subscribers", "add", "oksana@example.org", "--language", "uk", "--confirmed")
    readers = write_csv(cli.folder / "readers.csv", [["email", "name"], ["oksana@example.org", ""]])
    line = summary(cli.ok("subscribers", "import", str(readers), "--confirmed"))
    assert cli.readers()["oksana@example.org"][1] == "uk"
    assert "0 updated, 1 unchanged" in line


# As Excel saves "CSV UTF-8": a byte order mark, CRLF line ends, a quoted comma.
EXCEL_CSV = (
    "\ufeffemail,name,language\r\n"
    'oksana@example.org,"Коваленко, Оксана",uk\r\n'
    "hanako@example.net,佐藤 花子,ja\r\n"
    "olivia@example.org,Olivia,\r\n"
)


def test_import_of_a_utf8_file_with_a_bom_and_crlf_line_ends(cli: Cli) -> None:
    path = cli.folder / "excel.csv"
    path.write_bytes(EXCEL_CSV.encode())
    line = summary(
        cli.ok("subscribers", "import", str(path), "--send-confirmations", "--rate", "1000")
    )
    assert "3 added" in line
    assert "0 rejected" in line
    assert cli.readers() == {
        "oksana@example.org": ("Коваленко, Оксана", "uk"),
        "hanako@example.net": ("佐藤 花子", "ja"),
        "olivia@example.org": ("Olivia", "en"),
    }
    assert set(cli.statuses().values()) == {"pending"}


def test_import_numbers_and_reads_rows_as_the_file_lays_them_out(cli: Cli) -> None:
    # Blank lines, a record over two lines, a short row, a long row, an over-long field in
    # a named and in an unnamed column: each row is read, and numbered, by its own line.
    path = cli.folder / "layout.csv"
    path.write_text(
        "email,name,language,notes,\n"
        "ada@example.org,Ada,en,,\n"
        "\n"
        "\n"
        'bob@example.org,"Bob\nSmith",uk,,\n'
        "carol@example.org,Carol\n"
        "dave@example.org,Dave,en,,,extra\n"
        f"erin@example.org,Erin,en,{'z' * 10_001},\n"
        f"fay@example.org,Fay,ja,,{'y' * 10_001}\n"
        "gus@example.org,Gus,xx,,\n"
        "\n"
        "not-an-address,Nobody,en,,\n",
        encoding="utf-8",
    )
    first = cli.ok("subscribers", "import", str(path), "--send-confirmations", "--rate", "1000")
    assert first.stderr.splitlines() == [
        f"{path}:8: more fields than the header row",
        f"{path}:9: a field is over 10000 characters",
        f"{path}:13: 'not-an-address' is not a valid email address "
        "(An email address must have an @-sign).",
    ]
    assert "5 added, 0 updated, 0 unchanged" in summary(first)
    assert "0 languages mapped, 1 given the default language en" in summary(first)
    # A language not offered (xx) gives the reader the default, not a rejection.
    assert cli.readers() == {
        "ada@example.org": ("Ada", "en"),
        "bob@example.org": ("Bob Smith", "uk"),
        "carol@example.org": ("Carol", "en"),
        "fay@example.org": ("Fay", "ja"),
        "gus@example.org": ("Gus", "en"),
    }
    assert set(cli.statuses().values()) == {"pending"}

    # With consent held, pending readers are confirmed and a new one subscribed: their
    # events follow the file's order.
    again = write_csv(
        cli.folder / "again.csv",
        [["email", "name"], ["ada@example.org", "Ada"], ["new@example.org", "New"],
         ["bob@example.org", "Bob"]],
    )  # fmt: skip
    line = summary(cli.ok("subscribers", "import", str(again), "--confirmed"))
    assert "1 added, 2 updated, 0 unchanged" in line
    with cli.session() as session:
        events = last_events(session, 3)
    assert [tuple(e) for e in reversed(events)] == [
        ("confirmed", "ada@example.org"),
        ("subscribed", "new@example.org"),
        ("confirmed", "bob@example.org"),
    ]
    assert cli.statuses() == {
        "ada@example.org": "active",
        "bob@example.org": "active",
        "new@example.org": "active",
        "carol@example.org": "pending",
        "fay@example.org": "pending",
        "gus@example.org": "pending",
    }
    assert cli.readers()["bob@example.org"] == ("Bob", "uk")

    # Into a second newsletter: readers already stored (with lower ids) and a new one
    # are subscribed, their events again in the file's order.
    cli.ok("newsletters", "add", "monthly", "--name", "Monthly")
    third = write_csv(
        cli.folder / "monthly.csv",
        [["email"], ["carol@example.org"], ["zed@example.org"], ["ada@example.org"]],
    )
    line = summary(
        cli.ok("subscribers", "import", str(third), "--newsletter", "monthly", "--confirmed")
    )
    assert "1 added, 2 updated, 0 unchanged" in line
    with cli.session() as session:
        events = last_events(session, 3)
        subscriptions = session.execute(
            select(Subscriber.email)
            .join(Subscription, Subscription.subscriber_id == Subscriber.id)
            .join(Newsletter, Newsletter.id == Subscription.newsletter_id)
            .where(Newsletter.slug == "monthly")
            .order_by(Subscription.id)
        ).all()
    assert [tuple(e) for e in reversed(events)] == [
        ("subscribed", "carol@example.org"),
        ("subscribed", "zed@example.org"),
        ("subscribed", "ada@example.org"),
    ]
    assert [email for (email,) in subscriptions] == [
        "carol@example.org",
        "zed@example.org",
        "ada@example.org",
    ]


@pytest.mark.parametrize(
    "flags", [[], ["--confirmed", "--send-confirmations"]], ids=["neither", "both"]
)
def test_import_makes_the_operator_choose_consent_or_confirmation_mail(
    cli: Cli, flags: list[str]
) -> None:
    readers = write_csv(cli.folder / "readers.csv", [["email"], ["ada@example.org"]])
    before = cli.counts()
    result = cli("subscribers", "import", str(readers), *flags)
    assert result.returncode == 2
    sentence = one_sentence(result)
    assert "--confirmed" in sentence
    assert "--send-confirmations" in sentence
    assert "complaints" in sentence
    assert result.stdout == ""
    assert cli.counts() == before
    assert cli.outbox() == []


def test_import_with_send_confirmations_mails_each_new_reader_once(cli: Cli) -> None:
    # Three spellings of one mailbox are one reader, the first spelling kept.
    readers = write_csv(
        cli.folder / "readers.csv",
        [["email", "name"], ["John@example.org", "John"], ["john@example.org", "J"],
         ["JOHN@EXAMPLE.ORG", "JOHN"], ["mary@example.org", "Mary"]],
    )  # fmt: skip
    result = cli.ok(
        "subscribers", "import", str(readers), "--send-confirmations", "--rate", "1000"
    )  # fmt: skip
    line = summary(result)
    assert "2 added, 0 updated, 2 unchanged" in line
    assert line.endswith(", 2 confirmation mails queued.")
    assert cli.statuses() == {"John@example.org": "pending", "mary@example.org": "pending"}
    recipients = sorted(parse(f)["To"].addresses[0].addr_spec for f in cli.outbox())
    assert recipients == ["John@example.org", "mary@example.org"]
    # Again, with consent: the same one reader, now active, and no more mail.
    line = summary(cli.ok("subscribers", "import", str(readers), "--confirmed"))
    assert "0 added, 2 updated, 2 unchanged" in line
    assert cli.emails() == ["John@example.org", "mary@example.org"]
    assert len(cli.outbox()) == 2


def test_import_maps_language_tags_and_gives_the_rest_the_default(cli: Cli) -> None:
    readers = write_csv(
        cli.folder / "readers.csv",
        [["email", "language"], ["hanako@example.net", "ja-JP"], ["olivia@example.org", "EN_gb"],
         ["oksana@example.org", "uk-UA"], ["hans@example.de", "de"], ["ada@example.org", "en"]],
    )  # fmt: skip
    result = cli.ok("subscribers", "import", str(readers), "--confirmed")
    assert result.stderr == ""
    line = summary(result)
    assert "5 added" in line
    assert "0 rejected, 3 languages mapped, 1 given the default language en" in line
    assert {email: language for email, (_name, language) in cli.readers().items()} == {
        "hanako@example.net": "ja",
        "olivia@example.org": "en",
        "oksana@example.org": "uk",
        "hans@example.de": "en",
        "ada@example.org": "en",
    }


def test_export_for_excel_starts_with_a_byte_order_mark(cli: Cli) -> None:
    readers = write_csv(
        cli.folder / "readers.csv",
        [["email", "name", "language"], ["oksana@example.org", "Оксана Коваленко", "uk"],
         ["hanako@example.net", "佐藤 花子", "ja"], ["eq@example.org", "=1+2", "en"]],
    )  # fmt: skip
    cli.ok("subscribers", "import", str(readers), "--confirmed")
    for flags, bom in (([], b""), (["--excel"], b"\xef\xbb\xbf")):
        out = cli.folder / f"export{len(flags)}.csv"
        cli.ok("subscribers", "export", *flags, "-o", str(out))
        from_stdout = cli.raw("subscribers", "export", *flags).stdout
        for data in (out.read_bytes(), from_stdout):
            assert data.startswith(bom + b"email,name,")
            text = data[len(bom) :].decode("utf-8")
            names = {row[0]: row[1] for row in csv.reader(io.StringIO(text, newline=""))}
            assert names["oksana@example.org"] == "Оксана Коваленко"
            assert names["hanako@example.net"] == "佐藤 花子"
            assert names["eq@example.org"] == "'=1+2"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_import_of_100000_rows_with_1_percent_bad_is_reported_by_line(cli: Cli) -> None:
    rows = 100_000
    path = cli.folder / "big.csv"
    bad_lines: list[int] = []
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("email,name,language\n")
        for n in range(1, rows + 1):
            if n % 100 == 0:
                bad_lines.append(n + 1)  # the header is line 1
                handle.write(f"reader{n}-at-example.org,Reader {n},en\n")
            else:
                handle.write(f"reader{n}@example.org,Reader {n},{('en', 'uk', 'ja')[n % 3]}\n")
    assert len(bad_lines) == rows // 100

    first = cli.ok("subscribers", "import", str(path), "--confirmed", timeout=600)
    reported = []
    for message in first.stderr.splitlines():
        match = re.fullmatch(re.escape(str(path)) + r":(\d+): (.+)", message)
        assert match, f"unexpected stderr line: {message!r}"
        reported.append(int(match.group(1)))
        assert "-at-example.org" in match.group(2)
    assert sorted(reported) == bad_lines  # each bad line once, and no other line
    assert summary(first) == (
        "Imported big.csv: 99000 added, 0 updated, 0 unchanged, 0 skipped as unsubscribed, "
        "0 skipped as forgotten or suppressed, 1000 rejected."
    )
    statuses = cli.statuses()
    assert len(statuses) == 99_000
    assert set(statuses.values()) == {"active"}

    second = cli.ok("subscribers", "import", str(path), "--confirmed", timeout=600)
    assert summary(second) == (
        "Imported big.csv: 0 added, 0 updated, 99000 unchanged, 0 skipped as unsubscribed, "
        "0 skipped as forgotten or suppressed, 1000 rejected."
    )
    assert second.stderr == first.stderr
    assert len(cli.emails()) == 99_000


UNREADABLE: dict[str, tuple[bytes, int | None]] = {
    "not-utf8-on-line-3": _not_utf8(3),
    "not-utf8-on-line-5000": _not_utf8(5000),
    "no-email-column": (b"mail,name\nada@example.org,Ada\nbob@example.org,Bob\n", None),
    "empty": (b"", None),
    "broken-quote-on-line-40": (
        (
            "email,name\n"
            + _valid_rows(2, 39)
            + 'broken@example.org,"Broken quote\n'
            + _valid_rows(41, 80)
        ).encode(),
        40,
    ),
}


def test_an_unreadable_file_is_one_sentence_exit_1_and_writes_nothing(
    cli: Cli, subtests: pytest.Subtests
) -> None:
    cli.ok("subscribers", "add", "ada@example.org", "--confirmed")
    for kind, (content, line) in UNREADABLE.items():
        with subtests.test(kind):
            path = cli.folder / f"{kind}.csv"
            path.write_bytes(content)
            before = cli.counts()
            result = cli("subscribers", "import", str(path), "--confirmed")
            assert result.returncode == 1, (
                f"exit {result.returncode}: {result.stdout}{result.stderr}"
            )
            sentence = one_sentence(result)
            assert str(path) in sentence
            if line is not None:
                assert re.search(rf"\bline {line}\b", sentence), sentence
            assert "Imported" not in result.stdout
            assert cli.counts() == before


# -- export ----------------------------------------------------------------------------

FORMULAS = {
    "hyperlink@example.org": '=HYPERLINK("https://evil.example/","click me")',
    "plus@example.org": "+1 555 0100",
    "minus@example.org": "-2+3",
    "at@example.org": "@SUM(A1:A2)",
    "tab@example.org": "\tTabbed",
    "cr@example.org": "\rCarriage",
}


def test_export_neutralises_cells_a_spreadsheet_would_run(cli: Cli) -> None:
    rows = [["email", "name"], ["-dash@example.org", "Plain"], ["ada@example.org", "Ada"]]
    rows += [[email, f"placeholder {n}"] for n, email in enumerate(FORMULAS)]
    line = summary(
        cli.ok("subscribers", "import", str(write_csv(cli.folder / "r.csv", rows)), "--confirmed")
    )
    assert "8 added" in line
    # Names are stored as given by whatever wrote them; the CLI and import fold control
    # characters away, so a leading tab or CR has to be put in the database directly.
    with cli.session() as session, session.begin():
        for email, name in FORMULAS.items():
            session.execute(update(Subscriber).where(Subscriber.email == email).values(name=name))

    out = cli.folder / "export.csv"
    to_file = cli("subscribers", "export", "-o", str(out))
    assert to_file.returncode == 0, to_file.stderr
    assert "Exported 8 row(s)." in to_file.stderr
    with out.open(encoding="utf-8-sig", newline="") as handle:
        from_file = list(csv.reader(handle))
    to_stdout = cli.raw("subscribers", "export")
    assert to_stdout.returncode == 0
    from_stdout = list(csv.reader(io.StringIO(to_stdout.stdout.decode(), newline="")))
    assert from_stdout == from_file

    header, *records = from_file
    assert header[:2] == ["email", "name"]
    names = {record[0]: record[1] for record in records}
    for email, name in FORMULAS.items():
        assert names[email] == "'" + name, (email, names[email])
    assert names["'-dash@example.org"] == "Plain"  # the address cell is neutralised too
    assert names["ada@example.org"] == "Ada"
    for record in records:
        for cell in record:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), record


# -- before init -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["subscribers", "list"], ["subscribers", "add", "ada@example.org"]],
    ids=["list", "add"],
)
def test_a_command_before_init_says_to_run_db_upgrade(fresh: Cli, args: list[str]) -> None:
    result = fresh(*args)
    assert result.returncode == 1
    sentence = one_sentence(result)
    assert "`gazette db upgrade`" in sentence
    assert result.stdout == ""
    engine = create_engine(fresh.database_url)
    try:
        assert inspect(engine).get_table_names() == []  # nothing was half-created
    finally:
        engine.dispose()
