"""A pool of SMTP sessions to one relay, each in a thread, kept busy together.

A distant relay spends most of a message's time on round trips; sessions that wait
side by side overlap them instead of adding them up (issue 20). Each session is an
SMTPConnection (gazette.mail.smtp) with its rules unchanged; the pool decides when to
open another, when to stop (a refused session), and how to share an installation-wide
cap on sessions (GAZETTE_SMTP_CONNECTIONS_TOTAL).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast
from uuid import uuid4

from gazette.mail.outcomes import DeliveryError, K
from gazette.mail.smtp import SMTPConnection
from gazette.url_settings import MailURL

if TYPE_CHECKING:
    from gazette.ratelimit import SessionGate


class _Job:
    """One message handed to the pool, and the session that took it (if any)."""

    __slots__ = ("error", "key", "message", "recipient", "sender")

    def __init__(self, key: object, sender: str, recipient: str, message: bytes) -> None:
        self.key = key
        self.sender = sender
        self.recipient = recipient
        self.message = message
        # An unexpected exception the session met, raised again in the caller's thread.
        self.error: Exception | None = None


@dataclass
class _SessionState:
    """What one of the pool's sessions keeps from one message to the next."""

    holder: str  # its place under the installation-wide cap
    connection: SMTPConnection
    admitted: bool  # whether it holds that place
    backoff: float = 0.0  # seconds to wait after the relay's next 421
    counted: bool = False  # whether it counts among the pool's live sessions
    renewed: float = field(default_factory=time.monotonic)  # when its place was renewed


# What a pool session says about a job: sent (with its failure or None), never tried
# because the batch halted before the session reached it, or crashed (a bug, raised).
_SENT, _UNTRIED, _CRASHED = "sent", "untried", "crashed"
# After a 421 that outlived the session's own retry, that session waits this long
# (doubling, up to the cap) before taking the next message: the relay asked for room.
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 30.0
# How long a pool's first session waits for a place under the installation-wide cap
# before its message waits for a retry like any unreachable relay's.
GATE_PATIENCE = 60.0


class SMTPPool:
    """Up to ``size`` SMTP sessions to one relay, each in a thread, kept busy together.

    A distant relay spends most of a message's time on round trips; sessions that wait
    side by side overlap them instead of adding them up. Each session is an
    SMTPConnection (its reconnect-once, 421 and RSET rules unchanged) driven by a thread
    of its own, while the caller's thread composes the next messages. The pool starts
    with one session and adds the others only once a message has gone through: a relay
    that refuses the login or the sender refuses them all, and one message is enough
    to learn it, as with a single connection. A relay that refuses a further session
    (a connection limit) while others work shrinks the pool to the sessions it allowed;
    the message goes to another session. With an installation-wide cap (``gate``), a
    session opens only with a place in it: extra sessions only when one is free, the
    first waiting up to ``patience`` seconds.
    """

    def __init__(
        self,
        url: MailURL,
        max_per_connection: int,
        size: int,
        *,
        pipelining: bool = True,
        gate: SessionGate | None = None,
        patience: float = GATE_PATIENCE,
    ) -> None:
        self._url = url
        self._gate = gate
        self._patience = patience
        self._max = max_per_connection
        self._pipelining = pipelining
        self._limit = size
        self._work: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[_Job, DeliveryError | None, str]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._live = 0  # sessions that opened and still run
        self._delivered = False  # a message has gone through: the pool may grow
        self._halted = threading.Event()
        self._closing = threading.Event()
        self.most_sessions = 0

    def send(self, sender: str, recipient: str, message: bytes) -> None:
        """Send one message through the pool; raise DeliveryError if it was refused."""
        for _key, failure in self.send_each([(None, sender, recipient, message)]):
            if failure is not None:
                raise failure

    def send_each(
        self, messages: Iterable[tuple[K, str, str, bytes]]
    ) -> Iterator[tuple[K, DeliveryError | None]]:
        """Send each message on whichever session is free; yield outcomes as they come.

        Outcomes come in the order the relay gives them, not the order of ``messages``.
        After a refusal of the session (login, sender, TLS, connection), the messages
        not yet handed to the relay are not yielded: the caller leaves them waiting,
        as it does those it had not yet given.
        """
        self._halted.clear()
        source = iter(messages)
        in_flight = 0
        exhausted = False
        while True:
            while not exhausted and not self._halted.is_set() and in_flight < self._room():
                try:
                    key, sender, recipient, message = next(source)
                except StopIteration:
                    exhausted = True
                    break
                self._work.put(_Job(key, sender, recipient, message))
                in_flight += 1
                self._grow(in_flight)
            if in_flight == 0:
                return
            job, failure, how = self._done.get()
            in_flight -= 1
            if how == _UNTRIED:
                continue
            if how == _CRASHED and job.error is not None:
                self._halted.set()
                raise job.error
            if failure is not None and failure.session:
                self._halted.set()
            yield cast(K, job.key), failure

    def _room(self) -> int:
        """Messages handed out at once: two per session (one sending, one composed ahead).

        The queue of composed messages keeps every session busy while the caller's thread
        is away writing the ledger or reading the next chunk's readers.
        """
        with self._lock:
            return 2 * self._limit if self._delivered else 2

    def _grow(self, in_flight: int) -> None:
        """Start another session when every one is busy and the relay may take more."""
        with self._lock:
            sessions = len(self._threads)
            wanted = sessions == 0 or (
                self._delivered and sessions < self._limit and in_flight > sessions
            )
            if not wanted:
                return
            holder = uuid4().hex
            first = sessions == 0
            if not first and self._gate is not None and not self._gate.acquire(holder):
                return  # the installation's sessions are all in use: grow later
            thread = threading.Thread(
                target=self._session, args=(holder, first), name="smtp-session", daemon=True
            )
            self._threads.append(thread)
            self.most_sessions = max(self.most_sessions, len(self._threads))
        thread.start()

    def _session(self, holder: str, first: bool) -> None:
        """One session's loop: take a message, send it, report; until the pool closes.

        ``holder`` names its place under the installation-wide cap (the first session
        of a pool takes it here, waiting; the others were given one).
        """
        state = _SessionState(
            holder,
            SMTPConnection(self._url, self._max, pipelining=self._pipelining),
            admitted=not first or self._gate is None,
        )
        try:
            while (job := self._work.get()) is not None:
                if self._ready(state, job) and not self._send(state, job):
                    return
        finally:
            self._leave(state)

    def _ready(self, state: _SessionState, job: _Job) -> bool:
        """Whether the session may send ``job``; if not, the job is reported untried or refused.

        A halted pool sends nothing more; a first session waits for its place under the
        cap; a session with a place renews it before it lapses.
        """
        if self._halted.is_set():
            self._done.put((job, None, _UNTRIED))
            return False
        if not state.admitted:
            state.admitted = self._admit(state.holder)
            if not state.admitted:
                self._halted.set()
                self._done.put((job, _no_place(self._patience), _SENT))
                return False
        elif self._gate is not None and time.monotonic() - state.renewed > 5:
            state.renewed = time.monotonic()
            self._gate.acquire(state.holder)  # renew the place before it lapses
        return True

    def _send(self, state: _SessionState, job: _Job) -> bool:
        """Send one job and report it; False when the session ends and hands the job back."""
        try:
            state.connection.send(job.sender, job.recipient, job.message)
            failure: DeliveryError | None = None
        except DeliveryError as refused:
            failure = refused
        except Exception as error:
            # Never swallowed: the caller raises it, and the batch's claimed rows
            # wait for their lease, as when a single session raises.
            job.error = error
            self._done.put((job, None, _CRASHED))
            state.connection.close()
            return True
        return self._report(state, job, failure)

    def _report(self, state: _SessionState, job: _Job, failure: DeliveryError | None) -> bool:
        """Report a sent job's outcome, and wait after a 421; False when the job is handed back."""
        connection = state.connection
        if not connection.opened and failure is not None and self._refused_extra():
            self._work.put(job)  # another session sends it
            return False
        if failure is not None and failure.session:
            # At once, before this session or another takes the next message.
            self._halted.set()
        if connection.opened and not state.counted:
            state.counted = True
            with self._lock:
                self._live += 1
        if failure is None:
            with self._lock:
                self._delivered = True
            state.backoff = 0.0
        self._done.put((job, failure, _SENT))
        if failure is not None and failure.code == 421:
            state.backoff = min(max(state.backoff * 2, BACKOFF_FIRST), BACKOFF_CAP)
            self._closing.wait(state.backoff)
        return True

    def _leave(self, state: _SessionState) -> None:
        """A session's end: it no longer counts, says QUIT, and gives its place back."""
        with self._lock:
            self._threads.remove(threading.current_thread())
            self._live -= state.counted
        state.connection.close()
        if self._gate is not None and state.admitted:
            self._gate.release(state.holder)

    def _admit(self, holder: str) -> bool:
        """Wait up to the pool's patience for a place under the installation-wide cap."""
        assert self._gate is not None
        deadline = time.monotonic() + self._patience
        while not self._gate.acquire(holder):
            if time.monotonic() >= deadline or self._closing.wait(0.2):
                return False
        return True

    def _refused_extra(self) -> bool:
        """A session that never opened, while others run: the relay's connection limit.

        The pool keeps the sessions the relay allowed and grows no further.
        """
        with self._lock:
            if self._live == 0:
                return False
            self._limit = max(1, min(self._limit, self._live))
            return True

    def close(self) -> None:
        """End every session (QUIT) and wait for their threads."""
        self._closing.set()
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._work.put(None)
        for thread in threads:
            thread.join()


def _no_place(patience: float) -> DeliveryError:
    """The refusal of a session that found no place under the cap: wait and retry."""
    return DeliveryError(
        f"connection failed: every SMTP session the installation may open "
        f"(GAZETTE_SMTP_CONNECTIONS_TOTAL) stayed in use for {patience:g} s",
        permanent=False,
        session=True,
    )
