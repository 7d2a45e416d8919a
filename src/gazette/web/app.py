"""The Flask application: routes onto thin views over the domain functions, and its guards.

The views live by what they serve (archive_views, signup_views, reader_views, metrics)
on the helpers of pages.py; this module puts them together, routes to them, bounds
request bodies, turns errors into pages and adds the security headers to every answer.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from gazette.bounces.providers.events import Clock, Fetcher
from gazette.errors import GazetteError
from gazette.runtime import Runtime, current_runtime
from gazette.store.db import database_answers
from gazette.tokens import TokenError
from gazette.web.archive_views import ArchiveViews
from gazette.web.metrics import MetricsViews
from gazette.web.reader_views import ReaderViews
from gazette.web.signup_views import SignupViews
from gazette.web.webhooks import WebhookViews

# The largest request body the app reads: its forms are a few hundred bytes.
MAX_BODY = 64 * 1024
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Token URLs must not leak to the sites a reader goes on to visit.
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        # Images only over https: the publisher's logo and images in archived articles.
        "default-src 'none'; img-src https:; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
}


class Views(ArchiveViews, SignupViews, ReaderViews, MetricsViews, WebhookViews):
    """The endpoint's views; each reads the request, calls one domain function, renders."""

    def healthz(self) -> Response:
        """For load balancers: 200 when the database answers, 503 when it does not."""
        if not database_answers(self.rt.engine):
            return Response('{"status": "unavailable"}', 503, mimetype="application/json")
        return Response('{"status": "ok"}', 200, mimetype="application/json")


def create_app(
    runtime: Runtime | None = None, *, fetcher: Fetcher | None = None, clock: Clock | None = None
) -> Flask:
    """Build the WSGI app on ``runtime`` (by default, this process's, from the environment).

    ``fetcher`` and ``clock``: what the provider webhooks fetch with and read the time
    from (tests serve their own certificates and choose the time).
    """
    rt = runtime or current_runtime()
    rt.renderer.load_catalogues()
    app = Flask("gazette.web")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    if rt.settings.proxy_hops:
        hops = rt.settings.proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    views = Views(rt)
    views.use_webhook_parts(fetcher, clock)
    for rule, view, methods in _routes(views):
        app.add_url_rule(rule, view.__name__, view, methods=methods)
    app.add_url_rule("/subscribe", "subscribe_post", views.subscribe, methods=["POST"])
    _guard(app, views)
    return app


def _routes(views: Views) -> list[tuple[str, Callable[..., Response], list[str]]]:
    """Each URL rule, the view answering it (its name is the endpoint) and its methods."""
    return [
        ("/healthz", views.healthz, ["GET"]),
        ("/metrics", views.metrics, ["GET"]),
        ("/archive", views.archive, ["GET"]),
        ("/archive.xml", views.archive_feed, ["GET"]),
        ("/archive/<public_id>", views.archive_issue, ["GET"]),
        ("/subscribe", views.subscribe_form, ["GET"]),
        ("/confirm/<token>", views.confirm, ["GET", "POST"]),
        ("/unsubscribe/<token>", views.unsubscribe, ["GET", "POST"]),
        ("/preferences/<token>", views.preferences, ["GET", "POST"]),
        ("/subscribe/embed", views.subscribe_embedded, ["POST"]),
        ("/resubscribe/<token>", views.resubscribe, ["POST"]),
        ("/webhooks/ses", views.webhook_ses, ["POST"]),
        ("/webhooks/postmark", views.webhook_postmark, ["POST"]),
        ("/webhooks/mailgun", views.webhook_mailgun, ["POST"]),
    ]


def _guard(app: Flask, views: Views) -> None:
    """Bound request bodies, answer errors with pages, and add the security headers."""

    @app.before_request
    def read_body_within_limit() -> None:
        """Read a POST's body now, never past MAX_BODY: larger ones are a 413 on every route.

        werkzeug refuses a Content-Length over the limit unread and stops a chunked body
        at it, but only when a view reads the body; one-click unsubscribe does not. So
        the app bounds what it reads by itself, whatever server runs it (waitress caps
        bodies too; gunicorn cannot, and the proxy in front must).
        """
        if request.method == "POST":
            request.get_data(cache=True, parse_form_data=True)

    @app.errorhandler(TokenError)
    def bad_token(error: TokenError) -> Response:
        return views.message(400, "This link does not work", str(error))

    @app.errorhandler(GazetteError)
    def failed(error: GazetteError) -> Response:
        return views.message(404, "Not found", str(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return views.message(error.code or 500, error.name, error.description or "")

    @app.after_request
    def secure(response: Response) -> Response:
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        return response
