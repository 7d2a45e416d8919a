"""What the reliability scenarios share beyond tests/support/reliability.py."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import random
import string
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from hypothesis import strategies as st
from sqlalchemy import select

from gazette.articles.service import ALLOWED_TAGS
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import transaction
from gazette.store.models import Delivery, DeliveryStatus, Issue, IssueStatus
from gazette.web import create_app, server_options
from tests.support.env import installed_env
from tests.support.http import Browser, LiveServer, Page, serve
from tests.support.reliability import (
    SLUG,
    SlowHandler,
    address,
    duplicates,
    issue_sent,
    ledger,
    load_issue,
    parse_html,
    private_redis,
    seed,
    sweep_until,
    wait_a_third_sent,
    wait_ready,
)
from tests.support.smtp import RecordingHandler, SMTPServer, by_recipient, message_ids
from tests.support.workers import Worker

BASE_URL = "https://news.example.org"
SUMMARY_TAGS = frozenset(ALLOWED_TAGS)  # what sanitised summary HTML may hold
MARKER = "@@GAZETTE:"  # how gazette.rendering marks the per-reader values in a render


@dataclass(frozen=True)
class Outage:
    """What a broker outage scenario measured."""

    readers: int
    at_outage: Counter[DeliveryStatus]
    queued_at_outage: int
    queued_after: int
    recovery: float
    received: Counter[str]
    ids: Counter[str]
    recorded_ids: set[str | None]
    final: Counter[DeliveryStatus]
    issue: Issue
    worker_alive: bool
    worker_log: bytes

    @property
    def lost(self) -> int:
        """Readers who never got the issue."""
        return self.readers - len(self.received)


def broker_outage(tmp_path: Path, database_url: str, kind: str) -> Outage:
    """Send an issue through a real worker; restart or flush its Redis a third of the way in."""
    from worker.tasks import enqueue_issue

    readers = 3000
    relay = SlowHandler(delay=0.004)  # a few ms per message: the send lasts several seconds
    log = tmp_path / "worker.log"
    with (
        SMTPServer(relay) as smtp,
        private_redis(tmp_path) as broker,
        installed_env(
            tmp_path, database_url, broker_url=broker.url, smtp_url=smtp.url,
            batch_size="100", lease_seconds="10",
        ) as (env, runtime),
    ):  # fmt: skip
        queue = runtime.settings.queue
        issue_id = seed(runtime, tmp_path, readers)
        worker = Worker(env, log)
        try:
            wait_ready(log)
            assert enqueue_issue(issue_id) == readers // 100
            wait_a_third_sent(runtime, issue_id, readers, 120)
            with broker.client() as client:
                queued_at_outage = int(client.llen(queue))
                if kind == "restart":
                    broker.kill()
                else:
                    client.flushall()
            at_outage = ledger(runtime, issue_id)
            if kind == "restart":
                time.sleep(1.0)  # down for a moment, as a restart would be
                broker.start()
            with broker.client() as client:
                queued_after = int(client.llen(queue))
            recovering = time.monotonic()
            sweep_until(
                broker.url, queue, lambda: issue_sent(runtime, issue_id), 180,
                f"the sweep to finish the issue after the Redis {kind}",
            )  # fmt: skip
            recovery = time.monotonic() - recovering
            worker_alive = worker.process.poll() is None
        finally:
            worker.stop()
        with runtime.sessions() as session:
            recorded_ids = set(
                session.scalars(select(Delivery.message_id).where(Delivery.issue_id == issue_id))
            )
        return Outage(
            readers=readers,
            at_outage=at_outage,
            queued_at_outage=queued_at_outage,
            queued_after=queued_after,
            recovery=recovery,
            received=by_recipient(relay.messages),
            ids=message_ids(relay.messages),
            recorded_ids=recorded_ids,
            final=ledger(runtime, issue_id),
            issue=load_issue(runtime, issue_id),
            worker_alive=worker_alive,
            worker_log=log.read_bytes(),
        )


def check_outage(outage: Outage) -> None:
    """The bounds every broker outage must meet: nothing lost, few duplicates, all recorded."""
    readers = outage.readers
    # The outage landed mid-issue: rows were still waiting and tasks were queued.
    assert outage.at_outage[DeliveryStatus.PENDING] > 0, outage.at_outage
    assert outage.at_outage[DeliveryStatus.SENT] < readers
    assert outage.queued_at_outage > 0
    assert outage.queued_after == 0  # the queued tasks really were lost
    # Nothing lost: every reader got the issue, and the ledger says so.
    assert set(outage.received) == {address(n) for n in range(readers)}
    assert outage.final == {DeliveryStatus.SENT: readers}
    issue = outage.issue
    assert (issue.status, issue.sent_count, issue.failed_count) == (IssueStatus.SENT, readers, 0)
    assert set(outage.ids) == outage.recorded_ids
    # Only rows claimed when the broker went away could go out twice.
    assert duplicates(outage.received) <= outage.at_outage[DeliveryStatus.SENDING]
    # The same worker process carried on once the broker was back.
    assert outage.worker_alive


URL_SAFE = string.ascii_letters + string.digits + "-_"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed_bytes(token: str) -> tuple[str, bytes] | None:
    """A token's signed text and its decoded signature: what verification looks at."""
    head, sep, signature = token.rpartition(".")
    if not sep:
        return None
    try:
        return head, base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except (binascii.Error, ValueError):
        return None


def _mutations(token: str, rng: random.Random) -> str:
    """One random change: a bit flip, a substitution, an insertion, a deletion, a cut."""
    position = rng.randrange(len(token))
    kind = rng.randrange(7)
    if kind == 0:
        return (
            token[:position]
            + chr(ord(token[position]) ^ (1 << rng.randrange(8)))
            + token[position + 1 :]
        )
    if kind == 1:
        return token[:position] + rng.choice(URL_SAFE + ".") + token[position + 1 :]
    if kind == 2:
        return token[:position] + rng.choice(URL_SAFE + ".") + token[position:]
    if kind == 3:
        return token[:position] + token[position + 1 :]
    if kind == 4:
        return token[:position]
    if kind == 5:
        return token + "".join(rng.choices(URL_SAFE, k=rng.randrange(1, 8)))
    segments = token.split(".")
    rng.shuffle(segments)
    return ".".join(segments)


@dataclass
class Site:
    runtime: Runtime
    server: LiveServer
    smtp: SMTPServer
    newsletter_id: int

    def browser(self, *, cookies: bool = True) -> Browser:
        return Browser(self.server, cookies=cookies)


@contextmanager
def site(tmp_path: Path, database_url: str, **extra: str) -> Iterator[Site]:
    """The web endpoint on loopback over a fresh database, mailing to aiosmtpd."""
    with (
        SMTPServer(RecordingHandler()) as smtp,
        installed_env(tmp_path, database_url, smtp_url=smtp.url, **extra) as (_env, runtime),
    ):
        with transaction(runtime.sessions) as session:
            newsletter_id = create_newsletter(session, SLUG, "The Weekly", max_articles=200)
        with serve(create_app(runtime), **server_options(runtime.settings)) as server:
            yield Site(runtime, server, smtp, newsletter_id)


def form_token(browser: Browser) -> list[tuple[str, str]]:
    """The subscribe form's fields but the address, CSRF token included, for the cookie."""
    page = browser.get("/subscribe")
    assert page.status == 200, page.text
    return [(k, v) for k, v in page.form("/subscribe").fields if k != "email"]


def html_part(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def text_part(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    assert part.get_content_type() == "text/plain"
    content = part.get_content()
    assert isinstance(content, str)
    return content


def visible(document: str) -> str:
    return "".join(parse_html(document).text)


def flood(
    server: LiveServer, requests: list[tuple[list[tuple[str, str]], dict[str, str]]]
) -> list[Page]:
    """POST /subscribe for each (fields, headers), eight at a time, cookie-less clients."""
    client = Browser(server, cookies=False)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda r: client.post("/subscribe", r[0], r[1]), requests))


# Weighted towards files that should import, so both outcomes are well explored.
ENCODINGS = ["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "latin-1", "cp1251"]


EMAILS = [
    "ann@example.org", " Bob@Example.ORG ", "carol+tag@example.org", "=cmd@example.org",
    "dmytro@приклад.укр", "оксана@example.org", "bad@@example.org", "no-at-sign", "",
    '"quoted"@example.org', "x@xn--80ak6aa92e.com", "a@b", "ann@example.org", "e\x00@x.org",
    "taro.yamada@example.jp", "long" + "x" * 300 + "@example.org", "line\nbreak@example.org",
]  # fmt: skip
LANGUAGE_VALUES = ["en", "uk", "ja", "EN", " ja ", "xx", "", "Ємельян", "山田"]
GOOD_HEADERS = [
    ["email"], ["email", "name"], ["email", "name", "language"], [" Email ", "NAME"],
    ["\ufeffemail", "name"], ["email", "email"], ["email", "name", "language", "extra"],
]  # fmt: skip
BAD_HEADERS = [["name", "e-mail"], ["mail", "nom"], [], [""], ["name"]]


@st.composite
def csv_fields(draw: st.DrawFn) -> str:
    roll = draw(st.integers(0, 99))
    if roll < 40:
        return draw(st.sampled_from(EMAILS))
    if roll < 65:
        return draw(st.text(max_size=24))
    if roll < 82:
        return draw(st.text(alphabet=",\"\r\n\t; '=+-@\ufeff\x00", max_size=12))
    if roll < 97:
        return draw(st.sampled_from(LANGUAGE_VALUES))
    return "y" * draw(st.sampled_from([10_000, 10_001, 140_000]))


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """CSV files as people and programs write them, and as they get damaged."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\n\n", b"\x00" * 8]))
    roll = draw(st.integers(0, 9))
    if roll < 7:
        header = draw(st.sampled_from(GOOD_HEADERS))
    elif roll < 9:
        header = draw(st.sampled_from(BAD_HEADERS))
    else:
        header = draw(st.lists(st.text(max_size=10), max_size=4))
    rows = [header]
    for _ in range(draw(st.integers(0, 8))):
        first = draw(st.sampled_from(EMAILS)) if draw(st.booleans()) else draw(csv_fields())
        rows.append([first, *draw(st.lists(csv_fields(), max_size=3))])
    style = draw(st.sampled_from(["minimal", "minimal", "all", "raw"]))
    terminator = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    if style == "raw":  # joined by hand: stray quotes and newlines stay as they are
        text = terminator.join(",".join(row) for row in rows) + draw(st.sampled_from(["", "\n"]))
    else:
        buffer = io.StringIO()
        if style == "all":
            csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator=terminator).writerows(rows)
        else:
            csv.writer(buffer, lineterminator=terminator).writerows(rows)
        text = buffer.getvalue()
    data = text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    if draw(st.integers(0, 7)) == 0:  # binary junk somewhere
        junk = draw(st.binary(min_size=1, max_size=24))
        at = draw(st.integers(0, len(data)))
        data = data[:at] + junk + data[at:]
    if draw(st.integers(0, 9)) == 0 and data:  # cut short, maybe in mid-character
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data


def one_sentence(message: str) -> bool:
    return (
        bool(message)
        and "\n" not in message
        and message.endswith(".")
        and ("Traceback" not in message)
    )
