"""Serving the app: waitress in this process, or gunicorn's processes sharing one socket.

One waitress process runs Python on one core at a time (the GIL), so under a mail
provider's one-click bursts it tops out at a few hundred requests per second whatever
its thread count. ``processes`` > 1 hands the socket bound here to gunicorn: its
arbiter forks that many workers that accept from it (sync workers with one thread,
gthread workers with more), so a burst spreads over every core. The arbiter restarts
a worker that dies; SIGTERM stops the set gracefully, SIGINT at once, and the process
exits with gunicorn's status.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import waitress
from gunicorn.app.base import BaseApplication

from gazette.errors import GazetteError

WSGIApp = Callable[..., Any]


def listen(host: str, port: int) -> list[socket.socket]:
    """Bind and listen on every address ``host`` names, as waitress would itself.

    "*" means every interface. A name with IPv4 and IPv6 addresses gets a socket for
    each (IPv6 ones IPv6-only, so the two never clash). Binding here, once, before
    any fork, lets every serving process accept from the same sockets and turns a
    port in use into one sentence.
    """
    try:
        found = socket.getaddrinfo(
            None if host == "*" else host,
            port,
            socket.AF_UNSPEC,
            socket.SOCK_STREAM,
            socket.IPPROTO_TCP,
            socket.AI_PASSIVE,
        )
    except socket.gaierror as exc:
        raise GazetteError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[str, int]] = set()
    try:
        for family, kind, proto, _name, address in found:
            # getaddrinfo may repeat an address (or give it with another zone index).
            key = (str(address[0]).split("%", 1)[0], int(address[1]))
            if key in seen:
                continue
            seen.add(key)
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(1024)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise GazetteError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    return sockets


def serve(
    make_app: Callable[[], WSGIApp],
    sockets: list[socket.socket],
    *,
    threads: int,
    processes: int,
    options: dict[str, Any],
) -> int:
    """Serve ``make_app()`` on ``sockets`` until stopped; return the exit status.

    ``make_app`` runs in each serving process, after the fork, so no database
    connection or thread is ever shared between processes. ``options`` are waitress's
    (one process); gunicorn gets the equivalent it has (several).
    """
    if processes == 1:
        waitress.serve(make_app(), sockets=sockets, threads=threads, **options)
        return 0
    settings = {
        # The sockets bound by listen(), passed by descriptor: gunicorn takes them over.
        "bind": [f"fd://{sock.detach()}" for sock in sockets],
        "workers": processes,
        # One thread: sync workers, each taking a connection only when it is free, so
        # the kernel hands every new connection to an idle process (with the proxy in
        # front buffering slow clients, as gunicorn's sync workers expect). gthread
        # workers keep a keep-alive connection in the process that accepted it, however
        # busy: under wrk's 50 connections the one-click POST's p99 on 2 of them was
        # twice that of 4 sync workers (docs/benchmarks.md, web.one_click_post*).
        "worker_class": "sync" if threads == 1 else "gthread",
        "threads": threads,
        "proc_name": str(options.get("ident", "gazette")),
        # A scheme or client address from a proxy's headers is the app's ProxyFix's
        # call (GAZETTE_PROXY_HOPS), as under waitress; gunicorn trusts none.
        "secure_scheme_headers": {},
        "forwarded_allow_ips": "",
        # No control socket under $HOME: nothing here uses gunicornc.
        "control_socket_disable": True,
    }
    GunicornServer(make_app, settings).run()  # exits the process with gunicorn's status
    return 0


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """Gunicorn run from this process with settings given here, not from its command line."""

    def __init__(self, make_app: Callable[[], WSGIApp], settings: dict[str, Any]) -> None:
        self.make_app = make_app
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        """Apply the settings (gunicorn reads no configuration file or command line)."""
        for key, value in self.settings.items():
            self.cfg.set(key, value)

    def load(self) -> WSGIApp:
        """Build the app in the worker, after the fork (gunicorn calls this per worker)."""
        return self.make_app()
