"""POST /webhooks/ses, /webhooks/postmark, /webhooks/mailgun: provider events, applied once.

Each view checks the call (gazette.bounces.providers.*), reads its event into a Report
and hands it to gazette.bounces.processing, which applies it once under the event's
key: a replay or a provider's retry answers 200 and changes nothing. A refused call
answers 401 or 403 with one line and writes nothing; a provider not configured is 404.
"""

from __future__ import annotations

import time
from datetime import timedelta

from flask import Response, request

from gazette.articles.fetch import fetch
from gazette.bounces.processing import apply_report, recorded
from gazette.bounces.providers import mailgun, postmark, ses
from gazette.bounces.providers.events import CallRefusedError, Clock, Fetcher, json_object
from gazette.bounces.reports import Kind, Report
from gazette.store.db import transaction
from gazette.web.pages import Pages, log

# A certificate or a confirmation page is a few kilobytes.
_FETCH_BYTES = 64 * 1024
# Longer than a Mailgun signature stays fresh: a token is remembered while it could pass.
_TOKEN_MEMORY = timedelta(seconds=2 * mailgun.MAX_AGE)
# SNS resends an unconfirmed subscription's confirmation: confirmed once a day at most.
_CONFIRM_MEMORY = timedelta(days=1)


def fetch_pinned(url: str) -> bytes:
    """GET ``url`` (already checked against the pinned host), never following a redirect."""
    fetched = fetch(url, max_bytes=_FETCH_BYTES, follow_redirects=False, accept="*/*")
    return fetched.content or b""


def _plain(status: int, line: str, headers: dict[str, str] | None = None) -> Response:
    return Response(line + "\n", status, mimetype="text/plain", headers=headers)


class WebhookViews(Pages):
    """The provider webhooks, with the fetcher and clock they use (injected in tests)."""

    fetcher: Fetcher = staticmethod(fetch_pinned)
    clock: Clock = staticmethod(time.time)
    _sns: ses.SnsVerifier | None = None

    def use_webhook_parts(self, fetcher: Fetcher | None, clock: Clock | None) -> None:
        """Replace the fetcher (certificates, confirmations) and the clock."""
        if fetcher is not None:
            self.fetcher = fetcher
        if clock is not None:
            self.clock = clock
        self._sns = None

    def webhook_ses(self) -> Response:
        """Amazon SES through SNS: a confirmation confirmed, a notification applied."""
        topic = self.rt.settings.providers.ses_topic_arn
        if topic is None:
            return _plain(404, "No SES webhook here: GAZETTE_SES_TOPIC_ARN is not set.")
        if self._sns is None:
            self._sns = ses.SnsVerifier(topic, self.fetcher, self.clock)
        try:
            message = json_object(request.get_data(), "an SNS message")
            kind = self._sns.verify(message)
            if kind == "SubscriptionConfirmation":
                return self._confirm(self._sns, message)
        except CallRefusedError as refused:
            return self._refused("ses", refused)
        if kind != "Notification":
            return _plain(200, f"{kind}: nothing to do.")
        return self._apply("ses", ses.report_of(message, self.rt.settings.secret_keys))

    def _confirm(self, verifier: ses.SnsVerifier, message: dict[str, object]) -> Response:
        """Confirm a subscription once (SNS resends the request until it is)."""
        key = f"sns-confirm:{message.get('TopicArn')}:{message.get('MessageId')}"
        if not self.rt.limiter.hit(key, 1, _CONFIRM_MEMORY):
            return _plain(200, "Subscription already confirmed.")
        try:
            verifier.confirm(message)
        except CallRefusedError:
            self.rt.limiter.release(key)
            raise
        log.info("confirmed the SNS subscription of topic %s", message.get("TopicArn"))
        return _plain(200, "Subscription confirmed.")

    def webhook_postmark(self) -> Response:
        """Postmark: basic auth, then one Bounce or SpamComplaint record."""
        credentials = self.rt.settings.providers.postmark_credentials
        if credentials is None:
            return _plain(
                404, "No Postmark webhook here: GAZETTE_POSTMARK_WEBHOOK_USER is not set."
            )
        if not postmark.authorised(request.headers.get("Authorization"), credentials):
            refused = CallRefusedError(
                401, "This needs the Postmark webhook's basic-auth credentials."
            )
            challenge = {"WWW-Authenticate": 'Basic realm="gazette webhooks"'}
            return self._refused("postmark", refused, challenge)
        try:
            record = json_object(request.get_data(), "a Postmark webhook record")
        except CallRefusedError as refused:
            return self._refused("postmark", refused)
        return self._apply("postmark", postmark.report_of(record, self.rt.settings.secret_keys))

    def webhook_mailgun(self) -> Response:
        """Mailgun: a fresh signature whose token is new, then one event."""
        key = self.rt.settings.providers.mailgun_signing_key
        if key is None:
            return _plain(404, "No Mailgun webhook here: GAZETTE_MAILGUN_SIGNING_KEY is not set.")
        try:
            payload = json_object(request.get_data(), "a Mailgun webhook")
            token = mailgun.verify(payload, key, self.clock())
        except CallRefusedError as refused:
            return self._refused("mailgun", refused)
        report = mailgun.report_of(payload, self.rt.settings.secret_keys)
        if report.kind is Kind.UNRECOGNISED:  # acts on nothing, so its token guards nothing
            return _plain(200, f"Not acted on: {report.reason}.")
        if not self.rt.limiter.hit(f"mailgun-token:{token}", 1, _TOKEN_MEMORY):
            # The same call again is a retry (nothing changes); the token on another event
            # is a captured signature carrying a forged body.
            with self.rt.sessions() as session:
                if recorded(session, report.key):
                    return _plain(200, "Already applied.")
            return self._refused(
                "mailgun", CallRefusedError(403, "The Mailgun token was used before.")
            )
        return self._apply("mailgun", report)

    def _apply(self, provider: str, report: Report) -> Response:
        """Apply ``report`` once and say what it did, in one line."""
        with transaction(self.rt.sessions) as session:
            outcome = apply_report(
                session, report, require_verp=self.rt.settings.bounce_require_verp
            )
        if outcome.duplicate:
            return _plain(200, "Already applied.")
        if outcome.reason:
            return _plain(200, f"Not acted on: {outcome.reason}.")
        done = ", ".join(effect.value for effect in outcome.effects) or "no reader matched"
        log.info("%s webhook: %s (%s)", provider, report.reason, done)
        return _plain(200, f"Applied: {done}.")

    def _refused(
        self, provider: str, refused: CallRefusedError, headers: dict[str, str] | None = None
    ) -> Response:
        log.warning("%s webhook refused (%d): %s", provider, refused.status, refused.reason)
        return _plain(refused.status, refused.reason, headers)
