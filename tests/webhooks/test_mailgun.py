"""POST /webhooks/mailgun: a fresh HMAC signature whose token is new, then the event.

A real digest goes out with GAZETTE_MAIL_PROVIDER=mailgun; each event's
user-variables.gazette is the token the X-Mailgun-Variables header carried.
"""

from __future__ import annotations

from typing import Any

from tests.support.routes import database_state
from tests.webhooks.hooks import (
    Hooked,
    address,
    mailgun_signature,
    reader_states,
)

PROVIDER = "mailgun"


def event(site: Hooked, name: str, kind: str, severity: str = "", code: str = "",
          *, token: str | None = None, age: int = 0) -> dict[str, Any]:  # fmt: skip
    data: dict[str, Any] = {
        "event": kind, "id": f"event-{name}-{kind}", "recipient": address(name),
        "user-variables": {"gazette": site.tokens[address(name)]},
    }  # fmt: skip
    if severity:
        data |= {"severity": severity, "reason": "generic", "delivery-status": {
            "code": 550 if severity == "permanent" else 452, "enhanced-code": code,
            "message": f"{code} from the receiving server"}}  # fmt: skip
    now = int(site.clock()) - age
    return {"signature": mailgun_signature(now, token or f"tok-{name}-{kind}"), "event-data": data}


def events(site: Hooked) -> dict[str, dict[str, Any]]:
    return {
        "hard": event(site, "hard", "failed", "permanent", "5.1.1"),
        "soft": event(site, "soft", "failed", "permanent", "5.2.2"),
        "complaint": event(site, "complaint", "complained"),
        "delayed": event(site, "delayed", "failed", "temporary", "4.2.2"),
    }


def test_each_event_changes_exactly_its_reader_once(site: Hooked) -> None:
    before = reader_states(site.runtime)
    sent = events(site)
    for body in sent.values():
        answer = site.post("/webhooks/mailgun", body)
        assert answer.status == 200, answer.text
        assert answer.text.startswith("Applied:"), answer.text
    after = reader_states(site.runtime)
    assert after[address("bystander")] == before[address("bystander")]
    assert after[address("hard")].statuses == ("bounced",)
    assert after[address("soft")].statuses == ("active",)  # 5.2.2, mailbox full: soft
    assert after[address("soft")].bounce_count == 1
    assert after[address("complaint")].statuses == ("complained",)
    assert after[address("delayed")].events - before[address("delayed")].events == {"delayed": 1}

    # The same calls again (Mailgun's retries reuse the signature), and the same events
    # newly signed: 200, nothing changes.
    state = database_state(site.runtime)
    for name, body in sent.items():
        for again in (body, body | {"signature": mailgun_signature(int(site.clock()), name)}):
            answer = site.post("/webhooks/mailgun", again)
            assert (answer.status, answer.text.strip()) == (200, "Already applied."), name
    tables = database_state(site.runtime)
    tables.pop("rate_limit"), state.pop("rate_limit")  # the tokens seen are remembered
    assert tables == state


def test_every_forged_call_is_refused_and_writes_nothing(site: Hooked) -> None:
    genuine = event(site, "hard", "failed", "permanent", "5.1.1")
    used = event(site, "soft", "failed", "permanent", "5.2.2")
    assert site.post("/webhooks/mailgun", used).status == 200
    state = database_state(site.runtime)
    signature = genuine["signature"]
    forged = {
        "unsigned": {"event-data": genuine["event-data"]},
        "signature not hex": genuine | {"signature": signature | {"signature": "zz"}},
        "wrong key": genuine | {"signature": mailgun_signature(
            int(signature["timestamp"]), signature["token"], "key-someone-else-0123456789")},
        "timestamp changed": genuine | {"signature": signature | {
            "timestamp": str(int(signature["timestamp"]) + 1)}},
        "stale": event(site, "hard", "failed", "permanent", "5.1.1", age=301),
        "from the future": event(site, "hard", "failed", "permanent", "5.1.1", age=-301),
        "token reused for another event": genuine | {"signature": used["signature"]},
    }  # fmt: skip
    for name, body in forged.items():
        answer = site.post("/webhooks/mailgun", body)
        assert answer.status == 403, (name, answer.status, answer.text)
        assert len(answer.text.strip().splitlines()) == 1
    tables = database_state(site.runtime)
    # Only the reused token's counter moved (it is how the reuse was seen).
    tables.pop("rate_limit"), state.pop("rate_limit")
    assert tables == state
    assert reader_states(site.runtime)[address("hard")].statuses == ("active",)


def test_events_gazette_does_not_act_on_are_answered_and_ignored(site: Hooked) -> None:
    state = database_state(site.runtime)
    opened = event(site, "hard", "opened")
    for _ in range(2):  # a retry of it too: its token guards nothing
        answer = site.post("/webhooks/mailgun", opened)
        assert (answer.status, answer.text.strip()) == (
            200,
            "Not acted on: a Mailgun opened event.",
        )
    no_id = event(site, "hard", "failed", "permanent", "5.1.1")
    no_id["event-data"].pop("id")
    answer = site.post("/webhooks/mailgun", no_id)
    assert answer.text.strip() == "Not acted on: a Mailgun event without an id."
    assert database_state(site.runtime) == state
