"""`gazette serve --processes N`: gunicorn's workers on one port; waitress for one.

Each test runs the real command as a subprocess on a fresh SQLite installation and
talks to it over loopback; processes are found through /proc.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.cli import healthy
from tests.support.env import make_env
from tests.support.smtp import free_port
from tests.support.workers import wait_for

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


@contextmanager
def serving(
    tmp_path: Path, processes: int, host: str = "127.0.0.1", threads: int = 8
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    env = _env(tmp_path)
    init = subprocess.run(
        [*GAZETTE, "init"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert init.returncode == 0, init.stderr
    port = free_port()
    with (tmp_path / "out.log").open("w") as out, (tmp_path / "err.log").open("w") as err:
        process = subprocess.Popen(
            [
                *(*GAZETTE, "serve", "--host", host, "--port", str(port)),
                *("--processes", str(processes), "--threads", str(threads)),
            ],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=err,
        )
    try:
        wait_for(lambda: healthy(port, 1), 60, "the server to answer")
        if processes > 1:
            # The first process may answer before the last one is forked.
            wait_for(lambda: len(_children(process.pid)) == processes, 60, "every process")
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        for child in _children(process.pid):
            os.kill(child, signal.SIGKILL)


def _each_serves_alone(children: list[int], port: int) -> None:
    """With one of the two processes stopped, the other must take every new connection."""
    assert len(children) == 2
    for paused, other in (children, list(reversed(children))):
        os.kill(paused, signal.SIGSTOP)
        try:
            assert all(healthy(port) for _ in range(5)), f"process {other} did not serve"
        finally:
            os.kill(paused, signal.SIGCONT)


# "localhost" hands gunicorn an IPv4 and an IPv6 socket bound here, where ::1 exists.
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_two_processes_each_serve_and_stop_together_on_sigterm(tmp_path: Path, host: str) -> None:
    with serving(tmp_path, 2, host) as (process, port):
        children = _children(process.pid)
        _each_serves_alone(children, port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        wait_for(lambda: not any(Path(f"/proc/{c}").exists() for c in children), 10, "exit")
        assert "with 2 processes of 8 threads" in (tmp_path / "out.log").read_text()
        assert "Using worker: gthread" in (tmp_path / "err.log").read_text()


def test_one_thread_runs_sync_workers_that_each_serve(tmp_path: Path) -> None:
    # Sync workers take a connection only when free, so a paused one takes none.
    with serving(tmp_path, 2, threads=1) as (process, port):
        _each_serves_alone(_children(process.pid), port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "with 2 processes of 1 thread." in (tmp_path / "out.log").read_text()
        assert "Using worker: sync" in (tmp_path / "err.log").read_text()


def test_a_killed_process_is_replaced_and_the_port_keeps_serving(tmp_path: Path) -> None:
    with serving(tmp_path, 2) as (process, port):
        killed, kept = _children(process.pid)
        os.kill(killed, signal.SIGKILL)

        def replaced() -> bool:
            # One look at /proc: the killed one reaped and a new one forked.
            found = set(_children(process.pid))
            return killed not in found and len(found - {kept}) == 1

        wait_for(replaced, 60, "a new process in place of the killed one")
        [new] = set(_children(process.pid)) - {kept}
        assert process.poll() is None
        # With the surviving original paused, only the replacement can answer.
        os.kill(kept, signal.SIGSTOP)
        try:
            wait_for(lambda: healthy(port, 1), 60, f"the new process {new} to serve")
        finally:
            os.kill(kept, signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


# "*" is every interface and "localhost" may name both 127.0.0.1 and ::1, as in waitress.
@pytest.mark.parametrize("host", ["127.0.0.1", "*", "localhost"])
def test_one_process_serves_without_forking(tmp_path: Path, host: str) -> None:
    with serving(tmp_path, 1, host) as (process, port):
        assert _children(process.pid) == []
        assert healthy(port)
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
