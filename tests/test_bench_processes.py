"""The benchmark harness's process helpers: a run's CPU baseline waits for start-up work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness.processes import wait_until_idle

# Busy for a fixed amount of work (not time), then marks it done and waits forever.
BUSY_THEN_IDLE = """
import sys, time
total = 0
for i in range(30_000_000):
    total += i
open(sys.argv[1], "w").write(str(total))
time.sleep(3600)
"""


def test_wait_until_idle_returns_only_after_the_busy_start(tmp_path: Path) -> None:
    done = tmp_path / "done"
    process = subprocess.Popen([sys.executable, "-c", BUSY_THEN_IDLE, str(done)])
    try:
        wait_until_idle([process.pid], timeout=60)
        assert done.read_text() == str(sum(range(30_000_000)))
    finally:
        process.kill()
        process.wait()


def test_processes_that_never_settle_time_out() -> None:
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with pytest.raises(TimeoutError, match=str(process.pid)):
            wait_until_idle([process.pid], timeout=1.5)
    finally:
        process.kill()
        process.wait()


def test_a_process_that_is_gone_counts_as_idle() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    wait_until_idle([process.pid], timeout=5)
