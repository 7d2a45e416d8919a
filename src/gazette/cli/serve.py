"""``gazette serve``: the web endpoint under a production WSGI server."""

from __future__ import annotations

import sys

import click

from gazette.cli.app import main, runtime


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--threads",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Threads per process; with --processes > 1, 1 runs gunicorn's sync workers.",
)
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes sharing the port; with --threads 1, two per core.",
)
def serve(host: str, port: int, threads: int, processes: int) -> None:
    """Serve subscribe, confirm, unsubscribe and preference pages.

    One process serves with waitress's threads; --processes N hands the port to
    gunicorn's N workers (sync workers with --threads 1).

    Put it behind a TLS-terminating proxy and set GAZETTE_BASE_URL to the public URL
    (and GAZETTE_PROXY_HOPS to the number of proxies in front).

    \b
    Example:
      gazette serve --host 0.0.0.0 --port 8000 --processes 4 --threads 1
    """
    from gazette.web import create_app, server_options
    from gazette.web.server import listen
    from gazette.web.server import serve as run_server

    rt = runtime()
    sockets = listen(host, port)
    # Each serving process opens its own database connections: none may cross a fork.
    rt.engine.dispose()
    plural = "es" if processes > 1 else ""
    each = "1 thread" if threads == 1 else f"{threads} threads"
    click.echo(
        f"Serving {rt.settings.base_url} on http://{host}:{port}/ "
        f"with {processes} process{plural} of {each}."
    )
    status = run_server(
        lambda: create_app(rt),
        sockets,
        threads=threads,
        processes=processes,
        options=server_options(rt.settings),
    )
    sys.exit(status)
