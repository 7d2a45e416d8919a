"""The WSGI endpoint: subscribe, confirm, unsubscribe (RFC 8058 one-click), preferences.

``gazette.web:create_app`` builds the app; ``gazette serve`` runs it under waitress.
"""

from typing import Any

from gazette.config import Settings
from gazette.web.app import MAX_BODY, create_app

__all__ = ["MAX_BODY", "SERVER_MAX_BODY", "create_app", "server_options"]

# Over the app's limit by a margin, so that a form a little too large still gets the
# app's own (translated, headed) 413 page, and anything larger is never read.
SERVER_MAX_BODY = 2 * MAX_BODY


def server_options(settings: Settings) -> dict[str, Any]:
    """Options for waitress that the settings imply, used by `gazette serve` and tests.

    Waitress strips X-Forwarded-* headers unless told to keep them; behind
    GAZETTE_PROXY_HOPS proxies they are kept, and the app's ProxyFix trusts that many.
    Waitress would buffer a body of up to 1 GiB (to disk) before the app saw it; here
    it refuses one over twice the app's limit as soon as the headers or the chunks say
    so, unread. Between the two limits the app answers with its own 413 page.
    """
    return {
        "ident": "gazette",
        "clear_untrusted_proxy_headers": settings.proxy_hops == 0,
        "max_request_body_size": SERVER_MAX_BODY,
    }
