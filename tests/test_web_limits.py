"""Request bodies are capped before they are read: by waitress, and by the app itself.

Each case sends the headers of a large POST and only the start of its body, then
waits for the answer. A server that buffered the body before answering would wait for
the rest, which never comes; the caps answer 413 at once. waitress runs as `gazette
serve` runs it; werkzeug's threaded server stands in for a server with no cap of its
own (gunicorn), where the app alone must stop reading.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from werkzeug.serving import make_server

from gazette.runtime import Runtime
from gazette.web import MAX_BODY, SERVER_MAX_BODY, create_app, server_options
from tests.support.http import serve

DECLARED = 2 * 1024 * 1024  # the 2 MB the request says it carries
PATHS = ["/subscribe", "/unsubscribe/not-a-token", "/confirm/not-a-token"]


@contextmanager
def waitress_server(runtime: Runtime) -> Iterator[int]:
    with serve(create_app(runtime), **server_options(runtime.settings)) as server:
        yield server.port


@contextmanager
def werkzeug_server(runtime: Runtime) -> Iterator[int]:
    server = make_server("127.0.0.1", 0, create_app(runtime), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


Server = Callable[[Runtime], AbstractContextManager[int]]
SERVERS: dict[str, Server] = {"waitress": waitress_server, "werkzeug": werkzeug_server}


def on_every_server_and_path(test: Callable[..., None]) -> Callable[..., None]:
    """Run ``test`` against each server (SERVERS) for each path (PATHS)."""
    over_paths: Callable[..., None] = pytest.mark.parametrize("path", PATHS)(test)
    over_both: Callable[..., None] = pytest.mark.parametrize("server", list(SERVERS))(over_paths)
    return over_both


def form_post_head(path: str, length: str) -> str:
    """The head of a form POST to ``path`` whose body's length ``length`` declares."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: news.example.org\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{length}\r\n\r\n"
    )


def status_after_partial_body(port: int, head: str, body: bytes) -> int:
    """Send ``head`` and the start of a body, send nothing more, return the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head.encode("ascii") + body)
        received = b""
        try:
            while b"\r\n" not in received:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            pytest.fail("no answer: the server is waiting for the rest of the body")
    assert received.startswith(b"HTTP/1."), received[:200]
    return int(received.split(b" ", 2)[1])


def chunked(total: int, size: int = 8192) -> bytes:
    """``total`` bytes of form data as chunks, without the last (empty) chunk."""
    piece = f"{size:x}\r\n".encode() + b"e" * size + b"\r\n"
    return piece * (total // size)


@on_every_server_and_path
def test_a_declared_2mb_body_is_refused_before_it_is_sent(
    runtime: Runtime, server: str, path: str
) -> None:
    head = form_post_head(path, f"Content-Length: {DECLARED}")
    with SERVERS[server](runtime) as port:
        assert status_after_partial_body(port, head, b"email=" + b"x" * 8192) == 413


@on_every_server_and_path
def test_a_chunked_body_without_length_is_cut_at_the_limit(
    runtime: Runtime, server: str, path: str
) -> None:
    head = form_post_head(path, "Transfer-Encoding: chunked")
    # Past the cap of the server under test, far short of an end: no last chunk is sent.
    cap = SERVER_MAX_BODY if server == "waitress" else MAX_BODY
    with SERVERS[server](runtime) as port:
        assert status_after_partial_body(port, head, chunked(cap + 16 * 1024)) == 413


def test_waitress_is_told_the_cap(runtime: Runtime) -> None:
    options: dict[str, Any] = server_options(runtime.settings)
    assert MAX_BODY < options["max_request_body_size"] <= 2 * MAX_BODY
