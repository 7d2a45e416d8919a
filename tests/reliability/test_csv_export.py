"""Scenario 11: the CSV export neutralises formulas."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from gazette.newsletters.service import create_newsletter
from gazette.store.db import transaction
from gazette.store.models import Subscriber
from gazette.subscribers.csv_export import FORMULA_LEAD, export_csv
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.support.env import installed_env
from tests.support.figures import record
from tests.support.reliability import SLUG, scenario

# The fault and hostile-input suite: `make reliability` runs it and writes its report.
pytestmark = pytest.mark.reliability


def test_reliability_csv_export_neutralises_formulas(tmp_path: Path, database_url: str) -> None:
    leads = ["=", "+", "-", "@", "\t", "\r"]
    assert set(leads) == set(FORMULA_LEAD)
    dangerous_names = [f'{lead}HYPERLINK("https://evil.example","x")' for lead in leads]
    dangerous_names += ["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)*cmd|'/C calc'!A0"]
    safe_names = ["Ann = Bob", "O'Brien", "'quoted already", " =leading space", "Ємельян",
                  "山田 太郎", "a+b", "", "x-y", "mail@home"]  # fmt: skip
    # Addresses that pass validation but start with a formula character...
    valid_dangerous = ["=cmd@example.org", "+1@example.org", "-dash@example.org"]
    # ...and values no validator would let in, stored by an older version or by hand.
    raw_dangerous = ["@at@example.org", "\t=tab@example.org", "\r=cr@example.org"]
    with installed_env(tmp_path, database_url) as (_env, runtime):
        expected: dict[str, tuple[str, str]] = {}
        with transaction(runtime.sessions) as session:
            create_newsletter(session, SLUG, "The Weekly")
            for n, email in enumerate(valid_dangerous):
                subscribe(session, email, SLUG, Origin("cli"), name=safe_names[n])
                expected[email] = ("'" + email, safe_names[n])
            for n, name in enumerate(dangerous_names + safe_names):
                email = f"reader{n}@example.org"
                stored = raw_dangerous[n] if n < len(raw_dangerous) else email
                result = subscribe(session, email, SLUG, Origin("cli"))
                subscriber = session.get_one(Subscriber, result.subscriber_id)
                subscriber.email, subscriber.name = stored, name  # as stored, unvalidated
                lead = stored.startswith(FORMULA_LEAD)
                expected[stored] = (("'" if lead else "") + stored, name)
                if name.startswith(FORMULA_LEAD):
                    expected[stored] = (expected[stored][0], "'" + name)
        out = io.StringIO(newline="")
        with runtime.sessions() as session:
            count = export_csv(session, out)
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    header, body = rows[0], rows[1:]
    exported = {row[0]: (row[0], row[1]) for row in body}
    wanted = {cells[0]: cells for cells in expected.values()}
    neutralised = sum(1 for row in body for cell in row[:2] if cell.startswith("'"))
    unsafe = [cell for row in body for cell in row if cell.startswith(FORMULA_LEAD)]
    assert header[:2] == ["email", "name"]
    assert count == len(body) == len(expected)
    assert unsafe == []
    assert exported == wanted
    record(
        scenario("CSV export", database_url),
        f"{count} readers exported whose names or addresses start with = + - @ tab or CR "
        "(and others that must stay as they are)",
        f"{neutralised} cell(s) neutralised with a leading apostrophe, {len(unsafe)} "
        "exported starting with a formula character",
        "every such cell neutralised; other cells untouched",
    )
