"""Feedback-ID (Google Postmaster Tools): on every digest, one per issue, DKIM-signed.

Google's rules: at most four colon-separated fields, the SenderId right-most and
mandatory, nothing unique per message (it aggregates per identifier), and counted only
when a domain it verified signed the header. A real send to a loopback relay, signed.
"""

from __future__ import annotations

from pathlib import Path

import dkim

from tests.digests.helpers import BIG_ISSUE, DKIM_DOMAIN, SELECTOR, new_newsletter
from tests.support.digests import SLUG, RsaKey, add_articles, add_readers, plan, send
from tests.support.env import installed_runtime
from tests.support.messages import dkim_tags, parse
from tests.support.smtp import SMTPServer


def _send_six(
    tmp_path: Path, database_url: str, server: SMTPServer, key: RsaKey, **extra: str
) -> str:
    """Send one issue to six readers, signed; return the issue's public id."""
    with installed_runtime(
        tmp_path, database_url, smtp_url=server.url, dkim_key_file=str(key.private_pem),
        dkim_selector=SELECTOR, dkim_domain=DKIM_DOMAIN, **extra,
    ) as rt:  # fmt: skip
        newsletter_id = new_newsletter(rt)
        add_articles(rt, BIG_ISSUE[:2])
        add_readers(rt, [(f"r{n}@example.com", f"Reader {n}", "en") for n in range(6)])
        issue_id, public_id, _status = plan(rt, newsletter_id)
        assert send(rt, issue_id).sent_count == 6
    return public_id


def test_every_message_carries_the_issues_feedback_id_signed(
    tmp_path: Path, database_url: str, smtp_server: SMTPServer, dkim_key: RsaKey
) -> None:
    record = b"v=DKIM1; k=rsa; p=" + dkim_key.public_der_b64

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name.startswith(f"{SELECTOR}._domainkey.".encode()) else None

    public_id = _send_six(tmp_path, database_url, smtp_server, dkim_key)
    assert len(smtp_server.messages) == 6
    seen = set()
    for received in smtp_server.messages:
        message = parse(received.data)
        [value] = message.get_all("Feedback-ID") or []
        sender = message["From"].addresses[0].domain
        assert value == f"{public_id}:{SLUG}:gazette:{sender}"
        assert value.count(":") == 3
        assert value.split(":")[-1]
        seen.add(value)
        assert "feedback-id" in dkim_tags(message)["h"].lower().split(":")
        assert dkim.verify(received.data, dnsfunc=dns) is True
        forged = received.data.replace(b":gazette:", b":forged:")
        assert forged != received.data
        assert dkim.verify(forged, dnsfunc=dns) is False
    assert len(seen) == 1  # one per issue, never per reader


def test_the_sender_id_setting_is_the_right_most_field(
    tmp_path: Path, database_url: str, smtp_server: SMTPServer, dkim_key: RsaKey
) -> None:
    public_id = _send_six(
        tmp_path, database_url, smtp_server, dkim_key, feedback_sender_id="gz-news"
    )
    values = {parse(r.data)["Feedback-ID"] for r in smtp_server.messages}
    assert values == {f"{public_id}:{SLUG}:gazette:gz-news"}
