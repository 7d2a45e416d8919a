"""What a run costs: CPU and memory of processes and the machine, and a command timer.

Statistics come from psutil when installed (the bench extra), else /proc; the fallback
keeps the correctness test (tests/test_bench.py) runnable with the dev extra alone.
``TreeSampler`` samples a process tree (a Celery worker and its pool) in a thread.
``python -m benchmarks.harness.timing -- COMMAND...`` runs one command in a fresh
process and prints its wall time and peak memory as JSON, so
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is the peak RSS of that command alone.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import psutil  # type: ignore[import-not-found,import-untyped,unused-ignore]
except ImportError:  # pragma: no cover - depends on the installed extras
    psutil = None  # type: ignore[assignment,unused-ignore]

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields follow it.
    return raw[raw.rfind(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of a live process, or None when it is gone."""
    if psutil is not None:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``."""
    if psutil is not None:
        try:
            return [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def own_cpu_seconds() -> float:
    """CPU seconds of this process so far."""
    times = os.times()
    return times.user + times.system


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores."""
    if psutil is not None:
        times = psutil.cpu_times()
        total = float(sum(times))
        idle = float(times.idle + getattr(times, "iowait", 0.0))
        return total - idle, total
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) / _TICKS for v in first[:8]]  # user nice system idle iowait irq softirq steal
    total = sum(values)
    return total - values[3] - values[4], total


def memory_total() -> int:
    """Physical memory in bytes."""
    if psutil is not None:
        return int(psutil.virtual_memory().total)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def peak_rss(pid: int) -> int:
    """Peak resident set size of a live process (VmHWM), or its RSS, or 0 when gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if psutil is not None:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return 0
    return 0


@dataclass
class TreeSample:
    """CPU seconds (user + system) per process id, at one moment."""

    cpu: dict[int, float] = field(default_factory=dict)


class TreeSampler:
    """Samples a process tree's CPU time and peak memory in a background thread."""

    def __init__(self, root: int, interval: float = 0.25) -> None:
        self.root = root
        self.interval = interval
        self.peak_hwm: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._lock = threading.Lock()
        self._last = TreeSample()

    def _pids(self) -> list[int]:
        return [self.root, *descendants(self.root)]

    def sample(self) -> TreeSample:
        """Take one sample now (CPU and peak memory of every process in the tree)."""
        current = TreeSample()
        for pid in self._pids():
            seconds = cpu_seconds(pid)
            if seconds is None:
                continue
            current.cpu[pid] = seconds
            hwm = peak_rss(pid)
            with self._lock:
                self.peak_hwm[pid] = max(self.peak_hwm.get(pid, 0), hwm)
        with self._lock:
            # A process that vanished keeps its last reading.
            merged = dict(self._last.cpu)
            merged.update(current.cpu)
            self._last = TreeSample(merged)
            return TreeSample(dict(merged))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> TreeSample:
        """Take the baseline sample and start sampling."""
        baseline = self.sample()
        self._thread.start()
        return baseline

    def stop(self) -> TreeSample:
        """Stop sampling and take a last sample."""
        self._stop.set()
        self._thread.join()
        return self.sample()

    @staticmethod
    def cpu_between(start: TreeSample, end: TreeSample) -> float:
        """CPU seconds the tree used between two samples (new processes count from zero)."""
        return sum(v - start.cpu.get(pid, 0.0) for pid, v in end.cpu.items())

    def peak_of(self, pids: list[int]) -> int:
        """Largest VmHWM seen among ``pids``, in bytes."""
        with self._lock:
            return max((self.peak_hwm.get(pid, 0) for pid in pids), default=0)


def main() -> None:
    """Time the command after ``--`` and print the JSON."""
    command = sys.argv[1:]
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SystemExit("usage: python -m benchmarks.harness.timing -- COMMAND...")
    began = time.perf_counter()
    completed = subprocess.run(command, check=False, capture_output=True)
    seconds = time.perf_counter() - began
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "max_rss_bytes": usage.ru_maxrss * 1024,  # kilobytes on Linux
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "returncode": completed.returncode,
                "stdout": completed.stdout.decode(errors="replace")[-2000:],
                "stderr": completed.stderr.decode(errors="replace")[-2000:],
            }
        )
    )


if __name__ == "__main__":
    main()
