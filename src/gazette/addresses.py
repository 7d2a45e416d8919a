"""Email address validation and normalisation, the one rule every entry point shares."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email


class AddressError(ValueError):
    """An address that cannot be stored; the message says why in one sentence."""


def normalise_address(raw: str, *, allow_smtputf8: bool) -> str:
    """Return the canonical form of ``raw`` (domain in lower-case IDNA-normalised form).

    No DNS lookup happens here: it runs on the subscribe path and in bulk imports, where
    a resolver's latency or outage must not decide whether an address is accepted.
    """
    candidate = raw.strip()
    if not candidate:
        raise AddressError("the address is empty.")
    try:
        result = validate_email(
            candidate,
            check_deliverability=False,
            allow_smtputf8=allow_smtputf8,
        )
    except EmailNotValidError as exc:
        reason = str(exc).rstrip(".")
        raise AddressError(f"{candidate!r} is not a valid email address ({reason}).") from None
    return f"{result.local_part}@{result.ascii_domain or result.domain}".strip()
