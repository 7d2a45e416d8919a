"""The SMTP sink every mail scenario sends to, in a process of its own.

Postfix's ``smtp-sink`` (C, event-driven, discards everything) when it is installed;
otherwise this module's aiosmtpd sink: ``python -m benchmarks.harness.servers --port PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness.processes import ROOT, child_env, free_port, stop_group, wait_for_port

SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"


@dataclass
class Sink:
    """A running sink: which program, where, and its process."""

    kind: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_group(self.process, timeout=10)


def smtp_sink_path() -> str | None:
    """Postfix's smtp-sink, when installed."""
    return shutil.which("smtp-sink") or (SMTP_SINK if Path(SMTP_SINK).exists() else None)


def smtp_source_path() -> str | None:
    """Postfix's smtp-source (the matching C client), when installed."""
    return shutil.which("smtp-source") or (SMTP_SOURCE if Path(SMTP_SOURCE).exists() else None)


def _postfix_version() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "postfix"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return ""
    return f", postfix {out.stdout.strip()}" if out.returncode == 0 and out.stdout else ""


def start_sink(prefer_postfix: bool = True) -> Sink:
    """Start smtp-sink on a free loopback port, or the aiosmtpd sink when it is missing."""
    port = free_port()
    program = smtp_sink_path() if prefer_postfix else None
    if program is not None:
        # -u: smtp-sink refuses to run as root without a user to drop privileges to.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        command = [program, *user, "-4", "-m", "512", f"127.0.0.1:{port}", "1000"]
        kind = f"Postfix smtp-sink ({program}{_postfix_version()})"
    else:
        command = [sys.executable, "-m", "benchmarks.harness.servers", "--port", str(port)]
        kind = "aiosmtpd (benchmarks.harness.servers)"
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=child_env({}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, 30, process)
    except BaseException:
        stop_group(process, timeout=5)
        raise
    return Sink(kind, port, process)


class _Discard:
    """aiosmtpd handler that accepts and drops every message, counting them."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.count += 1
        return "250 OK"


def _serve(port: int) -> None:
    from aiosmtpd.smtp import SMTP

    handler = _Discard()
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(
            lambda: SMTP(handler, data_size_limit=64 * 1024 * 1024, hostname="sink"),
            host="127.0.0.1",
            port=port,
            backlog=1000,
        )
    )
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()
        print(f"sink: {handler.count} messages", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description="A discarding SMTP sink on 127.0.0.1.")
    parser.add_argument("--port", type=int, required=True)
    _serve(parser.parse_args().port)


if __name__ == "__main__":
    main()
