"""A clock a test moves by hand, for code that takes ``clock`` and ``sleep`` callables.

Sleeping on it advances it at once instead of waiting, so a test of rates and windows
runs in no real time and its figures do not depend on how busy the machine is.
"""

from __future__ import annotations

import threading


class FakeClock:
    """Seconds as a float; ``sleep`` moves it forward, shared by every thread using it."""

    def __init__(self, now: float = 1_714_550_400.0) -> None:
        self._now = now
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        """The time now."""
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, as if that long had passed."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += seconds
