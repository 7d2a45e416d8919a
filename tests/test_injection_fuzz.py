"""Names and addresses from outside stay data: in the terminal, in CSV, in mail headers.

Hypothesis builds readers' names from console markup, emoji codes, CSV formula
starters, line breaks (CR, LF, NEL, the Unicode separators), terminal escapes,
bidirectional overrides, header-looking text and arbitrary Unicode, up to well past
the 200 characters a name keeps; addresses are valid for email-validator, with formula
starters and internationalised local parts and domains. Each must print literally from
`gazette subscribers list` and `show` (which never crash), be neutralised in
`subscribers export`, and come back from a built message's headers unchanged, with no
header of its own.
"""

from __future__ import annotations

import csv
import io
import itertools
from datetime import UTC, datetime
from email import message_from_string, policy
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
from gazette.imports import FORMULA_LEAD, export_csv, neutralise
from gazette.mime import Envelope, build_message
from gazette.newsletters import create_newsletter
from gazette.runtime import Runtime, current_runtime, use_runtime
from gazette.store.db import transaction
from gazette.subscribers import Origin, subscribe
from gazette.text import clean_line
from tests.conftest import make_env

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


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=names, local=local_parts, domain=domains)
def test_cli_prints_names_and_addresses_literally(
    runtime: Runtime,
    installation: dict[str, str],
    name: str,
    local: tuple[str, str],
    domain: str,
) -> None:
    address = address_from(*local, domain)
    stored = add(runtime, address, name)

    shown = run(runtime, installation, "subscribers", "show", "--", address)
    assert shown.exit_code == 0, (shown.output, shown.exception)
    printed_literally(stored, shown.output)
    assert address in squeezed(shown.output)

    listed = run(runtime, installation, "subscribers", "list", "--limit", "1")
    assert listed.exit_code == 0, (listed.output, listed.exception)
    assert "\x1b" not in listed.output
    if len(stored) <= 40:
        # Short enough that its table cell is one line at the CLI's 200 columns.
        assert visible(stored) in listed.output


@pytest.mark.parametrize(
    "name",
    ["[/bold]", "[link=https://evil.example]x[/link] [blink]", ":smile: [bold red]!", "a\u202eb"],
)
def test_the_reported_names_print_as_typed(
    runtime: Runtime, installation: dict[str, str], name: str
) -> None:
    """The names from the report: one crashed `list` and `show`, one printed a link."""
    address = f"reported{next(counter)}@example.org"
    stored = add(runtime, address, name)
    for args in (("show", address), ("list",)):
        result = run(runtime, installation, "subscribers", *args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        assert visible(stored) in result.output, args
    assert "\\u202e" in visible("a\u202eb")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=names, local=local_parts, domain=domains)
def test_csv_export_neutralises_formulas(
    runtime: Runtime,
    installation: dict[str, str],
    name: str,
    local: tuple[str, str],
    domain: str,
) -> None:
    address = address_from(*local, domain)
    stored = add(runtime, address, name)
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


def display_name(raw: str) -> tuple[str, str]:
    """(name, address) of an address header, decoded per RFC 2047 as mail clients do.

    CPython's header parser puts a space between adjacent encoded words of an address
    (python/cpython#128110), so the phrase is decoded with decode_header instead.
    """
    phrase, address = parseaddr(raw.replace("\r\n", ""))
    return str(make_header(decode_header(phrase))), address


@settings(max_examples=200, deadline=None)
@given(name=names, local=local_parts, domain=domains)
def test_message_headers_carry_the_name_and_nothing_else(
    name: str, local: tuple[str, str], domain: str
) -> None:
    address = address_from(*local, domain)
    envelope = Envelope(
        from_name=name, from_address="digest@news.example.org", to_name=name,
        to_address=address, subject=f"Welcome, {name}", message_id="confirm.1@news.example.org",
        date=datetime(2026, 12, 5, 9, 0, tzinfo=UTC), list_id="weekly.news.example.org",
        list_name=name, unsubscribe_url="https://news.example.org/unsubscribe/abc",
    )  # fmt: skip
    data = build_message(envelope, "text", "<p>html</p>", "b0undary")
    head = data.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    message = message_from_string(data.decode("utf-8"), policy=policy.default)
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
