"""The send-rate throttle keeps to its rate, per process and across processes via Redis."""

from __future__ import annotations

import secrets
import threading
import time

from gazette.ratelimit import LocalThrottle, NoThrottle, RedisThrottle, make_throttle
from tests.workers import require_redis


def test_make_throttle_picks_by_settings() -> None:
    assert isinstance(make_throttle(None, 0, "q"), NoThrottle)
    assert isinstance(make_throttle(None, 5, "q"), LocalThrottle)
    assert isinstance(make_throttle("redis://127.0.0.1:6379/15", 5, "q"), RedisThrottle)


def test_local_throttle_spaces_messages() -> None:
    throttle = LocalThrottle(rate=50)
    started = time.monotonic()
    for _ in range(26):
        throttle.wait()
    elapsed = time.monotonic() - started
    # 26 slots at 50/s: the first is immediate, the other 25 need half a second.
    assert elapsed >= 0.48


def test_redis_throttle_holds_the_rate_across_threads() -> None:
    url = require_redis()
    namespace = f"test-{secrets.token_hex(6)}"
    rate = 20
    stamps: list[float] = []
    lock = threading.Lock()

    def sender() -> None:
        throttle = RedisThrottle(url, rate, namespace)  # one per worker, as in production
        for _ in range(15):
            throttle.wait()
            with lock:
                stamps.append(time.time())

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(stamps) == 60
    per_second: dict[int, int] = {}
    for stamp in stamps:
        per_second[int(stamp)] = per_second.get(int(stamp), 0) + 1
    # Windows are wall-clock seconds shared through Redis: none may exceed the rate.
    assert max(per_second.values()) <= rate
    assert len(per_second) >= 3  # 60 messages at 20/s need three windows
