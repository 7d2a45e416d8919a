"""Signed link tokens: one purpose each, tamper-evident, rotatable keys, expiry."""

from __future__ import annotations

import itertools
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import timedelta

import pytest
from itsdangerous import BadData, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode
from itsdangerous.timed import TimestampSigner

from gazette.tokens import MAX_AGE, Purpose, TokenClaims, TokenError, Tokens

OLD_KEY = "old-secret-key-0123456789abcdef"
NEW_KEY = "new-secret-key-fedcba9876543210"
SUBSCRIBER = "sub_8f14e45fceea167a"
NEWSLETTER = "weekly-digest"
EMAIL = "oksana.kovalenko@example.org"
URL_SAFE = string.ascii_letters + string.digits + "-_"
# payload.timestamp.signature; a compressed payload starts with an extra ".".
TOKEN_SHAPE = re.compile(r"\.?[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class Clock:
    """A stand-in for itsdangerous's clock (whole seconds since the epoch)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def advance(self, delta: timedelta) -> None:
        self.now += int(delta.total_seconds())


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(1_714_550_400)  # 2024-05-01
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _self: fake.now)
    return fake


# --- round trip and purposes ---------------------------------------------------------


@pytest.mark.parametrize("purpose", list(Purpose))
def test_mint_then_read_gives_the_claims_back(purpose: Purpose) -> None:
    tokens = Tokens([NEW_KEY])
    token = tokens.mint(purpose, SUBSCRIBER, NEWSLETTER)
    assert TOKEN_SHAPE.fullmatch(token), token
    assert tokens.read(purpose, token) == TokenClaims(SUBSCRIBER, NEWSLETTER)
    # Another instance with the same key (another worker process) reads it too.
    assert Tokens([NEW_KEY]).read(purpose, token) == TokenClaims(SUBSCRIBER, NEWSLETTER)


@pytest.mark.parametrize("purpose", list(Purpose))
def test_minted_tokens_are_exactly_what_itsdangerous_would_make(
    clock: Clock, purpose: Purpose
) -> None:
    """Minting skips itsdangerous' per-call signer, not its format: links stay readable
    by any version that reads itsdangerous tokens, and by the library itself."""
    tokens = Tokens([NEW_KEY, OLD_KEY])
    reference = URLSafeTimedSerializer([OLD_KEY, NEW_KEY], salt=f"gazette.{purpose.value}")
    rng = random.Random(8058)
    for _ in range(200):
        subscriber = "".join(rng.choices(URL_SAFE, k=rng.randint(1, 40)))
        newsletter = "".join(rng.choices(string.ascii_lowercase + "-", k=rng.randint(1, 30)))
        clock.advance(timedelta(seconds=rng.randint(0, 10**6)))
        token = tokens.mint(purpose, subscriber, newsletter)
        assert token == reference.dumps([subscriber, newsletter])
        assert reference.loads(token) == [subscriber, newsletter]


def test_mint_each_gives_for_every_purpose_the_token_mint_gives(clock: Clock) -> None:
    """The digest's two links are minted in one pass: the same tokens, in the order asked."""
    tokens = Tokens([NEW_KEY, OLD_KEY])
    purposes = [Purpose.UNSUBSCRIBE, Purpose.PREFERENCES, Purpose.CONFIRM]
    rng = random.Random(2920)
    for _ in range(100):
        subscriber = "".join(rng.choices(URL_SAFE, k=rng.randint(1, 40)))
        clock.advance(timedelta(seconds=rng.randint(0, 10**6)))
        each = tokens.mint_each(purposes, subscriber, "weekly")
        assert each == [tokens.mint(purpose, subscriber, "weekly") for purpose in purposes]
        for purpose, token in zip(purposes, each, strict=True):
            assert tokens.read(purpose, token) == TokenClaims(subscriber, "weekly")


def test_claims_survive_unusual_but_valid_values() -> None:
    tokens = Tokens([NEW_KEY])
    for subscriber, newsletter in [
        ("", ""),
        ("id with spaces", "новини"),
        ('quote" and \\ backslash', "日本語"),
        ("x" * 300, "a.b.c"),
    ]:
        token = tokens.mint(Purpose.PREFERENCES, subscriber, newsletter)
        assert TOKEN_SHAPE.fullmatch(token), token
        assert tokens.read(Purpose.PREFERENCES, token) == TokenClaims(subscriber, newsletter)


@pytest.mark.parametrize(("minted_for", "read_as"), list(itertools.permutations(Purpose, 2)))
def test_a_token_is_worthless_for_any_other_purpose(minted_for: Purpose, read_as: Purpose) -> None:
    tokens = Tokens([NEW_KEY])
    token = tokens.mint(minted_for, SUBSCRIBER, NEWSLETTER)
    with pytest.raises(TokenError):
        tokens.read(read_as, token)
    assert tokens.read(minted_for, token).subscriber == SUBSCRIBER


def test_same_claims_give_different_tokens_per_purpose_and_key() -> None:
    minted = {
        Tokens([key]).mint(purpose, SUBSCRIBER, NEWSLETTER)
        for key in (OLD_KEY, NEW_KEY)
        for purpose in Purpose
    }
    assert len(minted) == 2 * len(Purpose)


def test_a_token_from_another_installation_is_rejected() -> None:
    token = Tokens([OLD_KEY]).mint(Purpose.UNSUBSCRIBE, SUBSCRIBER, NEWSLETTER)
    with pytest.raises(TokenError):
        Tokens([NEW_KEY]).read(Purpose.UNSUBSCRIBE, token)


@pytest.mark.parametrize(
    "token",
    ["", ".", "..", "abc", "a.b.c", "not-a-token-at-all", "WyJhIiwiYiJd.ZjK8sA.AAAA", "é.é.é"],
)
def test_garbage_is_rejected_with_token_error(token: str) -> None:
    for purpose in Purpose:
        with pytest.raises(TokenError):
            Tokens([NEW_KEY]).read(purpose, token)


@pytest.mark.parametrize(
    "payload",
    [
        {"subscriber": SUBSCRIBER, "newsletter": NEWSLETTER},
        [SUBSCRIBER],
        [SUBSCRIBER, NEWSLETTER, "extra"],
        [SUBSCRIBER, 42],
        None,
        f"{SUBSCRIBER},{NEWSLETTER}",
    ],
)
def test_a_correctly_signed_token_of_the_wrong_shape_is_rejected(payload: object) -> None:
    # Signed with the real key and salt: only the payload check stands in the way.
    signer = URLSafeTimedSerializer(NEW_KEY, salt=f"gazette.{Purpose.UNSUBSCRIBE.value}")
    token = str(signer.dumps(payload))
    assert signer.loads(token) == payload
    with pytest.raises(TokenError):
        Tokens([NEW_KEY]).read(Purpose.UNSUBSCRIBE, token)


def test_no_keys_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="secret key"):
        Tokens([])


# --- tampering ------------------------------------------------------------------------


def _same_signed_bytes(original: str, mutated: str) -> bool:
    """Whether ``mutated`` carries exactly the signed value and signature of ``original``.

    The signed part (payload and timestamp) is compared as text: any change there must
    break the signature. The signature is compared as the bytes it decodes to: the last
    base64 character of a 20-byte HMAC has 2 padding bits, so a few other characters at
    that one position decode to the very same signature (and are refused all the same:
    only the canonical spelling is a token).
    """
    head, _, signature = original.rpartition(".")
    mutated_head, sep, mutated_signature = mutated.rpartition(".")
    if not sep or mutated_head != head:
        return False
    try:
        return base64_decode(mutated_signature) == base64_decode(signature)
    except BadData:
        return False


def _mutate(token: str, rng: random.Random) -> str:
    position = rng.randrange(len(token))
    if rng.random() < 0.5:
        # Flip one bit of the character: may give a non-alphabet or non-ASCII character.
        replacement = chr(ord(token[position]) ^ (1 << rng.randrange(8)))
    else:
        replacement = rng.choice(URL_SAFE + ".")
    return token[:position] + replacement + token[position + 1 :]


@dataclass
class Survey:
    tried: int = 0
    accepted: int = 0
    accepted_but_changed: int = 0  # a different signed value or signature that still read
    wrong_claims: int = 0  # read successfully, for someone or something else
    equivalent: int = 0  # mutations that leave the signed bytes as they were
    by_segment: tuple[int, int, int] = (0, 0, 0)


def _survey(
    read: Callable[[Purpose, str], TokenClaims], mint: Callable[[Purpose, str, str], str]
) -> Survey:
    rng = random.Random(20240501)
    originals = [
        (purpose, f"sub_{index:04d}{rng.getrandbits(48):012x}", f"newsletter-{index}")
        for index, purpose in enumerate(list(Purpose) * 4)
    ]
    minted = [
        (purpose, mint(purpose, sub, news), TokenClaims(sub, news))
        for purpose, sub, news in originals
    ]
    survey = Survey()
    segments = [0, 0, 0]
    while survey.tried < 10_000:
        purpose, token, claims = rng.choice(minted)
        mutated = _mutate(token, rng)
        if mutated == token:
            continue
        survey.tried += 1
        first_change = next(
            i for i, (a, b) in enumerate(zip(token, mutated, strict=True)) if a != b
        )
        segments[token[:first_change].count(".")] += 1
        equivalent = _same_signed_bytes(token, mutated)
        survey.equivalent += equivalent
        try:
            got = read(purpose, mutated)
        except TokenError:
            continue
        survey.accepted += 1
        survey.accepted_but_changed += not equivalent
        survey.wrong_claims += got != claims
    survey.by_segment = (segments[0], segments[1], segments[2])
    return survey


def test_ten_thousand_mutated_tokens_are_all_rejected() -> None:
    tokens = Tokens([NEW_KEY, OLD_KEY])
    survey = _survey(tokens.read, tokens.mint)
    assert survey.tried == 10_000
    # Every part of the token was attacked: payload, timestamp and signature.
    assert all(count > 500 for count in survey.by_segment), survey
    # What is truly required: no mutation is ever read as anyone else's link...
    assert survey.wrong_claims == 0, survey
    # ...and no mutation that changes the signed value or the signature bytes is read.
    assert survey.accepted_but_changed == 0, survey
    # Not even a spelling that differs in the signature's padding bits alone is read
    # (issue 16): the survey does make some, and every one is refused.
    assert survey.equivalent > 0, survey
    assert survey.accepted == 0, survey


def test_the_mutation_survey_would_catch_broken_verification() -> None:
    # The same survey against a reader that decodes without checking the signature:
    # if Tokens.read ever behaved like this, the test above would fail loudly.
    unchecked = URLSafeTimedSerializer(NEW_KEY, salt="anything")
    tokens = Tokens([NEW_KEY])

    def careless_read(_purpose: Purpose, token: str) -> TokenClaims:
        _valid, payload = unchecked.loads_unsafe(token)
        if not (isinstance(payload, list) and len(payload) == 2):
            raise TokenError("This link is not valid.")
        return TokenClaims(str(payload[0]), str(payload[1]))

    survey = _survey(careless_read, tokens.mint)
    assert survey.accepted_but_changed > 1000, survey
    assert survey.wrong_claims > 0, survey


def test_a_mutation_of_the_signed_part_is_rejected_even_if_it_decodes_alike() -> None:
    tokens = Tokens([NEW_KEY])
    token = tokens.mint(Purpose.UNSUBSCRIBE, SUBSCRIBER, NEWSLETTER)
    payload, timestamp, signature = token.split(".")
    # Change only the unused low bits of the payload's last base64 character, so the
    # payload decodes to the same bytes: the signature covers the text, not the bytes.
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    padding_bits = {0: 0, 2: 4, 3: 2}[len(payload) % 4]
    high = alphabet.index(payload[-1]) >> padding_bits << padding_bits
    siblings = [alphabet[high | low] for low in range(1 << padding_bits)]
    siblings.remove(payload[-1])
    assert len(siblings) == 15  # this payload ends in a character with 4 padding bits
    for sibling in siblings:
        forged = f"{payload[:-1]}{sibling}.{timestamp}.{signature}"
        assert base64_decode(forged.split(".")[0]) == base64_decode(payload)
        with pytest.raises(TokenError):
            tokens.read(Purpose.UNSUBSCRIBE, forged)


# --- key rotation ----------------------------------------------------------------------


def test_key_rotation_keeps_old_links_working_and_signs_with_the_new_key() -> None:
    old_token = Tokens([OLD_KEY]).mint(Purpose.UNSUBSCRIBE, SUBSCRIBER, NEWSLETTER)
    rotated = Tokens([NEW_KEY, OLD_KEY])
    assert rotated.read(Purpose.UNSUBSCRIBE, old_token) == TokenClaims(SUBSCRIBER, NEWSLETTER)

    new_token = rotated.mint(Purpose.UNSUBSCRIBE, SUBSCRIBER, NEWSLETTER)
    assert new_token != old_token
    assert Tokens([NEW_KEY]).read(Purpose.UNSUBSCRIBE, new_token).subscriber == SUBSCRIBER
    with pytest.raises(TokenError):
        Tokens([OLD_KEY]).read(Purpose.UNSUBSCRIBE, new_token)


def test_once_the_old_key_is_dropped_old_links_fail() -> None:
    old_token = Tokens([OLD_KEY]).mint(Purpose.PREFERENCES, SUBSCRIBER, NEWSLETTER)
    assert Tokens([NEW_KEY, OLD_KEY]).read(Purpose.PREFERENCES, old_token).subscriber == SUBSCRIBER
    with pytest.raises(TokenError):
        Tokens([NEW_KEY]).read(Purpose.PREFERENCES, old_token)


def test_the_order_of_keys_decides_which_one_signs() -> None:
    token = Tokens([OLD_KEY, NEW_KEY]).mint(Purpose.CONFIRM, SUBSCRIBER, NEWSLETTER)
    assert Tokens([OLD_KEY]).read(Purpose.CONFIRM, token).subscriber == SUBSCRIBER
    with pytest.raises(TokenError):
        Tokens([NEW_KEY]).read(Purpose.CONFIRM, token)


# --- expiry ----------------------------------------------------------------------------


def test_confirm_tokens_expire_after_seven_days(clock: Clock) -> None:
    assert MAX_AGE[Purpose.CONFIRM] == timedelta(days=7)
    tokens = Tokens([NEW_KEY])
    token = tokens.mint(Purpose.CONFIRM, SUBSCRIBER, NEWSLETTER)
    clock.advance(timedelta(days=7) - timedelta(seconds=1))
    assert tokens.read(Purpose.CONFIRM, token).subscriber == SUBSCRIBER
    clock.advance(timedelta(seconds=2))
    with pytest.raises(TokenError, match="expired"):
        tokens.read(Purpose.CONFIRM, token)


@pytest.mark.parametrize("purpose", [Purpose.UNSUBSCRIBE, Purpose.PREFERENCES])
def test_unsubscribe_and_preference_links_never_expire(clock: Clock, purpose: Purpose) -> None:
    assert MAX_AGE[purpose] is None
    tokens = Tokens([NEW_KEY])
    token = tokens.mint(purpose, SUBSCRIBER, NEWSLETTER)
    clock.advance(timedelta(days=20 * 365))
    assert tokens.read(purpose, token) == TokenClaims(SUBSCRIBER, NEWSLETTER)


@pytest.mark.parametrize("purpose", list(Purpose))
def test_an_explicit_max_age_overrides_the_default(clock: Clock, purpose: Purpose) -> None:
    tokens = Tokens([NEW_KEY])
    token = tokens.mint(purpose, SUBSCRIBER, NEWSLETTER)
    clock.advance(timedelta(hours=2))
    assert tokens.read(purpose, token, max_age=timedelta(hours=3)).subscriber == SUBSCRIBER
    with pytest.raises(TokenError, match="expired"):
        tokens.read(purpose, token, max_age=timedelta(hours=1))


def test_max_age_zero_expires_a_token_after_a_second_on_an_injected_clock() -> None:
    fake = Clock(1_714_550_400)
    tokens = Tokens([NEW_KEY], clock=lambda: fake.now)
    token = tokens.mint(Purpose.UNSUBSCRIBE, SUBSCRIBER, NEWSLETTER)
    # itsdangerous counts whole seconds: after a full second the age is at least 1.
    fake.advance(timedelta(seconds=1))
    with pytest.raises(TokenError, match="expired"):
        tokens.read(Purpose.UNSUBSCRIBE, token, max_age=timedelta(seconds=0))
    assert tokens.read(Purpose.UNSUBSCRIBE, token).subscriber == SUBSCRIBER


def test_a_tampered_token_is_invalid_not_expired(clock: Clock) -> None:
    tokens = Tokens([NEW_KEY])
    token = tokens.mint(Purpose.CONFIRM, SUBSCRIBER, NEWSLETTER)
    clock.advance(timedelta(days=30))
    forged = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    with pytest.raises(TokenError, match="not valid"):
        tokens.read(Purpose.CONFIRM, forged)


# --- privacy ---------------------------------------------------------------------------


def test_claims_carry_an_opaque_id_never_an_address() -> None:
    assert [f.name for f in fields(TokenClaims)] == ["subscriber", "newsletter"]
    tokens = Tokens([NEW_KEY])
    for purpose in Purpose:
        token = tokens.mint(purpose, SUBSCRIBER, NEWSLETTER)
        assert EMAIL not in token
        assert "@" not in token
        # The payload is readable by anyone holding the link: it must be just the id.
        payload = base64_decode(token.split(".")[0])
        assert payload == f'["{SUBSCRIBER}","{NEWSLETTER}"]'.encode()
        assert b"@" not in payload
