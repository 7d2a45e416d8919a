"""docker-compose.yml, proven without a container engine.

Each service's command from the compose file runs as a local process, with the compose
file's environment (service host names mapped to 127.0.0.1 and published ports to free
ones), against local PostgreSQL and Redis and an SMTP server in this process. A reader
subscribes through `web`, `beat` plans an issue on its schedule and `worker` sends it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from tests.support.env import PG_URL, make_env
from tests.support.http import Browser, LiveServer
from tests.support.smtp import RecordingHandler, SMTPServer, free_port
from tests.support.workers import require_redis, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
GAZETTE_SERVICES = ("migrate", "web", "worker", "beat")
_VARIABLE = re.compile(r"\$\{([A-Z_]+)(?::([-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} against ``env``."""

    def substitute(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if kind == "?":
            raise AssertionError(f"compose requires {name}: {rest}")
        return rest or ""

    return _VARIABLE.sub(substitute, value)


def localise(value: str, ports: dict[str, str]) -> str:
    """Map compose host names to loopback, published ports and /tmp paths to the test's."""
    for host in ("postgres", "redis", "mailpit"):
        value = value.replace(f"@{host}:", "@127.0.0.1:").replace(f"//{host}:", "//127.0.0.1:")
    for old, new in ports.items():
        value = value.replace(old, new)
    return value


def service(name: str) -> dict[str, Any]:
    definition = COMPOSE["services"][name]
    assert isinstance(definition, dict)
    return definition


def command_env(
    name: str, dotenv: dict[str, str], ports: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The service's command and environment as compose would give them, localised."""
    definition = service(name)
    environment = {
        key: localise(interpolate(str(value), dotenv), ports)
        for key, value in definition["environment"].items()
    }
    # env_file: .env supplies what the environment block does not set.
    merged = {**dotenv, **environment}
    command = [localise(str(part), ports) for part in definition["command"]]
    return command, merged


def test_compose_file_declares_the_stack() -> None:
    services = COMPOSE["services"]
    assert set(services) >= {"postgres", "redis", "migrate", "web", "worker", "beat", "mailpit"}
    assert services["mailpit"]["profiles"] == ["dev"]
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        ), name
    for name in GAZETTE_SERVICES:
        assert service(name)["command"][0] == "gazette", name
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["redis"]
    # `--scale worker=N` needs a worker without a fixed name or published port.
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]


class Stack:
    """The compose services as local processes, stopped together."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []

    def _env(self, env: dict[str, str]) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("GAZETTE_")}
        return {**base, **env}

    def run(self, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gazette", *command[1:]],
            env=self._env(env), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        self.logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "gazette", *command[1:]],
            env=self._env(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.processes.append(process)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(timeout=30)
        for log in self.logs:
            log.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path)
    yield running
    running.stop()


@pytest.mark.skipif(PG_URL is None, reason="set GAZETTE_TEST_DATABASE_URL: compose runs PostgreSQL")
def test_compose_commands_run_the_whole_job(
    tmp_path: Path, database_url: str, stack: Stack
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the compose stack runs on PostgreSQL")
    smtp = SMTPServer(RecordingHandler())
    smtp.start()
    try:
        web_port = free_port()
        ports = {"8000": str(web_port), ":1025": f":{smtp.port}", "/tmp/": f"{tmp_path}/"}
        test_env = make_env(tmp_path, database_url)
        broker = require_redis()
        # What an operator's .env would hold on this machine: the test database stands in
        # for the compose PostgreSQL, whose credentials exist only in its container.
        dotenv = {
            "GAZETTE_SECRET_KEYS": test_env["GAZETTE_SECRET_KEYS"],
            "GAZETTE_BASE_URL": f"http://127.0.0.1:{web_port}",
            "GAZETTE_QUEUE": test_env["GAZETTE_QUEUE"],
            "GAZETTE_BEAT_INTERVAL": "2",
            "GAZETTE_VAR_DIR": str(tmp_path / "var"),
        }
        commands = {name: command_env(name, dotenv, ports) for name in GAZETTE_SERVICES}
        for name, (_command, env) in commands.items():
            assert env["GAZETTE_BROKER_URL"].startswith("redis://127.0.0.1:6379"), name
            assert env["GAZETTE_SMTP_URL"] == f"smtp://127.0.0.1:{smtp.port}", name
            env["GAZETTE_DATABASE_URL"] = database_url
            env["GAZETTE_BROKER_URL"] = broker

        migrate, migrate_env = commands["migrate"]
        result = stack.run(migrate, migrate_env)
        assert result.returncode == 0, result.stderr
        admin = dict(migrate_env)
        assert stack.run(
            ["gazette", "newsletters", "add", "minutely", "--name", "Minutely",
             "--schedule", "* * * * *"],
            admin,
        ).returncode == 0  # fmt: skip
        for name in ("web", "worker", "beat"):
            stack.start(name, *commands[name])
        base = f"http://127.0.0.1:{web_port}"
        wait_for(lambda: _healthy(base), 30, "web's /healthz")

        browser = Browser(LiveServer("127.0.0.1", web_port))
        form = browser.get("/subscribe?newsletter=minutely")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        reply = browser.post(
            "/subscribe",
            {"csrf_token": token.group(1), "email": "reader@example.org", "newsletter": "minutely"},
        )
        assert reply.status == 200
        wait_for(lambda: len(smtp.messages) >= 1, 60, "the confirmation mail (sent by worker)")
        body = smtp.messages[0].parsed().get_body(("plain",))
        assert body is not None
        link = re.search(rf"{re.escape(base)}(/confirm/\S+)", body.get_content())
        assert link is not None
        page = browser.get(link.group(1))
        confirm_token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert confirm_token is not None
        assert browser.post(link.group(1), {"csrf_token": confirm_token.group(1)}).status == 200

        added = stack.run(
            ["gazette", "articles", "add", "--title", "Compose works",
             "--url", "https://example.org/compose"],
            admin,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        # beat plans an issue for each new minute; the first one after the article and
        # the confirmation carries both.
        wait_for(lambda: _digest_for(smtp) is not None, 150, "the digest planned by beat")
        digest = _digest_for(smtp)
        assert digest is not None
        assert "Compose works" in digest["Subject"]
        assert digest["List-Unsubscribe"].startswith(f"<{base}/unsubscribe/")
    finally:
        smtp.stop()


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _digest_for(smtp: SMTPServer) -> Any:
    for message in smtp.messages:
        parsed = message.parsed()
        # The welcome carries List-Unsubscribe too; its Message-ID says what it is.
        if parsed["List-Unsubscribe"] and not parsed["Message-ID"].startswith("<welcome."):
            return parsed
    return None
