"""GET /metrics: the installation's figures in the Prometheus text format (gazette.metrics).

Loopback asks for nothing; any other client must send ``Authorization: Bearer
<GAZETTE_METRICS_TOKEN>`` (401 without the right one), and with no token configured it
is refused (403). The client's address is the one ProxyFix gives behind
GAZETTE_PROXY_HOPS proxies, so a proxy on the same host does not make everyone local.
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import Response, request
from prometheus_client import CONTENT_TYPE_LATEST

from gazette.metrics import exposition, snapshot
from gazette.store.models import utcnow
from gazette.web.pages import Pages

LOOPBACK_ONLY = (
    "Metrics are served to loopback only: set GAZETTE_METRICS_TOKEN and send it as a "
    "bearer token to read them from elsewhere."
)


def from_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (also written as an IPv4-mapped IPv6 address)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries ``token`` as its bearer token.

    Compared in constant time, so the answer's timing tells nothing of the token.
    """
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class MetricsViews(Pages):
    """GET /metrics."""

    def metrics(self) -> Response:
        """GET /metrics: gauges for Prometheus, for loopback or the bearer of the token."""
        token = self.rt.settings.metrics_token
        if not from_loopback(request.remote_addr):
            if token is None:
                return Response(LOOPBACK_ONLY + "\n", 403, mimetype="text/plain")
            if not bearer_matches(request.headers.get("Authorization"), token):
                return Response(
                    "This needs the bearer token GAZETTE_METRICS_TOKEN.\n",
                    401,
                    mimetype="text/plain",
                    headers={"WWW-Authenticate": 'Bearer realm="gazette metrics"'},
                )
        with self.rt.sessions() as session:
            taken = snapshot(session, utcnow())
        return Response(exposition(taken), 200, content_type=CONTENT_TYPE_LATEST)
