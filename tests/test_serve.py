"""`gazette serve --processes N`: several waitress processes on one port, supervised.

Each test runs the real command as a subprocess on a fresh SQLite installation and
talks to it over loopback; processes are found through /proc.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import make_env
from tests.smtp import free_port

GAZETTE = [sys.executable, "-m", "gazette"]


def _env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
    clean.update(make_env(tmp_path, f"sqlite:///{tmp_path / 'gazette.db'}"))
    return clean


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ")".
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def _healthy(port: int, timeout: float = 5) -> bool:
    """True when a new connection to the server gets a 200 from /healthz."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _wait_until(predicate: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


@contextmanager
def serving(
    tmp_path: Path, processes: int, host: str = "127.0.0.1"
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    env = _env(tmp_path)
    init = subprocess.run(
        [*GAZETTE, "init"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert init.returncode == 0, init.stderr
    port = free_port()
    with (tmp_path / "out.log").open("w") as out, (tmp_path / "err.log").open("w") as err:
        process = subprocess.Popen(
            [*GAZETTE, "serve", "--host", host, "--port", str(port), "--processes", str(processes)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=err,
        )
    try:
        _wait_until(lambda: _healthy(port, 1), 60, "the server to answer")
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        for child in _children(process.pid):
            os.kill(child, signal.SIGKILL)


def test_two_processes_each_serve_and_stop_together_on_sigterm(tmp_path: Path) -> None:
    with serving(tmp_path, 2) as (process, port):
        children = _children(process.pid)
        assert len(children) == 2
        # With one process stopped, the other must take every new connection alone.
        for paused, other in (children, reversed(children)):
            os.kill(paused, signal.SIGSTOP)
            try:
                assert all(_healthy(port) for _ in range(5)), f"process {other} did not serve"
            finally:
                os.kill(paused, signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        _wait_until(lambda: not any(Path(f"/proc/{c}").exists() for c in children), 10, "exit")
        assert "with 2 processes of 8 threads" in (tmp_path / "out.log").read_text()


def test_a_process_that_dies_stops_the_set_with_a_failing_status(tmp_path: Path) -> None:
    with serving(tmp_path, 2) as (process, _port):
        first, second = _children(process.pid)
        os.kill(first, signal.SIGKILL)
        assert process.wait(timeout=30) == 1
        _wait_until(lambda: not Path(f"/proc/{second}").exists(), 10, "the other to exit")
        err = (tmp_path / "err.log").read_text()
        assert f"process {first} exited with status -9; stopping the others." in err


# "*" is every interface and "localhost" may name both 127.0.0.1 and ::1, as in waitress.
@pytest.mark.parametrize("host", ["127.0.0.1", "*", "localhost"])
def test_one_process_serves_without_forking(tmp_path: Path, host: str) -> None:
    with serving(tmp_path, 1, host) as (process, port):
        assert _children(process.pid) == []
        assert _healthy(port)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_port_in_use_is_one_sentence_and_exit_1(tmp_path: Path, processes: int) -> None:
    env = _env(tmp_path)
    subprocess.run([*GAZETTE, "init"], env=env, cwd=tmp_path, capture_output=True, timeout=120)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*GAZETTE, "serve", "--port", str(port), "--processes", str(processes)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        f"Cannot listen on 127.0.0.1:{port}: Address already in use."
    )
    assert "Traceback" not in result.stderr
