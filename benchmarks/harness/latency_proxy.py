"""A TCP proxy that delays every byte by a fixed time each way, as a distant relay would.

``python -m benchmarks.harness.latency_proxy --port P --target HOST:PORT --delay-ms D
[--stats FILE]``: each chunk read from one side is written to the other at its
arrival time plus D ms (a round trip through the proxy costs 2 D), in order, and
without waiting for the chunk before it to be written first: chunks in flight overlap,
as on a link with latency but ample bandwidth. The kernel's netem would do this, but
is not available in every sandbox. On SIGTERM the proxy writes what it saw (connections
accepted, the most open at once) to ``--stats`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Stats:
    """What the proxy saw: connections accepted, and the most open at one time."""

    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    bytes_forwarded: int = 0


class _DelayedPipe:
    """One direction of one connection: chunks forwarded at arrival + delay, in order."""

    def __init__(self, writer: asyncio.StreamWriter, delay: float, stats: Stats) -> None:
        self._writer = writer
        self._delay = delay
        self._stats = stats
        self._loop = asyncio.get_running_loop()
        self._queue: deque[tuple[float, bytes]] = deque()
        self._scheduled = False
        self._eof = False

    def push(self, chunk: bytes) -> None:
        """Queue ``chunk`` for writing at now + delay; the timer runs for the oldest only."""
        self._queue.append((self._loop.time() + self._delay, chunk))
        self._arm()

    def finish(self) -> None:
        """Half-close the far side once everything queued before the EOF is written."""
        self._eof = True
        self._arm()

    def _arm(self) -> None:
        if self._scheduled:
            return
        if self._queue:
            self._scheduled = True
            self._loop.call_at(self._queue[0][0], self._flush)
        elif self._eof:
            with contextlib.suppress(OSError, RuntimeError):
                if self._writer.can_write_eof():
                    self._writer.write_eof()

    def _flush(self) -> None:
        # Write every chunk whose time has come in one go, then wait for the next one.
        self._scheduled = False
        now = self._loop.time()
        while self._queue and self._queue[0][0] <= now:
            _, chunk = self._queue.popleft()
            self._stats.bytes_forwarded += len(chunk)
            if not self._writer.is_closing():
                self._writer.write(chunk)
        self._arm()


async def _pump(reader: asyncio.StreamReader, pipe: _DelayedPipe) -> None:
    """Read one side until EOF, handing each chunk to the delayed pipe."""
    try:
        while chunk := await reader.read(65536):
            pipe.push(chunk)
    except OSError:
        pass
    pipe.finish()


async def _handle(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
    delay: float,
    stats: Stats,
) -> None:
    """Connect to the target and forward both ways with the delay."""
    stats.connections += 1
    stats.open_now += 1
    stats.most_open = max(stats.most_open, stats.open_now)
    try:
        try:
            server_reader, server_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        upstream = _DelayedPipe(server_writer, delay, stats)
        downstream = _DelayedPipe(client_writer, delay, stats)
        await asyncio.gather(_pump(client_reader, upstream), _pump(server_reader, downstream))
        # Let the last delayed chunks (and the half-closes) go out before closing.
        await asyncio.sleep(delay + 0.05)
        for writer in (server_writer, client_writer):
            writer.close()
    finally:
        stats.open_now -= 1


async def serve(
    port: int, target: tuple[str, int], delay_ms: float, stats_path: Path | None
) -> None:
    """Listen on 127.0.0.1:``port`` until SIGTERM or SIGINT; then write the stats."""
    stats = Stats()
    delay = delay_ms / 1000
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, target, delay, stats), "127.0.0.1", port, backlog=1000
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    if stats_path is not None:
        stats_path.write_text(json.dumps(asdict(stats)))


def main() -> None:
    """Parse the command line and run the proxy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay")
    parser.add_argument("--stats", type=Path, default=None)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    asyncio.run(serve(args.port, (host, int(port)), args.delay_ms, args.stats))


if __name__ == "__main__":
    main()
