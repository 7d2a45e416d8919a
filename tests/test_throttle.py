"""The send-rate throttle keeps to its rate, per process and across processes via Redis.

Both throttles run on an injected clock whose sleep moves it on: the figures are the
throttle's own windows, never wall-clock readings taken after a thread woke up.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter

import pytest

from gazette.ratelimit import LocalThrottle, NoThrottle, RedisThrottle, make_throttle
from tests.support.clock import FakeClock
from tests.support.workers import require_redis


def test_make_throttle_picks_by_settings() -> None:
    assert isinstance(make_throttle(None, 0, "q"), NoThrottle)
    assert isinstance(make_throttle(None, 5, "q"), LocalThrottle)
    assert isinstance(make_throttle("redis://127.0.0.1:6379/15", 5, "q"), RedisThrottle)


def test_local_throttle_spaces_messages() -> None:
    clock = FakeClock()
    throttle = LocalThrottle(rate=50, clock=clock, sleep=clock.sleep)
    started = clock()
    for _ in range(26):
        throttle.wait()
    elapsed = clock() - started
    # 26 slots at 50/s: the first is immediate, the other 25 need half a second.
    assert elapsed >= 0.48
    assert elapsed == pytest.approx(0.5)


def test_local_throttle_gives_threads_distinct_slots() -> None:
    """Threads sharing one throttle (gazette run's web and scheduler) each get their own slot.

    The clock stands still; reading it and sleeping both yield, the moments a race would
    let several threads take the same next slot; the sleeps asked for say which they got.
    """
    clock = FakeClock()
    asked: list[float] = []
    lock = threading.Lock()

    def yielding_clock() -> float:
        reading = clock()
        time.sleep(0.005)  # not a timing assert: it lets the other threads run here
        return reading

    def sleep(seconds: float) -> None:
        with lock:
            asked.append(seconds)
        time.sleep(0.005)  # a sleeping thread lets the others take their slots meanwhile

    throttle = LocalThrottle(rate=10, clock=yielding_clock, sleep=sleep)
    threads = [threading.Thread(target=throttle.wait) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One thread takes the current slot without sleeping; the others 0.1 s apart each.
    assert sorted(asked) == pytest.approx([0.1 * n for n in range(1, 8)])


def test_redis_throttle_holds_the_rate_across_threads() -> None:
    url = require_redis()
    namespace = f"test-{secrets.token_hex(6)}"
    rate = 20
    clock = FakeClock()
    windows: list[int] = []
    lock = threading.Lock()

    def sender() -> None:
        # One throttle per worker, as in production; each records the clock reading its
        # last attempt used, which names the window the slot it took was counted in.
        seen = threading.local()

        def reading() -> float:
            seen.now = clock()
            return float(seen.now)

        throttle = RedisThrottle(url, rate, namespace, clock=reading, sleep=clock.sleep)
        for _ in range(15):
            throttle.wait()
            with lock:
                windows.append(int(seen.now))

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(windows) == 60
    per_second = Counter(windows)
    # Windows are clock seconds shared through Redis: none may exceed the rate.
    assert max(per_second.values()) <= rate
    assert len(per_second) >= 3  # 60 messages at 20/s need three windows
