"""Run one command and print its wall time and peak memory as JSON.

``python -m benchmarks.measure -- COMMAND...``: a fresh process per measurement, so
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is the peak RSS of that command alone.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main() -> None:
    command = sys.argv[1:]
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SystemExit("usage: python -m benchmarks.measure -- COMMAND...")
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
