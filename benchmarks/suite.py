"""The scenarios in running order, what each needs, and running a selection of them.

Scenarios run in this order: sink, ceiling, dkim, gazette, obvious, relay, planning, csv,
feed, web. ``--only`` runs the named ones plus what their figures are computed from (gazette's
ratios need the ceiling of the same run; obvious's ratio needs gazette).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path

from benchmarks.harness import report
from benchmarks.harness.context import Context, Scenario
from benchmarks.harness.figures import Figure
from benchmarks.scenarios import (
    ceiling,
    csv,
    dkim,
    feed,
    gazette,
    obvious,
    planning,
    relay,
    sink,
    web,
)

SUITE: tuple[Scenario, ...] = (
    sink.SCENARIO,
    ceiling.SCENARIO,
    dkim.SCENARIO,
    gazette.SCENARIO,
    obvious.SCENARIO,
    relay.SCENARIO,
    planning.SCENARIO,
    csv.SCENARIO,
    feed.SCENARIO,
    web.SCENARIO,
)
BY_NAME = {scenario.name: scenario for scenario in SUITE}
SCENARIOS = tuple(BY_NAME)


def resolve(chosen: Iterable[str]) -> list[str]:
    """The chosen scenarios plus what their figures need, in running order."""
    wanted: set[str] = set()

    def need(name: str) -> None:
        if name in wanted:
            return
        wanted.add(name)
        for other in BY_NAME[name].needs:
            need(other)

    for name in chosen:
        need(name)
    return [name for name in SCENARIOS if name in wanted]


def run_all(ctx: Context, selected: Sequence[str]) -> bool:
    """Run the scenarios in order; a failing one is reported and the rest still run.

    Returns True when any scenario failed.
    """
    failed = False
    try:
        for name in selected:
            ctx.log(f"\n== {name} ==")
            began = time.perf_counter()
            try:
                BY_NAME[name].run(ctx)
            except Exception as error:
                failed = True
                traceback.print_exc()
                ctx.notes.append(f"The {name} scenario failed: {error.__class__.__name__}: {error}")
            ctx.timings[name] = time.perf_counter() - began
            ctx.log(f"   ({name} took {ctx.timings[name]:.0f} s)")
    finally:
        ctx.close()
    return failed or ctx.failed


def write_outputs(
    ctx: Context,
    selected: Sequence[str],
    *,
    partial: bool,
    command: str,
    seconds: float,
    results: Path = report.RESULTS,
    markdown: Path = report.MARKDOWN,
    charts: Path = report.CHARTS,
) -> list[Figure]:
    """latest.json, docs/benchmarks.md and the charts, from every scenario's figures."""
    return report.write_outputs(
        ctx, SUITE, selected, partial=partial, command=command, seconds=seconds,
        results=results, markdown=markdown, charts=charts,
    )  # fmt: skip
