"""``gazette serve``: the web endpoint under a production WSGI server."""

from __future__ import annotations

import click

from gazette.cli.app import main, runtime


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256))
def serve(host: str, port: int, threads: int) -> None:
    """Serve subscribe, confirm, unsubscribe and preference pages with waitress.

    Put it behind a TLS-terminating proxy and set GAZETTE_BASE_URL to the public URL
    (and GAZETTE_PROXY_HOPS to the number of proxies in front).

    \b
    Example:
      gazette serve --host 0.0.0.0 --port 8000
    """
    import waitress

    from gazette.web import create_app, server_options

    rt = runtime()
    click.echo(f"Serving {rt.settings.base_url} on http://{host}:{port}/ with {threads} threads.")
    waitress.serve(
        create_app(rt), host=host, port=port, threads=threads, **server_options(rt.settings)
    )
