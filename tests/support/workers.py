"""Real `celery worker` processes on a real Redis broker, for the tests that need them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
import redis

REDIS_URL = os.environ.get("GAZETTE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def require_redis() -> str:
    """Return the test broker URL; skip when no Redis answers there (fail in CI)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no Redis at {REDIS_URL}; set GAZETTE_TEST_REDIS_URL")
    client.close()
    return REDIS_URL


class Worker:
    """One `celery -A worker worker` process with its own environment.

    ``command`` runs another long-lived process the same way instead (`gazette beat`,
    `gazette worker`), in its own process group, stopped the same way.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log: Path,
        concurrency: int = 2,
        command: Sequence[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
        full.update(env)
        self.log = log
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            list(command) if command is not None else [
                sys.executable, "-m", "celery", "-A", "worker", "worker",
                "--loglevel=INFO", f"--concurrency={concurrency}", "--pool=prefork",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            env=full,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once, as a crash would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """Ask for a warm shutdown; kill what is left after a while."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
