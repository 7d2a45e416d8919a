"""Signing up: the subscribe form (here or embedded on the publisher's site), confirm, resubscribe.

Every address is answered the same whether or not it was known, and nothing is sent
until the reader confirms by the link mailed to them (double opt-in).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Response, request

from gazette.digests.routing import offered_languages, ordered
from gazette.errors import GazetteError
from gazette.newsletters.brand import brand_for
from gazette.newsletters.service import newsletter_by_slug, offered_newsletters
from gazette.ratelimit import address_limit_key
from gazette.rendering import LANGUAGES
from gazette.store.models import SubscriptionStatus, utcnow
from gazette.subscribers.notices import welcome_due
from gazette.subscribers.service import subscriber_by_public_id
from gazette.subscribers.subscribing import confirm, subscribe
from gazette.tokens import Purpose
from gazette.web.pages import Pages

HOUR = timedelta(hours=1)


class SignupViews(Pages):
    """GET and POST /subscribe, POST /subscribe/embed, /confirm/<token>, /resubscribe/<token>."""

    def subscribe_form(self) -> Response:
        """GET /subscribe: the form, for the newsletter named in ?newsletter= or all."""
        return self._form(200)

    def _form(self, status: int, error: str | None = None, notice: str = "") -> Response:
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
            # One newsletter on the form: the page names it and its publisher.
            one = shown[0] if len(shown) == 1 else None
            branding: dict[str, Any] = (
                {"newsletter": one, "brand": brand_for(one, self.rt.send_context.brand)}
                if one is not None
                else {}
            )
        posted = request.form.get("language")
        return self.page(
            "subscribe", status, newsletters=newsletters, chosen=chosen, error=error,
            notice=notice, **branding,
            email=request.form.get("email", ""), name=request.form.get("name", ""),
            languages=languages,
            chosen_language=posted if posted in languages else self.language(posted),
        )  # fmt: skip

    def subscribe(self) -> Response:
        """POST /subscribe: answer the same whether or not the address was known."""
        if not self.csrf_ok():
            return self.message(403, "Form expired", "Please reload the page and try again.")
        return self._subscribe()

    def subscribe_embedded(self) -> Response:
        """POST /subscribe/embed: the form embedded on the publisher's site (no CSRF token).

        From the newsletter's website's origin it subscribes as the form does (same
        limits, honeypot and double opt-in); from anywhere else it changes nothing and
        shows the form filled in, to be sent once more from this site with its token.
        """
        with self.rt.sessions() as session:
            _newsletter, brand = self.branded(session, request.form.get("newsletter", ""))
        if self.trusted_origin(brand):
            return self._subscribe()
        translate = self.rt.renderer.translate
        language = self.language(request.form.get("language"))
        return self._form(
            200, notice=translate(language, "Press Subscribe to confirm that you want it.")
        )

    def _subscribe(self) -> Response:
        """Subscribe the posted address once the form's origin is trusted."""
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
        self.dispatch_confirmation(result)
        return sent_page

    def resubscribe(self, token: str) -> Response:
        """POST /resubscribe/<token>: "subscribe again" from the unsubscribed page.

        The unsubscribe link's token names the reader; it goes through double opt-in
        again, like the form: a confirmation mail, and nothing sent until it is followed.
        """
        claims = self.claims(Purpose.UNSUBSCRIBE, token)
        if not self.csrf_ok():
            return self.message(
                403, "Form expired", "Please reload the page and try again.",
                self.reader_language(claims),
            )  # fmt: skip
        with self.rt.sessions() as session, session.begin():
            reader = subscriber_by_public_id(session, claims.subscriber)
            language = reader.language
            result = subscribe(
                session, reader.email, claims.newsletter, self.origin(), language=language,
                allow_smtputf8=True, reader_request=True, languages=(language,),
            )  # fmt: skip
        context = self.newsletter_context(claims.newsletter)
        if result.status == SubscriptionStatus.ACTIVE:
            return self.page("confirmed", language=language, **context)
        self.dispatch_confirmation(result)
        return self.page("subscribe_sent", language=language, **context)

    def confirm(self, token: str) -> Response:
        """POST confirms; any other method (GET, HEAD) only shows the button."""
        claims = self.claims(Purpose.CONFIRM, token)
        # Only POST acts: link scanners and prefetchers GET and HEAD, and must change nothing.
        if request.method != "POST":
            return self.page(
                "confirm", language=self.reader_language(claims), token=token,
                **self.newsletter_context(claims.newsletter),
            )  # fmt: skip
        if not self.csrf_ok():
            return self.message(
                403, "Form expired", "Please reload the page and try again.",
                self.reader_language(claims),
            )  # fmt: skip
        # One session for the change and the page's language: one pool checkout.
        with self.rt.sessions() as session, session.begin():
            changed = confirm(session, claims.subscriber, claims.newsletter, self.origin())
            language = subscriber_by_public_id(session, claims.subscriber).language
            welcome = (
                welcome_due(session, claims.subscriber, claims.newsletter) if changed else None
            )
        self.dispatch_welcome(welcome)
        return self.page(
            "confirmed", language=language, **self.newsletter_context(claims.newsletter)
        )
