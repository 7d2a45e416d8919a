"""Charts of the report: median figures as lines with min-max bars, drawn with matplotlib.

Each scenario that has a chart says which figures go on it (benchmarks.scenarios.gazette,
benchmarks.scenarios.relay); this module draws them all the same way. Without matplotlib
(the bench extra) nothing is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness.figures import Figure


@dataclass(frozen=True)
class Series:
    """One line of a chart: its legend, colour, marker, and (x, figure) points."""

    label: str
    colour: str
    marker: str
    points: list[tuple[float, Figure]]


def line_chart(
    path: Path, series: Sequence[Series], *, title: str, xlabel: str, log_x: bool
) -> bool:
    """Draw the series on a log y axis into ``path``; False when there is nothing to draw."""
    drawn = [s for s in series if s.points]
    if not drawn:
        return False
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    fig, axes = plt.subplots(figsize=(8, 5), dpi=120)
    for line in drawn:
        figures = [f for _x, f in line.points]
        axes.errorbar(
            [x for x, _f in line.points],
            [f.value for f in figures],
            yerr=[[f.value - f.min for f in figures], [f.max - f.value for f in figures]],
            label=line.label,
            color=line.colour,
            marker=line.marker,
            capsize=4,
            linewidth=1.5,
        )
    if log_x:
        axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("messages per second (median, min-max)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True
