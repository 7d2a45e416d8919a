"""The planning scenario: freeze the audience of one issue over a large subscriber table.

Readers are bulk-seeded once per database (COPY on PostgreSQL, executemany on SQLite);
each run then plans a new issue into an empty ledger (the previous run's issue and
deliveries are removed first), so every run inserts the same number of rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text

from benchmarks.harness import seeding
from benchmarks.harness.context import Context, Scenario
from benchmarks.harness.figures import Figure, FigureSpec, FigureTable, fmt
from benchmarks.harness.report import headline, this_run
from benchmarks.scenarios.gazette import at_size
from gazette.runtime import Runtime, use_runtime

if TYPE_CHECKING:
    from benchmarks.harness.report import RunInfo

TARGET_PLANNING = 1_000_000
FIGURES = FigureTable(
    "planning",
    {
        "plan": FigureSpec(
            "planning.{database}.n{subscribers}.plan_s",
            "s",
            "Planning {subscribers:,} active subscriptions, {database}",
            "< 15 s{at}",
            lambda f: f.value < 15,
        ),
    },
)
METHOD = (
    "`plan_issue` into an empty ledger over a bulk-seeded subscriber table (COPY on "
    "PostgreSQL, executemany on SQLite), plan and commit."
)


@dataclass(frozen=True)
class PlanRun:
    """One plan: rows inserted and seconds (plan_issue plus its commit)."""

    deliveries: int
    seconds: float


@contextmanager
def seeded(kind: str, subscribers: int, folder: Path) -> Iterator[tuple[Runtime, int, float]]:
    """A fresh database with ``subscribers`` active readers: (runtime, newsletter, seed s)."""
    with seeding.database(kind, folder) as url:
        env = seeding.gazette_env(folder, url)
        runtime = seeding.install_runtime(env, folder)
        try:
            newsletter_id = seeding.seed_issue_content(runtime)
            _route_by_language(runtime, newsletter_id)
            seconds = seeding.seed_readers(runtime.engine, newsletter_id, subscribers)
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
    _issue_id, deliveries, seconds = seeding.plan(runtime, newsletter_id, key=f"bench-{run}")
    return PlanRun(deliveries, seconds)


def run(ctx: Context) -> None:
    """plan_issue over a large subscriber table, each run into an empty ledger."""
    subscribers = ctx.sizes.planning
    for database in ctx.databases:
        with ctx.attempt(f"planning on {database}"):
            _plan_on(ctx, database, subscribers)


def _plan_on(ctx: Context, database: str, subscribers: int) -> None:
    with seeded(database, subscribers, ctx.folder("planning", database)) as (rt, nid, secs):
        ctx.log(f"    seeded {subscribers:,} readers on {database} in {secs:.1f} s")
        ctx.setup[f"Planning seed ({database})"] = (
            f"{subscribers:,} readers and subscriptions in {secs:.1f} s "
            f"({'COPY' if database == 'postgresql' else 'executemany'})"
        )
        runs = []
        for n in range(ctx.runs):
            planned = plan_once(rt, nid, n)
            if planned.deliveries != subscribers:
                raise RuntimeError(f"planned {planned.deliveries} of {subscribers}")
            ctx.log(f"    plan {database} run {n + 1}: {planned.seconds:.2f} s")
            runs.append(planned.seconds)
    # The target is PostgreSQL's: SQLite's figure is there for comparison.
    FIGURES.register(
        ctx, "plan", runs, subscribers=subscribers, database=database,
        at=at_size(subscribers, TARGET_PLANNING), targeted=database == "postgresql",
    )  # fmt: skip


def findings(figures: Sequence[Figure], info: RunInfo) -> list[str]:
    """How long this run's largest plan took, and its rows per second."""
    current = this_run(figures, info)
    pg = headline(current, "planning.postgresql", "plan_s")
    lite = headline(current, "planning.sqlite", "plan_s")
    if pg is None:
        return []
    rows = pg.subscribers or 0
    text = (
        f"**Planning.** Planning {rows:,} deliveries took {fmt(pg.value)} s on PostgreSQL "
        f"({fmt(rows / pg.value)} rows/s)"
    )
    if lite is not None and lite.subscribers == rows:
        text += f" and {fmt(lite.value)} s on SQLite ({fmt(rows / lite.value)} rows/s)"
    return [text + ".", ""]


SCENARIO = Scenario("planning", run, FIGURES, METHOD, findings)
