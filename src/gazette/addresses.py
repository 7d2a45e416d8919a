"""Email address validation and normalisation, the one rule every entry point shares."""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import email_validator
from email_validator import EmailNotValidError, EmailSyntaxError, ValidatedEmail, validate_email
from email_validator.rfc_constants import (
    CASE_INSENSITIVE_MAILBOX_NAMES,
    DOMAIN_MAX_LENGTH,
    EMAIL_MAX_LENGTH,
)
from email_validator.syntax import (
    validate_email_domain_name,
    validate_email_length,
    validate_email_local_part,
)


class AddressError(ValueError):
    """An address that cannot be stored; the message says why in one sentence."""


# Only the 26 ASCII capitals fold: str.lower() and casefold() would also fold non-ASCII
# letters (casefold() turns ß into ss), merging mailboxes that are distinct.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def identity_key(address: str) -> str:
    """The reader identity of a normalised address: one mailbox, however it is spelt.

    The local part is NFC-normalised with its ASCII letters lower-cased; the domain is
    its lower-case IDNA form (what normalise_address already gives, full-width letters
    folded). Two spellings with the same key are one reader.
    """
    if address.isascii():
        # The common case: for ASCII text, lower() folds exactly the 26 capitals.
        return address.lower()
    local, _, domain = address.rpartition("@")
    if not domain.isascii():
        outcome = _check_domain(domain, False, False)
        if not isinstance(outcome, str):
            domain = outcome[0]
    local = local if local.isascii() else unicodedata.normalize("NFC", local)
    return f"{local.translate(_ASCII_LOWER)}@{domain.lower()}"


def address_and_key(raw: str, *, allow_smtputf8: bool) -> tuple[str, str]:
    """The normalised address (the spelling kept for display) and its identity key."""
    address = normalise_address(raw, allow_smtputf8=allow_smtputf8)
    return address, identity_key(address)


def normalise_address(raw: str, *, allow_smtputf8: bool) -> str:
    """Return the canonical form of ``raw`` (domain in lower-case IDNA-normalised form).

    No DNS lookup happens here: it runs on the subscribe path and in bulk imports, where
    a resolver's latency or outage must not decide whether an address is accepted.
    """
    candidate = raw.strip()
    if not candidate:
        raise AddressError("the address is empty.")
    try:
        if _is_plain(candidate):
            return _normalise_plain(candidate, allow_smtputf8)
        result = validate_email(
            candidate,
            check_deliverability=False,
            allow_smtputf8=allow_smtputf8,
        )
    except EmailNotValidError as exc:
        reason = str(exc).rstrip(".")
        raise AddressError(f"{candidate!r} is not a valid email address ({reason}).") from None
    return f"{result.local_part}@{result.ascii_domain or result.domain}".strip()


def _is_plain(candidate: str) -> bool:
    """True for ASCII ``local@domain`` with one @-sign, nothing quoted, no literal domain.

    For these validate_email's character-by-character split and Unicode normalisation
    are identities, so _normalise_plain can split on the @-sign and skip them.
    """
    # A quote, an angle bracket or a square bracket would start one of validate_email's
    # rarer branches (quoted local part, display name, IP address): those take the full path.
    return (
        candidate.isascii()
        and candidate.count("@") == 1
        and not candidate.endswith("@")
        and '"' not in candidate
        and "<" not in candidate
        and "[" not in candidate
    )


def _normalise_plain(candidate: str, allow_smtputf8: bool) -> str:
    """validate_email's own steps, in its order, for an address _is_plain accepted.

    Only the domain's checks are cached: imported lists repeat a handful of domains,
    and checking one character by character (UTS #46, IDNA) is most of the cost.
    """
    local, domain = candidate.split("@")
    local_info = validate_email_local_part(
        local,
        allow_smtputf8=allow_smtputf8,
        allow_empty_local=email_validator.ALLOW_EMPTY_LOCAL,
        quoted_local_part=False,
        strict=email_validator.STRICT,
    )
    local_part = local_info["local_part"]
    # Role mailboxes (RFC 2142) are case-insensitive; validate_email lower-cases them too.
    if local_part.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        local_part = local_part.lower()
    checked = _check_domain if len(domain) <= DOMAIN_MAX_LENGTH else _check_domain.__wrapped__
    outcome = checked(
        domain, email_validator.TEST_ENVIRONMENT, email_validator.GLOBALLY_DELIVERABLE
    )
    if isinstance(outcome, str):
        raise EmailSyntaxError(outcome)
    ascii_domain, unicode_domain, longest = outcome
    # The local part is ASCII, so characters are bytes; only near the limit is it worth
    # building what validate_email_length needs to word its error.
    if len(candidate) > EMAIL_MAX_LENGTH or len(local_part) + 1 + longest > EMAIL_MAX_LENGTH:
        result = ValidatedEmail()
        result.original = candidate
        result.local_part = result.ascii_local_part = local_part
        result.domain, result.ascii_domain = unicode_domain, ascii_domain
        result.normalized = f"{local_part}@{unicode_domain}"
        validate_email_length(result)
    return f"{local_part}@{ascii_domain}".strip()


@lru_cache(maxsize=1024)
def _check_domain(
    domain: str, test_environment: bool, globally_deliverable: bool
) -> tuple[str, str, int] | str:
    """The domain's (ASCII form, Unicode form, longer UTF-8 length), or why it is invalid.

    The error is kept as its message, not as the exception: re-raising one exception
    object would chain a new traceback onto it each time.
    """
    try:
        info = validate_email_domain_name(
            domain, test_environment=test_environment, globally_deliverable=globally_deliverable
        )
    except EmailSyntaxError as exc:
        return str(exc)
    ascii_domain, unicode_domain = info["ascii_domain"], info["domain"]
    return ascii_domain, unicode_domain, max(len(ascii_domain), len(unicode_domain.encode()))
