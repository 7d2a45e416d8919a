"""Fixtures of the reliability scenarios."""

from __future__ import annotations

import pytest

from tests.support.smtp import RecordingHandler


@pytest.fixture
def relay() -> RecordingHandler:
    return RecordingHandler()
