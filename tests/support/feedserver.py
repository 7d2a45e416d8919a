"""A feed publisher a test can script: real HTTP on 127.0.0.1 and a free port.

Routes answer static bodies (with a content type and charset, and optional ETag and
Last-Modified validators honoured with 304), redirects, a generated body of any size
streamed in chunks, a reply that comes too late, and HTTP errors. The server records
every request it saw (with its headers and the status it answered) and counts the body
bytes it managed to hand to the network, so a test can tell how much a client read.

Every server starts with these routes:

* ``/loop`` and ``/loop2`` redirect to each other for ever;
* ``/big`` streams 50 MB with chunked encoding (no Content-Length), generated on the fly;
* ``/big-declared`` streams the same 50 MB and declares its Content-Length;
* ``/slow`` waits 5 seconds before answering;
* ``/error`` answers 500.

``dead_port_url`` gives a URL whose connection is refused (nothing listens there).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

BIG = 50 * 1024 * 1024


@dataclass
class Static:
    """A fixed body; with validators, a matching conditional request gets a 304."""

    body: bytes
    content_type: str = "application/rss+xml"
    charset: str | None = "utf-8"
    status: int = 200
    etag: str | None = None
    last_modified: str | None = None
    honour_conditional: bool = True
    # Further response headers (Content-Location, ...).
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Redirect:
    """A redirect to ``location`` (a path on this server or a full URL)."""

    location: str
    status: int = 302


@dataclass(frozen=True)
class Stream:
    """``size`` bytes generated chunk by chunk: never held whole by the server."""

    size: int
    chunk_size: int = 64 * 1024
    declare_length: bool = False


@dataclass(frozen=True)
class Slow:
    """An answer sent only after ``seconds`` (the server stops waiting when it stops)."""

    seconds: float
    body: bytes = b"<rss version='2.0'><channel><title>late</title></channel></rss>"


@dataclass(frozen=True)
class Fail:
    """An HTTP error status with a short HTML body."""

    status: int = 500


Route = Static | Redirect | Stream | Slow | Fail


@dataclass
class Seen:
    """One request, recorded as it arrives; ``status`` is set before the answer is sent.

    ``status`` stays 0 until the server answers and becomes -1 when the client went
    away first; ``finished`` is set when the handler is done with the request.
    """

    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass
class FeedServer:
    """The scripted routes of a running server, and what it has seen and sent."""

    host: str = "127.0.0.1"
    port: int = 0
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        """The full URL of ``path`` on this server."""
        return f"http://{self.host}:{self.port}{path}"

    def route(self, path: str, route: Route) -> str:
        """Answer ``path`` with ``route`` from now on; return its URL."""
        with self.lock:
            self.routes[path] = route
        return self.url(path)

    def static(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str = "application/rss+xml",
        charset: str | None = "utf-8",
        etag: str | None = None,
        last_modified: str | None = None,
        honour_conditional: bool = True,
    ) -> str:
        """Serve ``body`` at ``path`` (see Static); return its URL."""
        route = Static(body, content_type, charset, 200, etag, last_modified, honour_conditional)
        return self.route(path, route)

    def requests(self, path: str) -> list[Seen]:
        """The requests seen for ``path`` so far, oldest first."""
        with self.lock:
            return [s for s in self.seen if s.path == path]

    def bytes_sent(self, path: str) -> int:
        """How many body bytes of ``path`` the server handed to the network in all."""
        with self.lock:
            return self.sent.get(path, 0)

    def settle(self, path: str, timeout: float = 10.0) -> list[Seen]:
        """Wait until the server is done with every request for ``path``; return them."""
        requests = self.requests(path)
        for seen in requests:
            assert seen.finished.wait(timeout), f"the server is still answering {path}"
        return requests

    def _record(self, seen: Seen) -> None:
        with self.lock:
            self.seen.append(seen)

    def _count(self, path: str, n: int) -> None:
        with self.lock:
            self.sent[path] = self.sent.get(path, 0) + n


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    feed: FeedServer


def _not_modified(route: Static, headers: dict[str, str]) -> bool:
    if not route.honour_conditional:
        return False
    if "if-none-match" in headers:
        if route.etag is None:
            return False
        wanted = {tag.strip().removeprefix("W/") for tag in headers["if-none-match"].split(",")}
        return "*" in wanted or route.etag.removeprefix("W/") in wanted
    if "if-modified-since" in headers and route.last_modified:
        try:
            since = parsedate_to_datetime(headers["if-modified-since"])
            modified = parsedate_to_datetime(route.last_modified)
        except (TypeError, ValueError):
            return False
        return modified <= since
    return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: tests read what the server saw from FeedServer.seen."""

    def do_GET(self) -> None:
        feed = self.server.feed
        path = urlsplit(self.path).path
        headers = {k.lower(): v for k, v in self.headers.items()}
        with feed.lock:
            route = feed.routes.get(path)
        seen = Seen("GET", path, headers)
        feed._record(seen)
        try:
            self._answer(feed, seen, route)
        except (ConnectionError, TimeoutError):
            # The client gave up (size limit, timeout): that is what is being tested.
            seen.status = -1
            self.close_connection = True
        finally:
            seen.finished.set()

    def _head(self, seen: Seen, status: int, headers: dict[str, str]) -> None:
        seen.status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _body(self, feed: FeedServer, path: str, data: bytes) -> None:
        self.wfile.write(data)
        feed._count(path, len(data))

    def _answer(self, feed: FeedServer, seen: Seen, route: Route | None) -> None:
        path = seen.path
        if route is None:
            body = b"not found"
            self._head(seen, 404, {"Content-Type": "text/plain", "Content-Length": "9"})
            self._body(feed, path, body)
        elif isinstance(route, Static):
            validators = {}
            if route.etag:
                validators["ETag"] = route.etag
            if route.last_modified:
                validators["Last-Modified"] = route.last_modified
            if _not_modified(route, seen.headers):
                self._head(seen, 304, validators)
                return
            kind = route.content_type
            if route.charset:
                kind += f"; charset={route.charset}"
            length = str(len(route.body))
            self._head(
                seen,
                route.status,
                {"Content-Type": kind, "Content-Length": length, **validators, **route.headers},
            )
            self._body(feed, path, route.body)
        elif isinstance(route, Redirect):
            location = route.location
            if location.startswith("/"):
                location = feed.url(location)
            self._head(seen, route.status, {"Location": location, "Content-Length": "0"})
        elif isinstance(route, Stream):
            self._stream(feed, seen, route)
        elif isinstance(route, Slow):
            if feed.stopping.wait(route.seconds):
                seen.status = -1
                self.close_connection = True
                return
            length = str(len(route.body))
            self._head(seen, 200, {"Content-Type": "application/rss+xml", "Content-Length": length})
            self._body(feed, path, route.body)
        else:
            body = f"<h1>Error {route.status}</h1>".encode()
            self._head(
                seen,
                route.status,
                {"Content-Type": "text/html", "Content-Length": str(len(body))},
            )
            self._body(feed, path, body)

    def _stream(self, feed: FeedServer, seen: Seen, route: Stream) -> None:
        head = b'<?xml version="1.0"?>\n<rss version="2.0"><channel><title>Huge</title>'
        filler = (b"<!-- padding -->\n" * (route.chunk_size // 17 + 1))[: route.chunk_size]
        first = head + filler[len(head) :]
        headers = {"Content-Type": "application/rss+xml"}
        if route.declare_length:
            headers["Content-Length"] = str(route.size)
        else:
            headers["Transfer-Encoding"] = "chunked"
        self._head(seen, 200, headers)
        remaining = route.size
        while remaining > 0 and not feed.stopping.is_set():
            piece = (first if remaining == route.size else filler)[:remaining]
            if route.declare_length:
                self.wfile.write(piece)
            else:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            feed._count(seen.path, len(piece))
            remaining -= len(piece)
        if not route.declare_length:
            self.wfile.write(b"0\r\n\r\n")


def default_routes() -> dict[str, Route]:
    """The routes every server starts with (see the module's docstring)."""
    return {
        "/loop": Redirect("/loop2"),
        "/loop2": Redirect("/loop"),
        "/big": Stream(BIG),
        "/big-declared": Stream(BIG, declare_length=True),
        "/slow": Slow(5.0),
        "/error": Fail(500),
    }


@contextmanager
def serve_feeds() -> Iterator[FeedServer]:
    """Run a feed server on 127.0.0.1 and a free port until the block ends."""
    feed = FeedServer(routes=default_routes())
    server = _Server((feed.host, 0), _Handler)
    server.feed = feed
    feed.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield feed
    finally:
        feed.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def dead_port_url(path: str = "/feed.xml") -> str:
    """A URL on 127.0.0.1 whose port nothing listens on: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Bound and closed without listen(): the kernel answers a connect with RST.
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def rss_item(
    n: int,
    title: str,
    *,
    host: str = "news.example.org",
    description: str = "",
    content: str | None = None,
    date: str = "Wed, 18 Nov 2026 10:00:00 +0000",
    categories: tuple[str, ...] = (),
    cdata: bool = False,
) -> str:
    parts = [
        f"<item><title>{escape(title)}</title>",
        f"<link>https://{host}/{n}</link>",
        f'<guid isPermaLink="false">{host}-{n}</guid>',
        f"<pubDate>{date}</pubDate>",
        f"<description>{escape(description)}</description>",
        *(f"<category>{escape(c)}</category>" for c in categories),
    ]
    if content is not None:
        # WordPress wraps content:encoded in CDATA; escaping it is the same document.
        raw = f"<![CDATA[{content}]]>" if cdata and "]]>" not in content else escape(content)
        parts.append(f"<content:encoded>{raw}</content:encoded>")
    return "".join(parts) + "</item>\n"


def rss(*items: str, encoding: str = "utf-8", title: str = "Test feed") -> bytes:
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>'
        f"<title>{escape(title)}</title><link>https://news.example.org/</link>"
        f"<description>Tests</description>\n{''.join(items)}</channel></rss>\n"
    ).encode(encoding)
