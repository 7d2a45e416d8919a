"""Only POST changes state: every route, every other method, through the real HTTP server.

The routes are read from the app's own URL map, so a route added later is covered
without touching this file (a route with a new kind of argument fails here until a
valid value for it is named below). Each request carries everything that would make
a POST act: a valid token for the route, the CSRF cookie and its form token, the
one-click field, an address to subscribe. The whole database, every table and row,
must be the same afterwards, on SQLite and PostgreSQL, and no mail may leave.
"""

from __future__ import annotations

from tests.support.routes import Seeded, probe_every_route


def test_no_method_but_post_changes_anything_on_any_route(seeded: Seeded) -> None:
    probe = probe_every_route(seeded)
    # The map is the app's own: Flask adds OPTIONS to every route and HEAD to every GET.
    endpoints = {r.endpoint for r in probe.rules}
    assert {"confirm", "unsubscribe", "preferences", "subscribe_post"} <= endpoints
    assert all("OPTIONS" in (r.methods or ()) for r in probe.rules)
    assert all("HEAD" in (r.methods or ()) for r in probe.rules if "GET" in (r.methods or ()))
    assert probe.before["delivery"], "the sent issue's ledger is part of what must not change"
    assert probe.after == probe.before
    assert probe.mails == 0
    # HEAD is answered like GET wherever GET is; the other methods are refused.
    for (rule_path, method, _action), status in probe.answered.items():
        if method in ("PUT", "PATCH", "DELETE"):
            assert status == 405, (rule_path, method, status)
        if method == "OPTIONS":
            assert status == 200, (rule_path, method, status)

    # The same fields POSTed do act, so the comparison above can see a change.
    assert probe.post_that_acts(seeded) != probe.before
