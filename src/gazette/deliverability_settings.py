"""The deliverability settings: soft-bounce decay, when a newsletter pauses, the Feedback-ID.

config.py hands the raw strings over; here each is checked and named when wrong. The
soft-bounce window follows GNU Mailman 3's ``bounce_info_stale_after`` (7 days: a
reader's score starts again when their last bounce is older); the limit stays
Gazette's 3 rather than Mailman's ``bounce_score_threshold`` of 5, since a hard bounce
here suppresses at once instead of adding to the score.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from gazette.errors import ConfigError
from gazette.url_settings import PREFIX

# The GAZETTE_* names (without the prefix) this module reads.
NAMES = (
    "SOFT_BOUNCE_LIMIT", "SOFT_BOUNCE_DAYS", "PAUSE_COMPLAINT_RATE", "PAUSE_BOUNCE_RATE",
    "PAUSE_MIN_SETTLED", "FEEDBACK_SENDER_ID",
)  # fmt: skip
# Google asks for a SenderId of 5 to 15 characters; a colon would split it.
_SENDER_ID = re.compile(r"^[A-Za-z0-9._-]{5,15}$")


@dataclass(frozen=True)
class Deliverability:
    """How bounces decay and when an issue's figures pause its newsletter."""

    soft_bounce_limit: int = 3
    soft_bounce_days: int = 7
    # Rates as fractions: 0.003 is 0.3%, the complaint rate Gmail and Yahoo enforce.
    pause_complaint_rate: float = 0.003
    pause_bounce_rate: float = 0.05
    pause_min_settled: int = 1000
    # The Feedback-ID's SenderId; None: each message's From domain.
    feedback_sender_id: str | None = None

    @property
    def soft_bounce_window(self) -> timedelta:
        """How long a soft bounce counts towards the limit after the last one."""
        return timedelta(days=self.soft_bounce_days)


def parse_deliverability(raw: Mapping[str, str | None]) -> Deliverability:
    """The settings from their raw strings (by name without GAZETTE_; None: the default)."""
    default = Deliverability()
    sender_id = raw.get("FEEDBACK_SENDER_ID")
    if sender_id is not None and not _SENDER_ID.match(sender_id):
        raise ConfigError(
            f"{PREFIX}FEEDBACK_SENDER_ID={sender_id!r} must be 5 to 15 letters, digits, "
            "dots, hyphens or underscores (Google's SenderId)."
        )
    return Deliverability(
        soft_bounce_limit=_whole(raw, "SOFT_BOUNCE_LIMIT", default.soft_bounce_limit),
        soft_bounce_days=_whole(raw, "SOFT_BOUNCE_DAYS", default.soft_bounce_days),
        pause_complaint_rate=_rate(raw, "PAUSE_COMPLAINT_RATE", default.pause_complaint_rate),
        pause_bounce_rate=_rate(raw, "PAUSE_BOUNCE_RATE", default.pause_bounce_rate),
        pause_min_settled=_whole(raw, "PAUSE_MIN_SETTLED", default.pause_min_settled),
        feedback_sender_id=sender_id,
    )


def _whole(raw: Mapping[str, str | None], name: str, default: int) -> int:
    """A whole number of at least 1."""
    text = raw.get(name)
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{PREFIX}{name}={text!r} must be a whole number of at least 1.")
    return int(text)


def _rate(raw: Mapping[str, str | None], name: str, default: float) -> float:
    """A rate above 0 and at most 1, written as a fraction (0.003) or a percentage (0.3%)."""
    text = raw.get(name)
    if text is None:
        return default
    percent = text.endswith("%")
    try:
        value = float(text[:-1] if percent else text) / (100 if percent else 1)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise ConfigError(
            f"{PREFIX}{name}={text!r} must be a rate above 0 and at most 1, "
            "as a fraction (0.003) or a percentage (0.3%)."
        )
    return value
