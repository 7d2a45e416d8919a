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

import pytest
from hypothesis import given, settings

from gazette.cli.output import visible
from gazette.runtime import Runtime
from tests.support.hostile import (
    Local,
    add,
    address_from,
    check_cli_output,
    check_csv_export,
    check_message_headers,
    counter,
    domains,
    fuzzed_readers,
    local_parts,
    names,
    run,
)


@fuzzed_readers(50)
def test_cli_prints_names_and_addresses_literally(
    runtime: Runtime, installation: dict[str, str], name: str, local: Local, domain: str
) -> None:
    address = address_from(*local, domain)
    check_cli_output(runtime, installation, address, add(runtime, address, name))


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


@fuzzed_readers(150)
def test_csv_export_neutralises_formulas(
    runtime: Runtime, installation: dict[str, str], name: str, local: Local, domain: str
) -> None:
    address = address_from(*local, domain)
    check_csv_export(runtime, address, add(runtime, address, name))


@settings(max_examples=200, deadline=None)
@given(name=names, local=local_parts, domain=domains)
def test_message_headers_carry_the_name_and_nothing_else(
    name: str, local: tuple[str, str], domain: str
) -> None:
    check_message_headers(name, address_from(*local, domain))
