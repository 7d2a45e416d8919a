"""normalise_address's fast path, proven against plain validate_email.

Plain ASCII addresses skip validate_email's character-by-character split and have their
domain checked once per distinct domain. Every address, valid or not, must still get
exactly what validate_email gives: the same normalised form, or the same error.
"""

from __future__ import annotations

import itertools
import random
import unicodedata
from collections.abc import Iterator

import email_validator
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from gazette.addresses import (
    AddressError,
    _check_domain,
    _is_plain,
    address_and_key,
    identity_key,
    normalise_address,
)

Outcome = tuple[str, str]

LOCALS = [
    "ada", "Ada.Lovelace", "a+tag", "a_b", "a-b", "1234", "x", "a.b.c", "o'brien",
    "!#$%&'*+-/=?^_`{|}~", "postmaster", "PostMaster", "INFO", "Abuse", "www", "uucp",
    "a..b", ".a", "a.", ".", "", " ", "a b", "a\tb", "a,b", "a;b", "a(b)", "a)b", "a:b",
    "a\\b", "a\x00b", "a\x01\x1f", "a\x7fb", "x" * 64, "x" * 65, "x" * 200, "x" * 250,
    "y" * 10_000, '"ada"', '"a b"', '"a\\"b"', '"a@b"', '"', '"a', 'a"b', '""', '"\\\\"',
    "оксана", "Оксана", "日本語", "é", "e\u0301", "\u0301e", "a\u202eb", "\U0001f600",
    "ｆｕｌｌ", "a\u00a0b", "a\u2028b", "ß", "İ", "ﬁ",
]  # fmt: skip
DOMAINS = [
    "example.org", "EXAMPLE.ORG", "Example.Org", "mail.example.org", "example.org.",
    ".example.org", "example..org", "-example.org", "example-.org", "ex-ample.org",
    "exa_mple.org", "ex ample.org", "example", "example.c", "example.123", "123.com",
    "1.2.3.4", "localhost", "a.localhost", "example.local", "foo.onion", "test", "a.test",
    "example.arpa", "invalid", "ab--cd.com", "xn--e1afmkfd.xn--p1ai", "XN--E1AFMKFD.XN--P1AI",
    "xn--80ak6aa92e.com", "xn--ls8h.la", "xn--.com", "xn--zz.com", "xn--a.com",
    "xn--4dbc.1.com", "1.xn--4dbc.com", "a" * 63 + ".com", "a" * 64 + ".com",
    ".".join(["a" * 62] * 4), ".".join(["a" * 63] * 4), "b" * 250 + ".org",
    "c" * 300 + ".org", "пример.рф", "ПРИМЕР.РФ", "münchen.de", "MÜNCHEN.DE", "例え.jp",
    "ＥＸＡＭＰＬＥ．ｃｏｍ", "example。com", "exa\u200bmple.com", "exa\u00admple.com",
    "⒈.com", "a\u0301.com", "\u0301a.com", "[127.0.0.1]", "[IPv6:::1]", "[ipv6:2001:db8::1]",
    "[300.1.1.1]", "[foo:bar]", "[example.org]", "example.org]", "[example.org", "",
    "@example.org", "example.org@", "example.org>", "exam\\ple.org", "example.org\x00",
    "example.org\r\n", "ex\u2028ample.org", "e\u0130.com",
]  # fmt: skip
WHOLE = [
    "", "   ", "ada", "@", "@@", "ada@", "@example.org", "ada@@example.org",
    "ada@example.org@example.org", "Ada <ada@example.org>", "<ada@example.org>",
    '"Ada L" <ada@example.org>', "Ada <ada@example.org", "ada@example.org>",
    "ada＠example.org", "ada﹫example.org", " ada@example.org ", "\tada@example.org\n",
    "ada@example.org\r\nBcc: evil@example.org", "a\x00b@example.org", "a\\udc80@example.org",
    "ada at example.org", "reader1-at-example.org", "\ud800@example.org", "a@\udc80.org",
    "Reader1.Ada@Example.Org", "READER@EXAMPLE.COM", "postmaster@EXAMPLE.ORG",
]  # fmt: skip


def reference(raw: str, allow_smtputf8: bool) -> str:
    """normalise_address as it was: validate_email on every address."""
    candidate = raw.strip()
    if not candidate:
        raise AddressError("the address is empty.")
    try:
        result = validate_email(
            candidate, check_deliverability=False, allow_smtputf8=allow_smtputf8
        )
    except EmailNotValidError as exc:
        reason = str(exc).rstrip(".")
        raise AddressError(f"{candidate!r} is not a valid email address ({reason}).") from None
    return f"{result.local_part}@{result.ascii_domain or result.domain}".strip()


def outcome(function: object, raw: str, allow_smtputf8: bool) -> Outcome:
    assert callable(function)
    try:
        return "ok", function(raw, allow_smtputf8=allow_smtputf8)
    except AddressError as exc:
        return "rejected", str(exc)
    except Exception as exc:  # any other failure must be the same one too
        return type(exc).__name__, str(exc)


def assert_same(raw: str) -> None:
    for allow_smtputf8 in (True, False):
        expected = outcome(reference, raw, allow_smtputf8)
        # Twice: the first call fills the domain cache, the second reads from it.
        for _ in range(2):
            got = outcome(normalise_address, raw, allow_smtputf8)
            assert got == expected, f"{raw!r} (smtputf8={allow_smtputf8})"


def addresses() -> Iterator[str]:
    yield from WHOLE
    for local, domain in itertools.product(LOCALS, DOMAINS):
        yield f"{local}@{domain}"


def test_the_fast_path_covers_ordinary_addresses_and_only_those() -> None:
    # Otherwise the comparisons below would prove nothing about it.
    for plain in ("ada@example.org", "Reader1.Ada@Example.Org", "x@xn--e1afmkfd.xn--p1ai"):
        assert _is_plain(plain)
    for other in ('"a b"@example.org', "Ada <ada@example.org>", "a@[127.0.0.1]", "a@b@c.org",
                  "оксана@example.org", "a@пример.рф", "ada@", "ada"):  # fmt: skip
        assert not _is_plain(other)


def test_every_tricky_address_gives_what_validate_email_gives() -> None:
    _check_domain.cache_clear()
    seen = 0
    for raw in addresses():
        assert_same(raw)
        seen += 1
    assert seen > 4000
    # Cached domains were hit, not only filled.
    assert _check_domain.cache_info().hits > 1000


def test_a_cached_domain_gives_the_same_answer_after_other_domains() -> None:
    _check_domain.cache_clear()
    rng = random.Random(7)
    pairs = list(itertools.product(LOCALS[:20], DOMAINS))
    rng.shuffle(pairs)
    for local, domain in pairs:
        assert_same(f"{local}@{domain}")


def test_length_limits_are_worded_as_validate_email_words_them() -> None:
    # Around 254 octets in the address, 253 after the @-sign and 63 per label, in ASCII
    # and in Punycode that decodes to longer UTF-8.
    for total in range(240, 270):
        for domain in ("example.org", "xn--e1afmkfd.xn--p1ai", "xn--ls8h.la"):
            assert_same("l" * (total - len(domain) - 1) + "@" + domain)
    for length in range(245, 260):
        assert_same("ada@" + ("d" * 60 + ".") * (length // 61) + "o" * (length % 61) + ".org")


def test_module_wide_settings_of_email_validator_are_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in [
        ("STRICT", True),
        ("ALLOW_EMPTY_LOCAL", True),
        ("TEST_ENVIRONMENT", True),
        ("GLOBALLY_DELIVERABLE", False),
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(email_validator, name, value)
            for raw in ["x" * 65 + "@example.org", "@example.org", "a@test", "a@a.test",
                        "a@example", "a@example.123", "ada@example.org"]:  # fmt: skip
                assert_same(raw)


LOCAL_CHARS = "abcXYZ09.+-_!#'~ @\"\\<>[]()," + "é\u0301ж日\u200b\u202e\x00\x7f"
DOMAIN_CHARS = "abcXYZ09.-_ @[]" + "éж日。．\u200b\u00ad"


@settings(max_examples=3000, deadline=None, derandomize=True, database=None)
@given(
    local=st.one_of(st.sampled_from(LOCALS), st.text(LOCAL_CHARS, max_size=12)),
    domain=st.one_of(st.sampled_from(DOMAINS), st.text(DOMAIN_CHARS, max_size=20)),
    pad=st.sampled_from(["", " ", "\t", "\n"]),
)
def test_random_addresses_give_what_validate_email_gives(local: str, domain: str, pad: str) -> None:
    assert_same(f"{pad}{local}@{domain}{pad}")


@settings(max_examples=1000, deadline=None, derandomize=True, database=None)
@given(raw=st.text(max_size=40))
def test_random_text_gives_what_validate_email_gives(raw: str) -> None:
    assert_same(raw)


# --- the identity key ---------------------------------------------------------------------

_ASCII_SWAP = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
)


def reference_key(raw: str) -> str | None:
    """The identity by its definition, from validate_email's own result; None if invalid."""
    try:
        result = validate_email(raw.strip(), check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return None
    local = unicodedata.normalize("NFC", result.local_part)
    local = "".join(c.lower() if c.isascii() else c for c in local)
    return f"{local}@{(result.ascii_domain or result.domain).lower()}"


def test_the_identity_key_is_its_definition_for_every_tricky_address() -> None:
    keyed = 0
    for raw in addresses():
        expected = reference_key(raw)
        if expected is None:
            continue
        _address, key = address_and_key(raw, allow_smtputf8=True)
        assert key == expected, raw
        assert identity_key(key) == key, raw  # a key is its own key
        # Swapping the case of the ASCII letters spells the same mailbox (unless a letter
        # carries a combining mark: e + U+0301 is é, but E + U+0301 is É, another letter).
        swapped = raw.translate(_ASCII_SWAP)
        combined = any(unicodedata.combining(c) for c in raw)
        if not combined and reference_key(swapped) is not None:
            assert address_and_key(swapped, allow_smtputf8=True)[1] == key, raw
        keyed += 1
    assert keyed > 500


@settings(max_examples=1000, deadline=None, derandomize=True, database=None)
@given(
    local=st.one_of(st.sampled_from(LOCALS), st.text(LOCAL_CHARS, max_size=12)),
    domain=st.one_of(st.sampled_from(DOMAINS), st.text(DOMAIN_CHARS, max_size=20)),
)
def test_random_addresses_have_the_identity_key_of_the_definition(local: str, domain: str) -> None:
    raw = f"{local}@{domain}"
    expected = reference_key(raw)
    if expected is not None:
        assert address_and_key(raw, allow_smtputf8=True)[1] == expected


def test_non_ascii_letters_never_fold_into_others() -> None:
    keys = {
        address_and_key(raw, allow_smtputf8=True)[1]
        for raw in ("ß@example.org", "ss@example.org", "SS@example.org", "Оксана@example.org",
                    "оксана@example.org", "İ@example.org", "i@example.org")
    }  # fmt: skip
    assert keys == {
        "ß@example.org", "ss@example.org", "Оксана@example.org", "оксана@example.org",
        "İ@example.org", "i@example.org",
    }  # fmt: skip
