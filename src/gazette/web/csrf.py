"""CSRF protection for the forms: a random cookie and a signed, dated copy in the form.

A cross-site page can make a browser send the cookie but cannot read it, so it cannot
produce the matching form field. The form field is valid for LIFETIME after the page
was shown; a form left open longer asks the reader to reload. Over https the cookie is
named with the ``__Host-`` prefix, which browsers accept only when it is Secure, for
Path=/ and with no Domain, so no other host (a sibling subdomain) can set or overwrite
it. The one-click unsubscribe POST is exempt by design: mail providers send it without
cookies.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "gazette_csrf"
SECURE_COOKIE = "__Host-" + COOKIE
FIELD = "csrf_token"
# Long enough to read a form and fill it in; short enough that a leaked page is useless.
LIFETIME = timedelta(hours=2)


def cookie_name(secure: bool) -> str:
    """The cookie's name: ``__Host-`` prefixed when the site is served over https."""
    return SECURE_COOKIE if secure else COOKIE


class CsrfGuard:
    """Mints and checks form tokens bound to the visitor's CSRF cookie."""

    def __init__(self, secret_keys: tuple[str, ...], *, secure: bool = False) -> None:
        self._serializer = URLSafeTimedSerializer(
            list(reversed(secret_keys)), salt="gazette.csrf.v2"
        )
        self.secure = secure
        self.cookie = cookie_name(secure)

    @staticmethod
    def new_cookie() -> str:
        """Return a fresh random cookie value."""
        return secrets.token_urlsafe(24)

    def token_for(self, cookie: str) -> str:
        """Return the form token that matches ``cookie``, dated now."""
        return str(self._serializer.dumps(cookie))

    def valid(self, cookie: str | None, token: str | None) -> bool:
        """True when the form token was minted for this visitor's cookie within LIFETIME."""
        if not cookie or not token:
            return False
        try:
            value = self._serializer.loads(token, max_age=int(LIFETIME.total_seconds()))
        except BadSignature:  # tampered, another visitor's, or expired (SignatureExpired)
            return False
        return isinstance(value, str) and hmac.compare_digest(value, cookie)
