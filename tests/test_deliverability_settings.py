"""The deliverability settings: defaults, rates as fractions or percentages, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from gazette.config import load_settings
from gazette.deliverability_settings import Deliverability
from gazette.errors import ConfigError


def _load(tmp_path: Path, **variables: str) -> Deliverability:
    env = {f"GAZETTE_{k}": v for k, v in variables.items()}
    return load_settings(env, cwd=tmp_path).deliverability


def test_the_defaults(tmp_path: Path) -> None:
    rules = _load(tmp_path)
    assert rules == Deliverability(3, 7, 0.003, 0.05, 1000, None)
    assert rules.soft_bounce_window.days == 7


def test_every_setting_is_read(tmp_path: Path) -> None:
    rules = _load(
        tmp_path, SOFT_BOUNCE_LIMIT="5", SOFT_BOUNCE_DAYS="14", PAUSE_COMPLAINT_RATE="0.1%",
        PAUSE_BOUNCE_RATE="0.02", PAUSE_MIN_SETTLED="250", FEEDBACK_SENDER_ID="gz-news",
    )  # fmt: skip
    assert rules == Deliverability(5, 14, pytest.approx(0.001), 0.02, 250, "gz-news")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value", "sentence"),
    [
        ("SOFT_BOUNCE_LIMIT", "0", "must be a whole number of at least 1."),
        ("SOFT_BOUNCE_DAYS", "a week", "must be a whole number of at least 1."),
        ("PAUSE_MIN_SETTLED", "-5", "must be a whole number of at least 1."),
        ("PAUSE_COMPLAINT_RATE", "3", "must be a rate above 0 and at most 1, as a fraction"),
        ("PAUSE_BOUNCE_RATE", "0", "must be a rate above 0 and at most 1, as a fraction"),
        ("PAUSE_BOUNCE_RATE", "five%", "must be a rate above 0 and at most 1, as a fraction"),
        ("FEEDBACK_SENDER_ID", "a:b", "must be 5 to 15 letters, digits, dots, hyphens"),
        ("FEEDBACK_SENDER_ID", "gazette.news.example.org", "must be 5 to 15 letters"),
    ],
)
def test_a_bad_value_is_one_sentence_naming_it(
    tmp_path: Path, name: str, value: str, sentence: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, **{name: value})
    assert str(raised.value).startswith(f"GAZETTE_{name}={value!r} {sentence}")
