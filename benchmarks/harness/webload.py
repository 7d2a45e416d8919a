"""`gazette serve` (gunicorn's workers) on PostgreSQL, and wrk to load it.

Three loads: GET /subscribe (the form); the RFC 8058 one-click POST to
/unsubscribe/<token>, rotating through tokens minted for many readers who each have a
pending delivery, so each POST unsubscribes a reader and skips their pending message;
and the two alternating, one GET after each POST, counted apart (tests/test_web_load.py).
Between runs the readers are subscribed again, so every run does the same work.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from benchmarks.harness import seeding
from benchmarks.harness.processes import ROOT, child_env, free_port, stop_group, wait_for_port
from gazette.runtime import Runtime, use_runtime
from gazette.tokens import Purpose


# Shared by every script: count non-2xx responses in every thread, sum the per-thread
# ``counters`` (Lua globals the script's request() keeps), and print the figures from
# done() so nothing needs parsing out of wrk's text report.
def _count_and_report(counters: tuple[str, ...] = ()) -> str:
    sums = "".join(
        f"  local total_{c} = 0\n"
        f'  for _, thread in ipairs(threads) do total_{c} = total_{c} + thread:get("{c}") end\n'
        for c in counters
    )
    fields = "".join(f', "{c}": %d' for c in counters)
    values = "".join(f", total_{c}" for c in counters)
    return (
        """
local threads = {}
setup = function(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
non2xx = 0
response = function(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
done = function(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + thread:get("non2xx") end
"""
        + sums
        + """  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "non2xx": %d, "p50_us": %d, "p99_us": %d"""
        + fields
        + """}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, bad,
    latency:percentile(50), latency:percentile(99)"""
        + values
        + """))
end
"""
    )


_COUNT_AND_REPORT = _count_and_report()


@dataclass(frozen=True)
class WrkRun:
    """One wrk run's figures."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    # Seconds wrk ran for (its own clock).
    duration_s: float | None = None
    # Only from the mixed script: the POSTs and GETs its request() made (sent, or in
    # flight when the clock stopped), and how many POSTs went to a reader no earlier
    # POST of the run had named.
    posts: int | None = None
    gets: int | None = None
    fresh_posts: int | None = None


def wrk_path() -> str | None:
    """wrk, when installed."""
    return shutil.which("wrk")


@dataclass
class Server:
    """A running `gazette serve` with the base URL and the one-click paths it accepts."""

    base: str
    unsubscribe_paths: list[str]
    process: subprocess.Popen[bytes]


# `gazette serve --processes 4 --threads 1`: gunicorn's sync workers, two per core, as
# docs/deployment.md recommends (a process waiting on the database leaves its core).
PROCESSES = 4
THREADS = 1
# One-click POSTs per process before the clock runs (its readers are subscribed again).
WARM_POSTS = 8


def server_words(processes: int = PROCESSES, threads: int = THREADS) -> str:
    """How the reports name the server: the command and gunicorn's workers."""
    workers = "sync workers" if threads == 1 else f"gthread workers of {threads} threads"
    return f"`gazette serve --processes {processes} --threads {threads}` (gunicorn, {workers})"


@contextmanager
def serving(
    readers: int, folder: Path, processes: int = PROCESSES, threads: int = THREADS
) -> Iterator[tuple[Server, Runtime]]:
    """A PostgreSQL installation with ``readers`` readers and a planned issue, served."""
    folder.mkdir(parents=True, exist_ok=True)
    with seeding.pg_schema() as url:
        env = seeding.gazette_env(folder, url)
        runtime = seeding.install_runtime(env, folder)
        try:
            newsletter_id = seeding.seed_issue_content(runtime)
            seeding.seed_readers(runtime.engine, newsletter_id, readers)
            seeding.plan(runtime, newsletter_id)
            paths = [
                "/unsubscribe/"
                + runtime.tokens.mint(Purpose.UNSUBSCRIBE, r.public_id, seeding.NEWSLETTER)
                for r in seeding.reader_rows(readers)
            ]
            port = free_port()
            log = (folder / "serve.log").open("ab")
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "gazette", "serve"),
                    *("--port", str(port), "--processes", str(processes)),
                    *("--threads", str(threads)),
                ],
                cwd=ROOT,
                env=child_env(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                wait_for_port(port, 60, process)
                base = f"http://127.0.0.1:{port}"
                # Compile the templates and open the pools before the clock runs: the
                # engine's, and the one-click POST's own (store.db's statement engine),
                # whose statement the server prepares after a connection's fifth run
                # (the kernel spreads the POSTs over the processes, about evenly). The
                # warm-up's readers are subscribed again: a run starts from every
                # reader subscribed, and counts only its own unsubscribes.
                for _ in range(3 * processes):
                    with urllib.request.urlopen(f"{base}/subscribe", timeout=30) as response:
                        response.read()
                for path in paths[: WARM_POSTS * processes]:
                    with urllib.request.urlopen(_one_click(base + path), timeout=30) as answer:
                        answer.read()
                resubscribe(runtime)
                yield Server(base, paths, process), runtime
            finally:
                stop_group(process, timeout=10)
                log.close()
        finally:
            use_runtime(None)


def _one_click(url: str) -> urllib.request.Request:
    """The POST a mail provider makes to a List-Unsubscribe URL (RFC 8058)."""
    return urllib.request.Request(url, data=b"List-Unsubscribe=One-Click", method="POST")


def resubscribe(runtime: Runtime) -> None:
    """Undo the previous run's unsubscribes, so the next run does the same work."""
    with runtime.engine.begin() as connection:
        connection.execute(text("UPDATE subscription SET status = 'active'"))
        connection.execute(
            text(
                "UPDATE delivery SET status = 'pending', last_error = NULL WHERE status = 'skipped'"
            )
        )
        connection.execute(text("DELETE FROM event"))
    with runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE"))


def _lua_get() -> str:
    return _COUNT_AND_REPORT


def _lua_one_click(paths: list[str]) -> str:
    listed = ",\n".join(json.dumps(p) for p in paths)
    return (
        f"local paths = {{\n{listed}\n}}\n"
        "local n = #paths\n"
        "local i = 0\n"
        "init = function(args) i = (id or 0) * math.floor(n / 2) end\n"
        "request = function()\n"
        "  i = i % n + 1\n"
        "  return wrk.format('POST', paths[i], "
        "{['Content-Type'] = 'application/x-www-form-urlencoded'}, "
        "'List-Unsubscribe=One-Click')\n"
        "end\n" + _COUNT_AND_REPORT
    )


def _lua_mixed(paths: list[str]) -> str:
    listed = ",\n".join(json.dumps(p) for p in paths)
    return (
        f"local paths = {{\n{listed}\n}}\n"
        + """local n = #paths
-- Thread 0 starts at the first path and thread 1 half way, so the first half-share
-- POSTs of each thread name readers no other POST of the run named (fresh_posts).
local half = math.floor(n / 2)
local i = 0
local post_next = false
local form = {['Content-Type'] = 'application/x-www-form-urlencoded'}
local probing = false
posts = 0
gets = 0
fresh_posts = 0
init = function(args)
  i = (id or 0) * half
  -- wrk calls request() once on thread 0 before the run to check the script
  -- (script_verify_request) and never sends that request: it must not count.
  probing = (id == 0)
end
request = function()
  if probing then
    probing = false
    return wrk.format('GET', '/subscribe')
  end
  post_next = not post_next
  if post_next then
    posts = posts + 1
    if posts <= half then fresh_posts = fresh_posts + 1 end
    i = i % n + 1
    return wrk.format('POST', paths[i], form, 'List-Unsubscribe=One-Click')
  end
  gets = gets + 1
  return wrk.format('GET', '/subscribe')
end
"""
        + _count_and_report(("posts", "gets", "fresh_posts"))
    )


def run_wrk(
    program: str, url: str, script: str, seconds: int, folder: Path, connections: int = 50
) -> WrkRun:
    """One wrk run: 2 threads, ``connections`` connections, for ``seconds``."""
    path = folder / "load.lua"
    path.write_text(script)
    completed = subprocess.run(
        [program, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(path), url],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    lines = [x for x in completed.stdout.splitlines() if x.startswith("BENCHJSON ")]
    if not lines:
        # wrk reports a Lua error on stderr and runs on without the script's done().
        raise RuntimeError(f"wrk printed no BENCHJSON line; its stderr: {completed.stderr!r}")
    result = json.loads(lines[0].removeprefix("BENCHJSON "))
    errors = sum(result[k] for k in ("connect", "read", "write", "timeout", "non2xx"))
    duration_s = result["duration_us"] / 1e6
    return WrkRun(
        requests_per_s=result["requests"] / duration_s,
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        errors=errors,
        requests=result["requests"],
        duration_s=duration_s,
        posts=result.get("posts"),
        gets=result.get("gets"),
        fresh_posts=result.get("fresh_posts"),
    )


def get_script() -> str:
    """The GET /subscribe load."""
    return _lua_get()


def one_click_script(paths: list[str]) -> str:
    """The one-click POST load over ``paths``."""
    return _lua_one_click(paths)


def mixed_script(paths: list[str]) -> str:
    """One-click POSTs over ``paths`` and GET /subscribe, alternating, counted apart.

    Every thread sends a POST, then a GET, then a POST, and so on; run it against the
    server's base URL. The POSTs and GETs counted are the requests made, so with no
    errors their sum exceeds the responses wrk counts by at most the connections
    (requests in flight when the clock stopped).
    """
    return _lua_mixed(paths)
