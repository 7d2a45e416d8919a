"""Planning: freeze the audience of one issue over a large subscriber table.

Readers are bulk-seeded once per database (COPY on PostgreSQL, executemany on SQLite);
each run then plans a new issue into an empty ledger (the previous run's issue and
deliveries are removed first), so every run inserts the same number of rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from benchmarks import data
from gazette.runtime import Runtime, use_runtime


@dataclass(frozen=True)
class PlanRun:
    """One plan: rows inserted and seconds (plan_issue plus its commit)."""

    deliveries: int
    seconds: float


@contextmanager
def seeded(kind: str, subscribers: int, folder: Path) -> Iterator[tuple[Runtime, int, float]]:
    """A fresh database with ``subscribers`` active readers: (runtime, newsletter, seed s)."""
    with data.database(kind, folder) as url:
        env = data.gazette_env(folder, url)
        runtime = data.install_runtime(env, folder)
        try:
            newsletter_id = data.seed_issue_content(runtime)
            _route_by_language(runtime, newsletter_id)
            seconds = data.seed_readers(runtime.engine, newsletter_id, subscribers)
            yield runtime, newsletter_id, seconds
        finally:
            use_runtime(None)


def _route_by_language(runtime: Runtime, newsletter_id: int) -> None:
    """Language routing on: the articles in en, uk and ja, the newsletter on ``own``.

    Planning then caps each language group; the readers (seeded in the same three
    languages) receive their own at sending time.
    """
    with runtime.engine.begin() as connection:
        connection.execute(
            text("UPDATE newsletter SET article_languages = 'own' WHERE id = :id"),
            {"id": newsletter_id},
        )
        connection.execute(
            text(
                "UPDATE article SET language = CASE id % 3 WHEN 0 THEN 'en' "
                "WHEN 1 THEN 'uk' ELSE 'ja' END"
            )
        )


def _clear_ledger(runtime: Runtime) -> None:
    with runtime.engine.begin() as connection:
        if runtime.engine.dialect.name == "postgresql":
            connection.execute(text("TRUNCATE delivery"))
        else:
            connection.execute(text("DELETE FROM delivery"))
        connection.execute(text("DELETE FROM issue_article"))
        connection.execute(text("DELETE FROM issue"))
    if runtime.engine.dialect.name == "postgresql":
        with runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE delivery"))


def plan_once(runtime: Runtime, newsletter_id: int, run: int) -> PlanRun:
    """Plan one issue into an empty ledger."""
    _clear_ledger(runtime)
    _issue_id, deliveries, seconds = data.plan(runtime, newsletter_id, key=f"bench-{run}")
    return PlanRun(deliveries, seconds)
