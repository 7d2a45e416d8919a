"""Fetching feeds over HTTP: conditional, bounded in time, size and redirects.

The only module that knows HTTP clients. A publisher's feed is fetched with its last
ETag and Last-Modified, so an unchanged feed costs a 304 and no parsing.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from gazette import __version__

USER_AGENT = f"Gazette/{__version__} (newsletter feed reader; +https://example.org/gazette)"
MAX_BYTES = 10 * 1024 * 1024
MAX_REDIRECTS = 5
TIMEOUT = httpx.Timeout(20.0, connect=10.0)
# An article page is read only for its <head> (og:image): its first 512 KB, quickly.
PAGE_BYTES = 512 * 1024
PAGE_TIMEOUT = httpx.Timeout(8.0, connect=5.0)


class FetchError(Exception):
    """The feed could not be fetched; the message is one sentence for `feeds list`."""


@dataclass(frozen=True)
class Fetched:
    """A fetched feed: its bytes (None when not modified) and validators for next time."""

    content: bytes | None
    etag: str | None
    last_modified: str | None
    url: str
    # The media type the server declared (lower case, no parameters), if any.
    content_type: str | None = None
    # The document's own address when the server names one (Content-Location), absolute.
    content_location: str | None = None


def fetch(
    url: str,
    etag: str | None = None,
    last_modified: str | None = None,
    *,
    max_bytes: int = MAX_BYTES,
    timeout: httpx.Timeout = TIMEOUT,
    truncate: bool = False,
    accept: str = "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5",
    follow_redirects: bool = True,
) -> Fetched:
    """GET ``url`` conditionally; raise FetchError saying why when it fails.

    With ``truncate`` a body over ``max_bytes`` is cut there instead of refused (a page
    read for its head only). Without ``follow_redirects`` a redirect is an error: a URL
    checked against a pinned host (a webhook's certificate) must not lead elsewhere.
    """
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": accept,
    }
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    with (
        _explained(url),
        httpx.Client(
            follow_redirects=follow_redirects, max_redirects=MAX_REDIRECTS, timeout=timeout
        ) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        if response.status_code == 304:
            return Fetched(None, etag, last_modified, str(response.url))
        if response.status_code >= 400 or response.is_redirect:
            raise FetchError(f"{url} answered HTTP {response.status_code}.")
        body = _read_body(url, response, max_bytes, truncate)
        declared_type = response.headers.get("Content-Type", "")
        return Fetched(
            body,
            response.headers.get("ETag"),
            response.headers.get("Last-Modified"),
            str(response.url),
            declared_type.split(";")[0].strip().lower() or None,
            _location(str(response.url), response.headers.get("Content-Location")),
        )


def _read_body(url: str, response: httpx.Response, max_bytes: int, truncate: bool) -> bytes:
    """The response's body, refused (or with ``truncate``, cut) past ``max_bytes``."""
    limit_mb = max_bytes // 1_000_000
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes and not truncate:
        raise FetchError(f"{url} is {int(declared) // 1_000_000} MB, over the {limit_mb} MB limit.")
    body = bytearray()
    for piece in response.iter_bytes():
        body += piece
        if len(body) > max_bytes and truncate:
            del body[max_bytes:]
            break
        if len(body) > max_bytes:
            raise FetchError(f"{url} sent more than the {limit_mb} MB limit.")
    return bytes(body)


@contextmanager
def _explained(url: str) -> Iterator[None]:
    """Turn the HTTP client's failures into FetchError, one sentence naming ``url``."""
    try:
        yield
    except httpx.TooManyRedirects:
        raise FetchError(f"{url} redirects more than {MAX_REDIRECTS} times.") from None
    except httpx.TimeoutException:
        raise FetchError(f"{url} did not answer within the time limit.") from None
    except httpx.InvalidURL:
        raise FetchError(f"{url} is not a URL that can be fetched.") from None
    except httpx.ConnectError as exc:
        raise FetchError(_connect_failure(url, exc)) from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{url} could not be fetched ({exc}).") from None


def _location(url: str, declared: str | None) -> str | None:
    """The Content-Location header resolved against the URL fetched; None without one."""
    if not declared or not declared.strip():
        return None
    located = urljoin(url, declared.strip())
    return located if urlsplit(located).scheme in ("http", "https") else None


def fetch_page(url: str) -> Fetched:
    """GET an article page's first PAGE_BYTES (enough for its <head>), within PAGE_TIMEOUT."""
    return fetch(
        url, max_bytes=PAGE_BYTES, timeout=PAGE_TIMEOUT, truncate=True,
        accept="text/html, application/xhtml+xml;q=0.9, */*;q=0.5",
    )  # fmt: skip


def _connect_failure(url: str, exc: httpx.ConnectError) -> str:
    """One sentence for a connection that never opened: refused, unknown host, or other."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ConnectionRefusedError) or "refused" in str(exc).lower():
        return f"Connection refused on {url}."
    if isinstance(cause, socket.gaierror) or "name or service" in str(exc).lower():
        return f"The host of {url} is not known (DNS lookup failed)."
    return f"{url} could not be reached ({exc})."
