"""Fixed-window rate limits: in Redis when a broker is configured, else in the database.

Used by the subscribe endpoint (per client IP, per address) and by confirmation mail
(at most one per address per hour), so a bot cannot turn Gazette into a mail cannon.
"""

from __future__ import annotations

import hashlib
import math
import time
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
    """At most ``rate`` messages per wall-clock second over all workers sharing Redis."""

    def __init__(self, url: str, rate: int, namespace: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._rate = rate
        self._prefix = f"{namespace}:send-rate:"

    def wait(self) -> None:
        """Take a slot in the current second, or sleep into the next one and try again."""
        while True:
            now = time.time()
            key = f"{self._prefix}{int(now)}"
            pipe = self._client.pipeline()
            pipe.incr(key)
            pipe.expire(key, 2)
            count, _ = pipe.execute()
            if int(count) <= self._rate:
                return
            time.sleep(max(0.0, math.ceil(now) - now) + 0.001)


class LocalThrottle:
    """The same limit within one process, for the embedded default (no Redis)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()

    def wait(self) -> None:
        """Sleep until this process's next slot."""
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
        self._next = max(self._next, now) + self._interval


def make_throttle(broker_url: str | None, rate: int, namespace: str) -> Throttle:
    """A shared throttle through Redis, a local one without a broker, none when rate is 0."""
    if rate <= 0:
        return NoThrottle()
    if broker_url:
        return RedisThrottle(broker_url, rate, namespace)
    return LocalThrottle(rate)
