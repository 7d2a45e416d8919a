"""The WSGI endpoint: subscribe, confirm, unsubscribe (RFC 8058 one-click), preferences.

``gazette.web:create_app`` builds the app; ``gazette serve`` runs it under waitress.
"""

from gazette.web.app import create_app

__all__ = ["create_app"]
