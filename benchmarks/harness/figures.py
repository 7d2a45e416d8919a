"""Figures, and the one helper every scenario registers its figures through.

A figure is the median of several runs with their minimum and maximum (or a ratio of
two such figures). Each scenario module declares a ``FigureTable``: one ``FigureSpec``
per figure it reports (name, unit, what it means, and a target when it has one), and
records every figure with ``FigureTable.register``, so names, labels and targets are
written in one place and registered the same way.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from benchmarks.harness.context import Context

MIN_RUNS = 3


@dataclass
class Figure:
    """One reported number: the median of ``runs`` samples, with their extremes."""

    name: str
    value: float
    unit: str
    min: float
    max: float
    runs: int
    scenario: str
    label: str
    samples: list[float] = field(default_factory=list)
    target: str | None = None
    met: bool | None = None
    numerator: str | None = None
    denominator: str | None = None
    subscribers: int | None = None
    mode: str = "quick"
    recorded_at: str = ""

    def as_json(self) -> dict[str, Any]:
        """The figure as latest.json stores it (ratio fields only on ratios)."""
        data = asdict(self)
        for key in ("numerator", "denominator", "target", "met", "subscribers"):
            if data[key] is None:
                del data[key]
        return data


def figure(
    name: str,
    samples: Sequence[float],
    unit: str,
    *,
    scenario: str,
    label: str,
    subscribers: int | None = None,
) -> Figure:
    """Median, minimum and maximum of ``samples``."""
    if not samples:
        raise ValueError(f"no samples for {name}")
    return Figure(
        name=name,
        value=float(statistics.median(samples)),
        unit=unit,
        min=float(min(samples)),
        max=float(max(samples)),
        runs=len(samples),
        scenario=scenario,
        label=label,
        samples=[float(s) for s in samples],
        subscribers=subscribers,
    )


def ratio(
    name: str, numerator: Figure, denominator: Figure, *, scenario: str, label: str
) -> Figure:
    """numerator / denominator of the medians; the range pairs the opposite extremes."""
    return Figure(
        name=name,
        value=numerator.value / denominator.value,
        unit="x",
        min=numerator.min / denominator.max,
        max=numerator.max / denominator.min,
        runs=min(numerator.runs, denominator.runs),
        scenario=scenario,
        label=label,
        numerator=numerator.name,
        denominator=denominator.name,
        subscribers=numerator.subscribers,
    )


def with_target(fig: Figure, text: str, check: Callable[[Figure], bool]) -> Figure:
    """Attach a target (as shown in the report) and whether the figure meets it."""
    fig.target = text
    fig.met = bool(check(fig))
    return fig


def fmt(value: float) -> str:
    """A number as the report shows it: three significant figures, no exponent."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2g}"


@dataclass(frozen=True)
class FigureSpec:
    """One figure a scenario reports.

    ``name``, ``meaning`` and ``target`` are ``str.format`` templates over the keyword
    arguments given to ``FigureTable.register`` (``subscribers`` always among them).
    """

    name: str
    unit: str
    meaning: str
    target: str | None = None
    check: Callable[[Figure], bool] | None = None


class Ratio(NamedTuple):
    """A figure computed as one figure of the run over another."""

    numerator: Figure
    denominator: Figure


class FigureTable:
    """A scenario's figures by key, and the helper that records them."""

    def __init__(self, scenario: str, specs: dict[str, FigureSpec]) -> None:
        self.scenario = scenario
        self.specs = specs

    def __iter__(self) -> Iterator[FigureSpec]:
        return iter(self.specs.values())

    def register(
        self,
        ctx: Context,
        key: str,
        measured: Sequence[float] | Ratio,
        *,
        subscribers: int | None = None,
        targeted: bool = True,
        **params: object,
    ) -> Figure:
        """Record figure ``key`` from its samples (or a Ratio) in ``ctx`` and print it.

        ``targeted=False`` records it without the table's target (a target that only
        applies to some databases or sizes).
        """
        spec = self.specs[key]
        values = {"subscribers": subscribers, **params}
        name, label = spec.name.format(**values), spec.meaning.format(**values)
        if isinstance(measured, Ratio):
            fig = ratio(name, *measured, scenario=self.scenario, label=label)
        else:
            fig = figure(
                name, measured, spec.unit, scenario=self.scenario, label=label,
                subscribers=subscribers,
            )  # fmt: skip
        if targeted and spec.target is not None and spec.check is not None:
            with_target(fig, spec.target.format(**values), spec.check)
        return ctx.add(fig)
