"""POST /webhooks/postmark: basic auth, then Bounce and SpamComplaint records, once each.

A real digest goes out with GAZETTE_MAIL_PROVIDER=postmark; each record's
Metadata.gazette is the token the X-PM-Metadata-gazette header carried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.routes import database_state
from tests.webhooks.hooks import (
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    Hooked,
    address,
    basic,
    hooked_site,
    reader_states,
)

AUTH = basic(POSTMARK_USER, POSTMARK_PASSWORD)


PROVIDER = "postmark"


def record(site: Hooked, name: str, record_id: int, record_type: str, bounce_type: str,
           details: str = "") -> dict[str, Any]:  # fmt: skip
    return {
        "RecordType": record_type, "ID": record_id, "Type": bounce_type, "TypeCode": 1,
        "Email": address(name), "Details": details, "Description": bounce_type,
        "Metadata": {"gazette": site.tokens[address(name)]}, "MessageStream": "outbound",
    }  # fmt: skip


def records(site: Hooked) -> dict[str, dict[str, Any]]:
    return {
        "hard": record(site, "hard", 101, "Bounce", "HardBounce", "smtp;550 5.1.1 no such user"),
        "soft": record(site, "soft", 102, "Bounce", "SoftBounce", "smtp;452 4.2.2 mailbox full"),
        "complaint": record(site, "complaint", 103, "SpamComplaint", "SpamComplaint"),
        "delayed": record(site, "delayed", 104, "Bounce", "Transient", "delayed, retrying"),
    }


def test_each_record_changes_exactly_its_reader_once(site: Hooked) -> None:
    before = reader_states(site.runtime)
    for body in records(site).values():
        answer = site.post("/webhooks/postmark", body, AUTH)
        assert answer.status == 200, answer.text
        assert answer.text.startswith("Applied:"), answer.text
    after = reader_states(site.runtime)
    assert after[address("bystander")] == before[address("bystander")]
    assert after[address("hard")].statuses == ("bounced",)
    assert after[address("soft")].statuses == ("active",)
    assert after[address("soft")].bounce_count == 1
    assert after[address("complaint")].statuses == ("complained",)
    assert after[address("delayed")].events - before[address("delayed")].events == {"delayed": 1}
    assert after[address("delayed")].bounce_count == 0

    state = database_state(site.runtime)
    for body in records(site).values():
        again = site.post("/webhooks/postmark", body, AUTH)
        assert (again.status, again.text.strip()) == (200, "Already applied.")
    # A record type Gazette does not act on (a delivery, an open) is answered, not applied.
    opened = records(site)["hard"] | {"RecordType": "Open", "ID": 999}
    assert site.post("/webhooks/postmark", opened, AUTH).status == 200
    assert database_state(site.runtime) == state


def test_every_forged_call_is_refused_and_writes_nothing(site: Hooked) -> None:
    body = records(site)["hard"]
    state = database_state(site.runtime)
    wrong = {
        "no credentials": {"Content-Type": "application/json"},
        "wrong password": basic(POSTMARK_USER, POSTMARK_PASSWORD + "x"),
        "wrong user": basic("someone", POSTMARK_PASSWORD),
        "password only": basic("", POSTMARK_PASSWORD),
        "bearer instead": {"Authorization": f"Bearer {POSTMARK_PASSWORD}"},
        "not base64": {"Authorization": "Basic %%%"},
    }
    for name, headers in wrong.items():
        answer = site.post("/webhooks/postmark", body, headers)
        assert answer.status == 401, (name, answer.status)
        assert answer.headers["WWW-Authenticate"].startswith("Basic")
        assert len(answer.text.strip().splitlines()) == 1
    assert database_state(site.runtime) == state


def test_a_forged_token_names_nobody_when_verp_is_required(
    tmp_path: Path, database_url: str
) -> None:
    with hooked_site(tmp_path, database_url, "postmark", bounce_require_verp="1") as site:
        body = records(site)["hard"]
        body["Metadata"] = {"gazette": site.tokens[address("hard")][:-1] + "a"}
        answer = site.post("/webhooks/postmark", body, AUTH)
        assert (answer.status, answer.text.strip()) == (200, "Applied: no reader matched.")
        assert reader_states(site.runtime)[address("hard")].statuses == ("active",)
