"""Fixed-window rate limits: in Redis when a broker is configured, else in the database.

Used by the subscribe endpoint (per client IP, per address) and by confirmation mail
(at most one per address per hour), so a bot cannot turn Gazette into a mail cannon.
Also the sending rate across workers (Throttle) and the installation-wide cap on open
SMTP sessions (SessionGate), for relays that limit them.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

import redis
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gazette.addresses import AddressError, address_and_key
from gazette.store.models import RateLimit, utcnow


def _digest(key: str) -> str:
    """Fixed-length storage key: the raw key may hold anything a visitor typed."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def address_limit_key(raw: str) -> str:
    """What a per-address limit counts: the mailbox, however the address is spelt.

    Five spellings of one mailbox (letter case, full-width domain) share one counter.
    Text that is no address counts as given, stripped and lower-cased: it is refused
    later anyway, and must not get a counter per variant either.
    """
    try:
        return address_and_key(raw, allow_smtputf8=True)[1]
    except AddressError:
        return raw.strip().lower()


class RateLimiter(Protocol):
    """Counts hits per key in a window and says whether one more is allowed."""

    def hit(self, key: str, limit: int, window: timedelta) -> bool:
        """Count one hit on ``key``; True when it is within ``limit`` for the window."""

    def release(self, key: str) -> None:
        """Give back one hit, for an action that was counted but did not happen."""


class RedisRateLimiter:
    """INCR and EXPIRE in one round trip; shared by every web process and worker."""

    def __init__(self, url: str, namespace: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._prefix = f"{namespace}:rl:"

    def hit(self, key: str, limit: int, window: timedelta) -> bool:
        """Count one hit on ``key``; True when it is within ``limit`` for the window."""
        name = self._prefix + _digest(key)
        pipe = self._client.pipeline()
        pipe.incr(name)
        pipe.expire(name, int(window.total_seconds()), nx=True)
        count, _ = pipe.execute()
        return int(count) <= limit

    def release(self, key: str) -> None:
        """Give back one hit, for an action that was counted but did not happen."""
        self._client.decr(self._prefix + _digest(key))


class DatabaseRateLimiter:
    """The same counters in the rate_limit table, for the embedded default."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def hit(self, key: str, limit: int, window: timedelta) -> bool:
        """Count one hit on ``key``; True when it is within ``limit`` for the window."""
        now = utcnow()
        key = _digest(key)
        for _attempt in range(3):
            try:
                with self._sessions() as session, session.begin():
                    row = session.scalar(
                        select(RateLimit).where(RateLimit.key == key).with_for_update()
                    )
                    if row is None:
                        session.add(RateLimit(key=key, window_start=now, count=1))
                        return True
                    if now - row.window_start >= window:
                        row.window_start, row.count = now, 1
                        return True
                    row.count += 1
                    return row.count <= limit
            except IntegrityError:
                # Another process created the counter first; count again on its row.
                continue
        return False

    def release(self, key: str) -> None:
        """Give back one hit, for an action that was counted but did not happen."""
        with self._sessions() as session, session.begin():
            session.execute(
                update(RateLimit)
                .where(RateLimit.key == _digest(key), RateLimit.count > 0)
                .values(count=RateLimit.count - 1)
            )


def make_limiter(
    broker_url: str | None, sessions: sessionmaker[Session], namespace: str
) -> RateLimiter:
    """Redis when a broker is configured (it is shared by every process), else the database.

    ``namespace`` (the installation's queue name) keeps installations sharing one Redis
    from counting each other's hits.
    """
    if broker_url:
        return RedisRateLimiter(broker_url, namespace)
    return DatabaseRateLimiter(sessions)


class Throttle(Protocol):
    """Keeps the sending rate under the relay's limit, across every worker."""

    def wait(self) -> None:
        """Return when one more message may be sent."""


class NoThrottle:
    """No limit configured: send as fast as the relay takes it."""

    def wait(self) -> None:
        """Return at once."""


class RedisThrottle:
    """At most ``rate`` messages per wall-clock second over all workers sharing Redis.

    ``clock`` (seconds since the epoch) and ``sleep`` are the system's unless a test
    injects its own, to follow the windows without waiting on the real clock.
    """

    def __init__(
        self,
        url: str,
        rate: int,
        namespace: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = redis.Redis.from_url(url)
        self._rate = rate
        self._prefix = f"{namespace}:send-rate:"
        self._clock = clock
        self._sleep = sleep

    def wait(self) -> None:
        """Take a slot in the current second, or sleep into the next one and try again."""
        while True:
            now = self._clock()
            key = f"{self._prefix}{int(now)}"
            pipe = self._client.pipeline()
            pipe.incr(key)
            pipe.expire(key, 2)
            count, _ = pipe.execute()
            if int(count) <= self._rate:
                return
            self._sleep(max(0.0, math.ceil(now) - now) + 0.001)


class LocalThrottle:
    """The same limit within one process, for the embedded default (no Redis).

    ``clock`` (a monotonic one) and ``sleep`` are the system's unless a test injects its own.
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = clock()
        # Threads share it (the SMTP pool's senders, `gazette run`'s web and scheduler):
        # each takes its slot under the lock and sleeps outside it, so two never get one.
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Sleep until this thread's slot, taken from the process's next one."""
        with self._lock:
            now = self._clock()
            slot = max(self._next, now)
            self._next = slot + self._interval
        if slot > now:
            self._sleep(slot - now)


def make_throttle(broker_url: str | None, rate: int, namespace: str) -> Throttle:
    """A shared throttle through Redis, a local one without a broker, none when rate is 0."""
    if rate <= 0:
        return NoThrottle()
    if broker_url:
        return RedisThrottle(broker_url, rate, namespace)
    return LocalThrottle(rate)


class SessionGate(Protocol):
    """How many SMTP sessions the whole installation may hold open at once."""

    def acquire(self, holder: str) -> bool:
        """Take (or keep, when ``holder`` has it) one session's place; False when all are taken."""

    def release(self, holder: str) -> None:
        """Give ``holder``'s place back."""


class LocalGate:
    """The cap within one process, for the embedded default (no Redis, one process)."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._holders: set[str] = set()
        self._lock = threading.Lock()

    def acquire(self, holder: str) -> bool:
        """Take a place when one is free (a holder keeps the one it has)."""
        with self._lock:
            if holder in self._holders or len(self._holders) < self._cap:
                self._holders.add(holder)
                return True
            return False

    def release(self, holder: str) -> None:
        """Give the place back."""
        with self._lock:
            self._holders.discard(holder)


# Places are scored by when they lapse (Redis's own clock, the same for every machine):
# a worker killed without releasing frees its sessions' places after the TTL.
_ACQUIRE_SESSION = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) * 2)
  return 1
end
return 0
"""


class RedisSessionGate:
    """At most ``cap`` SMTP sessions open at once over every worker sharing Redis.

    A sorted set of holders, each scored by when its place lapses; a holder renews its
    place by acquiring again (a session does on each message, at most every few
    seconds), so a killed worker's places come free after ``ttl`` seconds.
    """

    def __init__(self, url: str, cap: int, namespace: str, ttl: float = 60.0) -> None:
        self._client = redis.Redis.from_url(url)
        self._key = f"{namespace}:smtp-sessions"
        self._cap = cap
        self.ttl = ttl
        self._script = self._client.register_script(_ACQUIRE_SESSION)

    def acquire(self, holder: str) -> bool:
        """Take or renew ``holder``'s place, atomically; False when the cap is reached."""
        return bool(self._script(keys=[self._key], args=[self._cap, self.ttl, holder]))

    def release(self, holder: str) -> None:
        """Give the place back."""
        self._client.zrem(self._key, holder)


def make_session_gate(broker_url: str | None, cap: int, namespace: str) -> SessionGate | None:
    """The installation-wide SMTP session cap: through Redis, in-process without a broker.

    None when no cap is set (``cap`` 0): each process opens what GAZETTE_SMTP_CONNECTIONS
    allows.
    """
    if cap <= 0:
        return None
    if broker_url:
        return RedisSessionGate(broker_url, cap, namespace)
    return LocalGate(cap)
