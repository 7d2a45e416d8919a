"""The views a reader's own links open: unsubscribe (RFC 8058 one-click) and preferences."""

from __future__ import annotations

from flask import Response, request

from gazette.digests.routing import language_choices, save_extra_languages
from gazette.errors import InvalidChoiceError
from gazette.newsletters.brand import brand_for
from gazette.store.db import run_statement
from gazette.store.models import utcnow
from gazette.subscribers.preferences import preferences, update_preferences
from gazette.subscribers.service import FREQUENCIES, subscriber_by_public_id
from gazette.subscribers.unsubscribing import unsubscribe_all, unsubscribe_link
from gazette.tokens import Purpose
from gazette.web.pages import Pages


class ReaderViews(Pages):
    """/unsubscribe/<token> and /preferences/<token>: GET shows, POST acts."""

    def unsubscribe(self, token: str) -> Response:
        """POST unsubscribes (also the RFC 8058 one-click target); GET and HEAD only show."""
        claims = self.claims(Purpose.UNSUBSCRIBE, token)
        if request.method != "POST":
            return self.page(
                "unsubscribe", language=self.reader_language(claims), token=token,
                **self.newsletter_context(claims.newsletter),
            )  # fmt: skip
        # No CSRF check: mail providers POST "List-Unsubscribe=One-Click" without
        # cookies, and the signed token already proves the link came from the reader's mail.
        # This is the hot path under a provider's one-click traffic: one connection, no
        # session, and the change returns what the page shows of the newsletter. On
        # PostgreSQL it is one statement that commits by itself (store.db.run_statement),
        # so the row locks every click takes are never held across a round trip.
        origin = self.origin()
        done = run_statement(
            self.rt.statement_engine,
            lambda db: unsubscribe_link(db, claims.subscriber, claims.newsletter, origin),
        )
        if request.form.get("List-Unsubscribe") == "One-Click":
            # RFC 8058's POST, from a mail provider: nobody sees the answer, and the
            # provider sends no cookie and must not be given one. So a line of text,
            # not the page with its form to subscribe again and that form's cookie.
            text = self.rt.renderer.translate(
                done.language, "You will receive no more issues of this newsletter."
            )
            return Response(f"{text}\n", mimetype="text/plain")
        return self.page(
            "unsubscribed", language=done.language, token=token, newsletter=done.newsletter,
            brand=brand_for(done.newsletter, self.rt.send_context.brand),
        )  # fmt: skip

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
            **self.newsletter_context(claims.newsletter),
            saved=saved, languages=choices.primary, frequencies=FREQUENCIES,
            extra_languages=choices,
        )  # fmt: skip
