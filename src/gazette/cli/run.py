"""``gazette run``: the web endpoint and the scheduler in one process, for a small publisher.

Without Redis there is no worker or beat to run, so this is what sends on schedule on
the embedded default: waitress serves the pages (as ``gazette serve`` does with one
process) while a thread ticks the scheduler (gazette.scheduler) and sends in-process.
SIGTERM or SIGINT stops the ticking, lets the batch under way record every row it
claimed, stops the server and exits 0; the next start resumes what was left pending.
"""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from types import FrameType

import click

from gazette import scheduler
from gazette.bounces.runs import scheduled_reading
from gazette.cli.app import EXIT_USAGE, fail, main, runtime
from gazette.config import load_settings


@main.command(name="run")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--threads", default=8, show_default=True, type=click.IntRange(1, 256), help="Web threads."
)
@click.option(
    "--tick",
    type=click.FloatRange(min=0.1, max=3600),
    help="Seconds between scheduler ticks  [default: GAZETTE_BEAT_INTERVAL, 60].",
)
def run_command(host: str, port: int, threads: int, tick: float | None) -> None:
    """Serve the web endpoint and plan, poll, sweep and send, all in this one process.

    Enough for a small publisher on the embedded default (SQLite, no Redis); with a
    broker, run `gazette serve`, `gazette worker` and `gazette beat` instead. Stop it
    with SIGTERM or Ctrl-C: the batch being sent is finished and recorded first.

    \b
    Example:
      gazette run --host 0.0.0.0 --port 8000
    """
    if load_settings().broker_url is not None:
        fail(
            "GAZETTE_BROKER_URL is set, and `gazette run` sends in its own process: with a "
            "broker, run `gazette serve`, `gazette worker` and `gazette beat` instead.",
            EXIT_USAGE,
        )
    from gazette.web import create_app, server_options
    from gazette.web.server import listen
    from gazette.web.server import serve as run_server

    rt = runtime()
    interval = tick if tick is not None else float(rt.settings.beat_interval)
    sockets = listen(host, port)
    stop = threading.Event()
    sender = scheduler.InProcessSender(
        rt.sessions, rt.send_context, rt.settings.batch_size, stop.is_set
    )

    busy = threading.Event()
    bounces = scheduled_reading(rt.sessions, rt.settings)

    def step(now: datetime) -> None:
        busy.set()
        try:
            report = scheduler.tick(rt.sessions, sender, now, stopping=stop.is_set, bounces=bounces)
        finally:
            busy.clear()
        line = report.summary(sender.take())
        if line:
            click.echo(line)

    ticker = threading.Thread(
        target=scheduler.run_loop, args=(step, interval, stop), name="gazette-scheduler"
    )

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        # The first signal stops the ticking and, through KeyboardInterrupt (which
        # waitress takes as its cue to close), the server; later ones wait for that.
        if stop.is_set():
            return
        stop.set()
        raise KeyboardInterrupt

    click.echo(
        f"Running {rt.settings.base_url} on http://{host}:{port}/ with {threads} threads; "
        f"the scheduler ticks every {interval:g} s and sends in this process."
    )
    try:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        ticker.start()
        run_server(
            lambda: create_app(rt),
            sockets,
            threads=threads,
            processes=1,
            options=server_options(rt.settings),
        )
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if busy.is_set():
            click.echo("Stopping: the batch under way is finished and recorded first.")
        if ticker.is_alive():
            ticker.join()
        rt.engine.dispose()
    click.echo("Stopped.")
