"""What every provider's webhook shares: refusals, report keys, the token, status codes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gazette.bounces.formats import status_code
from gazette.mail.verp import delivery_for

# The metadata key each digest carries its VERP token under (mail/provider_headers).
TAG = "gazette"
# What a webhook fetches a URL with (a certificate, a subscription confirmation): the
# body, or an exception when it cannot. Injected, so tests serve their own certificates.
Fetcher = Callable[[str], bytes]
# Seconds since the epoch, injected so tests choose the time.
Clock = Callable[[], float]


class CallRefusedError(Exception):
    """A call that is not the provider's, or not for us: one line saying why, and a status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def event_key(provider: str, event_id: str) -> str:
    """The report key of a provider's event: a replay or a retry of it has the same one."""
    return hashlib.sha256(f"{provider}:{event_id}".encode()).hexdigest()


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """``body`` as a JSON object, or CallRefusedError(400) naming ``what`` it should have been."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CallRefusedError(400, f"The body is not {what} (not JSON).") from None
    if not isinstance(value, dict):
        raise CallRefusedError(400, f"The body is not {what} (not a JSON object).")
    return value


def token_delivery(value: object, secret_keys: Sequence[str]) -> int | None:
    """The delivery a metadata value's VERP token names; None for a missing or forged one.

    SES gives tags as lists of values, the others as strings: the first valid one counts.
    """
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, str) and 0 < len(item) <= 64:
            found = delivery_for(item, secret_keys)
            if found is not None:
                return found
    return None


def part(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``mapping[key]`` when it is a JSON object, else an empty one."""
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def text(mapping: Mapping[str, Any], key: str, limit: int = 300) -> str:
    """``mapping[key]`` as one line of text ("" when it is not a string or a number)."""
    value = mapping.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return ""
    return " ".join(str(value).split())[:limit]


def with_class(status: str | None, words: str, klass: str) -> str | None:
    """The reported status (or the one in ``words``) in the class the provider says it is.

    A provider that calls a failure permanent or transient has decided its class: "5.2.2"
    reported as transient is "4.2.2". None when no code is given and the class is 5: the
    policy reads a failure without a code as the reader's.
    """
    code = status if status and status_code(status) == status else status_code(words)
    if code is None:
        return None if klass == "5" else "4.0.0"
    return klass + code[1:]
