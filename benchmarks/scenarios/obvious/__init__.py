"""The obvious scenario: one Celery task per message, everything done per message.

The same readers, plan and sink as the gazette scenario, sent the way an application
written the obvious way would (the task in ``sender``, its Celery app in ``app``), on a
sample of the issue; Gazette's rate of the same run is divided by its rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select

from benchmarks.harness.context import Context, Scenario
from benchmarks.harness.figures import Figure, FigureSpec, FigureTable, Ratio, fmt
from benchmarks.harness.report import headline, this_run
from benchmarks.harness.sending import Approach
from benchmarks.scenarios.gazette import TARGET_SUBSCRIBERS, at_size, send_runs
from gazette.config import Settings
from gazette.runtime import Runtime
from gazette.store.models import Delivery, DeliveryStatus

if TYPE_CHECKING:
    from benchmarks.harness.report import RunInfo

WHAT = "Obvious approach, {database}, {subscribers:,} subscribers"
FIGURES = FigureTable(
    "obvious",
    {
        "rate": FigureSpec(
            "obvious.{database}.n{subscribers}.msgs_per_s",
            "msg/s",
            WHAT + ": messages/s ({sample:,} sent)",
        ),
        "cpu": FigureSpec(
            "obvious.{database}.n{subscribers}.cpu_ms_per_msg",
            "CPU ms/msg",
            WHAT + ": worker CPU per message",
        ),
        "vs_obvious": FigureSpec(
            "gazette.{database}.n{subscribers}.vs_obvious",
            "x",
            "Gazette over the obvious approach, {database}, {subscribers:,} subscribers",
            ">= 10{at}",
            lambda f: f.value >= 10,
        ),
    },
)
METHOD = (
    "`benchmarks/scenarios/obvious/sender.py` on its own Celery app "
    "(`benchmarks.scenarios.obvious.app`, Celery's defaults), 2 worker processes, the same "
    "seeding, plan and sink; one task per message that opens a session, loads the reader "
    "and the articles, renders Gazette's templates with Jinja, builds an `EmailMessage` "
    "(policy SMTP) and opens a new SMTP connection. It sends a sample of the planned issue "
    "(see Setup), timed the same way."
)


def _configure(settings: Settings) -> None:
    """Point the obvious approach's app, in this process, at the run's broker and queue."""
    from benchmarks.scenarios.obvious import app

    app.configure(settings)


def _enqueue(runtime: Runtime, issue_id: int, limit: int | None) -> Callable[[], bool]:
    """One task per delivery (the first ``limit``); done when none of them is pending."""
    from benchmarks.scenarios.obvious.sender import send_one

    with runtime.sessions() as session:
        query = select(Delivery.id).where(Delivery.issue_id == issue_id).order_by(Delivery.id)
        if limit is not None:
            query = query.limit(limit)
        ids = list(session.scalars(query))
    for delivery_id in ids:
        send_one.delay(delivery_id)
    last_id = ids[-1]

    def sent() -> bool:
        with runtime.sessions() as session:
            pending = session.scalar(
                select(Delivery.id)
                .where(
                    Delivery.issue_id == issue_id,
                    Delivery.id <= last_id,
                    Delivery.status == DeliveryStatus.PENDING,
                )
                .limit(1)
            )
        return pending is None

    return sent


SENDER = Approach("obvious", "benchmarks.scenarios.obvious.app", _enqueue, _configure, samples=True)


def run(ctx: Context) -> None:
    """One task per message, everything per message; compared with Gazette's figures."""
    sample = ctx.sizes.obvious_sample
    ctx.setup["Obvious approach"] = (
        f"same readers and plan; sends and is timed on the first {sample:,} messages of "
        "the issue per run (one task each), since at its rate the whole issue would take "
        "longer than the benchmark budget"
    )
    for database in ctx.obvious_databases:
        sizes = [n for n in ctx.sizes.obvious_send if n in ctx.send_sizes(database)]
        for subscribers in sizes or ctx.send_sizes(database)[-1:]:
            with ctx.attempt(f"obvious on {database} with {subscribers:,} subscribers"):
                _figures(ctx, database, subscribers, sample)


def _figures(ctx: Context, database: str, subscribers: int, sample: int) -> None:
    """Send a sample at one size and database; record its figures and Gazette's ratio."""
    runs = send_runs(ctx, SENDER, database, subscribers, limit=sample)

    def register(key: str, measured: list[float] | Ratio, at: str = "") -> Figure:
        """One figure of this size and database."""
        return FIGURES.register(
            ctx, key, measured, subscribers=subscribers, database=database, sample=sample, at=at
        )

    rate = register("rate", [r.rate for r in runs])
    register("cpu", [r.cpu_ms_per_message for r in runs])
    gazette = ctx.figures.get(f"gazette.{database}.n{subscribers}.msgs_per_s")
    if gazette is not None:
        register("vs_obvious", Ratio(gazette, rate), at_size(subscribers, TARGET_SUBSCRIBERS))


def findings(figures: Sequence[Figure], info: RunInfo) -> list[str]:
    """Gazette against the obvious approach at the largest PostgreSQL size of this run."""
    current = this_run(figures, info)
    speedup = headline(current, "gazette.postgresql", "vs_obvious")
    if speedup is None:
        return []
    n = speedup.subscribers or 0
    g_cpu = current.get(f"gazette.postgresql.n{n}.cpu_ms_per_msg")
    o_cpu = current.get(f"obvious.postgresql.n{n}.cpu_ms_per_msg")
    text = (
        f"**Against the obvious approach.** Gazette sent {fmt(speedup.value)} times as many "
        f"messages per second at {n:,} subscribers"
    )
    if g_cpu is not None and o_cpu is not None:
        text += (
            f"; per message the obvious approach's workers spent {fmt(o_cpu.value)} CPU ms, "
            f"Gazette's {fmt(g_cpu.value)}: {fmt(o_cpu.value / g_cpu.value)} times less"
        )
    return [text + ".", ""]


SCENARIO = Scenario("obvious", run, FIGURES, METHOD, findings, needs=("gazette",))
