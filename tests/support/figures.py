"""Figures the reliability scenarios measure, collected for docs/reliability.md.

A scenario calls ``record`` once with what it did, what it measured and the bound it
had to meet (it asserts the bound itself). `make reliability` sets GAZETTE_FIGURES to
a JSON Lines file and renders the report from it with `python -m scripts.reliability_report`;
in an ordinary test run nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def record(scenario: str, what: str, figure: str, bound: str) -> None:
    """Append one report row: scenario name, what was done, the figure, the bound."""
    target = os.environ.get("GAZETTE_FIGURES")
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"scenario": scenario, "what": what, "figure": figure, "bound": bound}
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
