"""The site each webhook test module posts to: a digest sent as its module's PROVIDER."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.webhooks.hooks import Hooked, hooked_site


@pytest.fixture
def site(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Iterator[Hooked]:
    with hooked_site(tmp_path, database_url, request.module.PROVIDER) as hooked:
        yield hooked
