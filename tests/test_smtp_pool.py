"""A pool of SMTP sessions per worker process (GAZETTE_SMTP_CONNECTIONS).

Real relays on loopback (aiosmtpd), one that holds each message until as many are
being received at once as the test expects (so overlap is shown by what the relay saw,
not by a clock), one that allows only N connections and answers 421 to the next, and a
real worker killed with SIGKILL while many sessions are in flight. The ledger stays
exact: every message's outcome recorded once, and a refused login or sender still
waits and retries after a single message, as with one session.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from gazette.config import load_settings
from gazette.errors import ConfigError
from gazette.mail.outcomes import DeliveryError, Fault
from gazette.mail.pool import SMTPPool
from gazette.mail.transports import SMTPTransport
from gazette.ratelimit import LocalGate, RedisSessionGate
from gazette.store.models import DeliveryStatus
from gazette.url_settings import MailURL
from tests.support.env import installed_env, make_env
from tests.support.figures import record
from tests.support.reliability import (
    address,
    being_sent,
    ledger,
    load_issue,
    seed,
    wait_a_third_sent,
)
from tests.support.smtp import (
    MailCountingHandler,
    RecordingHandler,
    SMTPServer,
    by_recipient,
    message_ids,
)
from tests.support.workers import Worker, require_redis, wait_for

SENDER = "digest@news.example.org"
BACKEND = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@dataclass
class GatheringRelay(MailCountingHandler):
    """Holds each DATA until ``gather`` messages are being received at once (or 5 s).

    Once that many were in at the same time it holds nothing more: ``most`` is the most
    sessions the client kept busy together, which is what a pool is for.
    """

    gather: int = 1
    active: int = 0
    most: int = 0
    gathered: bool = False
    peers: set[tuple[str, int]] = field(default_factory=set)

    def on_mail(self, session: Any) -> None:
        """Note the client's address and port: one per session."""
        self.peers.add(session.peer)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            for _ in range(500):
                if self.gathered or self.active >= self.gather:
                    self.gathered = True
                    break
                await asyncio.sleep(0.01)
        finally:
            self.active -= 1
        return await super().handle_DATA(server, session, envelope)


class LimitedSMTP(SMTP):
    """aiosmtpd's session that greets with 421 when ``limit`` sessions are already open."""

    refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        handler = self.event_handler
        assert isinstance(handler, LimitedRelay)
        if handler.open >= handler.limit:
            handler.refused += 1
            self.refused = True
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(b"421 4.7.0 too many connections\r\n")
            transport.close()
            return
        handler.open += 1
        handler.most_open = max(handler.most_open, handler.open)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        handler = self.event_handler
        assert isinstance(handler, LimitedRelay)
        handler.open -= 1
        super().connection_lost(exc)


@dataclass
class LimitedRelay(GatheringRelay):
    """GatheringRelay that allows only ``limit`` connections at once."""

    limit: int = 1
    open: int = 0
    most_open: int = 0
    refused: int = 0


class LimitedController(Controller):
    def factory(self) -> SMTP:
        return LimitedSMTP(self.handler, hostname="127.0.0.1")


@contextmanager
def serving(handler: GatheringRelay) -> Iterator[int]:
    """The relay on a free loopback port; connections limited for a LimitedRelay."""
    kind = LimitedController if isinstance(handler, LimitedRelay) else Controller
    with SMTPServer(handler, controller=kind) as server:
        yield server.port


def pool(port: int, size: int = 10, **options: Any) -> SMTPPool:
    """A pool of ``size`` sessions to the relay on ``port``."""
    url = MailURL(scheme="smtp", host="127.0.0.1", port=port, timeout=10)
    return SMTPPool(url, 1000, size, **options)


def sent_through(
    handler: GatheringRelay, count: int, size: int = 10, **options: Any
) -> tuple[list[tuple[int, DeliveryError | None]], SMTPPool]:
    """Serve ``handler``, send ``count`` messages through one pool, close both."""
    with serving(handler) as port:
        sessions = pool(port, size, **options)
        try:
            return list(sessions.send_each(iter(stream(count)))), sessions
        finally:
            sessions.close()


def stream(count: int) -> list[tuple[int, str, str, bytes]]:
    return [
        (n, SENDER, f"reader{n}@example.org", f"Subject: {n}\r\n\r\nbody {n}\r\n".encode())
        for n in range(count)
    ]


def test_the_pool_keeps_its_sessions_busy_together_and_reports_every_message() -> None:
    handler = GatheringRelay(gather=10)
    outcomes, sessions = sent_through(handler, 60)
    assert sorted(key for key, _ in outcomes) == list(range(60))
    assert {failure for _, failure in outcomes} == {None}
    assert handler.most == 10
    assert sessions.most_sessions == 10
    assert by_recipient(handler.messages) == Counter(f"reader{n}@example.org" for n in range(60))


def test_a_relay_that_allows_three_connections_gets_three() -> None:
    handler = LimitedRelay(gather=3, limit=3)
    with serving(handler) as port:
        sessions = pool(port)
        try:
            outcomes = list(sessions.send_each(iter(stream(40))))
            # The pool keeps to what the relay allowed for the rest of its life.
            outcomes += list(sessions.send_each(iter(stream(80)[40:])))
        finally:
            sessions.close()
    assert sorted(key for key, _ in outcomes) == list(range(80))
    assert {failure for _, failure in outcomes} == {None}
    assert handler.refused >= 1
    assert handler.most_open == 3
    assert handler.most == 3
    assert by_recipient(handler.messages) == Counter(f"reader{n}@example.org" for n in range(80))


def test_a_refused_sender_stops_the_pool_after_one_message() -> None:
    handler = GatheringRelay(mail_reply="554 5.7.1 sender address rejected")
    outcomes, sessions = sent_through(handler, 30)
    # One message met the refusal; the rest were never handed to the relay, and are
    # not reported: the caller leaves them waiting with the same backoff.
    assert len(outcomes) == 1
    failure = outcomes[0][1]
    assert isinstance(failure, DeliveryError)
    assert (failure.session, failure.fault) == (True, Fault.RELAY)
    assert handler.mails == 1
    assert sessions.most_sessions == 1


def test_a_421_closes_one_session_and_the_message_goes_once() -> None:
    refused: set[str] = set()

    def every_tenth(address: str, _count: int) -> str | None:
        # Each tenth reader's first DATA only, whichever session carries it: keyed by the
        # global DATA count, a retry could land on the next tenth under load and fail again.
        number = int(address.removeprefix("reader").split("@")[0])
        if number % 10 != 5 or address in refused:
            return None
        refused.add(address)
        return "421 4.3.2 closing"

    handler = GatheringRelay(gather=5, data_script=every_tenth)
    outcomes, _ = sent_through(handler, 50, 5)
    assert sorted(key for key, _ in outcomes) == list(range(50))
    assert {failure for _, failure in outcomes} == {None}
    # Each reader once: the 421'd message was sent again, whole, on a new session.
    assert by_recipient(handler.messages) == Counter(f"reader{n}@example.org" for n in range(50))
    assert len(handler.peers) > 5


def test_the_transport_pools_only_when_asked() -> None:
    url = MailURL(scheme="smtp", host="127.0.0.1", port=25, timeout=10)
    with SMTPTransport(url, 100, 10).connect() as connection:
        assert isinstance(connection, SMTPPool)
    with SMTPTransport(url, 100, 1).connect() as connection:
        assert not isinstance(connection, SMTPPool)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("ten", "GAZETTE_SMTP_CONNECTIONS='ten' is not a whole number."),
        ("0", "GAZETTE_SMTP_CONNECTIONS='0' must be at least 1."),
        ("500", "GAZETTE_SMTP_CONNECTIONS='500' must be at most 100"),
    ],
)
def test_a_bad_connection_count_is_refused_by_name(tmp_path: Path, raw: str, words: str) -> None:
    env = make_env(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", smtp_connections=raw)
    with pytest.raises(ConfigError) as refused:
        load_settings(env, cwd=tmp_path)
    assert str(refused.value).startswith(words)


def test_ten_connections_per_process_is_the_default(tmp_path: Path) -> None:
    env = {"GAZETTE_VAR_DIR": str(tmp_path), "GAZETTE_SECRET_KEYS": "k" * 32}
    assert load_settings(env, cwd=tmp_path).smtp_connections == 10


def test_a_batch_sent_over_the_pool_records_every_row_once(
    tmp_path: Path, database_url: str
) -> None:
    from worker.tasks import enqueue_issue

    handler = GatheringRelay(gather=10)
    with serving(handler) as port:
        server_url = f"smtp://127.0.0.1:{port}"
        with installed_env(tmp_path, database_url, smtp_url=server_url, smtp_connections="10") as (
            _env,
            runtime,
        ):
            issue_id = seed(runtime, tmp_path, 300)
            enqueue_issue(issue_id)
            counts = ledger(runtime, issue_id)
            issue = load_issue(runtime, issue_id)
    assert counts == {DeliveryStatus.SENT: 300}
    assert issue.sent_count == 300
    assert by_recipient(handler.messages) == Counter(address(n) for n in range(300))
    assert handler.most == 10


# -- a worker killed with many sessions in flight --------------------------------------


@dataclass
class SlowRelay(GatheringRelay):
    """Takes ``delay`` seconds per message (awaited: its other sessions go on)."""

    delay: float = 0.02

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        return await RecordingHandler.handle_DATA(self, server, session, envelope)


@pytest.mark.slow
@pytest.mark.reliability
def test_a_worker_killed_with_many_sessions_in_flight_loses_nothing(
    tmp_path: Path, database_url: str
) -> None:
    from worker.tasks import enqueue_issue, sweep

    readers = 3000
    broker = require_redis()
    relay = SlowRelay()
    server = SMTPServer(relay)
    server.start()
    try:
        with installed_env(
            tmp_path, database_url, smtp_url=server.url, broker_url=broker,
            batch_size="200", lease_seconds="10", smtp_connections="10",
        ) as (env, runtime):  # fmt: skip
            issue_id = seed(runtime, tmp_path, readers)
            first = Worker(env, tmp_path / "first.log")
            second: Worker | None = None
            try:
                enqueue_issue(issue_id)
                wait_a_third_sent(runtime, issue_id, readers, 180)
                most_at_kill = relay.most
                first.kill()
                at_kill = ledger(runtime, issue_id)
                in_flight = being_sent(runtime, issue_id)
                restarted = time.monotonic()
                second = Worker(env, tmp_path / "second.log")
                last = -10.0

                def settled() -> bool:
                    nonlocal last
                    if load_issue(runtime, issue_id).sent_count == readers:
                        return True
                    if time.monotonic() - last > 2:
                        sweep.delay()
                        last = time.monotonic()
                    return False

                wait_for(settled, 240, "the sweep to settle the issue")
                recovery = time.monotonic() - restarted
            finally:
                first.stop()
                if second is not None:
                    second.stop()
            counts = ledger(runtime, issue_id)
    finally:
        server.stop()
    per_reader = by_recipient(relay.messages)
    duplicates = sum(n - 1 for n in message_ids(relay.messages).values())
    # Many sessions were sending when the worker died (two processes, ten each).
    assert most_at_kill > 2
    assert readers // 3 <= at_kill[DeliveryStatus.SENT] < readers
    assert at_kill[DeliveryStatus.SENDING] == len(in_flight) > 0
    # Nothing lost, and only rows claimed but unrecorded at the kill went twice.
    assert set(per_reader) == {address(n) for n in range(readers)}
    assert counts == {DeliveryStatus.SENT: readers}
    assert duplicates <= at_kill[DeliveryStatus.SENDING]
    assert {a for a, n in per_reader.items() if n > 1} <= in_flight
    record(
        f"worker SIGKILL, 10 SMTP sessions per process ({BACKEND[runtime.engine.dialect.name]})",
        f"{readers:,} deliveries to a relay taking 20 ms per message, GAZETTE_SMTP_CONNECTIONS=10, "
        "2 worker processes; killed with SIGKILL a third of the way, a new worker and the sweep",
        f"0 lost, {duplicates} duplicate(s) ({at_kill[DeliveryStatus.SENDING]} rows in flight, "
        f"{most_at_kill} messages being received at once before the kill), recovered in "
        f"{recovery:.1f} s",
        "0 lost; duplicates at most the rows in flight",
    )


def test_an_unexpected_error_in_a_session_is_raised_in_the_callers_thread() -> None:
    # A bug (here: a message that is not bytes) must not leave the caller waiting for an
    # outcome that never comes; it surfaces, and the rows wait for their lease.
    handler = GatheringRelay()
    broken = (0, SENDER, "reader0@example.org", "not bytes")
    with serving(handler) as port:
        sessions = pool(port)
        try:
            with pytest.raises(TypeError):
                list(sessions.send_each(iter([broken])))  # type: ignore[arg-type]
        finally:
            sessions.close()
    assert handler.messages == []


# -- the installation-wide cap (GAZETTE_SMTP_CONNECTIONS_TOTAL) --------------------------


def test_two_pools_sharing_a_redis_cap_of_three_open_three_sessions_between_them() -> None:
    broker = require_redis()
    gate = RedisSessionGate(broker, 3, f"test-{uuid4().hex[:8]}")
    handler = LimitedRelay(gather=3, limit=100)
    results: list[list[tuple[int, DeliveryError | None]]] = []
    with serving(handler) as port:
        pools = [pool(port, gate=gate) for _ in range(2)]

        def run(sessions: SMTPPool, first: int) -> None:
            results.append(list(sessions.send_each(iter(stream(first + 40)[first:]))))

        threads = [threading.Thread(target=run, args=(p, n * 40)) for n, p in enumerate(pools)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            for sessions in pools:
                sessions.close()
    outcomes = [outcome for run in results for outcome in run]
    assert sorted(key for key, _ in outcomes) == list(range(80))
    assert {failure for _, failure in outcomes} == {None}
    assert handler.most_open == 3
    assert by_recipient(handler.messages) == Counter(f"reader{n}@example.org" for n in range(80))
    # Closing the pools gave every place back.
    assert [gate.acquire(holder) for holder in "abcd"] == [True, True, True, False]


def test_a_pool_that_finds_no_place_under_the_cap_leaves_its_messages_waiting() -> None:
    gate = LocalGate(1)
    assert gate.acquire("another worker's session")
    handler = GatheringRelay()
    outcomes, _ = sent_through(handler, 5, gate=gate, patience=0.3)
    assert len(outcomes) == 1
    failure = outcomes[0][1]
    assert isinstance(failure, DeliveryError)
    assert failure.detail.startswith("connection failed: every SMTP session the installation")
    assert (failure.session, failure.permanent, failure.fault) == (True, False, Fault.RELAY)
    assert handler.mails == 0


def test_the_cap_is_read_strictly(tmp_path: Path) -> None:
    env = make_env(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", smtp_connections_total="-1")
    with pytest.raises(ConfigError) as refused:
        load_settings(env, cwd=tmp_path)
    assert str(refused.value) == "GAZETTE_SMTP_CONNECTIONS_TOTAL='-1' must be at least 0."
    env = make_env(tmp_path, f"sqlite:///{tmp_path / 'g.db'}", smtp_connections_total="4")
    assert load_settings(env, cwd=tmp_path).smtp_connections_total == 4
