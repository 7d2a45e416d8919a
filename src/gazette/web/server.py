"""Serving the app with waitress: one process, or several sharing one listening socket.

One waitress process runs Python on one core at a time (the GIL), so under a mail
provider's one-click bursts it tops out at a few hundred requests per second whatever
its thread count. ``processes`` > 1 binds the socket once, then forks that many waitress
processes that accept from it, so a burst spreads over every core. The parent only
supervises: SIGTERM or SIGINT stops every child; a child that dies on its own stops the
rest too, and the parent exits non-zero so the service manager restarts the whole set.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable
from contextlib import suppress
from types import FrameType
from typing import Any

import waitress

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
    connection or thread is ever shared between processes.
    """
    if processes == 1:
        waitress.serve(make_app(), sockets=sockets, threads=threads, **options)
        return 0
    children: set[int] = set()
    stopping: list[bool] = []
    # Signals wait until the parent's handlers are in place: one arriving between two
    # forks would otherwise kill the parent and leave the forked servers running.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        for _ in range(processes):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child's coverage is not collected
                _child(make_app, sockets, threads, options)
            children.add(pid)
    except BaseException:
        _signal_all(children, signal.SIGTERM)
        raise
    finally:
        for sock in sockets:
            sock.close()
        _install_handlers(children, stopping)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    return _supervise(children, stopping)


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _child(
    make_app: Callable[[], WSGIApp],
    sockets: list[socket.socket],
    threads: int,
    options: dict[str, Any],
) -> None:  # pragma: no cover - runs in a forked process
    status = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # Ctrl-C reaches the whole process group: the parent alone decides what stops.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        waitress.serve(make_app(), sockets=sockets, threads=threads, **options)
        status = 0
    except BaseException as exc:  # report, then leave without unwinding into the parent's code
        print(f"gazette serve: process {os.getpid()} failed: {exc!r}", file=sys.stderr)
    finally:
        sys.stderr.flush()
        os._exit(status)


def _install_handlers(children: set[int], stopping: list[bool]) -> None:
    """On SIGTERM or SIGINT, mark the set as stopping and pass SIGTERM to every child."""

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.append(True)
        _signal_all(children, signal.SIGTERM)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, stop)


def _supervise(children: set[int], stopping: list[bool]) -> int:
    """Wait for the children; once one dies on its own, stop the rest and return 1."""
    status = 0
    while children:
        pid, wait_status = os.wait()
        children.discard(pid)
        if stopping:
            continue
        # A child that dies while nobody asked leaves the set short-handed: stop the
        # rest and exit non-zero, so the service manager restarts a whole, fresh set.
        code = os.waitstatus_to_exitcode(wait_status)
        print(
            f"gazette serve: process {pid} exited with status {code}; stopping the others.",
            file=sys.stderr,
            flush=True,
        )
        stopping.append(True)
        status = 1
        _signal_all(children, signal.SIGTERM)
    return status


def _signal_all(children: set[int], signum: int) -> None:
    for pid in children:
        with suppress(ProcessLookupError):
            os.kill(pid, signum)
