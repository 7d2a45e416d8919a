"""Hostile input for the injection tests: names and addresses that carry markup, control
characters, header breaks and spreadsheet formulas, and the checks that each comes out inert.

The strategies are Hypothesis's; the checks read what the CLI printed, the CSV export and
the message headers, so a name that escapes in any of them fails the test that stored it.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.utils import parseaddr
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gazette.addresses import AddressError, normalise_address
from gazette.cli import main
from gazette.cli.output import visible
from gazette.mail.mime import Envelope, build_message
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime, current_runtime, use_runtime
from gazette.store.db import transaction
from gazette.subscribers.csv_export import FORMULA_LEAD, export_csv, neutralise
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from gazette.text import clean_line
from tests.support.env import make_env
from tests.support.messages import parse

SLUG = "weekly"
PIECES = [
    "[/bold]", "[link=https://evil.example]", "[/link]", "[blink]", "[bold red]", "\\[",
    "[", "]", ":smile:", ":warning:", "=", "+", "-", "@", "\t", "\r", "\n", "\r\n", "\x85",
    "\u2028", "\u2029", "\x1b[31m", "\x1b]8;;https://evil.example\x1b\\", "\u202e", "\u2066",
    "=?utf-8?b?SGk=?=", '"', "\\", "<", ">", ",", ";", "Bcc: victim@evil.example",
    "\r\nBcc: victim@evil.example", "=HYPERLINK(\"https://evil.example\")", "=1+2",
    "@SUM(A1)", "Оксана", "佐藤 花子", "👩‍💻", " ", "  ",
]  # fmt: skip
names = st.one_of(
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=10).map("".join),
    st.text(min_size=150, max_size=300),
    st.text(),
)


# Local parts email-validator accepts (dot-atoms and internationalised letters), some
# starting with a spreadsheet's formula characters.
ATEXT = "abcxyzABCXYZ0189!#$%&'*+-/=?^_`{|}~"


local_parts = st.tuples(
    st.sampled_from(["", "=", "+", "-", "="]),
    st.text(st.sampled_from(ATEXT) | st.sampled_from("оксанаüß佐藤é"), min_size=1, max_size=16),
)
domains = st.sampled_from(
    ["example.org", "news.example.com", "bücher.example", "пример.example", "例え.example"]
)
counter = itertools.count()
# A local part as the strategy above draws it: (a lead character or "", the rest).
Local = tuple[str, str]
Test = Callable[..., None]


def fuzzed_readers(max_examples: int) -> Callable[[Test], Test]:
    """Run the test on ``max_examples`` drawn (name, local part, domain) triples.

    The function-scoped fixtures (runtime, installation) serve every example on purpose:
    each example stores a reader at an address of its own.
    """

    def wrap(test: Test) -> Test:
        drawn = given(name=names, local=local_parts, domain=domains)(test)
        return settings(
            max_examples=max_examples,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )(drawn)

    return wrap


def address_from(lead: str, body: str, domain: str) -> str:
    """A valid address (each example's own, so two examples never share a reader)."""
    candidate = f"{lead}{body}{next(counter)}@{domain}"
    try:
        return normalise_address(candidate, allow_smtputf8=True)
    except AddressError:
        assume(False)
        raise


@pytest.fixture
def installation(runtime: Runtime, tmp_path: Path, database_url: str) -> dict[str, str]:
    """A migrated database with one newsletter; the environment the CLI reads it with."""
    with transaction(runtime.sessions) as session:
        create_newsletter(session, SLUG, "Weekly")
    return make_env(tmp_path, database_url)


def add(runtime: Runtime, address: str, name: str) -> str:
    """Store the reader; return the name as stored (folded to one line, at most 200)."""
    with transaction(runtime.sessions) as session:
        subscribe(
            session, address, SLUG, Origin("web"), name=name, confirmed=True, allow_smtputf8=True
        )
    return clean_line(name, 200)


def check_cli_output(runtime: Runtime, env: dict[str, str], address: str, stored: str) -> None:
    """`subscribers show` and `list` print the stored reader literally and never crash."""
    shown = run(runtime, env, "subscribers", "show", "--", address)
    assert shown.exit_code == 0, (shown.output, shown.exception)
    printed_literally(stored, shown.output)
    assert address in squeezed(shown.output)

    listed = run(runtime, env, "subscribers", "list", "--limit", "1")
    assert listed.exit_code == 0, (listed.output, listed.exception)
    assert "\x1b" not in listed.output
    if len(stored) <= 40:
        # Short enough that its table cell is one line at the CLI's 200 columns.
        assert visible(stored) in listed.output


def check_csv_export(runtime: Runtime, address: str, stored: str) -> None:
    """The export has one row for the reader, its cells neutralised, and no row injected."""
    out = io.StringIO(newline="")
    with runtime.sessions() as session:
        count = export_csv(session, out)
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert len(rows) == count + 1  # a header, then one row per subscription: no row injected
    mine = [row for row in rows if row[0] == neutralise(address)]
    assert len(mine) == 1
    assert mine[0][1] == neutralise(stored)
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(FORMULA_LEAD), row


def check_message_headers(name: str, address: str) -> None:
    """A message with the name in every name slot has its usual headers, each the name only."""
    envelope = Envelope(
        from_name=name, from_address="digest@news.example.org", to_name=name,
        to_address=address, subject=f"Welcome, {name}", message_id="confirm.1@news.example.org",
        date=datetime(2026, 12, 5, 9, 0, tzinfo=UTC), list_id="weekly.news.example.org",
        list_name=name, unsubscribe_url="https://news.example.org/unsubscribe/abc",
    )  # fmt: skip
    data = build_message(envelope, "text", "<p>html</p>", "b0undary")
    head = data.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    message = parse(data.decode("utf-8"))
    assert [key for key, _ in message.raw_items()] == [
        "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "List-Id",
        "List-Unsubscribe", "List-Unsubscribe-Post", "Content-Type",
    ]  # fmt: skip
    raw = dict(message.raw_items())
    expected = clean_line(name, 200)
    assert display_name(raw["To"]) == (expected, address)
    assert display_name(raw["From"]) == (expected, "digest@news.example.org")
    subject = str(make_header(decode_header(raw["Subject"].replace("\r\n", ""))))
    assert subject == clean_line(f"Welcome, {name}", 2000)
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]


def run(runtime: Runtime, env: dict[str, str], *args: str) -> Result:
    """Run a CLI command in this process; dispose of the runtime it builds, restore ours."""
    try:
        return CliRunner().invoke(main, list(args), env=env)
    finally:
        built = current_runtime()
        if built is not runtime:
            built.engine.dispose()
        use_runtime(runtime)


def squeezed(text: str) -> str:
    """``text`` without any white space: rich may wrap a long value over lines."""
    return "".join(text.split())


def printed_literally(stored: str, output: str) -> None:
    """The name is in the output as its characters (unsafe ones escaped), and no more."""
    assert squeezed(visible(stored)) in squeezed(output)
    assert "\x1b" not in output
    assert "\u202e" not in output


def display_name(raw: str) -> tuple[str, str]:
    """(name, address) of an address header, decoded per RFC 2047 as mail clients do.

    CPython's header parser puts a space between adjacent encoded words of an address
    (python/cpython#128110), so the phrase is decoded with decode_header instead.
    """
    phrase, address = parseaddr(raw.replace("\r\n", ""))
    return str(make_header(decode_header(phrase))), address
