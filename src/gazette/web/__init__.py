"""The WSGI endpoint: subscribe, confirm, unsubscribe (RFC 8058 one-click), preferences.

``gazette.web:create_app`` builds the app; ``gazette serve`` runs it under waitress.
"""

from typing import Any

from gazette.config import Settings
from gazette.web.app import create_app

__all__ = ["create_app", "server_options"]


def server_options(settings: Settings) -> dict[str, Any]:
    """Options for waitress that the settings imply, used by `gazette serve` and tests.

    Waitress strips X-Forwarded-* headers unless told to keep them; behind
    GAZETTE_PROXY_HOPS proxies they are kept, and the app's ProxyFix trusts that many.
    """
    return {"ident": "gazette", "clear_untrusted_proxy_headers": settings.proxy_hops == 0}
