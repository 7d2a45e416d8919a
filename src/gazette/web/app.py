"""The Flask application: thin views over the subscriber functions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Flask, Response, request
from sqlalchemy import text
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from gazette.archive import archived_issue, list_archive
from gazette.errors import GazetteError, InvalidChoiceError
from gazette.languages import (
    language_choices,
    offered_languages,
    ordered,
    parse_link_languages,
    save_extra_languages,
)
from gazette.mailer import DeliveryError
from gazette.newsletters import newsletter_by_slug, offered_newsletters
from gazette.ratelimit import address_limit_key
from gazette.rendering import LANGUAGES
from gazette.runtime import Runtime, current_runtime
from gazette.store.models import utcnow
from gazette.subscribers import (
    FREQUENCIES,
    Origin,
    confirm,
    preferences,
    subscribe,
    subscriber_by_public_id,
    unsubscribe_all,
    unsubscribe_link,
    update_preferences,
)
from gazette.tokens import Purpose, TokenClaims, TokenError
from gazette.web.csrf import FIELD, CsrfGuard

log = logging.getLogger(__name__)
HOUR = timedelta(hours=1)
# The largest request body the app reads: its forms are a few hundred bytes.
MAX_BODY = 64 * 1024
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Token URLs must not leak to the sites a reader goes on to visit.
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
}


class Views:
    """The endpoint's views; each reads the request, calls one domain function, renders."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.csrf = CsrfGuard(
            runtime.settings.secret_keys, secure=runtime.settings.base_url.startswith("https://")
        )

    # -- helpers -------------------------------------------------------------------

    def language(self, preferred: str | None = None) -> str:
        """The reader's language: theirs when known, else the browser's best match."""
        if preferred in LANGUAGES:
            return str(preferred)
        return request.accept_languages.best_match(LANGUAGES, "en") or "en"

    def page(
        self, template: str, status: int = 200, language: str | None = None, **context: Any
    ) -> Response:
        """Render a page with a CSRF token for its forms and the security headers."""
        cookie = request.cookies.get(self.csrf.cookie) or self.csrf.new_cookie()
        body = self.rt.renderer.render_page(
            template, self.language(language), csrf_field=FIELD,
            csrf_token=self.csrf.token_for(cookie), **context,
        )  # fmt: skip
        response = Response(body, status=status, mimetype="text/html")
        if request.cookies.get(self.csrf.cookie) != cookie:
            # Path=/ and no Domain, as the __Host- prefix (used over https) requires.
            response.set_cookie(
                self.csrf.cookie, cookie, path="/", domain=None, httponly=True,
                samesite="Lax", secure=self.csrf.secure,
            )  # fmt: skip
        return response

    def message(self, status: int, title: str, text_: str, language: str | None = None) -> Response:
        """A page that only says something: errors, and what happened.

        Known sentences are translated here; one that quotes input stays as it is and
        is escaped by the template like any other value.
        """
        chosen = self.language(language)
        translate = self.rt.renderer.translate
        return self.page(
            "message", status, chosen,
            title=translate(chosen, title), text=translate(chosen, text_),
        )  # fmt: skip

    def csrf_ok(self) -> bool:
        """True when the posted form carries the token bound to this visitor's cookie."""
        return self.csrf.valid(request.cookies.get(self.csrf.cookie), request.form.get(FIELD))

    def claims(self, purpose: Purpose, token: str) -> TokenClaims:
        """Read a link's token; a bad one raises TokenError, shown as a 400 page."""
        return self.rt.tokens.read(purpose, token)

    def origin(self) -> Origin:
        """Where this request came from, for the event log."""
        return Origin("web", request.remote_addr)

    def reader_language(self, claims: TokenClaims) -> str | None:
        """The language of the reader a link names, when they still exist."""
        with self.rt.sessions() as session:
            try:
                return subscriber_by_public_id(session, claims.subscriber).language
            except GazetteError:
                return None

    # -- views ---------------------------------------------------------------------

    def healthz(self) -> Response:
        """For load balancers: 200 when the database answers, 503 when it does not."""
        try:
            with self.rt.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:  # any failure means "not healthy"
            return Response('{"status": "unavailable"}', 503, mimetype="application/json")
        return Response('{"status": "ok"}', 200, mimetype="application/json")

    def archive(self) -> Response:
        """GET /archive: the issues that went out, newest first."""
        with self.rt.sessions() as session:
            issues = list_archive(
                session, self.rt.send_context, request.args.get("newsletter") or None
            )
        return self.page("archive", issues=issues)

    def archive_issue(self, public_id: str) -> Response:
        """GET /archive/<id>: one issue as a web page (the "view in browser" link).

        ``?lang=uk,en`` (what a reader's link carries when the newsletter routes by
        language) shows that reader's edition: those languages' articles only.
        """
        try:
            languages = parse_link_languages(request.args.get("lang"))
        except GazetteError as error:
            return self.message(400, "This link does not work", str(error))
        with self.rt.sessions() as session:
            item = archived_issue(session, self.rt.send_context, public_id, languages)
        return self.page("archive_issue", item=item)

    def archive_feed(self) -> Response:
        """GET /archive.xml: an Atom feed of the issues."""
        with self.rt.sessions() as session:
            issues = list_archive(session, self.rt.send_context)
        updated = (issues[0].date if issues else utcnow()).isoformat()
        body = self.rt.renderer.render_page(
            "archive", self.language(), suffix="xml", issues=issues,
            base_url=self.rt.settings.base_url, updated=updated,
            author=", ".join(sorted({i.newsletter_name for i in issues})) or "Gazette",
        )  # fmt: skip
        return Response(body, mimetype="application/atom+xml")

    def subscribe_form(self) -> Response:
        """GET /subscribe: the form, for the newsletter named in ?newsletter= or all."""
        return self._form(200)

    def _form(self, status: int, error: str | None = None) -> Response:
        with self.rt.sessions() as session:
            listed = offered_newsletters(session)
            newsletters = [(n.slug, n.name) for n in listed]
            chosen = request.values.get("newsletter", "")
            if chosen and chosen not in dict(newsletters):
                return self.message(404, "Not found", f"There is no newsletter {chosen!r}.")
            # The languages the newsletter publishes (of every listed one when the
            # form lets the reader pick the newsletter).
            shown = [n for n in listed if n.slug == chosen] if chosen else listed
            languages = (
                ordered(code for n in shown for code in offered_languages(session, n, utcnow()))
                or LANGUAGES
            )
        posted = request.form.get("language")
        return self.page(
            "subscribe", status, newsletters=newsletters, chosen=chosen, error=error,
            email=request.form.get("email", ""), name=request.form.get("name", ""),
            languages=languages,
            chosen_language=posted if posted in languages else self.language(posted),
        )  # fmt: skip

    def subscribe(self) -> Response:
        """POST /subscribe: answer the same whether or not the address was known."""
        if not self.csrf_ok():
            return self.message(403, "Form expired", "Please reload the page and try again.")
        sent_page = self.page("subscribe_sent")
        if request.form.get("website"):
            # The honeypot: people never see the field, bots fill it in.
            return sent_page
        settings = self.rt.settings
        if not self.rt.limiter.hit(
            f"subscribe-ip:{request.remote_addr}", settings.subscribe_limit_per_ip, HOUR
        ):
            return self.message(429, "Too many requests", "Please try again in an hour.")
        slug = request.form.get("newsletter", "")
        email = request.form.get("email", "")
        if not self.rt.limiter.hit(
            f"subscribe-address:{address_limit_key(email)}",  # hashed by the limiter
            settings.subscribe_limit_per_address,
            HOUR,
        ):
            return sent_page
        try:
            with self.rt.sessions() as session, session.begin():
                offered = offered_languages(session, newsletter_by_slug(session, slug), utcnow())
                result = subscribe(
                    session, email, slug, self.origin(),
                    name=request.form.get("name", ""),
                    language=request.form.get("language") or self.language(),
                    allow_smtputf8=settings.smtputf8, reader_request=True, languages=offered,
                )  # fmt: skip
        except GazetteError as error:
            return self._form(400, error=str(error))
        if result.needs_confirmation:
            from worker.tasks import send_confirmation

            # Enqueued after the commit above, so the worker finds the reader. Without a
            # broker it runs here: a relay failure is logged, and the reader, whose
            # subscription is saved, can ask again.
            try:
                send_confirmation.delay(result.subscriber_id, result.newsletter_id)
            except DeliveryError as error:
                log.warning(
                    "confirmation to subscriber %s not sent: %s", result.subscriber_id, error.detail
                )
        return sent_page

    def confirm(self, token: str) -> Response:
        """POST confirms; any other method (GET, HEAD) only shows the button."""
        claims = self.claims(Purpose.CONFIRM, token)
        # Only POST acts: link scanners and prefetchers GET and HEAD, and must change nothing.
        if request.method != "POST":
            return self.page("confirm", language=self.reader_language(claims), token=token)
        if not self.csrf_ok():
            return self.message(
                403, "Form expired", "Please reload the page and try again.",
                self.reader_language(claims),
            )  # fmt: skip
        # One session for the change and the page's language: one pool checkout.
        with self.rt.sessions() as session, session.begin():
            confirm(session, claims.subscriber, claims.newsletter, self.origin())
            language = subscriber_by_public_id(session, claims.subscriber).language
        return self.page("confirmed", language=language)

    def unsubscribe(self, token: str) -> Response:
        """POST unsubscribes (also the RFC 8058 one-click target); GET and HEAD only show."""
        claims = self.claims(Purpose.UNSUBSCRIBE, token)
        if request.method != "POST":
            return self.page("unsubscribe", language=self.reader_language(claims), token=token)
        # No CSRF check: mail providers POST "List-Unsubscribe=One-Click" without
        # cookies, and the signed token already proves the link came from the reader's mail.
        # One session for the change and the page's language: this is the hot path under
        # a provider's one-click traffic, and each pool checkout costs a pre-ping.
        with self.rt.sessions() as session, session.begin():
            done = unsubscribe_link(session, claims.subscriber, claims.newsletter, self.origin())
        return self.page("unsubscribed", language=done.language)

    def save_preferences(self, public_id: str, newsletter_slug: str) -> str:
        """Apply the preferences form in one transaction; return which notice to show."""
        with self.rt.sessions() as session, session.begin():
            if request.form.get("action") == "unsubscribe-all":
                subscriber = subscriber_by_public_id(session, public_id)
                unsubscribe_all(session, subscriber.id, self.origin())
                return "unsubscribed"
            choices = language_choices(session, public_id, newsletter_slug, utcnow())
            update_preferences(
                session, public_id, newsletter_slug, self.origin(),
                language=request.form.get("language", "en"),
                topics=request.form.getlist("topic"),
                frequency=request.form.get("frequency") or None,
                languages=choices.primary,
            )  # fmt: skip
            # Only a form that showed the further languages may change them: ticking
            # none of the boxes sends nothing, which must mean "none", not "unchanged".
            if choices.shown and request.form.get("extra_languages_shown"):
                save_extra_languages(
                    session, public_id, newsletter_slug, self.origin(),
                    request.form.getlist("extra_language"), utcnow(),
                )  # fmt: skip
            return "saved"

    def preferences(self, token: str) -> Response:
        """GET shows the reader's choices; POST saves them, or unsubscribes from all."""
        claims = self.claims(Purpose.PREFERENCES, token)
        if request.method == "POST":
            if not self.csrf_ok():
                return self.message(403, "Form expired", "Please reload the page and try again.")
            try:
                saved = self.save_preferences(claims.subscriber, claims.newsletter)
            except InvalidChoiceError as error:
                # A value the form never offered: say which, and save none of the form.
                return self.message(400, "Not saved", str(error))
        else:
            saved = ""
        with self.rt.sessions() as session:
            current = preferences(session, claims.subscriber, claims.newsletter)
            choices = language_choices(session, claims.subscriber, claims.newsletter, utcnow())
        return self.page(
            "preferences", language=current.language, token=token, prefs=current,
            saved=saved, languages=choices.primary, frequencies=FREQUENCIES,
            extra_languages=choices,
        )  # fmt: skip


def create_app(runtime: Runtime | None = None) -> Flask:
    """Build the WSGI app on ``runtime`` (by default, this process's, from the environment)."""
    rt = runtime or current_runtime()
    app = Flask("gazette.web")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    if rt.settings.proxy_hops:
        hops = rt.settings.proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )
    views = Views(rt)
    routes: list[tuple[str, Callable[..., Response], list[str]]] = [
        ("/healthz", views.healthz, ["GET"]),
        ("/archive", views.archive, ["GET"]),
        ("/archive.xml", views.archive_feed, ["GET"]),
        ("/archive/<public_id>", views.archive_issue, ["GET"]),
        ("/subscribe", views.subscribe_form, ["GET"]),
        ("/confirm/<token>", views.confirm, ["GET", "POST"]),
        ("/unsubscribe/<token>", views.unsubscribe, ["GET", "POST"]),
        ("/preferences/<token>", views.preferences, ["GET", "POST"]),
    ]
    for rule, view, methods in routes:
        app.add_url_rule(rule, view.__name__, view, methods=methods)
    app.add_url_rule("/subscribe", "subscribe_post", views.subscribe, methods=["POST"])

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

    return app
