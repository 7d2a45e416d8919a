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


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host``:``port``, or say in one sentence why that is impossible."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise GazetteError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    family, kind, proto, _name, address = info[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise GazetteError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    return sock


def serve(
    make_app: Callable[[], WSGIApp],
    sock: socket.socket,
    *,
    threads: int,
    processes: int,
    options: dict[str, Any],
) -> int:
    """Serve ``make_app()`` on ``sock`` until stopped; return the exit status.

    ``make_app`` runs in each serving process, after the fork, so no database
    connection or thread is ever shared between processes.
    """
    if processes == 1:
        waitress.serve(make_app(), sockets=[sock], threads=threads, **options)
        return 0
    children: set[int] = set()
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is not collected
            _child(make_app, sock, threads, options)
        children.add(pid)
    sock.close()
    return _supervise(children)


def _child(
    make_app: Callable[[], WSGIApp], sock: socket.socket, threads: int, options: dict[str, Any]
) -> None:  # pragma: no cover - runs in a forked process
    status = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # Ctrl-C reaches the whole process group: the parent alone decides what stops.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        waitress.serve(make_app(), sockets=[sock], threads=threads, **options)
        status = 0
    except BaseException as exc:  # report, then leave without unwinding into the parent's code
        print(f"gazette serve: process {os.getpid()} failed: {exc!r}", file=sys.stderr)
    finally:
        sys.stderr.flush()
        os._exit(status)


def _supervise(children: set[int]) -> int:
    """Wait for the children; stop them all on a signal or when one dies on its own."""
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        _signal_all(children, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
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
        stopping = True
        status = 1
        _signal_all(children, signal.SIGTERM)
    return status


def _signal_all(children: set[int], signum: int) -> None:
    for pid in children:
        with suppress(ProcessLookupError):
            os.kill(pid, signum)
