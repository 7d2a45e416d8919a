"""Run the benchmarks: ``python -m benchmarks.run [--full] [--only NAME[,NAME]] [--runs N]``.

Scenarios, in the order they run: sink, ceiling, gazette, obvious, relay, planning, csv,
feed, web (benchmarks/scenarios/, one module each). ``--only`` runs the named ones plus
what their figures are computed from (gazette's ratios need the ceiling of the same run;
obvious's ratio needs gazette). Every run rewrites benchmarks/results/latest.json,
docs/benchmarks.md and the charts next to it (``--output DIR`` writes all three into DIR
instead); a partial run keeps the previous results of the scenarios it did not run,
marked as such.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness.figures import MIN_RUNS, fmt
from benchmarks.suite import SCENARIOS as SCENARIO_NAMES

HARNESS_KEY = "benchmark-secret-key-0123456789"


def _prepare_environment(workdir: Path) -> None:
    """Settings for this process, so importing a Celery app touches no real installation."""
    for key in [k for k in os.environ if k.startswith("GAZETTE_")]:
        del os.environ[key]
    os.environ["GAZETTE_SECRET_KEYS"] = HARNESS_KEY
    os.environ["GAZETTE_VAR_DIR"] = str(workdir / "harness")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the chosen scenarios, write the outputs; 1 on a failure."""
    arguments = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--full", action="store_true", help="full sizes (under 30 minutes)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help=f"scenarios to run: {', '.join(SCENARIO_NAMES)}",
    )
    parser.add_argument(
        "--runs", type=int, default=MIN_RUNS, help=f"runs per figure (at least {MIN_RUNS})"
    )
    parser.add_argument(
        "--summary-chars",
        type=int,
        default=None,
        help="HTML characters per article summary (default 2000)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        metavar="DIR",
        help="write latest.json, benchmarks.md and the charts into DIR "
        "(default: benchmarks/results/ and docs/)",
    )
    args = parser.parse_args(arguments)
    chosen = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIO_NAMES]
    if unknown:
        parser.error(
            f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIO_NAMES)}"
        )
    if args.runs < MIN_RUNS:
        parser.error(f"--runs must be at least {MIN_RUNS}: every figure is a median of runs")

    workdir = Path(tempfile.mkdtemp(prefix="gazette-bench-"))
    _prepare_environment(workdir)
    from benchmarks import suite
    from benchmarks.harness import report, seeding
    from benchmarks.harness.context import FULL, QUICK, Context

    ctx = Context(
        sizes=FULL if args.full else QUICK,
        workdir=workdir,
        runs=args.runs,
        summary_chars=args.summary_chars or seeding.SUMMARY_CHARS,
        profile=not args.no_profile,
    )
    out = args.output
    results = report.RESULTS if out is None else out / report.RESULTS.name
    markdown = report.MARKDOWN if out is None else out / report.MARKDOWN.name
    charts = report.CHARTS if out is None else out
    selected = suite.resolve(chosen or SCENARIO_NAMES)
    command = " ".join(["python -m benchmarks.run", *arguments])
    print(f"{command}: {', '.join(selected)} ({ctx.sizes.mode} sizes, {ctx.runs} runs each)")
    began = time.perf_counter()
    failed = True
    try:
        failed = suite.run_all(ctx, selected)
    finally:
        seconds = time.perf_counter() - began
        figures = suite.write_outputs(
            ctx, selected, partial=bool(chosen), command=command, seconds=seconds,
            results=results, markdown=markdown, charts=charts,
        )  # fmt: skip
        if args.keep:
            print(f"working folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"{'figure':<46} {'median':>10} {'unit':<10} {'min':>10} {'max':>10} runs  target")
    for f in figures:
        if f.recorded_at != ctx.started:
            continue
        target = (
            ""
            if f.target is None
            else f"{f.target}" + ("" if f.met is None else (" met" if f.met else " MISSED"))
        )
        print(
            f"{f.name:<46} {fmt(f.value):>10} {f.unit:<10} {fmt(f.min):>10} {fmt(f.max):>10} "
            f"{f.runs:>4}  {target}"
        )
    for note in ctx.notes:
        print(f"note: {note}")
    minutes, rest = divmod(seconds, 60)
    print(
        f"\nbenchmarks finished in {int(minutes)} min {rest:04.1f} s; wrote "
        f"{results}, {markdown} and the charts in {charts}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
