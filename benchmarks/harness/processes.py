"""Processes the benchmarks start: ports, child environments, process groups, Celery workers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from benchmarks.harness import timing

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(
    port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, every: float = 0.1
) -> None:
    """Poll ``condition`` until it holds; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_until_idle(pids: list[int], timeout: float, quiet: float = 0.5) -> None:
    """Wait until none of ``pids`` has used CPU for ``quiet`` seconds in a row.

    A process that is gone counts as idle. Raise TimeoutError when they never settle.
    """
    deadline = time.monotonic() + timeout
    last = [timing.cpu_seconds(pid) for pid in pids]
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = [timing.cpu_seconds(pid) for pid in pids]
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return
    raise TimeoutError(f"processes {pids} still busy after {timeout:.0f} s")


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without GAZETTE_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def stop_group(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM a process started with its own session, and SIGKILL what is left after."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    # Pool children can outlive a parent that was killed; reap the whole group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


class CeleryWorker:
    """One `celery -A <app> worker --pool prefork` process tree with its own environment."""

    def __init__(
        self, app: str, env: Mapping[str, str], log: Path, queue: str, concurrency: int = 2
    ) -> None:
        self.app = app
        self.queue = queue
        self.concurrency = concurrency
        self.hostname = f"{queue}@bench"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                f"--concurrency={concurrency}",
                "--pool=prefork",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                self.hostname,
                "-Q",
                queue,
            ],
            env=child_env(env),
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def pool_pids(self) -> list[int]:
        """The pool children's process ids."""
        return timing.descendants(self.pid)

    def wait_ready(self, broker_url: str, timeout: float = 60) -> None:
        """Wait until the worker answers a ping and its pool processes have started.

        The main process answers the ping while its pool processes may still be running
        their start-up (worker_process_init builds Gazette's runtime), which Celery does
        not report outside; they have finished when their CPU time stops moving, and
        only then may a run's CPU baseline be taken.
        """
        from celery import Celery

        control = Celery("bench-control", broker=broker_url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"celery worker exited with {self.process.returncode}; see {self.log}"
                    )
                replies = control.control.ping(destination=[self.hostname], timeout=0.5)
                if replies and len(self.pool_pids()) >= self.concurrency:
                    wait_until_idle(self.pool_pids(), max(deadline - time.monotonic(), 1))
                    return
            raise TimeoutError(f"celery worker not ready after {timeout:.0f} s; see {self.log}")
        finally:
            control.close()

    def stop(self) -> None:
        """Warm shutdown, then kill what is left."""
        stop_group(self.process)
        self._log.close()
