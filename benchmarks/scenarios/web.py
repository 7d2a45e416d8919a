"""The web scenario: wrk against `gazette serve`, and one POST's cost inside the app.

GET /subscribe and the RFC 8058 one-click unsubscribe POST under wrk (the server and the
wrk scripts are in benchmarks.harness.webload), then the same POST through Flask's test
client in this process, counting its CPU, SQL statements and pool checkouts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks.harness import webload
from benchmarks.harness.context import Context, Scenario
from benchmarks.harness.figures import Figure, FigureSpec, FigureTable, fmt
from benchmarks.harness.report import this_run
from gazette.runtime import Runtime

if TYPE_CHECKING:
    from benchmarks.harness.report import RunInfo

CONNECTIONS = 50  # wrk -c, what run_wrk uses by default
# The server before issue 20, loaded beside the recommended one: 2 gthread workers of 8.
GTHREAD = (2, 8)
FIGURES = FigureTable(
    "web",
    {
        "app_cpu": FigureSpec(
            "web.one_click_post.app_cpu_ms",
            "CPU ms/req",
            "One-click POST in-process (Flask test client): app CPU per request",
        ),
        "statements": FigureSpec(
            "web.one_click_post.sql_statements",
            "per req",
            "One-click POST in-process: SQL statements per request",
        ),
        "checkouts": FigureSpec(
            "web.one_click_post.pool_checkouts",
            "per req",
            "One-click POST in-process: connection checkouts per request, from either pool",
        ),
        "rate": FigureSpec("web.{load}.req_per_s", "req/s", "{what}: requests/s"),
        "p50": FigureSpec("web.{load}.p50_ms", "ms", "{what}: p50 latency"),
        "p99": FigureSpec(
            "web.{load}.p99_ms", "ms", "{what}: p99 latency", "< 100 ms", lambda f: f.value < 100
        ),
        "errors": FigureSpec(
            "web.{load}.errors",
            "errors",
            "{what}: errors (non-2xx + socket) per run",
            "0 in every run",
            lambda f: f.max == 0,
        ),
    },
)
METHOD = (
    f"{webload.server_words()} on PostgreSQL, warmed with GET /subscribe and "
    f"{webload.WARM_POSTS} one-click POSTs per process, then "
    f"`wrk -t2 -c{CONNECTIONS} --latency`; the one-click POST rotates through unsubscribe "
    "tokens of distinct readers who each have a pending delivery (resubscribed between "
    "runs). GET /healthz (one database ping) is the server's floor; the one-click POSTs "
    f"run again on {webload.server_words(*GTHREAD)}. Errors are non-2xx responses plus "
    "socket errors. The in-process figures POST through Flask's test client, counting "
    "`before_cursor_execute` and pool `checkout` events."
)


@dataclass(frozen=True)
class Probe:
    """What one one-click POST costs inside the app, without the HTTP server or wrk."""

    cpu_ms: float
    statements: float
    checkouts: float


def probe_one_click(runtime: Runtime, paths: list[str], count: int) -> Probe:
    """POST ``count`` one-click requests through Flask's test client, in this process.

    Counts the SQL statements the app issues and the connections it takes from its pools
    per request (the statement engine's pool lends them unpinged), and the app's CPU time.
    """
    from sqlalchemy import event

    from gazette.web import create_app

    client = create_app(runtime).test_client()
    counts = {"statements": 0, "checkouts": 0}

    def statement(*_args: object) -> None:
        counts["statements"] += 1

    def checkout(*_args: object) -> None:
        counts["checkouts"] += 1

    # The runtime's engine, and its statement engine (store.db), which
    # the POST's change goes through.
    engines = {runtime.engine, runtime.statement_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", statement)
        event.listen(engine.pool, "checkout", checkout)
    try:
        began = time.process_time()
        for path in paths[:count]:
            response = client.post(
                path,
                data="List-Unsubscribe=One-Click",
                content_type="application/x-www-form-urlencoded",
            )
            if response.status_code != 200:
                raise RuntimeError(f"one-click POST answered {response.status_code}")
        cpu = time.process_time() - began
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", statement)
            event.remove(engine.pool, "checkout", checkout)
    n = min(count, len(paths))
    if not counts["statements"]:
        raise RuntimeError("the probe counted no SQL statement: the POST used another engine")
    return Probe(cpu * 1000 / n, counts["statements"] / n, counts["checkouts"] / n)


def _wrk_line(one: webload.WrkRun) -> str:
    """One wrk run as the log prints it."""
    return (
        f"{fmt(one.requests_per_s)} req/s, p50 {fmt(one.p50_ms)} ms, p99 {fmt(one.p99_ms)} ms, "
        f"{one.errors} errors of {one.requests:,} requests"
    )


def run(ctx: Context) -> None:
    """wrk against `gazette serve`: GET /healthz, GET /subscribe and the one-click POST.

    Then the one-click POST in-process, and under wrk again on gthread workers.
    """
    program = webload.wrk_path()
    if program is None:
        ctx.notes.append("wrk is not installed: the web scenario was skipped.")
        ctx.log("  wrk is not installed; skipping the web scenario")
        return
    seconds = ctx.sizes.web_seconds
    folder = ctx.folder("web")
    ctx.setup["Web"] = (
        f"wrk -t2 -c{CONNECTIONS} -d{seconds}s --latency; {webload.server_words()} on "
        f"PostgreSQL; {ctx.sizes.web_readers:,} readers with a planned issue"
    )
    runs: dict[str, list[webload.WrkRun]] = {}

    def load(key: str, what: str, url: str, script: str, runtime: Runtime | None = None) -> None:
        for n in range(ctx.runs):
            if runtime is not None:
                webload.resubscribe(runtime)
            one = webload.run_wrk(program, url, script, seconds, folder)
            ctx.log(f"    {what} run {n + 1}: {_wrk_line(one)}")
            runs.setdefault(key, []).append(one)

    with webload.serving(ctx.sizes.web_readers, folder) as (server, runtime):
        # The server's own floor: a database ping and a few bytes of JSON.
        load("healthz_get", "GET /healthz", f"{server.base}/healthz", webload.get_script())
        load("subscribe_get", "GET /subscribe", f"{server.base}/subscribe", webload.get_script())
        script = webload.one_click_script(server.unsubscribe_paths)
        load("one_click_post", "One-click POST", server.base, script, runtime)
        # What one POST costs inside the app: no HTTP server, no wrk, no concurrency.
        probes = []
        for n in range(ctx.runs):
            webload.resubscribe(runtime)
            probes.append(probe_one_click(runtime, server.unsubscribe_paths[n::3], 200))
            ctx.log(f"    one-click POST in-process probe run {n + 1}: {probes[-1]}")
    # The same POSTs on the workers the server had before issue 20: gthread workers keep
    # a keep-alive connection in the process that accepted it, however busy.
    gthread = webload.server_words(*GTHREAD)
    with webload.serving(ctx.sizes.web_readers, folder, *GTHREAD) as (server, runtime):
        script = webload.one_click_script(server.unsubscribe_paths)
        load("one_click_post_gthread", "One-click POST, gthread", server.base, script, runtime)
    FIGURES.register(ctx, "app_cpu", [p.cpu_ms for p in probes])
    FIGURES.register(ctx, "statements", [p.statements for p in probes])
    FIGURES.register(ctx, "checkouts", [p.checkouts for p in probes])
    for key, what in (
        ("healthz_get", "GET /healthz (the server's floor)"),
        ("subscribe_get", "GET /subscribe"),
        ("one_click_post", "One-click POST /unsubscribe/<token>"),
        ("one_click_post_gthread", f"One-click POST, {gthread}"),
    ):
        # The latency and error targets are the one-click POST's, on the recommended server.
        targeted = key == "one_click_post"
        done = runs[key]
        FIGURES.register(ctx, "rate", [r.requests_per_s for r in done], load=key, what=what)
        FIGURES.register(ctx, "p50", [r.p50_ms for r in done], load=key, what=what)
        FIGURES.register(
            ctx, "p99", [r.p99_ms for r in done], load=key, what=what, targeted=targeted
        )
        FIGURES.register(
            ctx, "errors", [float(r.errors) for r in done], load=key, what=what,
            targeted=targeted,
        )  # fmt: skip


def findings(figures: Sequence[Figure], info: RunInfo) -> list[str]:
    """The one-click POST's rate, latency and in-process cost in this run."""
    current = this_run(figures, info)
    rate = current.get("web.one_click_post.req_per_s")
    p99 = current.get("web.one_click_post.p99_ms")
    cpu = current.get("web.one_click_post.app_cpu_ms")
    statements = current.get("web.one_click_post.sql_statements")
    checkouts = current.get("web.one_click_post.pool_checkouts")
    if rate is None or p99 is None:
        return []
    text = (
        f"**One-click unsubscribe.** With {CONNECTIONS} connections, {fmt(rate.value)} "
        f"requests/s means each waited about {fmt(CONNECTIONS * 1000 / rate.value)} ms on "
        f"average (Little's law); the p99 was {fmt(p99.value)} ms."
    )
    if cpu is not None and statements is not None and checkouts is not None:
        text += (
            f" In-process, without HTTP, one POST cost {fmt(cpu.value)} ms of the app's CPU, "
            f"{fmt(statements.value)} SQL statements and {fmt(checkouts.value)} pool "
            f"checkouts: at that CPU cost one server process (one GIL) tops out near "
            f"{fmt(1000 / cpu.value)} requests/s before any wait, and the run served with "
            f"{webload.PROCESSES}."
        )
    for load, words in (
        ("healthz_get", "The server's floor, GET /healthz (one database ping), answered"),
        (
            "one_click_post_gthread",
            f"On {webload.server_words(*GTHREAD)}, the server before this setting, the same "
            "POSTs ran at",
        ),
    ):
        other_rate = current.get(f"web.{load}.req_per_s")
        other_p99 = current.get(f"web.{load}.p99_ms")
        if other_rate is not None and other_p99 is not None:
            text += (
                f" {words} {fmt(other_rate.value)} requests/s with a p99 of "
                f"{fmt(other_p99.value)} ms."
            )
    return [text, ""]


SCENARIO = Scenario("web", run, FIGURES, METHOD, findings)
