"""CSRF protection for the forms: a random cookie and a signed copy in the form.

A cross-site page can make a browser send the cookie but cannot read it, so it cannot
produce the matching form field. The one-click unsubscribe POST is exempt by design:
mail providers send it without cookies.
"""

from __future__ import annotations

import hmac
import secrets

from itsdangerous import BadSignature, URLSafeSerializer

COOKIE = "gazette_csrf"
FIELD = "csrf_token"


class CsrfGuard:
    """Mints and checks form tokens bound to the visitor's CSRF cookie."""

    def __init__(self, secret_keys: tuple[str, ...]) -> None:
        self._serializer = URLSafeSerializer(list(reversed(secret_keys)), salt="gazette.csrf")

    @staticmethod
    def new_cookie() -> str:
        """Return a fresh random cookie value."""
        return secrets.token_urlsafe(24)

    def token_for(self, cookie: str) -> str:
        """Return the form token that matches ``cookie``."""
        return str(self._serializer.dumps(cookie))

    def valid(self, cookie: str | None, token: str | None) -> bool:
        """True when the form token was minted for this visitor's cookie."""
        if not cookie or not token:
            return False
        try:
            value = self._serializer.loads(token)
        except BadSignature:
            return False
        return isinstance(value, str) and hmac.compare_digest(value, cookie)
