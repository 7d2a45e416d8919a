"""What every view of the endpoint shares: rendering a page, CSRF, tokens, hand-offs.

The views (archive_views, signup_views, reader_views) subclass Pages; web/app.py puts
them together on one object and routes to its methods.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from flask import Response, request
from sqlalchemy.orm import Session

from gazette.config import Brand
from gazette.errors import GazetteError
from gazette.mail.dkim import MissingDkimKeyError
from gazette.mail.outcomes import DeliveryError
from gazette.newsletters.brand import brand_for
from gazette.newsletters.service import newsletter_by_slug
from gazette.rendering import LANGUAGES
from gazette.runtime import Runtime
from gazette.store.models import Newsletter
from gazette.subscribers.service import Origin, subscriber_by_public_id
from gazette.subscribers.subscribing import SubscribeResult
from gazette.tokens import Purpose, TokenClaims
from gazette.web.csrf import FIELD, CsrfGuard

# Named as before the views left app.py, so an operator's logging settings still apply.
log = logging.getLogger("gazette.web.app")


class Pages:
    """The helpers each view uses: read the request, render, hand work off."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.csrf = CsrfGuard(
            runtime.settings.secret_keys, secure=runtime.settings.base_url.startswith("https://")
        )

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
        # Pages that know their newsletter name its publisher; others the installation's.
        context.setdefault("brand", self.rt.send_context.brand)
        context.setdefault("newsletter", None)
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

    def branded(self, session: Session, slug: str) -> tuple[Newsletter, Brand]:
        """The newsletter called ``slug`` and its brand (GazetteError when there is none)."""
        newsletter = newsletter_by_slug(session, slug)
        return newsletter, brand_for(newsletter, self.rt.send_context.brand)

    def newsletter_context(self, slug: str) -> dict[str, Any]:
        """The ``newsletter`` and ``brand`` a page about one newsletter shows, if it exists."""
        with self.rt.sessions() as session:
            try:
                newsletter, brand = self.branded(session, slug)
            except GazetteError:
                return {}
            return {"newsletter": newsletter, "brand": brand}

    def trusted_origin(self, brand: Brand) -> bool:
        """True when the POST came from a page on the newsletter's own website.

        Browsers send Origin with every cross-site POST and a page cannot forge it; a
        script outside a browser can, but it can also fetch a form token, so the check
        only decides whether a visitor's browser was sent here by the publisher's site.
        """
        if not brand.website:
            return False
        parts = urlsplit(brand.website)
        return request.headers.get("Origin", "") == f"{parts.scheme}://{parts.netloc}".lower()

    def dispatch_welcome(self, subscription_id: int | None) -> None:
        """Hand a just-confirmed reader's welcome to the dispatcher (in-process with no broker).

        A relay failure is logged: the reader is subscribed either way.
        """
        if subscription_id is None:
            return
        try:
            self.rt.dispatcher.send_welcome(subscription_id)
        except DeliveryError as error:
            log.warning("welcome to subscription %s not sent: %s", subscription_id, error.detail)
        except MissingDkimKeyError as error:
            log.warning("welcome to subscription %s not sent: %s", subscription_id, error)

    def dispatch_confirmation(self, result: SubscribeResult) -> None:
        """Hand the confirmation mail of a pending subscription to the dispatcher.

        Called after the commit, so the worker finds the reader. Without a broker it
        runs here: a relay failure is logged, and the reader, whose subscription is
        saved, can ask again.
        """
        if not result.needs_confirmation:
            return
        try:
            self.rt.dispatcher.send_confirmation(result.subscriber_id, result.newsletter_id)
        except DeliveryError as error:
            log.warning(
                "confirmation to subscriber %s not sent: %s", result.subscriber_id, error.detail
            )
        except MissingDkimKeyError as error:  # the operator's to fix; the reader may ask again
            log.warning("confirmation to subscriber %s not sent: %s", result.subscriber_id, error)

    def reader_language(self, claims: TokenClaims) -> str | None:
        """The language of the reader a link names, when they still exist."""
        with self.rt.sessions() as session:
            try:
                return subscriber_by_public_id(session, claims.subscriber).language
            except GazetteError:
                return None
