"""Scenario 10: CSV import fuzzed; what should import does, the rest is refused whole."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select

from gazette.errors import GazetteError
from gazette.newsletters.service import create_newsletter
from gazette.store.db import transaction
from gazette.store.models import Event, Subscriber, Subscription, SubscriptionStatus
from gazette.subscribers.csv_import import import_csv
from gazette.subscribers.csv_reading import check_file
from gazette.subscribers.service import Origin
from tests.reliability.helpers import csv_files, one_sentence
from tests.support.env import installed_env
from tests.support.figures import record
from tests.support.reliability import SLUG, scenario

# The fault and hostile-input suite: `make reliability` runs it and writes its report.
pytestmark = pytest.mark.reliability


def test_reliability_csv_import_fuzzed(tmp_path: Path, database_url: str) -> None:
    outcomes: Counter[str] = Counter()
    with installed_env(tmp_path, database_url) as (_env, runtime):
        with transaction(runtime.sessions) as session:
            create_newsletter(session, SLUG, "The Weekly")
        counter = itertools.count()

        def counts() -> tuple[int, int, int]:
            with runtime.sessions() as session:
                return (
                    session.scalar(select(func.count()).select_from(Subscriber)) or 0,
                    session.scalar(select(func.count()).select_from(Subscription)) or 0,
                    session.scalar(select(func.count()).select_from(Event)) or 0,
                )

        def readers() -> set[tuple[str, str, str, SubscriptionStatus]]:
            with runtime.sessions() as session:
                rows = session.execute(
                    select(
                        Subscriber.email, Subscriber.name, Subscriber.language, Subscription.status
                    ).join(Subscription, Subscription.subscriber_id == Subscriber.id)
                ).all()
                return {(e, n, lang, st_) for e, n, lang, st_ in rows}

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(data=csv_files())
        def import_one(data: bytes) -> None:
            path = tmp_path / f"import-{next(counter)}.csv"
            path.write_bytes(data)
            before = counts()
            refusal: str | None = None
            try:
                # Small chunks, so a file that failed after its first rows would show it.
                report = import_csv(runtime.sessions, path, SLUG, Origin("import"), chunk_size=3)
            except GazetteError as error:
                refusal = str(error)
            if refusal is not None:
                outcomes["refused"] += 1
                after = counts()
                assert one_sentence(refusal), refusal
                assert after == before, f"a refused import wrote: {before} -> {after}"
                with pytest.raises(GazetteError):
                    check_file(path)
                return
            outcomes["imported"] += 1
            after = counts()
            assert after[0] == before[0] + report.added
            # A new subscription for each added reader, and for some updated ones.
            assert before[1] + report.added <= after[1] <= before[1] + report.added + report.updated
            handled = (
                report.added + report.updated + report.unchanged + report.skipped_unsubscribed
                + report.skipped_suppressed + len(report.rejected)
            )  # fmt: skip
            assert handled == check_file(path)
            for rejected in report.rejected:
                assert rejected.line >= 2
                assert rejected.reason
            # Importing the same file again adds nothing and leaves every reader as they are.
            imported = readers()
            again = import_csv(runtime.sessions, path, SLUG, Origin("import"), chunk_size=3)
            assert again.added == 0
            assert counts()[:2] == after[:2]
            assert readers() == imported

        started = time.monotonic()
        import_one()
        elapsed = time.monotonic() - started
    assert outcomes["imported"] > 10, outcomes
    assert outcomes["refused"] > 10, outcomes
    record(
        scenario("CSV import fuzzed", database_url),
        f"{sum(outcomes.values())} hypothesis-generated files (utf-8/utf-16/latin-1/cp1251, "
        "BOMs, quotes, embedded newlines, 140,000-character fields, empty files, wrong "
        "columns, binary junk) through import_csv, written three rows per transaction",
        f"{outcomes['imported']} imported, {outcomes['refused']} refused with one sentence "
        f"and nothing written, 0 other outcomes; {elapsed:.1f} s",
        "a GazetteError with nothing written, or a clean import; nothing else",
    )
