"""VERP (issue 18): each digest's envelope sender names its delivery row, signed.

The token is read back in any case, from a whole address or its local part; a forged,
tampered, foreign or malformed one reads as nothing. End to end, `gazette digest send`
hands a real issue to an aiosmtpd relay (one session, and a pool over a relay that
offers PIPELINING) on SQLite and PostgreSQL, and every MAIL FROM the relay saw maps
back to exactly that reader's ledger row; without the setting the envelope sender is
the From address, as before.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gazette.config import load_settings
from gazette.errors import ConfigError
from gazette.mail.verp import (
    BASE_MAX,
    LARGEST_ID,
    LOCAL_PART_MAX,
    SIGNATURE_BYTES,
    Verp,
    delivery_for,
    envelope_sender,
    mint_token,
)
from gazette.newsletters.service import create_newsletter
from gazette.store.models import Delivery, Subscriber
from gazette.subscribers.notices import send_confirmation
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from gazette.tokens import Purpose, ShortSigner, TokenError, Tokens
from tests.support.cli import Cli, one_sentence
from tests.support.env import TEST_KEY, installed_runtime, make_env
from tests.support.relays import SLUG, Installation, make_installation
from tests.support.smtp import PipeliningRelay, RecordingHandler, SMTPServer

BOUNCE = "bounces@bounce.example.org"
KEY = "verp-test-key-0123456789abcdef"
OLD_KEY = "verp-old-key-fedcba9876543210"
OTHER_INSTALLATION = "someone-elses-key-0123456789"
FROM = "digest@news.example.org"
VERP_SHAPE = re.compile(r"bounces\+[a-z2-7]+@bounce\.example\.org")
_DRAW = random.Random(18)
IDS = [
    *range(0, 300),
    *(2**bits + delta for bits in range(8, 63) for delta in (-1, 0, 1)),
    *(_DRAW.randint(1, LARGEST_ID) for _ in range(500)),
    LARGEST_ID,
]


def token_of(address: str) -> str:
    """The token of a VERP address: what follows the last "+" of its local part."""
    return address.rpartition("@")[0].rpartition("+")[2]


# --- the address and its token -----------------------------------------------------------


def test_every_id_comes_back_from_its_address() -> None:
    verp = Verp(BOUNCE, [KEY])
    for delivery_id in IDS:
        address = verp.address(delivery_id)
        assert VERP_SHAPE.fullmatch(address), address
        assert verp.delivery_for(address) == delivery_id
        assert delivery_for(address, [KEY]) == delivery_id


def test_any_case_brackets_or_the_local_part_alone_read_the_same() -> None:
    verp = Verp(BOUNCE, [KEY])
    shuffle = random.Random(5)
    for delivery_id in IDS[::7]:
        address = verp.address(delivery_id)
        local = address.rpartition("@")[0]
        mixed = "".join(c.upper() if shuffle.random() < 0.5 else c for c in address)
        for spelling in (address.upper(), mixed, f"<{address}>", f" <{mixed}> ", local.upper()):
            assert verp.delivery_for(spelling) == delivery_id, spelling
            assert delivery_for(spelling, [KEY]) == delivery_id, spelling


def test_the_largest_id_with_the_longest_bounce_address_fits_in_64_octets() -> None:
    longest = "b" * BASE_MAX + "@bounce.example.org"
    address = Verp(longest, [KEY]).address(LARGEST_ID)
    local = address.rpartition("@")[0]
    assert len(local.encode()) == LOCAL_PART_MAX
    assert Verp(longest, [KEY]).delivery_for(address) == LARGEST_ID
    # Short for the ids a real ledger has: the token is the id's bytes and 80 bits.
    assert len(token_of(Verp(BOUNCE, [KEY]).address(1234))) == 20
    for beyond in (-1, LARGEST_ID + 1):
        with pytest.raises(ValueError, match="no VERP token"):
            Verp(BOUNCE, [KEY]).address(beyond)


def test_a_bounce_address_without_room_for_the_token_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot carry a VERP token"):
        Verp("b" * (BASE_MAX + 1) + "@bounce.example.org", [KEY])


def test_every_single_changed_character_of_a_token_is_refused() -> None:
    verp = Verp(BOUNCE, [KEY])
    address = verp.address(987_654_321)
    token = token_of(address)
    for place, original in enumerate(token):
        for other in "abcdefghijklmnopqrstuvwxyz234567":
            if other == original:
                continue
            forged = address.replace(token, token[:place] + other + token[place + 1 :])
            assert verp.delivery_for(forged) is None, forged


def test_a_token_signed_by_another_installation_is_refused() -> None:
    theirs = Verp(BOUNCE, [OTHER_INSTALLATION]).address(42)
    assert Verp(BOUNCE, [KEY]).delivery_for(theirs) is None
    assert delivery_for(theirs, [KEY]) is None


def test_a_token_of_another_purpose_is_refused_both_ways() -> None:
    # The same construction under another purpose's key: the label keeps them apart.
    ident = (42).to_bytes(1, "big")
    for purpose in ("unsubscribe", "confirm", "preferences", "verp2"):
        other = ShortSigner([KEY], purpose, SIGNATURE_BYTES)
        forged = f"bounces+{mint_token(other, 42)}@bounce.example.org"
        assert other.verify(ident, other.sign(ident))
        assert Verp(BOUNCE, [KEY]).delivery_for(forged) is None, purpose
    # A link token in a VERP address, and a VERP token as a link token.
    tokens = Tokens([KEY])
    for purpose in Purpose:
        link = tokens.mint(purpose, "42", SLUG)
        assert Verp(BOUNCE, [KEY]).delivery_for(f"bounces+{link}@bounce.example.org") is None
        with pytest.raises(TokenError):
            tokens.read(purpose, token_of(Verp(BOUNCE, [KEY]).address(42)))


def test_keys_rotate_the_way_link_tokens_do() -> None:
    before = Verp(BOUNCE, [OLD_KEY]).address(77)
    rotated = Verp(BOUNCE, [KEY, OLD_KEY])
    assert rotated.delivery_for(before) == 77  # mailed before the rotation, still ours
    after = rotated.address(77)
    assert after != before  # the newest key signs
    assert Verp(BOUNCE, [KEY]).delivery_for(after) == 77
    assert Verp(BOUNCE, [OLD_KEY]).delivery_for(after) is None


def test_malformed_overlong_and_foreign_addresses_read_as_nothing() -> None:
    verp = Verp(BOUNCE, [KEY])
    address = verp.address(5000)
    token = token_of(address)
    local = address.rpartition("@")[0]
    for wrong in (
        "", " ", "@", "<>", "bounces", "bounces+", "bounces+@bounce.example.org", BOUNCE,
        address.replace("bounces+", "other+"),  # another mailbox's
        address.replace("bounce.example.org", "example.org"),  # another domain's
        address.replace("+", "-"),
        f"{local}a@bounce.example.org", f"{local[:-1]}@bounce.example.org",
        f"{local}=@bounce.example.org", f"{local}====@bounce.example.org",
        address.replace(token, token[:-1] + "\u0430"),  # a Cyrillic a
        address.replace(token, token + "0"), address.replace(token, "1" + token[1:]),
        f'"{local}"@bounce.example.org', f"<<{address}>>",
        "bounces+" + "a" * 10_000 + "@bounce.example.org", "x" * 100_000,
        f"{local}@bounce.example.org\r\nBcc: someone@example.org",
    ):  # fmt: skip
        assert verp.delivery_for(wrong) is None, wrong[:120]
    # The module function, which checks the token alone, refuses the malformed ones too.
    for wrong in ("", "bounces+", "x" * 100_000, address.replace(token, token.upper() + "A")):
        assert delivery_for(wrong, [KEY]) is None


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=120))
def test_no_text_at_all_raises_or_reads_as_a_delivery(text: str) -> None:
    verp = Verp(BOUNCE, [KEY])
    assert verp.delivery_for(text) is None
    assert verp.delivery_for(f"bounces+{text}@bounce.example.org") is None
    assert delivery_for(text, [KEY]) is None


def test_the_envelope_sender_is_decided_in_one_place() -> None:
    verp = Verp(BOUNCE, [KEY])
    assert envelope_sender(None, FROM, 42) == FROM
    assert envelope_sender(None, FROM, None) == FROM
    assert envelope_sender(verp, FROM, None) == BOUNCE
    assert envelope_sender(verp, FROM, 42) == verp.address(42)


# --- the setting ---------------------------------------------------------------------------


def test_the_setting_is_checked_and_kept_as_a_bare_address(tmp_path: Path) -> None:
    env = make_env(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert load_settings(env, cwd=tmp_path).bounce_address is None
    given_spelling = env | {"GAZETTE_BOUNCE_ADDRESS": " Bounces@Bounce.Example.ORG "}
    assert load_settings(given_spelling, cwd=tmp_path).bounce_address == (
        "Bounces@bounce.example.org"
    )
    with pytest.raises(ConfigError, match=r"GAZETTE_BOUNCE_ADDRESS='bounces' is not an email"):
        load_settings(env | {"GAZETTE_BOUNCE_ADDRESS": "bounces"}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("bounces-at-example.org", "is not an email address (an email address must have an @"),
        ("Bounces <bounces@bounce.example.org>", "is not an email address (a display name"),
        ("rücklauf@bounce.example.org", "is not an email address (internationalized characters"),
        ("b" * (BASE_MAX + 1) + "@bounce.example.org", "leave room for the VERP token"),
    ],
)
def test_an_invalid_bounce_address_stops_the_cli_with_one_sentence(
    tmp_path: Path, database_url: str, value: str, says: str
) -> None:
    env = make_env(tmp_path, database_url) | {"GAZETTE_BOUNCE_ADDRESS": value}
    result = Cli(tmp_path, env, database_url)("digest", "status")
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = one_sentence(result)
    assert f"GAZETTE_BOUNCE_ADDRESS={value!r} " in line
    assert says in line
    assert line.endswith(".")
    assert not (tmp_path / "var" / "gazette.db").exists()  # nothing was started


# --- end to end ----------------------------------------------------------------------------

READERS = [f"reader{n:02d}@example.org" for n in range(12)]


def ledger_rows(site: Installation) -> dict[str, int]:
    """Each reader's address and the id of their delivery row (one issue was sent)."""
    with site.runtime("maildir:///nowhere") as runtime, runtime.sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.id).join(
                Delivery, Delivery.subscriber_id == Subscriber.id
            )
        ).all()
    return dict(rows)


@pytest.mark.parametrize(
    ("relay", "connections"),
    [(RecordingHandler, "1"), (PipeliningRelay, "4")],
    ids=["one-session", "pool-pipelined"],
)
def test_each_message_s_envelope_sender_maps_back_to_its_own_delivery_row(
    tmp_path: Path, database_url: str, relay: type[RecordingHandler], connections: str
) -> None:
    site = replace(
        make_installation(tmp_path, database_url, READERS),
        settings={"bounce_address": BOUNCE, "smtp_connections": connections},
    )
    with SMTPServer(relay()) as server:
        result = site.send(server.url)
        assert result.returncode == 0, result.stderr
    rows = ledger_rows(site)
    assert len(server.messages) == len(READERS) == len(rows)
    verp = Verp(BOUNCE, [TEST_KEY])
    for received in server.messages:
        assert VERP_SHAPE.fullmatch(received.sender), received.sender
        assert len(received.sender.rpartition("@")[0]) <= LOCAL_PART_MAX
        [reader] = received.recipients
        assert verp.delivery_for(received.sender) == rows[reader]
        assert delivery_for(received.sender.upper(), [TEST_KEY]) == rows[reader]
    assert len({received.sender for received in server.messages}) == len(READERS)
    if relay is PipeliningRelay:
        assert isinstance(server.handler, PipeliningRelay)
        assert server.handler.sessions > 1  # the pool sent them, pipelined


def test_without_the_setting_the_envelope_sender_is_the_from_address(
    tmp_path: Path, database_url: str
) -> None:
    site = make_installation(tmp_path, database_url, READERS[:3])
    with SMTPServer(RecordingHandler()) as server:
        result = site.send(server.url)
        assert result.returncode == 0, result.stderr
        tested = site.gazette(server.url, "digest", "test", SLUG, "--to", "editor@example.org")
        assert tested.returncode == 0, tested.stderr
    assert len(server.messages) == 4
    assert {received.sender for received in server.messages} == {FROM}


def test_messages_without_a_ledger_row_use_the_plain_bounce_address(
    tmp_path: Path, database_url: str
) -> None:
    site = replace(
        make_installation(tmp_path, database_url, READERS[:1]),
        settings={"bounce_address": BOUNCE},
    )
    with SMTPServer(RecordingHandler()) as server:
        tested = site.gazette(server.url, "digest", "test", SLUG, "--to", "editor@example.org")
        assert tested.returncode == 0, tested.stderr
        with installed_runtime(
            tmp_path / "notices", database_url, smtp_url=server.url, bounce_address=BOUNCE
        ) as runtime:
            with runtime.sessions() as session, session.begin():
                create_newsletter(session, "notices", "Notices")
                pending = subscribe(session, "new@example.org", "notices", Origin("web"))
            assert send_confirmation(
                runtime.sessions, runtime.send_context, runtime.limiter,
                pending.subscriber_id, pending.newsletter_id,
            )  # fmt: skip
    assert [(m.recipients, m.sender) for m in server.messages] == [
        (["editor@example.org"], BOUNCE),
        (["new@example.org"], BOUNCE),
    ]
