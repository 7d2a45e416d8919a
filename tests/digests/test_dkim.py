"""DKIM: every message carries a signature that verifies; bad DKIM settings are refused."""

from __future__ import annotations

from pathlib import Path

import dkim
import pytest

from gazette.config import load_settings
from gazette.errors import ConfigError
from tests.digests.helpers import (
    BIG_ISSUE,
    DKIM_CASES,
    DKIM_DOMAIN,
    LANGUAGES,
    SELECTOR,
    _dkim_settings,
    check_digest,
    new_newsletter,
    reader_name,
)
from tests.support.digests import BASE_URL, RsaKey, add_articles, add_readers, plan, send
from tests.support.env import installed_runtime, make_env
from tests.support.messages import dkim_tags, parse
from tests.support.smtp import SMTPServer


def test_every_message_carries_a_dkim_signature_that_verifies(
    tmp_path: Path, database_url: str, smtp_server: SMTPServer, dkim_key: RsaKey
) -> None:
    record = b"v=DKIM1; k=rsa; p=" + dkim_key.public_der_b64
    queried: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        queried.append(name)
        return (
            record if name.rstrip(b".") == f"{SELECTOR}._domainkey.{DKIM_DOMAIN}".encode() else None
        )

    with installed_runtime(
        tmp_path, database_url, smtp_url=smtp_server.url, dkim_key_file=str(dkim_key.private_pem),
        dkim_selector=SELECTOR, dkim_domain=DKIM_DOMAIN,
    ) as rt:  # fmt: skip
        assert rt.send_context.signer is not None
        newsletter_id = new_newsletter(rt)
        add_articles(rt, BIG_ISSUE[:3])
        readers = add_readers(
            rt, [(f"r{n}@example.com", reader_name(n), LANGUAGES[n % 3]) for n in range(6)]
        )
        issue_id, issue_public_id, _status = plan(rt, newsletter_id)
        assert send(rt, issue_id).sent_count == 6

        assert len(smtp_server.messages) == 6
        for received in smtp_server.messages:
            data = received.data
            assert data.startswith(b"DKIM-Signature:")
            reader = readers[received.recipients[0]]
            check_digest(rt, data, reader, issue_public_id, BIG_ISSUE[:3])
            assert dkim.verify(data, dnsfunc=dns) is True

            tags = dkim_tags(parse(data))
            assert (tags["v"], tags["a"], tags["c"]) == ("1", "rsa-sha256", "relaxed/relaxed")
            assert (tags["d"], tags["s"]) == (DKIM_DOMAIN, SELECTOR)
            signed = set(tags["h"].lower().split(":"))
            assert {"list-unsubscribe", "list-unsubscribe-post"} <= signed
            assert {"from", "to", "subject", "date", "message-id", "list-id"} <= signed

            # The signature covers what one-click unsubscribe relies on, and the body.
            swapped = data.replace(
                f"List-Unsubscribe: <{BASE_URL}/".encode(),
                b"List-Unsubscribe: <https://evil.example.net/",
            )
            assert swapped != data
            assert dkim.verify(swapped, dnsfunc=dns) is False
            dropped = data.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b"")
            assert dropped != data
            assert dkim.verify(dropped, dnsfunc=dns) is False
            body_at = data.index(b"\r\n\r\n") + 4
            edited = data[:body_at] + data[body_at:].replace(
                b"blog.example.com", b"blog.example.net"
            )
            assert edited != data
            assert dkim.verify(edited, dnsfunc=dns) is False
    assert set(queried) == {f"{SELECTOR}._domainkey.{DKIM_DOMAIN}.".encode()}


@pytest.mark.parametrize("case", sorted(DKIM_CASES))
def test_bad_dkim_settings_are_a_config_error_naming_the_variable(
    tmp_path: Path, dkim_key: RsaKey, case: str
) -> None:
    env = make_env(
        tmp_path, f"sqlite:///{tmp_path / 'unused.db'}", **_dkim_settings(case, tmp_path, dkim_key)
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(env, cwd=tmp_path)
    message = str(raised.value)
    assert DKIM_CASES[case] in message
    assert "\n" not in message
    assert "PRIVATE KEY" not in message
