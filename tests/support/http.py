"""A WSGI app served over real HTTP by waitress on loopback, and a small browser for it.

The server is the production one (waitress, several worker threads) on 127.0.0.1 and a
free port; the browser is ``urllib.request`` with an optional cookie jar, so a test sees
exactly the bytes and headers a reader's browser or a mail provider would.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from html.parser import HTMLParser
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urlencode

import waitress
from waitress import wasyncore

Fields = Mapping[str, str] | Sequence[tuple[str, str]]


@dataclass(frozen=True)
class LiveServer:
    """Where the served app answers: ``url`` is ``http://127.0.0.1:<port>``."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextmanager
def serve(app: Any, threads: int = 4, port: int = 0, **options: Any) -> Iterator[LiveServer]:
    """Serve ``app`` with waitress on 127.0.0.1 until the block ends.

    ``port`` 0 takes a free one. ``options`` are waitress's, as `gazette serve` passes
    them (gazette.web.server_options).
    """
    # The socket map is ours, handed to waitress: the loop below polls it and closes
    # what is left in it, without reaching into the server's private attributes.
    sockets: dict[int, Any] = {}
    server = waitress.create_server(
        app, map=sockets, host="127.0.0.1", port=port, threads=threads, **options
    )
    stopping = threading.Event()

    def run() -> None:
        # waitress's own run() loops until its socket map is empty; closing that map
        # from another thread races with the poll, so the loop and the close stay here.
        while not stopping.is_set():
            wasyncore.loop(timeout=0.05, map=sockets, use_poll=True, count=1)
        server.task_dispatcher.shutdown()
        wasyncore.close_all(sockets, ignore_all=True)

    thread = threading.Thread(target=run, name="waitress-test-server", daemon=True)
    thread.start()
    try:
        yield LiveServer("127.0.0.1", int(server.effective_port))
    finally:
        stopping.set()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the test server did not stop"


@dataclass(frozen=True)
class Page:
    """One HTTP response, read in full."""

    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def forms(self) -> list[Form]:
        parser = _FormParser()
        parser.feed(self.text)
        parser.close()
        return parser.forms

    def form(self, action: str | None = None) -> Form:
        """The page's only form, or its form posting to ``action``."""
        found = [f for f in self.forms() if action is None or f.action == action]
        assert len(found) == 1, f"expected one form for {action!r}, found {found}"
        return found[0]


@dataclass
class Form:
    """A form as a browser would submit it: its action and its fields' current values."""

    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    input_types: dict[str, str] = field(default_factory=dict)

    def value(self, name: str) -> str:
        values = [v for k, v in self.fields if k == name]
        assert len(values) == 1, f"expected one field {name!r}, found {values}"
        return values[0]

    def filled(self, **changes: str) -> list[tuple[str, str]]:
        """The fields with ``changes`` applied (a name not yet present is added)."""
        result = [(k, changes.get(k, v)) for k, v in self.fields]
        present = {k for k, _ in self.fields}
        result += [(k, v) for k, v in changes.items() if k not in present]
        return result


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._select: str | None = None
        self._first_option: str | None = None
        self._selected = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif not self.forms:
            return
        form = self.forms[-1]
        if tag == "input" and "name" in a:
            kind = a.get("type", "text").lower()
            form.input_types[a["name"]] = kind
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            form.fields.append((a["name"], a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "select":
            self._select, self._first_option, self._selected = a.get("name"), None, False
        elif tag == "option" and self._select is not None:
            value = a.get("value", "")
            if self._first_option is None:
                self._first_option = value
            if "selected" in a and not self._selected:
                self._selected = True
                form.fields.append((self._select, value))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select is not None:
            if not self._selected and self._first_option is not None:
                self.forms[-1].fields.append((self._select, self._first_option))
            self._select = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Browser:
    """An HTTP client for one live server; with ``cookies`` it keeps a cookie jar."""

    def __init__(self, server: LiveServer, *, cookies: bool = True) -> None:
        self.server = server
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        self.jar: CookieJar | None = None
        if cookies:
            # Browsers treat http://127.0.0.1 as a secure context and send Secure cookies
            # to it; without this urllib would withhold the CSRF cookie over plain HTTP.
            policy = DefaultCookiePolicy(secure_protocols=("https", "wss", "http"))
            self.jar = CookieJar(policy)
            handlers.append(urllib.request.HTTPCookieProcessor(self.jar))
        self._opener = urllib.request.build_opener(*handlers)

    def cookie(self, name: str) -> str | None:
        assert self.jar is not None
        return next((c.value for c in self.jar if c.name == name), None)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Page:
        request = urllib.request.Request(
            self.server.url + path, data=body, method=method, headers=dict(headers or {})
        )
        try:
            with self._opener.open(request, timeout=30) as response:
                return Page(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            with error:
                return Page(error.code, error.headers, error.read())

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Page:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, fields: Fields, headers: Mapping[str, str] | None = None) -> Page:
        """POST ``fields`` form-urlencoded, as a browser submits a form."""
        body = urlencode(list(fields.items()) if isinstance(fields, Mapping) else list(fields))
        all_headers = {"Content-Type": "application/x-www-form-urlencoded"}
        all_headers.update(headers or {})
        return self.request("POST", path, body.encode("utf-8"), all_headers)

    def post_multipart(self, path: str, fields: Fields) -> Page:
        """POST ``fields`` as multipart/form-data."""
        boundary = f"----gazette-test-{uuid.uuid4().hex}"
        items = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in items
        ]
        body = ("".join(parts) + f"--{boundary}--\r\n").encode("utf-8")
        return self.request(
            "POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )

    def submit(self, form: Form, **changes: str) -> Page:
        """Submit ``form`` as a browser would, with ``changes`` typed into its fields."""
        assert form.method == "post", form
        return self.post(form.action, form.filled(**changes))
